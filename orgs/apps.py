from django.apps import AppConfig


class OrgsConfig(AppConfig):
    name = "orgs"
    verbose_name = "Organizations and access"

    def ready(self) -> None:
        from orgs import schema  # noqa: F401  (registers the OpenAPI auth extensions)
