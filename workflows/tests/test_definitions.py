"""Definition validation (API.md §3.1): every rule reports one precise JSON path.

Each case starts from a valid document and breaks exactly one thing, so the list of
reported paths is exactly the path of that thing: a rule that also blames an innocent
component, or points at the wrong one, fails here.
"""

import copy

import pytest

from workflows.definitions import validate
from workflows.tests.support import (
    approval_flow,
    choice,
    commit,
    component,
    connect,
    document,
    integer,
    number,
    piped,
    text,
    upload_definition,
    workflow_blob,
)


def valid_document():
    """start ─▶ shape ─▶ end, with the `order` input feeding shape."""
    return document(
        [
            component("start", "flow.start"),
            component("in", "flow.input", alias="order"),
            component("shape", "logic.transform", config={"expression": text("@")}),
            component("end", "flow.end"),
        ],
        [
            connect("c0", "start", "shape"),
            piped("c1", "in", "shape", "value", "input"),
            piped("c2", "shape", "end", "output", "result"),
        ],
    )


def _set(key, value):
    def change(doc):
        doc[key] = value

    return change


def _add_component(item):
    return lambda doc: doc["components"].append(item)


def _add_connection(item):
    return lambda doc: doc["connections"].append(item)


def _replace_shape(item):
    def change(doc):
        doc["components"][2] = item

    return change


def _set_port(index, key, value):
    def change(doc):
        doc["components"][2]["ports"][index][key] = value

    return change


def _add_port(port):
    return lambda doc: doc["components"][2]["ports"].append(port)


def _without_start(doc):
    doc["components"].pop(0)
    doc["connections"].pop(0)


def _without_input_alias(doc):
    del doc["components"][1]["alias"]


def _components_not_a_list(doc):
    doc["components"], doc["connections"] = {"start": {}}, []


def _connections_not_a_list(doc):
    doc["connections"] = {"c0": {}}


def _cycle(doc):
    doc["components"].append(component("again", "logic.transform", config={"expression": text("@")}))
    doc["connections"] += [connect("c3", "shape", "again"), connect("c4", "again", "shape")]


def _type_mismatch(doc):
    doc["components"] += [
        component("words", "logic.template", config={"template": text("hello")}),
        component("read", "data.blob_get"),
    ]
    doc["connections"] += [
        connect("c3", "start", "words"),
        connect("c4", "start", "read"),
        piped("c5", "words", "read"),
    ]


def _one_sided_port(doc):
    doc["connections"].append(
        {"id": "c3", "source_id": "shape", "target_id": "end", "route": "success", "source_port": "output"}
    )


