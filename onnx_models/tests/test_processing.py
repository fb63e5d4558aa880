"""Processing without the weights in memory: the skeleton scan against onnx reading the whole model.

`plain` is what processing did before (and what a reader of onnx would do): `onnx.load`
and the checker on the whole model. The lean path (`processing.parse`, which skips the
data of tensors over a threshold) must describe every model the same way and refuse the
same models with the same checker message.
"""

import gzip
import hashlib
import io
import os
import tarfile
import tracemalloc

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnx_models import processing, wire
from onnx_models.tests.models import affine_model, archive, broken_model


def plain(path):
    """The whole model, loaded and checked: (graph_json, None) or (None, refusal message)."""
    model = onnx.load(str(path), load_external_data=False)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        return None, f"The ONNX checker refused the model: {str(exc).splitlines()[0]}"
    return processing.graph_json(model), None


def lean(path, threshold):
    try:
        parsed = processing.parse(path, threshold=threshold)
    except processing.Refused as refused:
        assert refused.reason == "checker_failed", refused.message
        return None, refused.message
    return processing.graph_json(parsed.model, parsed.skeleton), None


def save(tmp_path, model) -> "Path":  # noqa: F821
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString() if not isinstance(model, bytes) else model)
    return path


def rich_model() -> onnx.ModelProto:
    """Tensors wherever onnx keeps them: initializers (raw and typed fields), a Constant's
    attribute, the initializers of If's branches, a sparse initializer, a function's body."""
    rng = np.random.default_rng(3)
    big = rng.standard_normal((300, 200)).astype(np.float32)

    def branch(name, value):
        return helper.make_graph(
            [helper.make_node("Identity", [f"{name}_t"], [f"{name}_y"])],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, [300, 200])],
            initializer=[numpy_helper.from_array(value, f"{name}_t")],
        )

    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(big * 2, "c_value")),
        helper.make_node("Add", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "c"], ["xc"]),
        helper.make_node("If", ["cond"], ["branch"], then_branch=branch("then", big + 1), else_branch=branch("else", big - 1)),
        helper.make_node("Add", ["xc", "branch"], ["y"]),
        helper.make_node("Scale2", ["y"], ["z"], domain="custom"),
    ]
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.arange(5000, dtype=np.float32), "sparse_values"),
        numpy_helper.from_array(np.arange(0, 10000, 2, dtype=np.int64), "sparse_indices"),
        [10000],
    )
    initializers = [
        numpy_helper.from_array(big, "W"),
        helper.make_tensor("typed_floats", TensorProto.FLOAT, [4000], rng.standard_normal(4000).tolist()),
        helper.make_tensor("typed_int64", TensorProto.INT64, [3000], list(range(-1500, 1500))),
        helper.make_tensor("typed_half", TensorProto.FLOAT16, [3000], rng.standard_normal(3000).astype(np.float16)),
        helper.make_tensor("names", TensorProto.STRING, [3], [b"a", b"bb", b"ccc"]),
        helper.make_tensor("scalar", TensorProto.DOUBLE, [], [2.5]),
        helper.make_tensor("empty", TensorProto.FLOAT, [0, 3], []),
    ]
    graph = helper.make_graph(
        nodes,
        "rich",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 300, 200]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 300, 200])],
        initializer=initializers,
        sparse_initializer=[sparse],
        doc_string="a graph with tensors everywhere",
    )
    function = helper.make_function(
        "custom",
        "Scale2",
        ["a"],
        ["b"],
        [helper.make_node("Constant", [], ["two"], value=numpy_helper.from_array(np.full(20000, 2, np.float32), "two_value")),
         helper.make_node("Mul", ["a", "two"], ["b"])],
        [helper.make_opsetid("", 17)],
    )  # fmt: skip
    model = helper.make_model(
        graph, producer_name="tests", opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)], functions=[function]
    )
    model.ir_version = 10
    helper.set_model_props(model, {"purpose": "tests", "size": "rich"})
    return model


