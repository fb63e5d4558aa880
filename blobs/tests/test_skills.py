"""The Skills Protocol blob methods over JSON-RPC 2.0 at /v1/rpc (API.md §5)."""

import base64
import hashlib
import json
import os

import pytest
from rest_framework.test import APIClient

from blobs.models import StoredObject
from blobs.store import canonical_json
from orgs import tokens
from orgs.tests.factories import MembershipFactory, OrganizationFactory, make_api_key

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("file_store")]

URL = "/v1/rpc"


def as_key(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def send(client: APIClient, body, status: int = 200):
    raw = body if isinstance(body, str) else json.dumps(body)
    response = client.post(URL, data=raw, content_type="application/json")
    assert response.status_code == status, response.content
    return response.json() if response.content else None


def call(client: APIClient, method: str, params, request_id=1) -> dict:
    response = send(client, {"jsonrpc": "2.0", "method": method, "params": params, "id": request_id})
    assert response["jsonrpc"] == "2.0" and response["id"] == request_id
    return response


def result(client: APIClient, method: str, params) -> dict:
    response = call(client, method, params)
    assert "error" not in response, response
    return response["result"]


def error(client: APIClient, method: str, params, code: int) -> dict:
    response = call(client, method, params)
    assert "result" not in response, response
    assert response["error"]["code"] == code, response
    assert isinstance(response["error"]["message"], str) and response["error"]["message"]
    return response["error"]


@pytest.fixture
def rpc(write_key) -> APIClient:
    return as_key(write_key)


# --- create_blob and read_blob ------------------------------------------------------------------


def test_a_text_blob_is_created_and_read_back_whole(rpc):
    text = "Hello, Skills! ünïcödé ✓"

    created = result(rpc, "create_blob", {"content": text, "kind": "text"})

    assert created == {
        "blob_id": "blob:" + hashlib.sha256(text.encode()).hexdigest(),
        "size_bytes": len(text.encode()),
    }
    read = result(rpc, "read_blob", {"blob_id": created["blob_id"], "mode": "full"})
    assert read == {"content": text, "truncated": False, "kind": "text", "size_bytes": len(text.encode())}


def test_head_and_tail_samples_are_cut_to_max_bytes_and_flagged_truncated(rpc):
    text = "".join(f"line {number}\n" for number in range(1000))
    blob_id = result(rpc, "create_blob", {"content": text, "kind": "text"})["blob_id"]

    head = result(rpc, "read_blob", {"blob_id": blob_id, "mode": "sample_head", "max_bytes": 20})
    tail = result(rpc, "read_blob", {"blob_id": blob_id, "mode": "sample_tail", "max_bytes": 20})
    default = result(rpc, "read_blob", {"blob_id": blob_id})
    whole = result(rpc, "read_blob", {"blob_id": blob_id, "mode": "sample_head", "max_bytes": len(text)})

    assert head == {"content": text[:20], "truncated": True, "kind": "text", "size_bytes": len(text)}
    assert tail["content"] == text[-20:] and tail["truncated"] is True
    assert default["content"] == text[:2000] and default["truncated"] is True
    assert whole["content"] == text and whole["truncated"] is False


def test_samples_never_split_a_utf8_character(rpc):
    text = "€" * 10  # three bytes each
    blob_id = result(rpc, "create_blob", {"content": text, "kind": "text"})["blob_id"]

    for max_bytes in range(1, 31):
        head = result(rpc, "read_blob", {"blob_id": blob_id, "mode": "sample_head", "max_bytes": max_bytes})
        tail = result(rpc, "read_blob", {"blob_id": blob_id, "mode": "sample_tail", "max_bytes": max_bytes})
        assert head["content"] == "€" * (max_bytes // 3), max_bytes
        assert tail["content"] == "€" * (max_bytes // 3), max_bytes
        assert head["truncated"] is tail["truncated"] is (max_bytes < 30)


def test_a_json_blob_is_stored_canonically_and_read_as_its_text(rpc):
    value = {"z": [1, 2, {"b": None, "a": "é"}], "a": True}

    created = result(rpc, "create_blob", {"content": value, "kind": "json"})

    assert created["blob_id"] == "blob:" + hashlib.sha256(canonical_json(value)).hexdigest()
    read = result(rpc, "read_blob", {"blob_id": created["blob_id"], "mode": "full"})
    assert read["kind"] == "json" and json.loads(read["content"]) == value
    assert read["content"] == canonical_json(value).decode()


def test_the_same_json_has_the_same_id_on_the_stepflow_and_skills_surfaces(rpc, write_key):
    value = {"b": [1, 2], "a": {"y": "x"}}
    stepflow = as_key(write_key).post(
        "/api/v1/blobs", data='{"data": {"a": {"y": "x"}, "b": [1, 2]}}', content_type="application/json"
    )

    created = result(rpc, "create_blob", {"content": value, "kind": "json"})

    assert created["blob_id"] == "blob:" + stepflow.json()["blobId"]
    assert StoredObject.objects.count() == 1
    # Either surface reads what the other stored.
    assert result(rpc, "read_blob", {"blob_id": stepflow.json()["blobId"], "mode": "full"})["kind"] == "json"
    assert as_key(write_key).get(f"/api/v1/blobs/{stepflow.json()['blobId']}").json()["data"] == value


def test_a_binary_blob_travels_as_base64(rpc):
    data = os.urandom(1000)

    created = result(rpc, "create_blob", {"content": base64.b64encode(data).decode(), "kind": "binary"})

    assert created == {"blob_id": "blob:" + hashlib.sha256(data).hexdigest(), "size_bytes": 1000}
    full = result(rpc, "read_blob", {"blob_id": created["blob_id"], "mode": "full"})
    head = result(rpc, "read_blob", {"blob_id": created["blob_id"], "mode": "sample_head", "max_bytes": 10})
    tail = result(rpc, "read_blob", {"blob_id": created["blob_id"], "mode": "sample_tail", "max_bytes": 10})
    assert base64.b64decode(full["content"]) == data and full["kind"] == "binary"
    assert base64.b64decode(head["content"]) == data[:10] and head["truncated"] is True
    assert base64.b64decode(tail["content"]) == data[-10:]


def test_a_text_blob_reads_as_binary_with_its_content_type_on_the_stepflow_surface(rpc, write_key):
    blob_id = result(rpc, "create_blob", {"content": "plain words", "kind": "text"})["blob_id"].removeprefix("blob:")

    answer = as_key(write_key).get(f"/api/v1/blobs/{blob_id}").json()

    assert answer["blobType"] == "binary"
    assert base64.b64decode(answer["data"]) == b"plain words"
    assert answer["contentType"] == "text/plain; charset=utf-8"


def test_a_full_read_above_the_limit_is_refused_with_the_limit(settings, rpc):
    settings.SKILLS_READ_FULL_MAX_BYTES = 100
    blob_id = result(rpc, "create_blob", {"content": "x" * 101, "kind": "text"})["blob_id"]

    refused = error(rpc, "read_blob", {"blob_id": blob_id, "mode": "full"}, -32013)

    assert refused["data"] == {"error": "blob_too_large", "status": 413, "limit": 100, "size_bytes": 101}
    assert "sample_head" in refused["message"]
    sample = result(rpc, "read_blob", {"blob_id": blob_id, "mode": "sample_tail", "max_bytes": 100})
    assert sample["truncated"] is True


def test_a_blob_the_org_does_not_hold_is_not_found(rpc):
    other = as_key(make_api_key(OrganizationFactory(), "write")[1])
    blob_id = result(other, "create_blob", {"content": "theirs", "kind": "text"})["blob_id"]

    for unknown in (blob_id, "blob:" + "0" * 64):
        refused = error(rpc, "read_blob", {"blob_id": unknown}, -32004)
        assert refused["data"]["error"] == "blob_not_found"


# --- JSON-RPC errors ---------------------------------------------------------------------------


def test_a_body_that_is_not_json_is_a_parse_error(rpc):
    for body in ('{"jsonrpc": "2.0", "method": "read_blob"', "NaN", "", "[" * 100_000 + "]" * 100_000):
        response = send(rpc, body)
        assert response["error"]["code"] == -32700 and response["id"] is None


@pytest.mark.parametrize(
    "request_body",
    [
        1,
        '"read_blob"',
        {"method": "read_blob", "id": 1},
        {"jsonrpc": "1.0", "method": "read_blob", "id": 1},
        {"jsonrpc": "2.0", "method": 5, "id": 1},
        {"jsonrpc": "2.0", "method": "read_blob", "id": {"x": 1}},
        {"jsonrpc": "2.0", "method": "read_blob", "params": "x", "id": 1},
        {"jsonrpc": "2.0", "method": "read_blob", "params": {}, "id": 1, "extra": 1},
        '{"jsonrpc": "2.0", "method": "read_blob", "id": 1e400}',
    ],
)
def test_a_malformed_request_is_an_invalid_request(rpc, request_body):
    response = send(rpc, request_body)

    assert response["error"]["code"] == -32600
    assert response["id"] == (1 if isinstance(request_body, dict) and request_body.get("id") == 1 else None)


def test_an_unknown_method_is_method_not_found(rpc):
    refused = error(rpc, "delete_blob", {}, -32601)

    assert "delete_blob" in refused["message"]
    assert refused["data"]["methods"] == ["create_blob", "read_blob"]


@pytest.mark.parametrize(
    ("method", "params", "fragment"),
    [
        ("create_blob", {"kind": "text"}, "content"),
        ("create_blob", {"content": "x"}, "kind"),
        ("create_blob", {"content": "x", "kind": "yaml"}, "kind"),
        ("create_blob", {"content": "x", "kind": "text", "name": "a"}, "name"),
        ("create_blob", {"content": 5, "kind": "text"}, "string"),
        ("create_blob", {"content": "%%%", "kind": "binary"}, "base64"),
        ("create_blob", ["x", "text"], "by name"),
        ("read_blob", {}, "blob_id"),
        ("read_blob", {"blob_id": "blob:xyz"}, "blob_id"),
        ("read_blob", {"blob_id": "blob:" + "0" * 64, "mode": "middle"}, "mode"),
        ("read_blob", {"blob_id": "blob:" + "0" * 64, "max_bytes": 0}, "max_bytes"),
        ("read_blob", {"blob_id": "blob:" + "0" * 64, "max_bytes": "10"}, "max_bytes"),
        ("read_blob", {"blob_id": "blob:" + "0" * 64, "max_bytes": 10**9}, "max_bytes"),
    ],
)
def test_bad_params_are_invalid_params_with_a_clear_message(rpc, method, params, fragment):
    refused = error(rpc, method, params, -32602)

    assert refused["message"].startswith("Invalid params: ")
    assert fragment in refused["message"]
    assert not StoredObject.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        '{"jsonrpc": "2.0", "id": "\\ud800", "method": "create_blob", "params": {"content": "hi", "kind": "text"}}',
        '{"jsonrpc": "2.0", "id": 1, "method": "x\\ud800", "params": {}}',
        '{"jsonrpc": "2.0", "id": 1, "method": "create_blob", "params": {"content": "hi", "kind": "text", "\\ud800": 1}}',
        '{"jsonrpc": "2.0", "id": 1, "method": "create_blob", "params": {"content": "hi", "kind": "\\ud800"}}',
        '{"jsonrpc": "2.0", "id": 1, "method": "create_blob", "params": {"content": "\\ud800", "kind": "json"}}',
        '{"jsonrpc": "2.0", "id": 1, "method": "read_blob", "params": {}, "\\udfff": 1}',
    ],
)
def test_a_request_holding_a_lone_surrogate_is_an_invalid_request_and_runs_nothing(rpc, body):
    # Echoed in the answer (the id, a method or member name, a value), it could not be encoded.
    response = send(rpc, body)

    assert response["error"]["code"] == -32600 and "surrogate" in response["error"]["message"]
    assert response["id"] == (None if '"id": "' in body else 1)
    assert not StoredObject.objects.exists()


def test_a_nul_in_content_is_text_and_stored(rpc):
    created = result(rpc, "create_blob", {"content": "a\u0000b", "kind": "text"})

    assert created["size_bytes"] == 3


def test_a_json_number_past_the_float_range_is_invalid_params(rpc):
    body = '{"jsonrpc": "2.0", "method": "create_blob", "params": {"kind": "json", "content": [1e400]}, "id": 1}'

    refused = send(rpc, body)["error"]

    assert refused["code"] == -32602 and "non-finite" in refused["message"]
    assert refused["data"]["details"][0]["path"] == "content"
    assert not StoredObject.objects.exists()


def test_a_batch_answers_each_request_and_skips_notifications(rpc):
    responses = send(
        rpc,
        [
            {"jsonrpc": "2.0", "method": "create_blob", "params": {"content": "one", "kind": "text"}, "id": "a"},
            {"jsonrpc": "2.0", "method": "create_blob", "params": {"content": "two", "kind": "text"}},
            {"jsonrpc": "2.0", "method": "nope", "params": {}, "id": "b"},
            7,
        ],
    )

    assert [response["id"] for response in responses] == ["a", "b", None]
    assert responses[0]["result"]["size_bytes"] == 3
    assert responses[1]["error"]["code"] == -32601
    assert responses[2]["error"]["code"] == -32600
    assert StoredObject.objects.count() == 2, "the notification ran too"


def test_an_empty_or_oversized_batch_is_one_invalid_request(rpc):
    empty = send(rpc, [])
    oversized = send(rpc, [{"jsonrpc": "2.0", "method": "read_blob", "params": {}, "id": n} for n in range(51)])

    for response in (empty, oversized):
        assert response["error"]["code"] == -32600 and response["id"] is None


def test_notifications_alone_get_no_content(rpc):
    client_call = {"jsonrpc": "2.0", "method": "create_blob", "params": {"content": "quiet", "kind": "text"}}

    assert send(rpc, client_call, status=204) is None
    assert send(rpc, [client_call, {**client_call, "method": "nope"}], status=204) is None
    assert StoredObject.objects.count() == 1


# --- Who may call ------------------------------------------------------------------------------


def test_a_caller_without_valid_credentials_gets_a_401_with_a_json_rpc_error():
    body = {"jsonrpc": "2.0", "method": "read_blob", "params": {}, "id": 1}

    for client in (APIClient(), as_key("bh_000000000000_" + "x" * 43)):
        response = send(client, body, status=401)
        assert response["error"]["code"] == -32001 and response["id"] is None
        assert response["error"]["data"] == {"error": "unauthenticated", "status": 401}


def test_an_anonymous_token_or_a_read_key_may_not_create(read_key):
    anonymous = APIClient()
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_pair()['access_token']}")

    for client in (anonymous, as_key(read_key)):
        refused = error(client, "create_blob", {"content": "x", "kind": "text"}, -32003)
        assert refused["data"]["error"] == "access_denied"
    assert not StoredObject.objects.exists()


