"""workflow.call: run another definition as a child execution and finish with its output."""

from django.conf import settings

from workflows.components.base import Component, ComponentError, Port, register


@register
class WorkflowCall(Component):
    type = "workflow.call"
    config = {"workflow": Port("json", required=True)}
    inputs = {"input": Port("json")}
    outputs = {"output": Port("json")}
    timeout_seconds = 30.0

    def run(self, ctx, config, inputs):
        from blobhub.api.errors import ApplicationError
        from workflows import engine, values
        from workflows.services.executions import execution_create, principal_of_execution

        execution = ctx.execution
        if execution.depth + 1 > settings.WORKFLOW_MAX_CALL_DEPTH:
            raise ComponentError("call_depth_exceeded", f"workflow.call nests at most {settings.WORKFLOW_MAX_CALL_DEPTH} deep.")
        arguments = inputs.get("input") or {}
        if not isinstance(arguments, dict):
            raise ComponentError("invalid_input", "The input is an object {alias: value}.")
        input_data = [{"alias": alias, "value": values.wrap("any", value)} for alias, value in arguments.items()]
        try:
            execution_create(
                principal=principal_of_execution(execution),
                revision=execution.revision,
                session=execution.session,
                workflow=config["workflow"],
                input_data=input_data,
                depth=execution.depth + 1,
                parent_step=ctx.step,
            )
        except ApplicationError as exc:
            raise ComponentError(exc.code, exc.message) from None
        return engine.WAIT_FOR_CHILD
