from django.apps import AppConfig


class BlobsConfig(AppConfig):
    name = "blobs"

    def ready(self) -> None:
        from blobhub import health, server_tuning
        from blobs.content import asgi_streaming

        # /healthz asks the configured backend itself (file or S3, with its endpoint and
        # addressing settings), so it checks exactly what the store will use.
        health.CHECKS["storage"] = check_storage
        # Blob uploads and downloads may be gigabytes: see the module for what daphne lacks.
        asgi_streaming.install()
        # WebSocket fan-out: many small writes (see the module).
        server_tuning.install()


def check_storage() -> None:
    from blobs.storage import backend

    backend().check()
