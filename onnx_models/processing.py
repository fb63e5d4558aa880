"""Processing an uploaded archive (DESIGN §8): check it, parse the model, derive its artifacts.

The archive holds exactly one regular file, `model.onnx`. Each refusal names its reason.
Memory does not grow with the model: the archive is read once, in chunks, hashing it
(in a thread) while the model is decompressed to disk (hashed and written by another
thread, so that the three overlap); the model is then parsed without
its weights (`wire.scan`: the data of large tensors is skipped and pointed at in the
file), and the checker checks that skeleton, with the skipped data checked from what
the scan recorded. Small models go through the same path, whole.
"""

import hashlib
import json
import os
import queue
import tarfile
import threading
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from onnx_models import wire

try:  # ISA-L inflates about twice as fast as zlib, with zlib's interface
    from isal import isal_zlib as inflating

    INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, inflating.error)
except ImportError:  # pragma: no cover - isal is in requirements.txt
    inflating = zlib
    INFLATE_ERRORS = (zlib.error,)

CHUNK = 1024 * 1024
MODEL_NAME = "model.onnx"
GZIP_MAGIC = b"\x1f\x8b"
TAIL_BYTES = 1024 * 1024  # what is read past the member for the gzip trailer to be checked
# Tensors larger than this (as encoded) are not read: their data stays in the file.
SKIP_TENSOR_BYTES = 1024 * 1024


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
    model_sha256: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Prefetch:
    """A file read and hashed (SHA-256) by a thread of its own, a few chunks ahead of its
    reader: hashing the archive overlaps with decompressing it (both release the GIL)."""

    def __init__(self, handle, depth: int = 4):
        self.digest = hashlib.sha256()
        self._queue: queue.Queue = queue.Queue(depth)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(handle,), name="onnx-archive-read", daemon=True)
        self._thread.start()

    def _run(self, handle) -> None:
        try:
            while not self._stopped.is_set():
                chunk = handle.read(CHUNK)
                self.digest.update(chunk)
                self._put(chunk)
                if not chunk:
                    return
        except BaseException as exc:  # handed to the reader, who raises it
            self._put(exc)

    def _put(self, item) -> None:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def read(self, size: int = -1) -> bytes:
        """The next chunk (b"" at the end); every chunk read is hashed already."""
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        if not item:
            self._queue.put(item)  # the end stays the end
        return item

    def hexdigest(self) -> str:
        """The file's SHA-256, once the rest of it is read."""
        while self.read():
            pass
        return self.digest.hexdigest()

    def close(self) -> None:
        self._stopped.set()
        self._thread.join()


class Syncer:
    """Writes a file's data to disk from a thread of its own while the file is still being
    written or read, so that the fsync that makes it durable at the end finds little left
    to do: the kernel would otherwise keep gigabytes of it in memory until that fsync, and
    the disk would idle while the CPU inflates. `kick()` asks for a pass over what is written
    so far (passes do not hold up the writer); `close()` waits for the passes, and raises
    what a pass raised (a later fsync on another descriptor might not report it)."""

    def __init__(self, fd: int):
        self._fd = fd
        self._wanted = threading.Event()
        self._pending = self._closing = False
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="onnx-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._pending:
                self._pending = False
                try:
                    os.fdatasync(self._fd)
                except OSError as exc:
                    self._error = exc
                    return
            if self._closing:
                return

    def kick(self) -> None:
        self._pending = True
        self._wanted.set()

    def close(self) -> None:
        self._closing = True
        self._wanted.set()
        self._thread.join()
        if self._error is not None:
            raise self._error


class _Writer:
    """Chunks hashed (SHA-256) and written to a file by a thread of its own, and put on
    disk as they come (a `Syncer` pass every SYNC_EVERY bytes)."""

    SYNC_EVERY = 64 * 1024 * 1024

    def __init__(self, path: Path, depth: int = 4):
        self.digest = hashlib.sha256()
        self._out = open(path, "wb")
        self._syncer = Syncer(self._out.fileno())
        self._unsynced = 0
        self._queue: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="onnx-model-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.digest.update(item)
                    self._out.write(item)
                    self._unsynced += len(item)
                    if self._unsynced >= self.SYNC_EVERY:
                        self._out.flush()
                        self._syncer.kick()
                        self._unsynced = 0
                except BaseException as exc:  # raised to the writer at its next write
                    self._error = exc

    def write(self, piece) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(piece)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        try:
            self._syncer.close()
        finally:
            self._out.close()
        if self._error is not None:
            raise self._error