def test_a_read_key_reads_what_its_org_created(rpc, read_key):
    blob_id = result(rpc, "create_blob", {"content": "for readers", "kind": "text"})["blob_id"]

    assert result(as_key(read_key), "read_blob", {"blob_id": blob_id, "mode": "full"})["content"] == "for readers"


def test_a_user_in_several_orgs_must_name_one(admin_user):
    second = MembershipFactory(user=admin_user).org
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_pair(user=admin_user)['access_token']}")

    refused = error(client, "create_blob", {"content": "x", "kind": "text"}, -32000)
    assert refused["data"]["error"] == "organization_required"

    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {tokens.issue_pair(user=admin_user)['access_token']}",
        HTTP_X_BLOBHUB_ORG=second.alias,
    )
    assert result(client, "create_blob", {"content": "x", "kind": "text"})["size_bytes"] == 1


def test_other_methods_than_post_are_refused_as_json_rpc(rpc):
    response = rpc.get(URL)

    assert response.status_code == 405
    assert response.json()["error"]["code"] == -32005 and response.json()["id"] is None


def test_the_web_consoles_session_writes_to_both_content_surfaces_with_its_csrf_token():
    from django.test import Client

    member = MembershipFactory(role="write")
    console = Client(enforce_csrf_checks=True)
    console.force_login(member.user)
    console.get("/console/")  # sets the csrftoken cookie, as for the console's script
    token = console.cookies["csrftoken"].value
    rpc = {"jsonrpc": "2.0", "id": 1, "method": "create_blob", "params": {"content": "hi", "kind": "text"}}

    for path, body in (("/v1/rpc", rpc), ("/api/v1/blobs", {"data": {"a": 1}})):
        refused = console.post(path, json.dumps(body), content_type="application/json")
        assert refused.status_code == 403, (path, refused.content)
        written = console.post(path, json.dumps(body), content_type="application/json", HTTP_X_CSRFTOKEN=token)
        assert written.status_code == 200 and "error" not in written.json(), (path, written.content)
