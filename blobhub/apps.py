from django.apps import AppConfig


class BlobhubConfig(AppConfig):
    name = "blobhub"
    verbose_name = "Platform"
