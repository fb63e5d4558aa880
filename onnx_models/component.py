"""onnx.infer: run a committed ONNX model from a workflow."""

from workflows.components.base import Component, ComponentError, Port, register


@register
class OnnxInfer(Component):
    type = "onnx.infer"
    config = {"model": Port("json", required=True)}
    inputs = {"input": Port("json")}
    outputs = {"output": Port("json")}
    timeout_seconds = 60.0

    def run(self, ctx, config, inputs):
        from blobhub.api.errors import ApplicationError
        from blobs import selectors
        from blobs.models import BlobType, Revision
        from onnx_models import inference
        from workflows.services.executions import principal_of_execution

        reference = config["model"]
        if not isinstance(reference, dict) or set(reference) != {"org", "blob", "revision"}:
            raise ComponentError("invalid_config", "model is {org, blob, revision}.")
        principal = principal_of_execution(ctx.execution)
        try:
            blob = selectors.blob_get(principal, str(reference["org"]), str(reference["blob"]))
            revision = selectors.revision_in_blob(principal, blob, str(reference["revision"]))
        except ApplicationError as exc:
            raise ComponentError(exc.code, exc.message) from None
        if blob.type != BlobType.ONNX or revision.phase == Revision.Phase.DRAFT:
            raise ComponentError("invalid_config", "model names a committed revision of an ONNX blob.")
        try:
            return {"output": inference.infer(revision, inputs.get("input"))}
        except inference.InferenceError as exc:
            raise ComponentError(exc.code, exc.message) from None
