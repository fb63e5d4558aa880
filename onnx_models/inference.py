"""Inference with onnxruntime: one session per revision per process, bounded inputs and time."""

import os
import tempfile
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
from django.conf import settings

from blobs import store
from blobs.models import Revision

# onnxruntime's type strings → numpy dtypes.
DTYPES = {
    "tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
    "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32", "tensor(uint64)": "uint64",
    "tensor(bool)": "bool", "tensor(string)": "str",
}  # fmt: skip


class InferenceError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


_sessions: "OrderedDict[str, Any]" = OrderedDict()
_lock = threading.Lock()


def session_for(revision: Revision):
    """The cached onnxruntime session of a committed revision's model.onnx."""
    import onnxruntime

    from onnx_models.services import model_entry

    key = str(revision.id)
    with _lock:
        if key in _sessions:
            _sessions.move_to_end(key)
            return _sessions[key]
    entry = model_entry(revision)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = _load(entry.object, options)
    with _lock:
        _sessions[key] = session
        while len(_sessions) > settings.ONNX_SESSION_CACHE_SIZE:
            _sessions.popitem(last=False)
    return session


# Models larger than this are handed to onnxruntime as a file: given bytes, it holds them
# and its own copy (a 1 GiB model peaked at 3.1 GiB; from a file, at 1.15 GiB).
LOAD_FROM_FILE_ABOVE = 16 * 1024 * 1024


def _load(obj, options):
    """An onnxruntime session of a stored model, whose bytes are verified on the way."""
    if obj.size <= LOAD_FROM_FILE_ABOVE:
        return _session(store.read_bytes(obj), options)
    folder = settings.DATA_DIR / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix="onnx-session-", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in store.open_object(obj):  # a corrupted object raises before its end
                out.write(chunk)
        return _session(name, options)
    finally:
        os.unlink(name)


def _session(model: bytes | str, options):
    """A session of the model (bytes or a path); onnxruntime may refuse a model that onnx's
    checker passed (an operator of a custom domain): that is an inference_failed."""
    import onnxruntime

    try:
        return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise InferenceError("inference_failed", f"onnxruntime cannot load the model: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def _array(name: str, value: Any, meta) -> np.ndarray:
    expected = DTYPES.get(meta.type)
    if expected is None:
        raise InferenceError("unsupported_input", f"The input {name!r} has type {meta.type}, which infer does not take.")
    if isinstance(value, dict):
        if set(value) != {"dtype", "shape", "data"}:
            raise InferenceError("invalid_input", f"The input {name!r} is a nested list or {{dtype, shape, data}}.")
        if value["dtype"] != expected:
            raise InferenceError("wrong_dtype", f"The input {name!r} takes {expected}, not {value['dtype']}.")
        shape = value["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InferenceError("invalid_input", f"The shape of {name!r} is a list of non-negative integers.")
        data = value["data"]
    else:
        data, shape = value, None
    _bound(name, data)
    try:
        with np.errstate(over="ignore"):  # a float past the dtype's range is ±infinity, as documented
            array = np.array(data, dtype=expected if expected != "str" else object)
        if shape is not None:
            array = array.reshape(shape)
    except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: an integer no float or int64 holds
        raise InferenceError("invalid_input", f"The input {name!r} does not make a {expected} tensor: {exc}") from None
    declared = meta.shape
    if len(declared) != array.ndim or any(isinstance(d, int) and d != actual for d, actual in zip(declared, array.shape)):
        raise InferenceError(
            "wrong_shape", f"The input {name!r} has shape {list(array.shape)}; the model takes {[d if isinstance(d, int) else str(d) for d in declared]}."
        )
    return array


def _bound(name: str, data: Any) -> None:
    """Refuse inputs past the element limit before numpy builds them."""
    limit, count, stack = settings.ONNX_INFER_MAX_INPUT_ELEMENTS, 0, [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            count += 1
        if count + len(stack) > limit:
            raise InferenceError("input_too_large", f"The input {name!r} has more than {limit} elements.")


def infer(revision: Revision, inputs: Any) -> dict:
    import onnxruntime

    if not isinstance(inputs, dict) or not inputs:
        raise InferenceError("invalid_input", "inputs is an object {name: nested list | {dtype, shape, data}}.")
    session = session_for(revision)
    declared = {meta.name: meta for meta in session.get_inputs()}
    unknown = sorted(set(inputs) - set(declared))
    missing = sorted(set(declared) - set(inputs))
    if unknown or missing:
        raise InferenceError(
            "wrong_inputs",
            f"The model takes the inputs {sorted(declared)}; unknown: {unknown}, missing: {missing}.",
        )
    feed = {name: _array(name, value, declared[name]) for name, value in inputs.items()}
    options = onnxruntime.RunOptions()
    timer = threading.Timer(settings.ONNX_INFER_TIMEOUT_SECONDS, lambda: setattr(options, "terminate", True))
    timer.start()
    try:
        results = session.run(None, feed, options)
    except Exception as exc:  # onnxruntime raises its own exception types
        if options.terminate:
            raise InferenceError("timeout", f"Inference ran past {settings.ONNX_INFER_TIMEOUT_SECONDS} s.") from None
        raise InferenceError("inference_failed", f"onnxruntime refused the inputs: {_first_line(exc)}") from None
    finally:
        timer.cancel()
    outputs = {}
    for meta, value in zip(session.get_outputs(), results):
        array = np.asarray(value)
        outputs[meta.name] = {"dtype": str(array.dtype) if array.dtype != object else "str", "shape": list(array.shape), "data": _data(array)}
    return outputs


def _data(array: np.ndarray) -> Any:
    """The array as nested lists, NaN and ±infinity as the strings "NaN", "Infinity" and
    "-Infinity": JSON has no numbers for them (inputs read those strings back)."""
    if array.dtype.kind != "f" or np.isfinite(array).all():
        return array.tolist()
    data = array.astype(object)
    data[np.isnan(array)] = "NaN"
    data[np.isposinf(array)] = "Infinity"
    data[np.isneginf(array)] = "-Infinity"
    return data.tolist()
