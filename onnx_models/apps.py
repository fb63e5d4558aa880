from django.apps import AppConfig


class OnnxModelsConfig(AppConfig):
    name = "onnx_models"
    verbose_name = "ONNX models"

    def ready(self) -> None:
        from blobs import registry
        from onnx_models import component  # noqa: F401  (registers the onnx.infer component)
        from onnx_models.commands import ENGINE

        registry.register(ENGINE)