@pytest.mark.parametrize("threshold", [0, 64, 10_000, processing.SKIP_TENSOR_BYTES])
@pytest.mark.parametrize("build", [lambda: onnx.ModelProto.FromString(affine_model(padding=400_000)), rich_model])
def test_the_lean_path_describes_a_model_as_the_whole_model_does(tmp_path, build, threshold):
    path = save(tmp_path, build())
    expected, refused = plain(path)
    assert refused is None
    got, refused = lean(path, threshold)
    assert refused is None
    assert got == expected
    parsed = processing.parse(path, threshold=threshold)
    if threshold < 10_000:
        assert parsed.skeleton.skipped  # the large tensors were skipped indeed
        assert len(parsed.skeleton.data) < path.stat().st_size // 2
    if threshold == 0:
        assert all(record.raw or record.counts for record in parsed.skeleton.skipped)


def test_the_scan_does_not_read_the_weights(tmp_path):
    path = save(tmp_path, affine_model(padding=8 * 1024 * 1024))  # a 32 MiB initializer
    tracemalloc.start()
    try:
        parsed = processing.parse(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, peak
    assert processing.describe(parsed.model, parsed.skeleton)["parameters"] == 8 * 1024 * 1024 + 6
    skipped = parsed.skeleton.skipped
    assert len(skipped) == 1 and skipped[0].name == "padding" and skipped[0].raw[1] == 32 * 1024 * 1024
    # The skipped tensor points at its raw bytes in model.onnx.
    tensor = next(t for t in parsed.model.graph.initializer if t.name == "padding")
    location = {entry.key: entry.value for entry in tensor.external_data}
    assert tensor.data_location == TensorProto.EXTERNAL and location["location"] == "model.onnx"
    with open(path, "rb") as handle:
        handle.seek(int(location["offset"]))
        head = handle.read(16)
    assert head == np.random.default_rng(7).standard_normal(4).astype(np.float32).tobytes()


def one_tensor_model(tensor: TensorProto) -> bytes:
    graph = helper.make_graph(
        [helper.make_node("Identity", [tensor.name], ["y"])], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], initializer=[tensor]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model.SerializeToString()


def tensor(dims, data_type=TensorProto.FLOAT, **fields) -> TensorProto:
    return TensorProto(name="W", dims=dims, data_type=data_type, **fields)


def external_with_raw() -> TensorProto:
    item = tensor([4], raw_data=b"a" * 16, data_location=TensorProto.EXTERNAL)
    item.external_data.add(key="location", value="model.onnx")
    return item


T = TensorProto
BAD_TENSORS = {
    "raw too small": tensor([4], raw_data=b"abc"),
    "raw larger than needed": tensor([4], raw_data=b"a" * 20),
    "float_data too short": tensor([4], float_data=[1, 2, 3]),
    "int64_data too short": tensor([4], T.INT64, int64_data=[1, 2, 3]),
    "uint64_data too short": tensor([4], T.UINT64, uint64_data=[1, 2, 3]),
    "double_data too short": tensor([4], T.DOUBLE, double_data=[1, 2, 3]),
    "complex64 needs two floats": tensor([2], T.COMPLEX64, float_data=[1, 2, 3]),
    "float16 int32_data too short": tensor([4], T.FLOAT16, int32_data=[1, 2, 3]),
    "int4 packed too short": tensor([20], T.INT4, int32_data=[1, 2]),
    "string_data too short": tensor([4], T.STRING, string_data=[b"a", b"b"]),
    "raw and float_data": tensor([4], float_data=[1, 2, 3, 4], raw_data=b"a" * 16),
    "float in int64_data": tensor([4], int64_data=[1, 2, 3, 4]),
    "0 elements with data": tensor([0], raw_data=b"a"),
    "string in raw_data": tensor([1], T.STRING, raw_data=b"a"),
    "int4 raw too short": tensor([3], T.INT4, raw_data=b"a"),
    "negative dimension": tensor([-1], raw_data=b"abcd"),
    "float6 values past 6 bits": tensor([2], T.FLOAT6E2M3, int32_data=[1, 64]),
    "float6 raw padding bits": tensor([1], T.FLOAT6E2M3, raw_data=b"\xff"),
    "float6 raw clean": tensor([1], T.FLOAT6E2M3, raw_data=b"\x3f"),
    "undefined data_type": tensor([1], T.UNDEFINED, raw_data=b"abcd"),
    "unknown data_type": tensor([1], 99, float_data=[1.0]),
    "external with raw_data": external_with_raw(),
    "valid raw": tensor([4], raw_data=b"a" * 16),
    "valid int64": tensor([3], T.INT64, int64_data=[1, -2, 300000]),
}


@pytest.mark.parametrize("name", sorted(BAD_TENSORS))
def test_the_lean_path_refuses_tensor_data_as_the_checker_does(tmp_path, name):
    path = save(tmp_path, one_tensor_model(BAD_TENSORS[name]))
    expected = plain(path)[1]
    assert lean(path, threshold=0)[1] == expected  # the tensor's data skipped
    assert lean(path, threshold=processing.SKIP_TENSOR_BYTES)[1] == expected  # read whole


@pytest.mark.parametrize(
    "data",
    [b"", b"not a protobuf at all \xff\xff", b"\x3a\xff\xff\xff\x0f", b"\x08\x0a\x3a\x05\x0a\x03", b"\x0b\x08\x01"],
    ids=["empty", "text", "length past the end", "truncated graph", "unterminated group"],
)
def test_bytes_that_are_not_a_model_are_refused(tmp_path, data):
    path = save(tmp_path, data)
    with pytest.raises(processing.Refused) as refused:
        processing.parse(path, threshold=0)
    assert refused.value.reason == "not_onnx"


def test_a_model_of_2_gib_or_more_is_refused_before_it_is_read(tmp_path):
    path = save(tmp_path, b"")
    with open(path, "wb") as handle:
        handle.truncate(wire.MAX_PROTOBUF + 1)  # sparse: no disk used
    with pytest.raises(processing.Refused) as refused:
        processing.parse(path)
    assert refused.value.reason == "too_large"


def test_extract_hashes_the_archive_and_the_model_in_one_pass(tmp_path, settings):
    model = affine_model(padding=100_000)
    data = archive({"model.onnx": model})
    (tmp_path / "model.tar.gz").write_bytes(data)
    (tmp_path / "model").mkdir()
    extracted = processing.extract(tmp_path / "model.tar.gz", tmp_path / "model")
    assert extracted.archive_sha256 == hashlib.sha256(data).hexdigest()
    assert extracted.model_sha256 == hashlib.sha256(model).hexdigest()
    assert extracted.model_size == len(model) and extracted.model_path.read_bytes() == model


def test_the_model_is_put_on_disk_as_it_is_written_and_keeps_its_bytes(tmp_path, settings, monkeypatch):
    passes = []
    real_fdatasync = processing.os.fdatasync
    monkeypatch.setattr(processing.os, "fdatasync", lambda fd: passes.append(fd) or real_fdatasync(fd))
    monkeypatch.setattr(processing._Writer, "SYNC_EVERY", 4096)
    model = affine_model(padding=100_000)
    (tmp_path / "model.tar.gz").write_bytes(archive({"model.onnx": model}))
    (tmp_path / "model").mkdir()
    extracted = processing.extract(tmp_path / "model.tar.gz", tmp_path / "model")
    assert passes  # the writer asked for passes while writing
    assert extracted.model_path.read_bytes() == model
    assert extracted.model_sha256 == hashlib.sha256(model).hexdigest()


def test_a_failed_pass_to_disk_is_raised_when_the_syncer_closes():
    reading, writing = os.pipe()
    try:
        syncer = processing.Syncer(reading)  # a pipe cannot be synced: the pass fails
        syncer.kick()
        with pytest.raises(OSError):
            syncer.close()
    finally:
        os.close(reading)
        os.close(writing)


def test_an_archive_of_several_gzip_members_is_read_as_gzip_reads_it(tmp_path, settings):
    model = affine_model(padding=50_000)
    plain_tar = io.BytesIO()
    with tarfile.open(fileobj=plain_tar, mode="w") as tar:
        info = tarfile.TarInfo("model.onnx")
        info.size = len(model)
        tar.addfile(info, io.BytesIO(model))
    raw = plain_tar.getvalue()
    data = gzip.compress(raw[:70_000]) + b"\0" * 8 + gzip.compress(raw[70_000:])  # as `cat a.gz b.gz` makes
    assert gzip.decompress(data) == raw
    (tmp_path / "model.tar.gz").write_bytes(data)
    (tmp_path / "model").mkdir()
    extracted = processing.extract(tmp_path / "model.tar.gz", tmp_path / "model")
    assert extracted.model_path.read_bytes() == model
    assert extracted.archive_sha256 == hashlib.sha256(data).hexdigest()


def test_a_truncated_archive_is_not_a_tar(tmp_path, settings):
    data = archive({"model.onnx": affine_model(padding=100_000)})
    (tmp_path / "model.tar.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "model").mkdir()
    with pytest.raises(processing.Refused) as refused:
        processing.extract(tmp_path / "model.tar.gz", tmp_path / "model")
    assert refused.value.reason == "not_tar"
    assert not (tmp_path / "model" / "model.onnx").exists()


@pytest.mark.parametrize("threshold", [0, processing.SKIP_TENSOR_BYTES])
def test_a_model_with_data_in_an_external_file_is_refused(tmp_path, threshold):
    weights = numpy_helper.from_array(np.ones(4, np.float32), "W")
    weights.ClearField("raw_data")
    weights.data_location = TensorProto.EXTERNAL
    weights.external_data.add(key="location", value="model.onnx")  # even one that resolves beside it
    weights.external_data.add(key="offset", value="0")
    weights.external_data.add(key="length", value="16")
    path = save(tmp_path, one_tensor_model(weights))
    with pytest.raises(processing.Refused) as refused:
        processing.parse(path, threshold=threshold)
    assert refused.value.reason == "checker_failed" and "external file" in refused.value.message


def test_every_tensor_is_found_wherever_onnx_keeps_it():
    names = {tensor.name for tensor in wire.tensors(rich_model())}
    assert {"W", "c_value", "then_t", "else_t", "sparse_values", "sparse_indices", "two_value", "names"} <= names


@pytest.mark.parametrize("name", ["model.onnx", "./model.onnx"])
@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_archives_in_every_tar_format_are_read(tmp_path, settings, name, tar_format):
    model = affine_model(padding=10_000)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tar_format) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(model)
        if tar_format == tarfile.PAX_FORMAT:
            info.pax_headers = {"comment": "é" * 300}  # an extended header before the member's
        tar.addfile(info, io.BytesIO(model))
    (tmp_path / "model.tar.gz").write_bytes(buffer.getvalue())
    (tmp_path / "model").mkdir()
    extracted = processing.extract(tmp_path / "model.tar.gz", tmp_path / "model")
    assert extracted.model_path.read_bytes() == model


def test_strings_that_are_not_utf8_are_described_or_refused_not_crashed_on(tmp_path):
    model = onnx.ModelProto.FromString(affine_model())
    model.doc_string = "DOC!"
    model.graph.node[0].name = "NAME"
    data = model.SerializeToString().replace(b"DOC!", b"\xff\xfeD!").replace(b"NAME", b"N\xffME")
    path = save(tmp_path, data)
    described = processing.graph_json(processing.parse(path).model)
    assert described["description"]["doc_string"] == "\ufffd\ufffdD!"
    processing.json_bytes(described)
    broken = onnx.ModelProto.FromString(broken_model())
    broken.graph.node[0].input[1] = "GHOST"  # the checker's complaint names it
    path = save(tmp_path, broken.SerializeToString().replace(b"GHOST", b"GH\xffST"))
    with pytest.raises(processing.Refused) as refused:
        processing.parse(path)
    assert refused.value.reason == "checker_failed"


@pytest.mark.parametrize("damage", ["crc", "size", "body"])
def test_a_damaged_gzip_stream_is_not_a_tar(tmp_path, settings, damage):
    plain_tar = io.BytesIO()
    with tarfile.open(fileobj=plain_tar, mode="w") as tar:
        model = affine_model(padding=100_000)
        info = tarfile.TarInfo("model.onnx")
        info.size = len(model)
        tar.addfile(info, io.BytesIO(model))
    # 1.5 MiB of zero blocks after the tar's end: the gzip trailer is past what reading the
    # member and looking for another one decompresses; it is read for itself.
    data = bytearray(gzip.compress(plain_tar.getvalue() + bytes(1536 * 1024), compresslevel=1))
    if damage == "crc":
        data[-8] ^= 0xFF
    elif damage == "size":
        data[-1] ^= 0xFF
    else:
        data[len(data) // 3] ^= 0xFF
    (tmp_path / "model.tar.gz").write_bytes(bytes(data))
    (tmp_path / "model").mkdir()
    with pytest.raises(processing.Refused) as refused:
        processing.extract(tmp_path / "model.tar.gz", tmp_path / "model")
    assert refused.value.reason == "not_tar"
