"""The built-in components of API.md §3.1 (http.request and workflow.call live beside)."""

import json
import re
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError

from workflows.components.base import Component, ComponentError, Port, register

MAX_DELAY_SECONDS = 3600


def _search(expression: str, data: Any) -> Any:
    try:
        return jmespath.search(expression, data)
    except JMESPathError as exc:
        raise ComponentError("expression_error", f"The JMESPath expression failed: {exc}") from None


def _check_expression(expression: str) -> None:
    try:
        jmespath.compile(expression)
    except JMESPathError as exc:
        raise ComponentError("expression_error", f"The JMESPath expression is invalid: {exc}") from None


@register
class FlowStart(Component):
    type = "flow.start"
    entry = True


@register
class FlowInput(Component):
    type = "flow.input"
    entry = True
    config = {"value": Port("any"), "required": Port("boolean", default=False)}
    outputs = {"value": Port("any")}


@register
class FlowEnd(Component):
    type = "flow.end"
    pure = True
    any_input_routes = True

    def run(self, ctx, config, inputs):
        return {}


@register
class Transform(Component):
    type = "logic.transform"
    pure = True
    config = {"expression": Port("text", required=True)}
    inputs = {"input": Port("any")}
    outputs = {"output": Port("any")}

    def run(self, ctx, config, inputs):
        _check_expression(config["expression"])
        return {"output": _search(config["expression"], inputs.get("input"))}


@register
class Condition(Component):
    type = "logic.condition"
    pure = True
    config = {"expression": Port("text", required=True)}
    inputs = {"input": Port("any")}
    outputs = {"output": Port("any")}

    def run(self, ctx, config, inputs):
        _check_expression(config["expression"])
        value = inputs.get("input")
        if not _search(config["expression"], value):
            raise ComponentError("condition_false", f"The condition {config['expression']!r} is false.")
        return {"output": value}


PLACEHOLDER = re.compile(r"\{\{\s*(.+?)\s*\}\}")


@register
class Template(Component):
    """Text with `{{ jmespath }}` placeholders: substitution only, no code runs."""

    type = "logic.template"
    pure = True
    config = {"template": Port("text", required=True)}
    inputs = {"input": Port("any")}
    outputs = {"output": Port("text")}

    def run(self, ctx, config, inputs):
        data = inputs.get("input")

        def substitute(match: re.Match) -> str:
            value = _search(match.group(1), data)
            if value is None:
                return ""
            return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)

        return {"output": PLACEHOLDER.sub(substitute, config["template"])}


@register
class Delay(Component):
    type = "flow.delay"
    config = {"seconds": Port("float", required=True, minimum=0, maximum=MAX_DELAY_SECONDS)}
    inputs = {"input": Port("any")}
    outputs = {"output": Port("any")}

    @classmethod
    def timeout_for(cls, config: dict) -> float:
        return float(config.get("seconds", 0)) + 5.0

    def run(self, ctx, config, inputs):
        ctx.sleep(float(config["seconds"]))
        return {"output": inputs.get("input")}


@register
class Fail(Component):
    type = "flow.fail"
    pure = True
    config = {"message": Port("text", default="The workflow failed.")}
    inputs = {"input": Port("any")}

    def run(self, ctx, config, inputs):
        raise ComponentError("failed", config.get("message") or "The workflow failed.")


@register
class BlobPut(Component):
    type = "data.blob_put"
    config = {"blob_type": Port("choice", default="data", choices=("data", "binary"))}
    inputs = {"input": Port("any")}
    outputs = {"output": Port("blob")}

    def run(self, ctx, config, inputs):
        value = inputs.get("input")
        if config.get("blob_type") == "binary":
            import base64
            import binascii

            if not isinstance(value, str):
                raise ComponentError("invalid_input", "A binary blob's input is base64 text.")
            try:
                return {"output": ctx.put_blob(base64.b64decode(value, validate=True), kind="binary")}
            except binascii.Error:
                raise ComponentError("invalid_input", "The input is not valid base64.") from None
        return {"output": ctx.blobs.write_json(value)}


@register
class BlobGet(Component):
    type = "data.blob_get"
    inputs = {"input": Port("blob")}
    outputs = {"output": Port("any")}

    def run(self, ctx, config, inputs):
        data = ctx.get_blob(inputs.get("input") or {})
        try:
            return {"output": json.loads(data)}
        except ValueError:
            import base64

            return {"output": base64.b64encode(data).decode()}


@register
class StateGet(Component):
    type = "session.state_get"
    config = {"key": Port("text", required=True)}
    outputs = {"output": Port("any")}

    def run(self, ctx, config, inputs):
        return {"output": ctx.state_get(config["key"])}


@register
class StateSet(Component):
    type = "session.state_set"
    config = {"key": Port("text", required=True)}
    inputs = {"input": Port("any")}
    outputs = {"output": Port("any")}

    def run(self, ctx, config, inputs):
        ctx.state_set(config["key"], inputs.get("input"))
        return {"output": inputs.get("input")}


@register
class ObjectGet(Component):
    type = "session.object_get"
    config = {"alias": Port("text", required=True)}
    outputs = {"output": Port("any")}

    def run(self, ctx, config, inputs):
        return {"output": ctx.object_get(config["alias"])}


@register
class ObjectPut(Component):
    type = "session.object_put"
    config = {"alias": Port("text", required=True)}
    inputs = {"input": Port("any")}
    outputs = {"output": Port("any")}

    def run(self, ctx, config, inputs):
        ctx.object_put(config["alias"], inputs.get("input"))
        return {"output": inputs.get("input")}
