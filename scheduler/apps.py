from django.apps import AppConfig


class SchedulerConfig(AppConfig):
    name = "scheduler"

    def ready(self) -> None:
        from blobs import registry
        from scheduler.commands import ENGINE

        registry.register(ENGINE)