CASES = [
    # (what is wrong, how the document is broken, the paths reported, in order)
    ("a document that is not an object", None, [""]),
    ("the document type is unknown", _set("type", "recipe_definition"), ["type"]),
    ("the version is unknown", _set("version", "2.0.0"), ["version"]),
    ("an unknown top-level field", _set("owner", "someone"), ["owner"]),
    ("components is not a list", _components_not_a_list, ["components", "components"]),
    ("connections is not a list", _connections_not_a_list, ["connections", "components[2]", "components[3]"]),
    ("a component that is not an object", _add_component("start"), ["components[4]"]),
    ("an unknown component field", lambda doc: doc["components"][2].update(colour="red"), ["components[2].colour"]),
    ("a bad position", lambda doc: doc["components"][0].update(position={"x": "left"}), ["components[0].position"]),
    ("an unknown component type", _add_component(component("mystery", "no.such")), ["components[4].type"]),
    ("a component id used twice", _add_component(component("shape", "flow.end")), ["components[4].id"]),
    (
        "a component alias used twice",
        _add_component(component("in2", "flow.input", alias="order")),
        ["components[4].alias"],
    ),
    (
        "a component alias with bad characters",
        lambda doc: doc["components"][1].update(alias="Order Now!"),
        ["components[1].alias"],
    ),
    (
        "a component alias that is a list",
        lambda doc: doc["components"][1].update(alias=["order"]),
        ["components[1].alias"],
    ),
    ("an unknown port route", _add_port({"category": "input", "route": "bogus"}), ["components[2].ports[1].route"]),
    ("an unknown port category", _add_port({"category": "weird", "route": "input"}), ["components[2].ports[1]"]),
    ("an unknown port field", _set_port(0, "colour", "red"), ["components[2].ports[0].colour"]),
    (
        "a port listed twice",
        _add_port({"category": "config", "route": "expression", "value": text("@")}),
        ["components[2].ports[1].route"],
    ),
    ("a config value of the wrong type", _set_port(0, "value", integer(3)), ["components[2].ports[0].value"]),
    ("a malformed typed value", _set_port(0, "value", {"type": "text"}), ["components[2].ports[0].value"]),
    (
        "a typed value whose payload has the wrong type",
        _set_port(0, "value", {"type": "text", "text": 7}),
        ["components[2].ports[0].value"],
    ),
    (
        "a typed value of an unknown type",
        _set_port(0, "value", {"type": "date", "date": "today"}),
        ["components[2].ports[0].value"],
    ),
    (
        "a typed value whose type is a list",
        _set_port(0, "value", {"type": ["text"], "text": "@"}),
        ["components[2].ports[0].value"],
    ),
    (
        "a typed value whose type is an object",
        _set_port(0, "value", {"type": {}, "text": "@"}),
        ["components[2].ports[0].value"],
    ),
    ("a required config port missing", lambda doc: doc["components"][2].update(ports=[]), ["components[2].ports"]),
    (
        "a choice outside its choices",
        _replace_shape(component("shape", "data.blob_put", config={"blob_type": choice("csv")})),
        ["components[2].ports[0].value"],
    ),
    (
        "a number below its minimum",
        _replace_shape(component("shape", "flow.delay", config={"seconds": number(-1)})),
        ["components[2].ports[0].value"],
    ),
    (
        "a number above its maximum",
        _replace_shape(component("shape", "flow.delay", config={"seconds": number(10**7)})),
        ["components[2].ports[0].value"],
    ),
    ("a connection that is not an object", _add_connection(["shape", "end"]), ["connections[3]"]),
    ("an unknown connection field", lambda doc: doc["connections"][0].update(weight=2), ["connections[0].weight"]),
    ("a connection id used twice", _add_connection(connect("c0", "start", "end")), ["connections[3].id"]),
    ("an unknown connection route", lambda doc: doc["connections"][0].update(route="maybe"), ["connections[0].route"]),
    (
        "a connection from a missing component",
        _add_connection(connect("c3", "ghost", "end")),
        ["connections[3].source_id"],
    ),
    (
        "a connection to a missing component",
        _add_connection(connect("c3", "shape", "ghost")),
        ["connections[3].target_id"],
    ),
    (
        "a connection source that is a list",
        lambda doc: doc["connections"][0].update(source_id=["start"]),
        ["connections[0].source_id"],
    ),
    (
        "a connection target that is a list",
        lambda doc: doc["connections"][0].update(target_id=["shape"]),
        ["connections[0].target_id"],
    ),
    (
        "an unknown source port",
        _add_connection(piped("c3", "shape", "end", "nope", "other")),
        ["connections[3].source_port"],
    ),
    (
        "an unknown target port",
        _add_connection(piped("c3", "in", "shape", "value", "nope")),
        ["connections[3].target_port"],
    ),
    ("a text output feeding a blob input", _type_mismatch, ["connections[5]"]),
    ("a source port without a target port", _one_sided_port, ["connections[3]"]),
    ("a component connected to itself", _add_connection(connect("c3", "shape", "shape")), ["connections[3]"]),
    ("a cycle", _cycle, ["connections[3]"]),
    (
        "a component nothing leads to",
        _add_component(component("lonely", "logic.transform", config={"expression": text("@")})),
        ["components[4]"],
    ),
    ("no flow.start", _without_start, ["components"]),
    ("two flow.start", _add_component(component("start2", "flow.start")), ["components"]),
    ("a flow.input without an alias", _without_input_alias, ["components[1].alias"]),
    (
        "an entry component with an incoming connection",
        _add_connection(connect("c3", "start", "in")),
        ["components[1]"],
    ),
]
IDS = [case[0] for case in CASES]


def broken(change):
    if change is None:
        return ["not", "an", "object"]
    doc = copy.deepcopy(valid_document())
    change(doc)
    return doc


def test_a_valid_document_has_no_problems():
    assert validate(valid_document()) == []
    assert validate(approval_flow()) == []


def test_a_playground_with_a_layout_is_valid():
    doc = valid_document()
    doc.update(type="playground_definition", layout={"zoom": 1})
    assert validate(doc) == []


@pytest.mark.parametrize(("what", "change", "paths"), CASES, ids=IDS)
def test_validate_reports_exactly_the_path_of(what, change, paths):
    problems = validate(broken(change))
    assert [problem.path for problem in problems] == paths
    assert all(problem.message for problem in problems)


