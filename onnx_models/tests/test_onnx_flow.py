"""An ONNX model from upload to inference, as a user does it (file store; tasks run inline)."""

import hashlib
import io
import json
import time
from urllib.parse import urlsplit

import numpy as np
import onnxruntime
import pytest
from asgiref.sync import async_to_sync

from onnx_models.tests.models import affine_model, archive, broken_model, model_archive
from workflows.tests.support import Channel, component, connect, document

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def onnx_blob(client_for, org, write_key):
    client = client_for(key=write_key)
    client.post(f"/v1/orgs/{org.alias}/blobs", {"alias": "my-model", "type": "blobhub.model.onnx"}, format="json")
    revision_id = client.get(f"/v1/blobs/{org.alias}/my-model/revisions").json()["revisions"][0]["id"]
    return client, org, Channel(client, revision_id)


def put_part(client, url, data):
    parts = urlsplit(url)
    return client.generic("PUT", f"{parts.path}?{parts.query}", data, content_type="application/octet-stream")


def upload_multipart(client, channel, data: bytes) -> dict:
    answer = channel.command("initiate_upload", path="model.tar.gz", size=len(data)).json()
    offsets = [(part["offset"], part["size"]) for part in answer["operation"]["parts"]]
    assert offsets[0][0] == 0 and sum(size for _, size in offsets) == len(data)
    assert all(a + n == b for (a, n), (b, _) in zip(offsets, offsets[1:]))  # the parts tile the archive
    hashes = []
    for part in answer["operation"]["parts"]:
        response = put_part(client, part["upload"]["url"], data[part["offset"] : part["offset"] + part["size"]])
        assert response.status_code == 200, response.content
        hashes.append({"hash": response["ETag"]})
    completed = channel.command("complete_upload", operation_id=answer["operation_id"], parts=hashes)
    assert completed.status_code == 200, completed.json()
    return client.get(f"/v1/operations/{answer['operation_id']}").json()["operation"]


async def _get_streamed(url: str) -> list[bytes]:
    from django.test import AsyncClient

    response = await AsyncClient().get(url)
    assert response.status_code == 200 and response.is_async
    return [chunk async for chunk in response.streaming_content]


def test_a_model_goes_from_multipart_upload_to_inference_and_a_workflow(onnx_blob, settings, monkeypatch):
    client, org, channel = onnx_blob
    settings.ONNX_PART_BYTES = 5 * 1024 * 1024
    model = affine_model(padding=1_600_000)  # ~6.4 MB: the archive takes two parts
    data = model_archive(model)
    operation = upload_multipart(client, channel, data)
    assert operation["status"] == "completed", operation
    assert len(operation["parts"]) == 2

    described = channel.query("describe").json()
    assert {c["path"] for c in described["components"]} == {"model.tar.gz", "model.onnx", "model.json"}
    assert described["model"]["ir_version"] == 10
    assert described["model"]["inputs"] == [{"name": "x", "type": "tensor", "elem_type": "float", "shape": ["batch", 3]}]
    assert described["model"]["op_types"] == {"Add": 1, "Mul": 1}
    assert described["model"]["parameters"] == 1_600_006
    assert described["model"]["metadata_props"] == {"purpose": "tests"}

    initiated = channel.query("initiate_download", path="model.onnx").json()["operation"]
    downloaded = b"".join(
        b"".join(client.get(urlsplit(p["download"]["url"]).path + "?" + urlsplit(p["download"]["url"]).query).streaming_content)
        for p in initiated["parts"]
    )
    assert hashlib.sha256(downloaded).digest() == hashlib.sha256(model).digest()
    # Under ASGI a part streams chunk by chunk (Django would read a synchronous iterator whole).
    first = initiated["parts"][0]["download"]["url"]
    streamed = async_to_sync(_get_streamed)(urlsplit(first).path + "?" + urlsplit(first).query)
    assert len(streamed) > 1 and b"".join(streamed) == model[: initiated["parts"][0]["size"]]

    commit = client.post(f"/v1/revisions/{channel.revision_id}/commit", {}, format="json").json()["operation_id"]
    assert client.get(f"/v1/operations/{commit}").json()["operation"]["status"] == "completed"

    from onnx_models import inference

    monkeypatch.setattr(inference, "LOAD_FROM_FILE_ABOVE", 1024)  # onnxruntime reads this model from a file
    small = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    answer = channel.query("infer", inputs={"x": {"dtype": "float32", "shape": [4, 3], "data": small.tolist()}})
    assert not list((settings.DATA_DIR / "tmp").glob("onnx-session-*"))  # the file went with the load
    assert answer.status_code == 200, answer.json()
    expected = onnxruntime.InferenceSession(model).run(None, {"x": small})[0]
    got = np.array(answer.json()["outputs"]["y"]["data"], dtype=np.float32)
    assert answer.json()["outputs"]["y"]["shape"] == [4, 3]
    assert np.array_equal(got, expected)


