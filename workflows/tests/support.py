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


# --- Typed values --------------------------------------------------------------------------------


def integer(value):
    return {"type": "integer", "integer": value}


def boolean(value):
    return {"type": "boolean", "flag": value}


def choice(value):
    return {"type": "choice", "id": value}


def json_value(value):
    return {"type": "json", "json": value}


def blob_value(sha256):
    return {"type": "blob", "blob_id": sha256}


def piped(cid, source, target, source_port="output", target_port="input", route="success"):
    """A connection that carries `source_port` of `source` to `target_port` of `target`."""
    return connect(cid, source, target, route=route, source_port=source_port, target_port=target_port)


# --- Driving a workflow blob ----------------------------------------------------------------------


def workflow_blob(client, org, alias="flows-blob", visibility="private"):
    """Create a workflow blob through the API; its first revision (a ready draft) as a Channel."""
    answer = client.post(
        f"/v1/orgs/{org.alias}/blobs",
        {"alias": alias, "type": "blobhub.compute.workflow", "visibility": visibility},
        format="json",
    )
    assert answer.status_code == 201, answer.content
    revision_id = client.get(f"/v1/blobs/{org.alias}/{alias}/revisions").json()["revisions"][0]["id"]
    return Channel(client, revision_id)


def _ok(answer):
    assert answer.status_code == 200, answer.content
    return answer.json()


def upload_definition(channel, alias, doc, category="workflow"):
    """Create (if needed) and upload a definition into the channel's draft revision."""
    if channel.query("download_definition", alias=alias).status_code != 200:
        _ok(channel.command("create_definition", alias=alias, category=category))
    return _ok(channel.command("upload_definition", alias=alias, definition=doc))


def ensure_session(channel, alias="main-session"):
    answer = channel.query("get_session", session_id=alias)
    if answer.status_code == 200:
        return answer.json()["session"]
    return _ok(channel.command("create_session", alias=alias))["session"]


def start_execution(channel, workflow, inputs=None, session="main-session"):
    """`create_execution` (tasks run inline in the fast suite); the execution as it is now."""
    ensure_session(channel, session)
    if isinstance(workflow, str):
        workflow = {"definition": workflow}
    answer = _ok(
        channel.command("create_execution", target={"session": session}, workflow=workflow, input_data=inputs or [])
    )
    return _ok(channel.query("get_execution", execution_id=answer["execution"]["id"]))["execution"]


def execution_events(channel, execution_id, **args):
    """Every stored event of an execution, oldest first (walks the cursor)."""
    events, cursor = [], None
    while True:
        page_args = {**args, "limit": 200, **({"cursor": cursor} if cursor else {})}
        page = _ok(channel.query("list_execution_events", execution_id=execution_id, **page_args))
        events.extend(page["execution_events"])
        cursor = page.get("cursor")
        if not cursor:
            return events


def commit(channel, comment="commit"):
    """Commit the channel's revision (the operation runs inline); the finished operation."""
    answer = channel.client.post(f"/v1/revisions/{channel.revision_id}/commit", {"comment": comment}, format="json")
    assert answer.status_code in (200, 201, 202), answer.content
    return _ok(channel.client.get(f"/v1/operations/{answer.json()['operation_id']}"))["operation"]