class _Gunzip:
    """The decompressed bytes of the gzip members of a stream, one after another, as gzip
    reads them (zero padding between members is skipped); the inflater checks each
    member's header, and its CRC and size once its end is read."""

    def __init__(self, source):
        self.source = source
        self.inflater = None  # None between members
        self.pending = b""

    def read(self, size: int = CHUNK, *, next_member: bool = True) -> bytes:
        while True:
            if self.inflater is None:
                if not next_member:
                    return b""
                self.pending = self.pending.lstrip(b"\0")
                while not self.pending:
                    more = self.source.read(CHUNK)
                    if not more:
                        return b""
                    self.pending = more.lstrip(b"\0")
                self.inflater = inflating.decompressobj(16 + zlib.MAX_WBITS)
            if not self.pending:
                self.pending = self.source.read(CHUNK)
                if not self.pending:
                    raise EOFError("the compressed stream ends before its end marker")
            data = self.inflater.decompress(self.pending, size)
            self.pending = self.inflater.unconsumed_tail
            if self.inflater.eof:
                self.pending = self.inflater.unused_data
                self.inflater = None
            if data:
                return data

    def finish_member(self, limit: int) -> None:
        """Read the rest of the current member, when it is short (the tar's end blocks and
        padding), so that its CRC and size are checked; a longer rest is left unread."""
        while limit > 0 and (data := self.read(min(CHUNK, limit), next_member=False)):
            limit -= len(data)


class _Tape:
    """The decompressed stream, read forward: `read(n)` gives exactly n bytes (unless the
    stream ends), so that tarfile, reading headers block by block, stops right where a
    member's data starts; `chunk()` then hands out the data without copying it."""

    def __init__(self, source: _Gunzip):
        self.source = source
        self.buffer = memoryview(b"")
        self.position = 0

    def _fill(self) -> bool:
        if not self.buffer:
            self.buffer = memoryview(self.source.read(CHUNK))
        return bool(self.buffer)

    def chunk(self, limit: int) -> memoryview:
        if not self._fill():
            return self.buffer
        piece, self.buffer = self.buffer[:limit], self.buffer[limit:]
        self.position += len(piece)
        return piece

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while (size < 0 or len(out) < size) and (piece := self.chunk(CHUNK if size < 0 else size - len(out))):
            out += piece
        return bytes(out)


def extract(archive: Path, workdir: Path) -> Extracted:
    """Check the archive and write its one `model.onnx` to `workdir`, in one pass over it.

    tarfile reads the member's header; its bytes are then read straight from the
    decompressed stream (hashed and written as they come), then whatever follows is read
    as a tar again, which must hold no other member.
    """
    limit = settings.ONNX_MAX_MODEL_BYTES
    with open(archive, "rb") as handle:
        if handle.read(2) != GZIP_MAGIC:
            raise Refused("not_gzip", "The archive is not gzip-compressed (a .tar.gz is expected).")
        handle.seek(0)
        source = _Prefetch(handle)
        gunzip = _Gunzip(source)
        tape = _Tape(gunzip)
        target = workdir / MODEL_NAME
        try:
            with tarfile.open(fileobj=tape, mode="r|", bufsize=tarfile.BLOCKSIZE) as tar:
                member = tar.next()
            if member is None:
                raise Refused("no_member", "The archive is empty; it must hold model.onnx.")
            # The one member is checked before its bytes are read; a second one is found
            # after them (a tar has no index).
            _check_member(member, limit)
            if tape.position != member.offset_data:
                raise tarfile.ReadError("the member's data is not where its header says")
            out, left = _Writer(target), member.size
            try:
                while left and (piece := tape.chunk(min(left, CHUNK))):
                    left -= len(piece)
                    out.write(piece)
            finally:
                out.close()
            if left:
                raise tarfile.ReadError("unexpected end of data")
            tape.read(-member.size % tarfile.BLOCKSIZE)
            if _another_member(tape):
                raise Refused("several_members", "The archive holds more than one member; it must hold only model.onnx.")
            gunzip.finish_member(TAIL_BYTES)
        except Refused:
            target.unlink(missing_ok=True)
            raise
        except (tarfile.TarError, EOFError, OSError, *INFLATE_ERRORS) as exc:
            target.unlink(missing_ok=True)
            raise Refused("not_tar", f"The archive is not a valid tar.gz: {exc}.") from None
        else:
            archive_sha256 = source.hexdigest()  # the rest (tar padding, anything after) is hashed too
        finally:
            source.close()
    return Extracted(archive_sha256=archive_sha256, model_path=target, model_size=member.size, model_sha256=out.digest.hexdigest())


def _another_member(tape: _Tape) -> bool:
    """Whether the rest of the tar holds a member. As tarfile reads an archive, blocks
    that are not a header after the first member end it (as its end blocks do)."""
    try:
        with tarfile.open(fileobj=tape, mode="r|", bufsize=tarfile.BLOCKSIZE) as rest:
            return rest.next() is not None
    except tarfile.ReadError:
        return False