def test_a_cycle_is_reported_on_a_connection_of_the_cycle_not_one_downstream_of_it():
    doc = valid_document()
    _cycle(doc)
    # c2 (shape → end) leaves the cycle: end only waits on it, so c2 is not part of it.
    doc["connections"].append(doc["connections"].pop(2))
    assert [problem.path for problem in validate(doc)] == ["connections[2]"]


def test_a_config_value_of_the_wrong_type_is_not_also_reported_as_missing():
    doc = valid_document()
    doc["components"][2]["ports"][0]["value"] = integer(3)
    problems = validate(doc)
    assert len(problems) == 1
    assert "text" in problems[0].message and "integer" in problems[0].message


# --- Through the data channel ------------------------------------------------------------------


@pytest.fixture
def channel(client_for, org, write_key):
    return workflow_blob(client_for(key=write_key), org)


UPLOADABLE = [case for case in CASES if case[1] not in (None,) and case[0] != "the document type is unknown"]


@pytest.mark.django_db
@pytest.mark.parametrize(("what", "change", "paths"), UPLOADABLE, ids=[case[0] for case in UPLOADABLE])
def test_check_definition_reports_exactly_the_path_of(channel, what, change, paths):
    upload_definition(channel, "flow", broken(change))
    answer = channel.query("check_definition", alias="flow")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "invalid"
    assert [event["path"] for event in body["events"]] == paths
    assert all(event["level"] == "error" and event["message"] for event in body["events"])


@pytest.mark.django_db
def test_check_definition_calls_a_valid_document_valid(channel):
    upload_definition(channel, "flow", valid_document())
    assert channel.query("check_definition", alias="flow").json() == {"status": "valid", "events": []}


@pytest.mark.django_db
def test_a_new_definition_starts_empty_and_invalid_for_lack_of_a_start(channel):
    channel.command("create_definition", alias="flow", category="workflow")
    answer = channel.query("check_definition", alias="flow").json()
    assert answer == {
        "status": "invalid",
        "events": [{"path": "components", "message": answer["events"][0]["message"], "level": "error"}],
    }


@pytest.mark.django_db
@pytest.mark.parametrize("document_", [["a", "list"], {"type": "recipe_definition"}, {"version": "1.0.1"}])
def test_upload_refuses_a_document_that_is_not_a_definition(channel, document_):
    channel.command("create_definition", alias="flow", category="workflow")
    answer = channel.command("upload_definition", alias="flow", definition=document_)
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "invalid_request_body"
    assert body["details"] == [{"path": "definition.type", "message": "Bad type."}]
    assert channel.query("download_definition", alias="flow").json()["definition"]["components"] == []


@pytest.mark.django_db
def test_check_definition_of_a_missing_definition_is_a_404(channel):
    answer = channel.query("check_definition", alias="nothing-here")
    assert answer.status_code == 404 and answer.json()["error"] == "definition_not_found"


# --- At commit -------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_commit_refuses_an_invalid_definition_and_names_the_path(channel, org):
    upload_definition(channel, "good", valid_document())
    bad = valid_document()
    bad["connections"].append(connect("c3", "shape", "ghost"))
    upload_definition(channel, "bad", bad)

    operation = commit(channel)

    assert operation["status"] == "failed"
    assert operation["error"]["code"] == "validation_failed"
    assert [item["path"] for item in operation["error"]["details"]] == ["definitions.bad.connections[3].target_id"]
    assert "definitions.bad.connections[3].target_id" in operation["error"]["message"]
    revision = channel.client.get(f"/v1/revisions/{channel.revision_id}").json()["revision"]
    assert revision["status"] == "failed" and revision["phase"] == "draft"
    assert revision["failed_operation"] == operation["id"]
    assert channel.client.get(f"/v1/blobs/{org.alias}/flows-blob").json()["blob"]["default_revision_id"] is None


@pytest.mark.django_db(transaction=True)
def test_a_revision_whose_commit_failed_commits_once_the_definition_is_fixed(channel, org):
    bad = valid_document()
    bad["components"][2]["type"] = "no.such"
    upload_definition(channel, "flow", bad)
    assert commit(channel)["status"] == "failed"

    upload_definition(channel, "flow", valid_document())
    operation = commit(channel)

    assert operation["status"] == "completed"
    revision = channel.client.get(f"/v1/revisions/{channel.revision_id}").json()["revision"]
    assert revision["phase"] == "commit" and revision["status"] == "ready"
    assert (
        channel.client.get(f"/v1/blobs/{org.alias}/flows-blob").json()["blob"]["default_revision_id"]
        == channel.revision_id
    )
