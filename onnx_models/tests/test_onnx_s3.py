"""The ONNX flow against a real S3-compatible server: presigned part URLs go to S3 itself."""

import hashlib

import httpx

import pytest

from blobs.models import Operation
from onnx_models import transfers
from onnx_models.tests.models import affine_model, model_archive
from workflows.tests.support import Channel

pytestmark = pytest.mark.django_db(transaction=True)


def test_upload_in_presigned_parts_describe_download_and_infer_on_s3(s3_store, client_for, org, write_key, settings):
    settings.ONNX_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part: the archive takes two
    client = client_for(key=write_key)
    client.post(f"/v1/orgs/{org.alias}/blobs", {"alias": "s3-model", "type": "blobhub.model.onnx"}, format="json")
    channel = Channel(client, client.get(f"/v1/blobs/{org.alias}/s3-model/revisions").json()["revisions"][0]["id"])
    model = affine_model(padding=1_600_000)
    data = model_archive(model)

    answer = channel.command("initiate_upload", path="model.tar.gz", size=len(data)).json()
    parts = answer["operation"]["parts"]
    assert len(parts) == 2 and all(s3_store.bucket in part["upload"]["url"] for part in parts)
    hashes = []
    for part in parts:
        response = httpx.put(part["upload"]["url"], content=data[part["offset"] : part["offset"] + part["size"]], headers=part["upload"]["headers"])
        assert response.status_code == 200, response.text
        hashes.append({"hash": response.headers["ETag"]})
    assert channel.command("complete_upload", operation_id=answer["operation_id"], parts=hashes).status_code == 200
    operation = client.get(f"/v1/operations/{answer['operation_id']}").json()["operation"]
    assert operation["status"] == "completed", operation
    assert not any("uploads/" in key for key in s3_store.keys())  # the assembled upload is cleaned up

    described = channel.query("describe").json()
    assert described["model"]["graph_name"] == "affine"
    download = channel.query("initiate_download", path="model.onnx").json()["operation"]
    body = b""
    for part in download["parts"]:
        response = httpx.get(part["download"]["url"], headers=part["download"]["headers"])
        assert response.status_code in (200, 206)
        body += response.content
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(model).hexdigest()

    client.post(f"/v1/revisions/{channel.revision_id}/commit", {}, format="json")
    outputs = channel.query("infer", inputs={"x": [[2.0, 2.0, 2.0]]}).json()["outputs"]
    assert outputs["y"]["data"] == [[2.5, 4.5, 6.5]]
    assert transfers.s3() is not None



def test_expiry_aborts_the_multipart_uploads_of_abandoned_and_deleted_uploads(s3_store, client_for, org, write_key, settings):
    from onnx_models.tasks import expire_uploads

    client = client_for(key=write_key)

    def initiate(alias: str) -> str:
        client.post(f"/v1/orgs/{org.alias}/blobs", {"alias": alias, "type": "blobhub.model.onnx"}, format="json")
        channel = Channel(client, client.get(f"/v1/blobs/{org.alias}/{alias}/revisions").json()["revisions"][0]["id"])
        return channel.command("initiate_upload", path="model.tar.gz", size=100).json()["operation_id"]

    abandoned = initiate("s3-model")
    initiate("other-model")
    assert client.delete(f"/v1/blobs/{org.alias}/other-model").status_code in (200, 202, 204)  # its upload's row goes
    assert len(s3_store.client.list_multipart_uploads(Bucket=s3_store.bucket)["Uploads"]) == 2
    settings.ONNX_TRANSFER_URL_TTL_SECONDS = -7200  # both uploads are as old as expiry wants

    expire_uploads()
    assert Operation.objects.get(id=abandoned).status == Operation.Status.CANCELLED
    assert not s3_store.client.list_multipart_uploads(Bucket=s3_store.bucket).get("Uploads")
