"""The ONNX blob type's data channel (API.md §3.3) and its commit rule."""

import os
import tempfile

from django.conf import settings
from django.db import transaction
from rest_framework import serializers

from blobhub.api.errors import ApplicationError
from blobhub.api.serializers import StrictCharField, StrictIntegerField, StrictSerializer, StrictUUIDField, parse
from blobs import limits, store
from blobs.channel import BinaryAnswer, DataContext
from blobs.models import Operation, Revision
from blobs.registry import Engine, Handler, Problem
from blobs.services import content
from orgs.models import Role
from onnx_models import inference, services, transfers

ARCHIVE = "model.tar.gz"


class PathField(StrictCharField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value != ARCHIVE:
            self.fail("invalid")
        return value

    default_error_messages = {"invalid": "The path of an upload is model.tar.gz."}


class UploadIn(StrictSerializer):
    path = PathField()
    size = StrictIntegerField(min_value=1)


class CompleteIn(StrictSerializer):
    operation_id = StrictUUIDField()
    parts = serializers.ListField(child=serializers.DictField(), max_length=transfers.MAX_PARTS)


class OperationIn(StrictSerializer):
    operation_id = StrictUUIDField()


class ArtifactIn(StrictSerializer):
    path = serializers.ChoiceField(choices=services.ARTIFACTS)


class InferIn(StrictSerializer):
    inputs = serializers.DictField()


def _check_size(size: int) -> None:
    if size > settings.ONNX_MAX_ARCHIVE_BYTES:
        raise ApplicationError("payload_too_large", f"An archive is at most {settings.ONNX_MAX_ARCHIVE_BYTES} bytes.", status=413)


def _lock_and_count_open_uploads(revision: Revision) -> None:
    # Each open upload may hold a whole archive (parts, or a direct body) until it ends or expires.
    Revision.objects.select_for_update().filter(id=revision.id).first()  # counts one at a time
    limits.check("onnx.open_uploads_per_revision", services.open_uploads(revision).count())


def _new_operation(ctx: DataContext, arguments: dict) -> Operation:
    return Operation.objects.create(
        org_id=ctx.revision.org_id, blob_id=ctx.revision.blob_id, revision=ctx.revision, type="upload", arguments=arguments
    )


def upload(ctx: DataContext, args: dict) -> dict:
    """A small archive (≤ 4 MiB) in the request body; processing starts at once."""
    from onnx_models.tasks import process_upload

    data = parse(UploadIn, args)
    if ctx.body is None:
        raise ApplicationError("invalid_request_body", "Send the archive as an application/octet-stream body.", status=400)
    if data["size"] > settings.ONNX_DIRECT_MAX_BYTES:
        raise ApplicationError("payload_too_large", "upload takes at most 4 MiB: use initiate_upload.", status=413)
    folder = settings.DATA_DIR / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=transfers.DIRECT_PREFIX)
    written = 0
    with os.fdopen(fd, "wb") as out:
        while chunk := ctx.body.read(1024 * 1024):
            written += len(chunk)
            if written > settings.ONNX_DIRECT_MAX_BYTES:
                break
            out.write(chunk)
    if written != data["size"]:
        os.unlink(name)
        raise ApplicationError("invalid_request_body", f"The body has {written} bytes, not the {data['size']} announced.", status=400)
    try:
        with transaction.atomic():
            _lock_and_count_open_uploads(ctx.revision)
            arguments = {"path": ARCHIVE, "size": data["size"], "direct_path": name, "completing": True}
            operation = _new_operation(ctx, arguments)
            transaction.on_commit(lambda: process_upload.delay(str(operation.id)))
    except ApplicationError:  # refused (too many open uploads): the body goes with the request
        os.unlink(name)
        raise
    return {"operation_id": str(operation.id)}


def initiate_upload(ctx: DataContext, args: dict) -> dict:
    data = parse(UploadIn, args)
    _check_size(data["size"])
    parts = transfers.plan(data["size"])
    arguments = {"path": ARCHIVE, "size": data["size"], "plan": [vars(part) for part in parts]}
    with transaction.atomic():
        _lock_and_count_open_uploads(ctx.revision)
        operation = _new_operation(ctx, arguments)
        operation_id = str(operation.id)
        if transfers.s3() is not None:
            upload_id = transfers.s3_start(operation_id)
            operation.arguments["s3_upload_id"] = upload_id
            urls = [(transfers.s3_part_url(operation_id, upload_id, part), {}) for part in parts]
        else:
            urls = [(transfers.signed_url(ctx.base_url, "upload", operation_id, part), {}) for part in parts]
        operation.parts = [
            {"offset": part.offset, "size": part.size, "upload": {"url": url, "headers": headers}}
            for part, (url, headers) in zip(parts, urls)
        ]
        Operation.objects.filter(id=operation.id).update(arguments=operation.arguments, parts=operation.parts)
    return {"operation_id": operation_id, "operation": _render(operation)}


