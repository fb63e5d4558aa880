"""The Stepflow BlobService REST surface at /api/v1/blobs (API.md §5)."""

import base64
import hashlib
import json
import os

import pytest
from rest_framework.test import APIClient

from blobs import store
from blobs.content.views import wants_octet_stream
from blobs.models import StoredObject
from blobs.store import canonical_json
from orgs import tokens
from orgs.tests.factories import MembershipFactory, OrganizationFactory, make_api_key

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("file_store")]

URL = "/api/v1/blobs"
MIB = 1024 * 1024


def as_key(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=key)
    return client


def as_user(user, org_header: str | None = None) -> APIClient:
    client = APIClient()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {tokens.issue_pair(user=user)['access_token']}"}
    if org_header is not None:
        headers["HTTP_X_BLOBHUB_ORG"] = org_header
    client.credentials(**headers)
    return client


def put_json(client: APIClient, body, **headers):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **headers)


def put_binary(client: APIClient, data: bytes, filename: str | None = None):
    headers = {"HTTP_X_BLOB_FILENAME": filename} if filename is not None else {}
    return client.post(URL, data=data, content_type="application/octet-stream", **headers)


def get_raw(client: APIClient, blob_id: str):
    return client.get(f"{URL}/{blob_id}", HTTP_ACCEPT="application/octet-stream")


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def assert_stepflow_error(response, status: int, code: str) -> dict:
    """Stepflow's ErrorResponse `{code, message}` with this project's envelope beside it."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == status
    assert isinstance(body["message"], str) and body["message"]
    assert body["status"] == "error" and body["error"] == code
    assert "Traceback" not in response.content.decode()
    return body


@pytest.fixture
def writer(write_key) -> APIClient:
    return as_key(write_key)


# --- Round trips -----------------------------------------------------------------------------


def test_json_data_round_trips_under_the_id_the_store_gives_it(writer, org):
    value = {"name": "Ada", "tags": ["a", "b"], "nested": {"z": 1, "a": None}}

    stored = put_json(writer, {"data": value})

    assert stored.status_code == 200
    blob_id = stored.json()["blobId"]
    assert stored.json() == {"blobId": blob_id}
    assert blob_id == hashlib.sha256(canonical_json(value)).hexdigest() == store.put_json(value).sha256
    answer = writer.get(f"{URL}/{blob_id}")
    assert answer.status_code == 200
    assert answer.json() == {"data": value, "blobType": "data", "blobId": blob_id, "contentType": "application/json"}


def test_the_same_json_gets_one_id_whatever_its_key_order_or_spacing(writer):
    first = writer.post(URL, data='{"data": {"b": 1, "a": [1, 2]}}', content_type="application/json")
    second = writer.post(URL, data='{"data":{"a":[1,2],"b":1},"blobType":"data"}', content_type="application/json")

    assert first.json()["blobId"] == second.json()["blobId"]
    assert StoredObject.objects.count() == 1


def test_a_flow_blob_keeps_its_type_and_filename(writer):
    flow = {"schema": "https://stepflow.org/schemas/v1/flow.json", "steps": []}

    stored = put_json(writer, {"data": flow, "blobType": "flow", "filename": "flow.yaml"})

    blob_id = stored.json()["blobId"]
    assert stored.json() == {"blobId": blob_id, "filename": "flow.yaml"}
    answer = writer.get(f"{URL}/{blob_id}").json()
    assert answer["blobType"] == "flow" and answer["filename"] == "flow.yaml" and answer["data"] == flow


def test_json_null_is_data_like_any_other_value(writer):
    stored = put_json(writer, {"data": None, "filename": None})

    assert stored.status_code == 200
    assert stored.json()["blobId"] == hashlib.sha256(b"null").hexdigest()
    answer = writer.get(f"{URL}/{stored.json()['blobId']}").json()
    assert answer["data"] is None and answer["blobType"] == "data"


def test_a_binary_upload_reads_back_as_the_same_bytes_under_their_sha256(writer):
    data = os.urandom(300_000)

    stored = put_binary(writer, data, filename="report.pdf")

    assert stored.status_code == 200
    blob_id = hashlib.sha256(data).hexdigest()
    assert stored.json() == {"blobId": blob_id, "filename": "report.pdf"}
    raw = get_raw(writer, blob_id)
    assert raw.status_code == 200
    assert body_of(raw) == data
    assert raw["Content-Type"] == "application/octet-stream"
    assert raw["x-blob-type"] == "binary"
    assert raw["Content-Length"] == str(len(data))
    assert raw["Content-Disposition"] == 'attachment; filename="report.pdf"'
    answer = writer.get(f"{URL}/{blob_id}").json()
    assert answer == {
        "data": base64.b64encode(data).decode(),
        "blobType": "binary",
        "blobId": blob_id,
        "filename": "report.pdf",
        "contentType": "application/pdf",
    }


def test_a_small_binary_upload_without_a_name_reads_back_raw(writer):
    stored = put_binary(writer, b"\x00\x01tiny")

    blob_id = stored.json()["blobId"]
    assert stored.json() == {"blobId": blob_id}
    raw = get_raw(writer, blob_id)
    assert body_of(raw) == b"\x00\x01tiny"
    assert "Content-Disposition" not in raw


def test_binary_sent_as_base64_json_gets_the_id_of_its_bytes(writer):
    data = os.urandom(5000)

    stored = put_json(writer, {"data": base64.b64encode(data).decode(), "blobType": "binary", "filename": "x.bin"})

    assert stored.json()["blobId"] == hashlib.sha256(data).hexdigest()
    assert body_of(get_raw(writer, stored.json()["blobId"])) == data
    assert put_binary(writer, data).json()["blobId"] == stored.json()["blobId"]


def test_a_json_blob_read_raw_is_its_canonical_serialization(writer):
    blob_id = put_json(writer, {"data": {"b": [1, 2.5, "é"], "a": True}}).json()["blobId"]

    raw = get_raw(writer, blob_id)

    assert body_of(raw) == '{"a":true,"b":[1,2.5,"é"]}'.encode()
    assert raw["x-blob-type"] == "data"


def test_a_non_ascii_filename_survives_the_header_and_the_content_disposition(writer):
    name = "résumé “final”.txt"

    stored = put_binary(writer, b"text", filename=name.encode().decode("latin-1"))

    assert stored.json()["filename"] == name
    raw = get_raw(writer, stored.json()["blobId"])
    assert raw["Content-Disposition"] == "attachment; filename*=utf-8''r%C3%A9sum%C3%A9%20%E2%80%9Cfinal%E2%80%9D.txt"


def test_a_binary_upload_may_exceed_the_general_body_limit(settings, writer):
    data = os.urandom(settings.MAX_REQUEST_BODY_BYTES + MIB)

    stored = put_binary(writer, data)

    assert stored.status_code == 200, stored.content
    assert body_of(get_raw(writer, stored.json()["blobId"])) == data


@pytest.mark.parametrize(
    ("accept", "raw"),
    [
        ("", False),
        ("*/*", False),
        ("application/json", False),
        ("application/octet-stream", True),
        ("application/octet-stream, application/json", True),
        ("application/json, application/octet-stream;q=0.5", False),
        ("application/json;q=0.5, application/octet-stream", True),
        ("application/octet-stream;q=0", False),
    ],
)
def test_the_accept_header_chooses_raw_bytes_or_json(accept, raw):
    assert wants_octet_stream(accept) is raw


# --- Refusals --------------------------------------------------------------------------------


def test_a_malformed_id_is_a_400(writer):
    for bad in ("abc", "z" * 64, "0" * 63, "0" * 65, "blob:" + "0" * 64):
        assert_stepflow_error(writer.get(f"{URL}/{bad}"), 400, "invalid_blob_id")


def test_an_absent_id_is_a_404(writer):
    body = assert_stepflow_error(writer.get(f"{URL}/{'0' * 64}"), 404, "blob_not_found")
    assert "0" * 64 in body["message"]


def test_an_uppercase_id_names_the_same_blob(writer):
    blob_id = put_json(writer, {"data": [1]}).json()["blobId"]

    assert writer.get(f"{URL}/{blob_id.upper()}").json()["blobId"] == blob_id


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"data": ', "Invalid JSON"),
        ('{"data": NaN}', "Invalid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"blobType": "data"}', "data"),
        ('{"data": 1, "blobType": "yaml"}', "blobType"),
        ('{"data": 1, "extra": true}', "extra"),
        ('{"data": 1, "filename": 7}', "filename"),
        ('{"data": "not base64!", "blobType": "binary"}', "base64"),
        ('{"data": 42, "blobType": "binary"}', "base64"),
        ('{"data": [1], "blobType": "flow"}', "flow"),
        ('{"data": 1, "filename": "a\\nb"}', "control"),
        ('{"data": {"x": 1e400}}', "non-finite"),
        ('{"data": "\\ud800"}', "surrogate"),
    ],
)
def test_a_bad_json_upload_is_a_400_that_says_why(writer, body, fragment):
    response = writer.post(URL, data=body, content_type="application/json")

    error = assert_stepflow_error(response, 400, "invalid_request_body")
    assert fragment in error["message"] + json.dumps(error["details"])
    assert not StoredObject.objects.exists()


def test_a_json_upload_over_the_general_body_limit_is_a_413(settings, writer):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    response = put_json(writer, {"data": "x" * 2000})

    assert_stepflow_error(response, 413, "payload_too_large")


def test_a_binary_upload_over_the_blob_limit_is_a_413_and_stores_nothing(settings, writer):
    settings.BLOB_MAX_BYTES = 100_000

    response = put_binary(writer, os.urandom(150_000))

    assert_stepflow_error(response, 413, "payload_too_large")
    assert not StoredObject.objects.exists()
    assert not any((settings.DATA_DIR / "tmp").iterdir())


def test_a_declared_body_over_the_route_limit_is_refused_before_it_is_read(settings, writer):
    settings.REQUEST_BODY_LIMITS_BY_PREFIX = {URL: 1000}

    response = put_binary(writer, b"x" * 1001)

    assert_stepflow_error(response, 413, "payload_too_large")


def test_a_json_answer_of_a_large_blob_is_refused_in_favour_of_raw_bytes(settings, writer):
    settings.BLOB_JSON_READ_MAX_BYTES = 1000
    blob_id = put_binary(writer, os.urandom(2000)).json()["blobId"]

    error = assert_stepflow_error(writer.get(f"{URL}/{blob_id}"), 406, "not_acceptable")

    assert "application/octet-stream" in error["message"]
    assert get_raw(writer, blob_id).status_code == 200


def test_the_routes_are_absent_when_the_blob_api_is_disabled(settings, writer):
    settings.BLOB_API_ENABLED = False

    assert_stepflow_error(put_json(writer, {"data": 1}), 404, "not_found")
    assert_stepflow_error(writer.get(f"{URL}/{'0' * 64}"), 404, "not_found")


# --- Corruption ------------------------------------------------------------------------------


def test_a_corrupted_large_object_is_never_served_complete(writer, file_store):
    data = os.urandom(3 * MIB)
    blob_id = put_binary(writer, data).json()["blobId"]
    path = file_store / blob_id[:2] / blob_id[2:4] / blob_id
    with open(path, "r+b") as handle:
        handle.seek(MIB)
        handle.write(b"\x00\xff\x00")

    raw = get_raw(writer, blob_id)
    received = bytearray()
    with pytest.raises(store.CorruptObject):
        for chunk in raw.streaming_content:
            received.extend(chunk)

    assert raw["Content-Length"] == str(len(data))
    assert len(received) < len(data)
    assert_stepflow_error(writer.get(f"{URL}/{blob_id}"), 500, "object_corrupted")


def test_a_corrupted_small_object_is_a_500(writer):
    blob_id = put_binary(writer, b"small bytes").json()["blobId"]
    StoredObject.objects.filter(sha256=blob_id).update(inline=b"other bytes")

    assert_stepflow_error(get_raw(writer, blob_id), 500, "object_corrupted")
    assert_stepflow_error(writer.get(f"{URL}/{blob_id}"), 500, "object_corrupted")


# --- Who may do what -------------------------------------------------------------------------


def test_another_orgs_key_gets_404_for_an_id_only_the_first_org_stored(writer):
    data = os.urandom(100_000)
    blob_id = put_binary(writer, data).json()["blobId"]
    outsider = as_key(make_api_key(OrganizationFactory(), "write")[1])

    assert_stepflow_error(outsider.get(f"{URL}/{blob_id}"), 404, "blob_not_found")
    assert_stepflow_error(get_raw(outsider, blob_id), 404, "blob_not_found")

    # Storing the same bytes gives the outsider its own hold, and only then access.
    assert put_binary(outsider, data).json()["blobId"] == blob_id
    assert body_of(get_raw(outsider, blob_id)) == data


def test_a_read_key_reads_but_may_not_write(writer, read_key):
    blob_id = put_json(writer, {"data": 1}).json()["blobId"]
    reader = as_key(read_key)

    assert reader.get(f"{URL}/{blob_id}").status_code == 200
    assert_stepflow_error(put_json(reader, {"data": 2}), 403, "access_denied")
    assert_stepflow_error(put_binary(reader, b"x"), 403, "access_denied")
    assert StoredObject.objects.count() == 1


def test_callers_without_credentials_or_with_an_anonymous_token_are_refused(writer):
    blob_id = put_json(writer, {"data": 1}).json()["blobId"]
    nobody = APIClient()
    anonymous = APIClient()
    anonymous.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_pair()['access_token']}")
    broken = as_key("bh_000000000000_" + "x" * 43)

    assert_stepflow_error(nobody.get(f"{URL}/{blob_id}"), 401, "unauthenticated")
    assert_stepflow_error(put_json(nobody, {"data": 1}), 401, "unauthenticated")
    assert_stepflow_error(broken.get(f"{URL}/{blob_id}"), 401, "unauthenticated")
    assert_stepflow_error(anonymous.get(f"{URL}/{blob_id}"), 403, "access_denied")
    assert_stepflow_error(put_json(anonymous, {"data": 1}), 403, "access_denied")


def test_a_blob_scoped_key_cannot_use_the_content_store(org, writer):
    from blobs.tests.factories import BlobFactory

    blob_id = put_json(writer, {"data": 1}).json()["blobId"]
    scoped = as_key(make_api_key(org, "write", blob=BlobFactory(org=org))[1])

    assert_stepflow_error(scoped.get(f"{URL}/{blob_id}"), 403, "access_denied")
    assert_stepflow_error(put_json(scoped, {"data": 1}), 403, "access_denied")


def test_a_key_naming_another_org_in_the_header_is_refused(writer):
    other = OrganizationFactory()

    assert_stepflow_error(put_json(writer, {"data": 1}, HTTP_X_BLOBHUB_ORG=other.alias), 403, "access_denied")


def test_a_user_with_one_org_needs_no_header(org, admin_user, writer):
    blob_id = put_json(writer, {"data": "shared"}).json()["blobId"]

    assert as_user(admin_user).get(f"{URL}/{blob_id}").json()["data"] == "shared"


def test_a_user_in_several_orgs_names_one_by_alias_or_id(org, admin_user):
    second = MembershipFactory(user=admin_user, role="write").org

    vague = put_json(as_user(admin_user), {"data": 1})
    by_alias = put_json(as_user(admin_user, second.alias), {"data": 1})
    by_id = as_user(admin_user, str(second.id)).get(f"{URL}/{by_alias.json()['blobId']}")

    error = assert_stepflow_error(vague, 400, "organization_required")
    assert "X-BlobHub-Org" in error["message"]
    assert by_alias.status_code == 200 and by_id.status_code == 200
    assert_stepflow_error(
        as_user(admin_user, org.alias).get(f"{URL}/{by_alias.json()['blobId']}"), 404, "blob_not_found"
    )


def test_a_user_naming_an_org_they_are_not_in_is_refused(org, user):
    MembershipFactory(user=user, role="admin")

    assert_stepflow_error(put_json(as_user(user, org.alias), {"data": 1}), 403, "access_denied")
    assert_stepflow_error(put_json(as_user(user, ""), {"data": 1}), 400, "invalid_request_body")


def test_a_read_member_may_not_write(org, user):
    MembershipFactory(org=org, user=user, role="read")

    assert_stepflow_error(put_json(as_user(user), {"data": 1}), 403, "access_denied")


# --- Under the ASGI handler ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_an_asgi_download_streams_the_object_chunk_by_chunk(org, write_key):
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    data = os.urandom(3 * MIB + 1)
    blob_id = (await sync_to_async(store.put_bytes)(data, org=org)).sha256
    headers = {"X-API-Key": write_key, "Accept": "application/octet-stream"}

    response = await AsyncClient().get(f"{URL}/{blob_id}", headers=headers)

    assert response.status_code == 200
    # An asynchronous iterator: Django would read a synchronous one whole before sending.
    assert response.is_async
    chunks = [chunk async for chunk in response.streaming_content]
    assert len(chunks) > 1 and b"".join(chunks) == data