def test_the_direct_upload_download_and_workflow_call(onnx_blob, client_for, write_key):
    client, org, channel = onnx_blob
    data = model_archive()
    response = client.generic(
        "POST", f"/v1/revisions/{channel.revision_id}/data/command", data, content_type="application/octet-stream",
        HTTP_X_REQUEST_BODY=json.dumps({"command": "upload", "path": "model.tar.gz", "size": len(data)}),
    )
    assert response.status_code == 200, response.content
    operation = client.get(f"/v1/operations/{response.json()['operation_id']}").json()["operation"]
    assert operation["status"] == "completed", operation
    binary = client.generic(
        "POST", f"/v1/revisions/{channel.revision_id}/data/query", json.dumps({"command": "download", "path": "model.onnx"}),
        content_type="application/json", HTTP_ACCEPT="application/octet-stream",
    )
    assert b"".join(binary.streaming_content) == affine_model()
    assert json.loads(binary["X-Response-Body"])["status"] == "success"
    refused = channel.query("infer", inputs={"x": [[1.0, 2.0, 3.0]]})
    assert refused.status_code == 409  # drafts do not infer
    client.post(f"/v1/revisions/{channel.revision_id}/commit", {}, format="json")
    answer = channel.query("infer", inputs={"x": [[1.0, 2.0, 3.0]]}).json()
    assert answer["outputs"]["y"]["data"] == [[1.5, 4.5, 9.5]]

    for bad, code in [({"x": [[1.0, 2.0]]}, "wrong_shape"), ({"nope": [[1.0]]}, "wrong_inputs"),
                      ({"x": {"dtype": "int64", "shape": [1, 3], "data": [1, 2, 3]}}, "wrong_dtype")]:
        failed = channel.query("infer", inputs=bad)
        assert failed.status_code == 400 and failed.json()["error"] == code

    flows = client_for(key=write_key)
    flows.post(f"/v1/orgs/{org.alias}/blobs", {"alias": "model-flows", "type": "blobhub.compute.workflow"}, format="json")
    flow_channel = Channel(flows, flows.get(f"/v1/blobs/{org.alias}/model-flows/revisions").json()["revisions"][0]["id"])
    flow_channel.command("create_definition", alias="predict", category="workflow")
    definition = document(
        [
            component("start", "flow.start"),
            component("x", "flow.input", alias="features"),
            component("model", "onnx.infer", config={"model": {"type": "json", "json": {"org": org.alias, "blob": "my-model", "revision": "default"}}}),
            component("end", "flow.end"),
        ],
        [connect("a", "x", "model", source_port="value", target_port="input"), connect("b", "model", "end", source_port="output", target_port="y"), connect("c", "start", "model")],
    )
    assert flow_channel.command("upload_definition", alias="predict", definition=definition).status_code == 200
    flow_channel.command("create_session", alias="predictions")
    execution = flow_channel.command(
        "create_execution", target={"session": "predictions"}, workflow={"definition": "predict"},
        input_data=[{"alias": "features", "value": {"type": "json", "json": {"x": [[1.0, 1.0, 1.0]]}}}],
    ).json()["execution"]
    result = flow_channel.query("get_execution", execution_id=execution["id"]).json()["execution"]
    assert result["status"] == "completed", result
    assert result["output"]["y"]["json"]["y"]["data"] == [[1.5, 2.5, 3.5]]


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"plain bytes, not gzip", "not_gzip"),
        (__import__("gzip").compress(b"gzip but no tar inside" * 100), "not_tar"),
        (archive({}), "no_member"),
        (archive({"model.onnx": b"a", "extra.txt": b"b"}), "several_members"),
        (archive({}, symlink="model.onnx"), "not_regular_file"),
        (archive({"weights.onnx": b"x"}), "wrong_name"),
        (archive({"../model.onnx": b"x"}), "path_escape"),
        (archive({"model.onnx": b"not a protobuf at all \xff\xff"}), "not_onnx"),
        (archive({"model.onnx": broken_model()}), "checker_failed"),
    ],
)
def test_every_bad_archive_is_refused_with_its_reason(onnx_blob, data, reason):
    client, org, channel = onnx_blob
    operation = upload_multipart(client, channel, data)
    assert operation["status"] == "failed"
    assert operation["error"]["code"] == reason, operation["error"]
    commit = client.post(f"/v1/revisions/{channel.revision_id}/commit", {}, format="json").json()["operation_id"]
    assert client.get(f"/v1/operations/{commit}").json()["operation"]["status"] == "failed"  # no processed model