def complete_upload(ctx: DataContext, args: dict) -> dict:
    data = parse(CompleteIn, args)
    hashes = []
    for index, part in enumerate(data["parts"]):
        if set(part) != {"hash"} or not isinstance(part["hash"], str) or not part["hash"]:
            raise ApplicationError("invalid_request_body", f"parts[{index}] is {{hash}}.", status=400)
        hashes.append(part["hash"])
    operation = services.complete(services.upload_operation(data["operation_id"], ctx.revision), hashes)
    return {"operation_id": str(operation.id)}


def cancel_upload(ctx: DataContext, args: dict) -> dict:
    operation = services.cancel(services.upload_operation(parse(OperationIn, args)["operation_id"], ctx.revision))
    return {"operation": _render(operation)}


def describe(ctx: DataContext, args: dict) -> dict:
    parse(StrictSerializer, args)
    return {"components": services.components(ctx.revision), "model": services.model_json(ctx.revision)["description"]}


def download(ctx: DataContext, args: dict) -> BinaryAnswer:
    entry = services.model_entry(ctx.revision, parse(ArtifactIn, args)["path"])
    if entry.size > settings.ONNX_DIRECT_MAX_BYTES:
        raise ApplicationError("payload_too_large", "download gives at most 4 MiB: use initiate_download.", status=413)
    return BinaryAnswer(
        chunks=store.open_object(entry.object),
        envelope={"path": entry.path, "size": entry.size, "sha256": entry.object_id},
        size=entry.size,
        filename=entry.path,
    )


def initiate_download(ctx: DataContext, args: dict) -> dict:
    """The parts' URLs, signed over the revision and the object rather than an operation:
    public readers call this at will, so it writes nothing."""
    entry = services.model_entry(ctx.revision, parse(ArtifactIn, args)["path"])
    on_s3 = transfers.s3() is not None and entry.object.inline is None
    subject = f"{ctx.revision.id}/{entry.object_id}"
    parts = []
    for part in transfers.plan(entry.size):
        if on_s3:
            url, headers = transfers.s3_download_url(entry.object_id, part)
        else:
            url, headers = transfers.signed_url(ctx.base_url, "download", subject, part), {}
        parts.append({"offset": part.offset, "size": part.size, "download": {"url": url, "headers": headers}})
    described = {"path": entry.path, "sha256": entry.object_id, "size": entry.size}
    return {"operation": {"type": "download", "status": "completed", "result": described, "parts": parts}}


def infer(ctx: DataContext, args: dict) -> dict:
    if ctx.revision.phase == Revision.Phase.DRAFT:
        raise ApplicationError("revision_not_committed", "infer runs on committed revisions.", status=409)
    data = parse(InferIn, args)
    try:
        return {"outputs": inference.infer(ctx.revision, data["inputs"])}
    except inference.InferenceError as exc:
        raise ApplicationError(exc.code, exc.message, status=400) from None


def _render(operation: Operation) -> dict:
    from blobs.api.serializers import OperationOut

    return OperationOut(operation).data


def validate_revision(revision: Revision) -> list[Problem]:
    """Commit needs a processed model."""
    present = set(content.files(revision).filter(path__in=services.ARTIFACTS).values_list("path", flat=True))
    missing = [path for path in ("model.onnx", "model.json") if path not in present]
    return [Problem(path=path, message="The revision has no processed model: upload one first.") for path in missing]


ENGINE = Engine(
    type="blobhub.model.onnx",
    validate=validate_revision,
    queries={
        "describe": Handler(describe),
        "download": Handler(download),
        "initiate_download": Handler(initiate_download),
        "infer": Handler(infer),
    },
    commands={
        "upload": Handler(upload, writes_content=True, needs=Role.WRITE),
        "initiate_upload": Handler(initiate_upload, writes_content=True, needs=Role.WRITE),
        "complete_upload": Handler(complete_upload, writes_content=True, needs=Role.WRITE),
        "cancel_upload": Handler(cancel_upload, writes_content=True, needs=Role.WRITE),
    },
    limits={
        "onnx.max_archive_bytes": settings.ONNX_MAX_ARCHIVE_BYTES,
        "onnx.max_model_bytes": settings.ONNX_MAX_MODEL_BYTES,
        "onnx.open_uploads_per_revision": 4,
    },
)
