"""An ONNX model from upload to inference, as a user does it (file store; tasks run inline)."""

import hashlib
import json
import os
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import numpy as np
import onnxruntime
import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone
from onnx import TensorProto, helper
from rest_framework.test import APIClient

from blobs.models import Operation
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


def upload_direct(client, channel, data: bytes) -> dict:
    response = client.generic(
        "POST", f"/v1/revisions/{channel.revision_id}/data/command", data, content_type="application/octet-stream",
        HTTP_X_REQUEST_BODY=json.dumps({"command": "upload", "path": "model.tar.gz", "size": len(data)}),
    )
    assert response.status_code == 200, response.content
    return client.get(f"/v1/operations/{response.json()['operation_id']}").json()["operation"]


def test_the_direct_upload_download_and_workflow_call(onnx_blob, client_for, write_key):
    client, org, channel = onnx_blob
    operation = upload_direct(client, channel, model_archive())
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

    execution = flow_channel.command(
        "create_execution", target={"session": "predictions"}, workflow={"definition": "predict"},
        input_data=[{"alias": "features", "value": {"type": "json", "json": {"x": [["NaN", 1.0, 1.0]]}}}],
    ).json()["execution"]
    result = flow_channel.query("get_execution", execution_id=execution["id"]).json()["execution"]
    assert result["status"] == "completed", result  # a step's output is JSON: NaN is a string in it
    assert result["output"]["y"]["json"]["y"]["data"] == [["NaN", 2.5, 3.5]]