def test_a_model_over_the_size_limit_is_refused(onnx_blob, settings):
    client, org, channel = onnx_blob
    settings.ONNX_MAX_MODEL_BYTES = 100
    operation = upload_multipart(client, channel, model_archive())
    assert operation["error"]["code"] == "too_large"


def test_tampered_and_expired_part_urls_are_refused(onnx_blob, settings):
    client, org, channel = onnx_blob
    data = model_archive()
    part = channel.command("initiate_upload", path="model.tar.gz", size=len(data)).json()["operation"]["parts"][0]
    url = part["upload"]["url"]
    tampered = url.replace("size=", "size=1").replace("signature=", "signature=0")
    assert put_part(client, tampered, data).status_code == 403
    resized = url.replace(f"size={len(data)}", f"size={len(data) + 1}")
    assert put_part(client, resized, data).status_code == 403
    settings.ONNX_TRANSFER_URL_TTL_SECONDS = -1
    expired = channel.command("initiate_upload", path="model.tar.gz", size=len(data)).json()["operation"]["parts"][0]
    assert put_part(client, expired["upload"]["url"], data).status_code == 403
    assert put_part(client, url, data).status_code == 200


def test_cancel_upload_aborts_and_cleans_up(onnx_blob, settings):
    client, org, channel = onnx_blob
    data = model_archive()
    answer = channel.command("initiate_upload", path="model.tar.gz", size=len(data)).json()
    put_part(client, answer["operation"]["parts"][0]["upload"]["url"], data)
    from onnx_models import transfers

    assert transfers.parts_dir(answer["operation_id"]).exists()
    cancelled = channel.command("cancel_upload", operation_id=answer["operation_id"]).json()["operation"]
    assert cancelled["status"] == "cancelled"
    assert not transfers.parts_dir(answer["operation_id"]).exists()
    refused = channel.command("complete_upload", operation_id=answer["operation_id"], parts=[{"hash": "x"}])
    assert refused.status_code == 409


def test_parts_land_in_place_in_any_order_and_a_part_sent_again_replaces_it(onnx_blob, settings):
    client, org, channel = onnx_blob
    settings.ONNX_PART_BYTES = 5 * 1024 * 1024
    model = affine_model(padding=3_000_000)
    data = model_archive(model)
    answer = channel.command("initiate_upload", path="model.tar.gz", size=len(data)).json()
    parts = answer["operation"]["parts"]
    assert len(parts) == 3

    def body(part):
        return data[part["offset"] : part["offset"] + part["size"]]

    hashes = {}
    for index in (2, 1):  # the last parts first
        hashes[index] = put_part(client, parts[index]["upload"]["url"], body(parts[index]))["ETag"]
    first = parts[0]["upload"]["url"]
    assert put_part(client, first, body(parts[0])[:100]).status_code == 400  # short: refused, the part is missing
    ordered = lambda: [{"hash": hashes.get(i, '"none"')} for i in range(3)]  # noqa: E731
    refused = channel.command("complete_upload", operation_id=answer["operation_id"], parts=ordered())
    assert refused.status_code == 400 and refused.json()["error"] == "part_mismatch"

    wrong = put_part(client, first, bytes(parts[0]["size"]))  # the right size, other bytes
    assert wrong.status_code == 200
    hashes[0] = put_part(client, first, body(parts[0]))["ETag"]  # sent again: replaces them
    assert hashes[0] != wrong["ETag"]
    completed = channel.command("complete_upload", operation_id=answer["operation_id"], parts=ordered())
    assert completed.status_code == 200, completed.json()
    operation = client.get(f"/v1/operations/{answer['operation_id']}").json()["operation"]
    assert operation["status"] == "completed", operation
    assert operation["result"]["archive_sha256"] == hashlib.sha256(data).hexdigest()
    assert channel.query("describe").json()["model"]["parameters"] == 3_000_006
