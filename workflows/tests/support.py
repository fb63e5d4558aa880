"""Helpers to build definition documents and drive the data channel in tests."""


def component(cid, type, *, name=None, alias=None, config=None):
    ports = [{"category": "config", "route": route, "value": value} for route, value in (config or {}).items()]
    item = {"id": cid, "category": type.split(".")[0], "type": type, "name": name or cid, "position": {"x": 0, "y": 0}, "ports": ports}
    if alias:
        item["alias"] = alias
    return item


def connect(cid, source, target, route="success", source_port=None, target_port=None):
    item = {"id": cid, "source_id": source, "target_id": target, "route": route}
    if source_port is not None:
        item["source_port"] = source_port
        item["target_port"] = target_port
    return item


def text(value):
    return {"type": "text", "text": value}


def number(value):
    return {"type": "float", "float": value}


def document(components, connections):
    return {"type": "workflow_definition", "version": "1.0.1", "components": components, "connections": connections}


def approval_flow():
    """start → input → transform → condition → end, with the condition's failure route to end."""
    return document(
        [
            component("start", "flow.start"),
            component("amount", "flow.input", alias="order"),
            component("total", "logic.transform", config={"expression": text("items[].price | sum(@)")}),
            component("check", "logic.condition", config={"expression": text("@ < `100`")}),
            component("end", "flow.end"),
            component("rejected", "logic.template", config={"template": text("rejected: {{ message }}")}),
        ],
        [
            connect("c1", "amount", "total", source_port="value", target_port="input"),
            connect("c0", "start", "total"),
            connect("c2", "total", "check", source_port="output", target_port="input"),
            connect("c3", "check", "end", source_port="output", target_port="approved"),
            connect("c4", "check", "rejected", route="failure", source_port="error", target_port="input"),
            connect("c5", "rejected", "end", source_port="output", target_port="rejected"),
        ],
    )


class Channel:
    """Calls `data/query` and `data/command` of one revision."""

    def __init__(self, client, revision_id):
        self.client, self.revision_id = client, revision_id

    def query(self, command, **args):
        return self.client.post(f"/v1/revisions/{self.revision_id}/data/query", {"command": command, **args}, format="json")

    def command(self, command, **args):
        return self.client.post(f"/v1/revisions/{self.revision_id}/data/command", {"command": command, **args}, format="json")
