"""Processing an uploaded archive (DESIGN §8): check it, parse the model, derive its artifacts.

The archive holds exactly one regular file, `model.onnx`. Each refusal names its reason.
Bytes are streamed: the archive and the model are never held whole in Python memory
except while onnx parses the model itself.
"""

import hashlib
import json
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

CHUNK = 1024 * 1024
MODEL_NAME = "model.onnx"


class Refused(Exception):
    """The archive or the model is not acceptable; `reason` is a stable code."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class Extracted:
    archive_sha256: str
    model_path: Path
    model_size: int


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def extract(archive: Path, workdir: Path) -> Extracted:
    """Check the archive and write its one `model.onnx` to `workdir`."""
    with open(archive, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            raise Refused("not_gzip", "The archive is not gzip-compressed (a .tar.gz is expected).")
    limit = settings.ONNX_MAX_MODEL_BYTES
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            members = []
            for member in tar:
                members.append(member)
                if len(members) > 1:
                    raise Refused("several_members", "The archive holds more than one member; it must hold only model.onnx.")
            if not members:
                raise Refused("no_member", "The archive is empty; it must hold model.onnx.")
            member = members[0]
            _check_member(member, limit)
            source = tar.extractfile(member)
            target = workdir / MODEL_NAME
            size = 0
            with open(target, "wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise Refused("too_large", f"model.onnx decompresses past the limit of {limit} bytes.")
                    out.write(chunk)
    except Refused:
        raise
    except (tarfile.ReadError, EOFError, zlib.error, OSError) as exc:
        raise Refused("not_tar", f"The archive is not a valid tar.gz: {exc}.") from None
    return Extracted(archive_sha256=sha256_of(archive), model_path=target, model_size=size)


def _check_member(member: tarfile.TarInfo, limit: int) -> None:
    name = member.name
    parts = Path(name).parts
    if name.startswith("/") or ".." in parts:
        raise Refused("path_escape", f"The member {name!r} points outside the archive.")
    if not member.isreg():
        kind = "a link" if member.issym() or member.islnk() else "not a regular file"
        raise Refused("not_regular_file", f"The member {name!r} is {kind}.")
    if name not in (MODEL_NAME, f"./{MODEL_NAME}"):
        raise Refused("wrong_name", f"The member is named {name!r}; it must be model.onnx.")
    if member.size > limit:
        raise Refused("too_large", f"model.onnx is {member.size} bytes, past the limit of {limit}.")


def parse(model_path: Path):
    """Load and check the model; refusals name 'not ONNX' or the checker's complaint."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise Refused("not_onnx", f"model.onnx is not an ONNX model: {exc}") from None
    if not model.graph.node and not model.graph.input and not model.graph.output:
        raise Refused("not_onnx", "model.onnx is not an ONNX model (it has no graph).")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise Refused("checker_failed", f"The ONNX checker refused the model: {str(exc).splitlines()[0]}") from None
    return model


def _elem_type(code: int) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(code).lower() if code else "undefined"


def _shape(tensor_type) -> list:
    if not tensor_type.HasField("shape"):
        return []
    return [dim.dim_value if dim.HasField("dim_value") else (dim.dim_param or None) for dim in tensor_type.shape.dim]


def _value_info(info) -> dict:
    kind = info.type.WhichOneof("value")
    if kind == "tensor_type":
        return {"name": info.name, "type": "tensor", "elem_type": _elem_type(info.type.tensor_type.elem_type), "shape": _shape(info.type.tensor_type)}
    return {"name": info.name, "type": kind or "unknown"}


def _attribute(attribute) -> Any:
    import onnx

    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return value
    if isinstance(value, list) and all(isinstance(v, bytes) for v in value):
        return [v.decode("utf-8", "replace") for v in value]
    return {"type": onnx.AttributeProto.AttributeType.Name(attribute.type).lower()}


def describe(model) -> dict:
    """The model's description: everything but the weights."""
    import onnx

    graph = model.graph
    initializers = list(graph.initializer)
    parameters = 0
    initializer_bytes = 0
    for tensor in initializers:
        count = 1
        for dim in tensor.dims:
            count *= dim
        parameters += count
        initializer_bytes += tensor.ByteSize()
    initializer_names = {tensor.name for tensor in initializers}
    return {
        "ir_version": model.ir_version,
        "opset_import": [{"domain": item.domain or "ai.onnx", "version": item.version} for item in model.opset_import],
        "producer": {"name": model.producer_name, "version": model.producer_version},
        "domain": model.domain,
        "model_version": model.model_version,
        "graph_name": graph.name,
        "inputs": [_value_info(item) for item in graph.input if item.name not in initializer_names],
        "outputs": [_value_info(item) for item in graph.output],
        "nodes": len(graph.node),
        "op_types": dict(sorted(Counter(node.op_type for node in graph.node).items())),
        "parameters": parameters,
        "initializers": len(initializers),
        "initializer_bytes": initializer_bytes,
        "metadata_props": {prop.key: prop.value for prop in model.metadata_props},
        "doc_string": model.doc_string,
        "_onnx_version": onnx.__version__,
    }


def graph_json(model) -> dict:
    """`model.json`: the graph without weights (initializers by name, type and shape)."""
    graph = model.graph
    return {
        "description": {key: value for key, value in describe(model).items() if not key.startswith("_")},
        "graph": {
            "name": graph.name,
            "inputs": [_value_info(item) for item in graph.input],
            "outputs": [_value_info(item) for item in graph.output],
            "initializers": [
                {"name": tensor.name, "elem_type": _elem_type(tensor.data_type), "shape": list(tensor.dims)}
                for tensor in graph.initializer
            ],
            "nodes": [
                {
                    "name": node.name,
                    "op_type": node.op_type,
                    "domain": node.domain,
                    "inputs": list(node.input),
                    "outputs": list(node.output),
                    "attributes": {attribute.name: _attribute(attribute) for attribute in node.attribute},
                }
                for node in graph.node
            ],
        },
    }


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
