"""Small real ONNX models and archives, built with onnx.helper (IR 10: onnxruntime reads it)."""

import io
import tarfile

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def affine_model(padding: int = 0) -> bytes:
    """y = x * W + b over a [batch, 3] float input (batch is symbolic).

    `padding` adds an initializer of that many random floats that the graph ignores, to
    make a model (and its archive) as large as a test needs.
    """
    weights = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    bias = np.array([0.5, 0.5, 0.5], dtype=np.float32)
    extra = [numpy_helper.from_array(np.random.default_rng(7).standard_normal(padding).astype(np.float32), "padding")] if padding else []
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "W"], ["scaled"]), helper.make_node("Add", ["scaled", "b"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", weights.shape[-1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", weights.shape[-1]])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b"), *extra],
    )
    model = helper.make_model(graph, producer_name="blobhub-tests", opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    helper.set_model_props(model, {"purpose": "tests"})
    return model.SerializeToString()


def broken_model() -> bytes:
    """Parses, but the checker refuses it: a node reads an input nobody defines."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "ghost"], ["y"])],
        "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model.SerializeToString()


def archive(members: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            info = tarfile.TarInfo(symlink)
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
    return buffer.getvalue()


def model_archive(model: bytes | None = None) -> bytes:
    return archive({"model.onnx": affine_model() if model is None else model})

