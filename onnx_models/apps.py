from django.apps import AppConfig


class OnnxModelsConfig(AppConfig):
    name = "onnx_models"