def unary_model(op_type: str, domain: str = "") -> bytes:
    """y = op(x) over one float (an operator of another domain needs its own opset)."""
    graph = helper.make_graph(
        [helper.make_node(op_type, ["x"], ["y"], domain=domain)], "unary",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return model.SerializeToString()


def committed_model(client, channel, model: bytes) -> Channel:
    assert upload_direct(client, channel, model_archive(model))["status"] == "completed"
    client.post(f"/v1/revisions/{channel.revision_id}/commit", {}, format="json")
    return channel


def test_infer_answers_nan_and_infinities_as_strings_and_reads_them_back(onnx_blob):
    client, org, channel = onnx_blob
    committed_model(client, channel, affine_model())
    answer = channel.query("infer", inputs={"x": [[1e39, "NaN", "-Infinity"]]})  # 1e39 overflows a float32
    assert answer.status_code == 200, answer.content
    assert answer.json()["outputs"]["y"] == {"dtype": "float32", "shape": [1, 3], "data": [["Infinity", "NaN", "-Infinity"]]}


def test_infer_answers_the_minus_infinity_of_a_model(onnx_blob):
    client, org, channel = onnx_blob
    committed_model(client, channel, unary_model("Log"))
    answer = channel.query("infer", inputs={"x": [0.0]})
    assert answer.status_code == 200, answer.content
    assert answer.json()["outputs"]["y"]["data"] == ["-Infinity"]


def test_infer_refuses_an_integer_no_tensor_holds(onnx_blob):
    client, org, channel = onnx_blob
    committed_model(client, channel, affine_model())
    answer = channel.query("infer", inputs={"x": [[10**400, 1.0, 1.0]]})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_input", answer.content


def test_infer_refuses_a_model_onnxruntime_cannot_load(onnx_blob):
    client, org, channel = onnx_blob
    committed_model(client, channel, unary_model("Frobnicate", domain="com.example"))  # the checker lets it pass
    answer = channel.query("infer", inputs={"x": [1.0]})
    assert answer.status_code == 400 and answer.json()["error"] == "inference_failed", answer.content
    assert "cannot load the model" in answer.json()["message"]


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
    absent = "7d4f6a9e-0000-4000-8000-000000000000"  # absent is a 403, as for any resource
    for refused in (
        channel.command("complete_upload", operation_id=absent, parts=[{"hash": "x"}]),
        channel.command("cancel_upload", operation_id=absent),
    ):
        assert refused.status_code == 403 and refused.json()["error"] == "access_denied"


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


def get_part(client, url):
    parts = urlsplit(url)
    return client.get(f"{parts.path}?{parts.query}")


def test_a_public_reader_downloads_in_parts_without_writing_rows(client_for, org, admin_user):
    client = client_for(user=admin_user)
    client.post(f"/v1/orgs/{org.alias}/blobs", {"alias": "pub-model", "type": "blobhub.model.onnx", "visibility": "public"}, format="json")
    channel = Channel(client, client.get(f"/v1/blobs/{org.alias}/pub-model/revisions").json()["revisions"][0]["id"])
    committed_model(client, channel, affine_model())
    assert client.post(f"/v1/revisions/{channel.revision_id}/snapshot", {}, format="json").status_code in (200, 201)
    token = client_for().get("/v1/auth/core/anonymous").json()["access_token"]
    anonymous = Channel(client_for(token=token), channel.revision_id)
    rows = Operation.objects.count()
    for _ in range(5):
        answer = anonymous.query("initiate_download", path="model.onnx")
        assert answer.status_code == 200, answer.content
    assert Operation.objects.count() == rows  # tokens are free to mint: reads must not grow the table
    operation = answer.json()["operation"]
    assert operation["result"]["sha256"] == hashlib.sha256(affine_model()).hexdigest()
    [part] = operation["parts"]
    assert b"".join(get_part(APIClient(), part["download"]["url"]).streaming_content) == affine_model()


def test_download_part_urls_refuse_tampering_expiry_and_an_object_the_revision_no_longer_holds(onnx_blob, settings):
    client, org, channel = onnx_blob
    upload_direct(client, channel, model_archive())
    url = channel.query("initiate_download", path="model.onnx").json()["operation"]["parts"][0]["download"]["url"]
    assert get_part(client, url).status_code == 200
    assert get_part(client, url.replace("offset=0", "offset=1")).status_code == 403
    other = str(uuid.uuid4())
    assert get_part(client, url.replace(channel.revision_id, other)).status_code == 403
    settings.ONNX_TRANSFER_URL_TTL_SECONDS = -1
    expired = channel.query("initiate_download", path="model.onnx").json()["operation"]["parts"][0]["download"]["url"]
    assert get_part(client, expired).status_code == 403
    upload_direct(client, channel, model_archive(affine_model(padding=10)))  # the draft's model.onnx changes
    assert get_part(client, url).status_code == 403


def test_a_revision_holds_at_most_four_open_uploads(onnx_blob):
    client, org, channel = onnx_blob
    opened = [channel.command("initiate_upload", path="model.tar.gz", size=100).json()["operation_id"] for _ in range(4)]
    refused = channel.command("initiate_upload", path="model.tar.gz", size=100)
    assert refused.status_code == 400 and refused.json()["error"] == "limit_exceeded"
    assert refused.json()["limit"] == {"id": "onnx.open_uploads_per_revision", "value": 4, "held": 4}
    channel.command("cancel_upload", operation_id=opened[0])
    assert channel.command("initiate_upload", path="model.tar.gz", size=100).status_code == 200


def test_the_open_upload_limit_holds_for_direct_uploads_and_a_refused_body_is_not_kept(onnx_blob, settings, tmp_path):
    client, _, channel = onnx_blob
    settings.DATA_DIR = tmp_path
    data = model_archive()
    for _ in range(4):
        assert channel.command("initiate_upload", path="model.tar.gz", size=len(data)).status_code == 200
    refused = client.generic(
        "POST", f"/v1/revisions/{channel.revision_id}/data/command", data, content_type="application/octet-stream",
        HTTP_X_REQUEST_BODY=json.dumps({"command": "upload", "path": "model.tar.gz", "size": len(data)}),
    )
    assert refused.status_code == 400 and refused.json()["error"] == "limit_exceeded"
    assert Operation.objects.filter(type="upload").count() == 4
    assert not list((tmp_path / "tmp").glob("onnx-upload-*"))


def test_completed_uploads_waiting_for_a_worker_do_not_expire(onnx_blob, settings, tmp_path, monkeypatch):
    from onnx_models import tasks

    client, _, channel = onnx_blob
    settings.DATA_DIR = tmp_path
    queued = []  # the workers are behind (or down): process_upload waits in the broker
    monkeypatch.setattr(tasks.process_upload, "delay", queued.append)
    data = model_archive()
    answer = channel.command("initiate_upload", path="model.tar.gz", size=len(data)).json()
    part = put_part(client, answer["operation"]["parts"][0]["upload"]["url"], data)
    completed = channel.command("complete_upload", operation_id=answer["operation_id"], parts=[{"hash": part["ETag"]}])
    assert completed.status_code == 200, completed.content
    upload_direct(client, channel, data)
    assert len(queued) == 2
    long_ago = timezone.now() - timedelta(seconds=settings.ONNX_TRANSFER_URL_TTL_SECONDS, hours=2)
    Operation.objects.filter(id__in=queued).update(created_at=long_ago)
    for body in (tmp_path / "tmp").glob("onnx-upload-*"):
        os.utime(body, (long_ago.timestamp(), long_ago.timestamp()))

    tasks.expire_uploads.run()
    assert not Operation.objects.filter(status="cancelled").exists()
    for operation_id in queued:  # the workers catch up
        tasks.process_upload.run(operation_id)
    statuses = [client.get(f"/v1/operations/{operation_id}").json()["operation"]["status"] for operation_id in queued]
    assert statuses == ["completed", "completed"]


def test_abandoned_uploads_expire_and_parts_without_an_open_upload_are_removed(onnx_blob, settings, tmp_path):
    from onnx_models import transfers
    from onnx_models.tasks import expire_uploads

    client, org, channel = onnx_blob
    settings.DATA_DIR = tmp_path
    data = model_archive()

    def upload_a_part(channel) -> str:
        answer = channel.command("initiate_upload", path="model.tar.gz", size=len(data)).json()
        assert put_part(client, answer["operation"]["parts"][0]["upload"]["url"], data).status_code == 200
        return answer["operation_id"]

    abandoned, fresh = upload_a_part(channel), upload_a_part(channel)
    long_ago = timezone.now() - timedelta(seconds=settings.ONNX_TRANSFER_URL_TTL_SECONDS, hours=2)
    Operation.objects.filter(id=abandoned).update(created_at=long_ago)
    client.post(f"/v1/orgs/{org.alias}/blobs", {"alias": "other-model", "type": "blobhub.model.onnx"}, format="json")
    other = client.get(f"/v1/blobs/{org.alias}/other-model/revisions").json()["revisions"][0]["id"]
    orphaned = upload_a_part(Channel(client, other))
    deleted = client.delete(f"/v1/blobs/{org.alias}/other-model")
    assert deleted.status_code in (200, 202, 204), deleted.json()
    assert not Operation.objects.filter(id=orphaned).exists()  # its operations went with it
    cancelled = upload_a_part(channel)
    assert client.post(f"/v1/operations/{cancelled}/cancel").status_code == 200  # the generic cancel
    unprocessed = tmp_path / "tmp" / "onnx-upload-old"  # an `upload` body whose processing never came
    unprocessed.parent.mkdir(exist_ok=True)
    unprocessed.write_bytes(b"a body")
    os.utime(unprocessed, (long_ago.timestamp(), long_ago.timestamp()))

    expire_uploads()
    expired = client.get(f"/v1/operations/{abandoned}").json()["operation"]
    assert expired["status"] == "cancelled" and expired["error"]["code"] == "upload_expired"
    assert not any(transfers.parts_dir(gone).exists() for gone in (abandoned, orphaned, cancelled))
    assert not unprocessed.exists()
    assert client.get(f"/v1/operations/{fresh}").json()["operation"]["status"] == "pending"
    assert transfers.parts_dir(fresh).exists()
    assert channel.command("complete_upload", operation_id=abandoned, parts=[{"hash": "x"}]).status_code == 409


def test_the_beat_expires_abandoned_uploads(settings):
    from onnx_models.tasks import expire_uploads

    assert any(item["task"] == expire_uploads.name for item in settings.CELERY_BEAT_SCHEDULE.values())