def _check_member(member: tarfile.TarInfo, limit: int) -> None:
    name = member.name
    parts = Path(name).parts
    if name.startswith("/") or ".." in parts:
        raise Refused("path_escape", f"The member {name!r} points outside the archive.")
    if not member.isreg() or member.issparse():
        kind = "a link" if member.issym() or member.islnk() else "a sparse file" if member.issparse() else "not a regular file"
        raise Refused("not_regular_file", f"The member {name!r} is {kind}.")
    if name not in (MODEL_NAME, f"./{MODEL_NAME}"):
        raise Refused("wrong_name", f"The member is named {name!r}; it must be model.onnx.")
    if member.size > limit:
        raise Refused("too_large", f"model.onnx is {member.size} bytes, past the limit of {limit}.")


@dataclass
class Parsed:
    model: Any  # the ModelProto without the skipped tensor data
    skeleton: wire.Skeleton


def parse(model_path: Path, threshold: int = SKIP_TENSOR_BYTES) -> Parsed:
    """Parse and check the model without reading its large tensors' data.

    Refusals name 'not ONNX' or the checker's complaint. The model must sit alone in its
    directory (as `extract` leaves it): the checker resolves the skipped tensors'
    locations there.
    """
    import onnx
    from google.protobuf.message import DecodeError

    size = model_path.stat().st_size
    if size > wire.MAX_PROTOBUF:
        raise Refused("too_large", f"model.onnx is {size} bytes; a protobuf message, so an ONNX model in one file, is under 2 GiB.")
    try:
        skeleton = wire.scan(model_path, threshold)
        model = onnx.ModelProto.FromString(skeleton.data)
    except (wire.Malformed, DecodeError, ValueError, RuntimeError) as exc:
        raise Refused("not_onnx", f"model.onnx is not an ONNX model: {exc}") from None
    if not model.graph.node and not model.graph.input and not model.graph.output:
        raise Refused("not_onnx", "model.onnx is not an ONNX model (it has no graph).")
    # The skeleton is checked from a file beside the model, so that the checker finds
    # model.onnx where the skipped tensors point; the data it did not see is checked here.
    checked = model_path.with_name(f".{model_path.name}.skeleton")
    checked.write_bytes(skeleton.data)
    try:
        onnx.checker.check_model(str(checked))
        for record in skeleton.skipped:
            wire.check_data(record, model_path)
        _check_self_contained(model, skeleton)
    except (onnx.checker.ValidationError, wire.CheckFailed) as exc:
        raise Refused("checker_failed", f"The ONNX checker refused the model: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError:  # the checker's message quotes a name that is not UTF-8
        raise Refused("checker_failed", "The ONNX checker refused the model (about a name that is not valid UTF-8).") from None
    finally:
        checked.unlink(missing_ok=True)
    return Parsed(model=model, skeleton=skeleton)


def _check_self_contained(model, skeleton: wire.Skeleton) -> None:
    """An archive holds model.onnx alone: no tensor of it may keep its data in another
    file (the checker would look for that file beside the model, where only the
    skeleton's own references resolve)."""
    import onnx

    for tensor in wire.tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL and skeleton.record(tensor) is None:
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
            raise wire.CheckFailed(
                f"The tensor {tensor.name!r} keeps its data in an external file ({location!r}); the archive holds"
                " model.onnx alone: save the model with its data inside."
            )


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


def describe(model, skeleton: wire.Skeleton | None = None) -> dict:
    """The model's description: everything but the weights.

    `model` is the whole model, or the skeleton's (whose skipped tensors count with the
    size they have in the file, as the whole model's would).
    """
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
        record = skeleton.record(tensor) if skeleton is not None else None
        initializer_bytes += record.encoded_size if record is not None else tensor.ByteSize()
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
        "op_types": dict(sorted(Counter(_text(node.op_type) for node in graph.node).items())),
        "parameters": parameters,
        "initializers": len(initializers),
        "initializer_bytes": initializer_bytes,
        "metadata_props": {_text(prop.key): _text(prop.value) for prop in model.metadata_props},
        "doc_string": model.doc_string,
        "_onnx_version": onnx.__version__,
    }


def graph_json(model, skeleton: wire.Skeleton | None = None) -> dict:
    """`model.json`: the graph without weights (initializers by name, type and shape)."""
    graph = model.graph
    result = {
        "description": {key: value for key, value in describe(model, skeleton).items() if not key.startswith("_")},
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
    return _texts(result)  # a string that is not UTF-8 comes as bytes: JSON takes text


def _text(value: str | bytes) -> str:
    """A string field: protobuf hands one that is not UTF-8 over as bytes."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _texts(value: Any) -> Any:
    if isinstance(value, dict):
        return {_texts(key): _texts(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_texts(item) for item in value]
    return _text(value) if isinstance(value, bytes) else value


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
