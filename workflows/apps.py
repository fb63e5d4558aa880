from django.apps import AppConfig


class WorkflowsConfig(AppConfig):
    name = "workflows"

    def ready(self) -> None:
        from blobs import registry, store
        from workflows import components  # noqa: F401  (registers the built-in components)
        from workflows.commands import ENGINE
        from workflows.models import Execution, ExecutionObject, SessionObject

        registry.register(ENGINE)
        from workflows.realtime import register_targets

        register_targets()
        # Objects that sessions and executions hold stay alive for the garbage collector.
        store.register_reference_source(lambda: SessionObject.objects.values("object_id"))
        store.register_reference_source(lambda: Execution.objects.values("definition_object_id"))
        store.register_reference_source(lambda: ExecutionObject.objects.values("object_id"))
        # What a step put stays readable by its org while the execution exists.
        store.register_org_reference_source(lambda org: ExecutionObject.objects.filter(org=org).values("object_id"))
