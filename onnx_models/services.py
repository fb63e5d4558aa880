"""Uploads and their processing operation: from parts to `model.tar.gz`, `model.onnx`, `model.json`."""

import contextlib
import logging
import shutil
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from blobhub.api.errors import AccessDenied, ApplicationError, Conflict
from blobhub.api.serializers import is_uuid
from blobs import store
from blobs.models import ManifestEntry, Operation, Revision
from blobs.services import content
from blobs.services.operations import operation_claim, operation_finish, operation_lock_running, operation_progress
from onnx_models import processing, transfers

logger = logging.getLogger("blobhub.onnx")

ARTIFACTS = ("model.tar.gz", "model.onnx", "model.json")
LIVE = (Operation.Status.PENDING, Operation.Status.RUNNING)


def workdir() -> Path:
    root = settings.DATA_DIR / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="onnx-", dir=root))


def upload_operation(operation_id, revision: Revision) -> Operation:
    operation = Operation.objects.filter(id=operation_id, revision=revision, type="upload").first()
    if operation is None:
        raise AccessDenied("This revision has no such upload.")
    return operation


def open_uploads(revision: Revision) -> QuerySet[Operation]:
    """The revision's uploads that have not ended (pending or processing)."""
    return Operation.objects.filter(revision=revision, type="upload", status__in=LIVE)


def complete(operation: Operation, hashes: list[str]) -> Operation:
    """Check the parts' hashes against what was stored, then queue the processing."""
    from onnx_models.tasks import process_upload

    with transaction.atomic():
        operation = Operation.objects.select_for_update().get(id=operation.id)
        if operation.status != Operation.Status.PENDING or operation.arguments.get("completing"):
            raise Conflict("upload_not_open", f"The upload is {operation.status}; it cannot be completed again.")
        parts = [transfers.Part(p["index"], p["offset"], p["size"]) for p in operation.arguments["plan"]]
        if len(hashes) != len(parts):
            raise ApplicationError("invalid_request_body", f"Give the hash of each of the {len(parts)} parts.", status=400)
        wanted = [h.strip('"') for h in hashes]
        if transfers.s3() is None:
            stored = transfers.stored_etags(str(operation.id), parts)
            bad = [i + 1 for i, (have, want) in enumerate(zip(stored, wanted)) if have is None or have != want]
            if bad:
                raise ApplicationError(
                    "part_mismatch",
                    f"Parts {bad[:10]} are missing or do not match their hashes.",
                    status=400,
                    details=[{"path": f"parts[{i - 1}].hash", "message": "Missing or different."} for i in bad[:50]],
                )
        operation.arguments = {**operation.arguments, "completing": True, "etags": wanted}
        Operation.objects.filter(id=operation.id).update(arguments=operation.arguments)
        transaction.on_commit(lambda: process_upload.delay(str(operation.id)))
    return operation


def cancel(operation: Operation) -> Operation:
    with transaction.atomic():
        operation = Operation.objects.select_for_update().get(id=operation.id)
        if operation.status in Operation.FINAL:
            raise Conflict("operation_finished", f"The upload is already {operation.status}.")
        operation_finish(operation, Operation.Status.CANCELLED)
    _cleanup(operation)
    return operation


# Past their URLs' expiry no part can arrive; the margin leaves the client time to complete.
EXPIRY_MARGIN = timedelta(hours=1)


def expire_uploads() -> int:
    """Cancel the uploads still pending long after their part URLs expired, and remove the
    parts of uploads that ended or are gone (a deleted blob takes its operations with it);
    returns how many uploads expired. A completed upload waiting for a worker is not abandoned:
    it stays, however long the workers are behind."""
    cutoff = timezone.now() - timedelta(seconds=settings.ONNX_TRANSFER_URL_TTL_SECONDS) - EXPIRY_MARGIN
    stale = Operation.objects.filter(type="upload", status=Operation.Status.PENDING, created_at__lt=cutoff)
    expired = sum(_expire(operation_id) for operation_id in stale.values_list("id", flat=True))
    candidates = transfers.parts_dirs()
    for operation_id in set(candidates) - _live_uploads(candidates):
        transfers.discard(operation_id)
    if transfers.s3() is not None:
        _abort_s3_orphans(cutoff)
    _remove_direct_orphans(cutoff)
    return expired


def _expire(operation_id) -> bool:
    with transaction.atomic():
        operation = Operation.objects.select_for_update().filter(id=operation_id, status=Operation.Status.PENDING).first()
        if operation is None or operation.arguments.get("completing"):
            return False  # completed (maybe waiting for a worker), cancelled or claimed meanwhile
        error = {"code": "upload_expired", "message": "The upload was not completed in time."}
        operation_finish(operation, Operation.Status.CANCELLED, error=error)
    _cleanup(operation)
    return True


def _live_uploads(operation_ids: list[str]) -> set[str]:
    """Those of the ids whose upload still needs its parts (pending or processing)."""
    ids = [operation_id for operation_id in operation_ids if is_uuid(operation_id)]
    alive = Operation.objects.filter(id__in=ids, status__in=LIVE)
    return {str(operation_id) for operation_id in alive.values_list("id", flat=True)}


def _abort_s3_orphans(cutoff: datetime) -> None:
    # A younger multipart upload may belong to an initiate_upload not yet committed.
    uploads = [(operation_id, upload_id) for operation_id, upload_id, began in transfers.s3_uploads() if began < cutoff]
    live = _live_uploads([operation_id for operation_id, _ in uploads])
    for operation_id, upload_id in uploads:
        if operation_id not in live:
            transfers.s3_abort(operation_id, upload_id)


def _remove_direct_orphans(cutoff: datetime) -> None:
    """Bodies of `upload` whose processing never came (their blob was deleted first)."""
    waiting = Operation.objects.filter(type="upload", status__in=LIVE, arguments__has_key="direct_path")
    queued = {Path(arguments["direct_path"]).name for arguments in waiting.values_list("arguments", flat=True)}
    for path in (settings.DATA_DIR / "tmp").glob(f"{transfers.DIRECT_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):  # processing took it meanwhile
            if path.name not in queued and path.stat().st_mtime < cutoff.timestamp():
                path.unlink()


def _cleanup(operation: Operation) -> None:
    transfers.discard(str(operation.id))
    direct = operation.arguments.get("direct_path")
    if direct:
        Path(direct).unlink(missing_ok=True)
    if transfers.s3() is not None and operation.arguments.get("s3_upload_id"):
        transfers.s3_abort(str(operation.id), operation.arguments.get("s3_upload_id"))


def process(operation_id: str) -> None:
    """The processing operation (in the worker): assemble, check, parse, derive, store."""
    operation = operation_claim(operation_id)
    if operation is None:
        return
    folder = workdir()
    try:
        result = _process(operation, folder)
    except processing.Refused as refused:
        _finish(operation, error={"code": refused.reason, "message": refused.message})
    except ApplicationError as exc:
        _finish(operation, error={"code": exc.code, "message": exc.message})
    except Exception:
        logger.exception("processing upload %s failed", operation_id)
        _finish(operation, error={"code": "processing_failed", "message": "The upload could not be processed."})
    else:
        _finish(operation, result=result)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _cleanup(operation)


def _finish(operation: Operation, *, result=None, error=None) -> None:
    with transaction.atomic():
        if not operation_lock_running(operation):
            return
        status = Operation.Status.FAILED if error else Operation.Status.COMPLETED
        operation_finish(operation, status, result=result, error=error)


def _process(operation: Operation, folder: Path) -> dict:
    archive = folder / "model.tar.gz"
    arguments = operation.arguments
    timer = _Timer()
    if arguments.get("direct_path"):
        shutil.move(arguments["direct_path"], archive)
    elif transfers.s3() is not None:
        transfers.s3_complete(str(operation.id), arguments["s3_upload_id"], arguments["etags"])
        transfers.s3_download(str(operation.id), archive)
    else:
        transfers.assemble(str(operation.id), archive)
    if archive.stat().st_size != arguments["size"]:
        raise processing.Refused("size_mismatch", f"The archive has {archive.stat().st_size} bytes, not the {arguments['size']} announced.")
    timer.lap("assemble")
    operation_progress(operation, 0.3)
    model_dir = folder / "model"  # the model alone in its directory, as processing.parse wants
    model_dir.mkdir()
    with open(archive, "rb") as handle:  # the archive goes to disk while it is extracted
        syncer = processing.Syncer(handle.fileno())
        syncer.kick()
        try:
            extracted = processing.extract(archive, model_dir)
        finally:
            syncer.close()
    timer.lap("extract")
    operation_progress(operation, 0.6)
    parsed = processing.parse(extracted.model_path)
    graph = processing.graph_json(parsed.model, parsed.skeleton)
    del parsed
    timer.lap("parse")
    operation_progress(operation, 0.8)
    revision = operation.revision
    # Objects first (no lock held; the files become the objects, their hashes were taken
    # as they were written), then all three entries in one transaction.
    objects = {
        "model.tar.gz": store.put_file(archive, sha256=extracted.archive_sha256),
        "model.onnx": store.put_file(extracted.model_path, sha256=extracted.model_sha256),
        "model.json": store.put_bytes(processing.json_bytes(graph)),
    }
    timer.lap("store")
    logger.info("upload %s processed (%d bytes, model %d bytes): %s", operation.id, arguments["size"], extracted.model_size, timer)
    with transaction.atomic():
        for path, obj in objects.items():
            content.file_put_object(revision, path, obj)
    description = graph["description"]
    return {
        "archive_sha256": extracted.archive_sha256,
        "components": components(revision),
        "model": {key: description[key] for key in ("ir_version", "graph_name", "nodes", "parameters")},
    }


class _Timer:
    """Seconds per phase, for the log."""

    def __init__(self):
        self.laps: list[tuple[str, float]] = []
        self.last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps.append((name, now - self.last))
        self.last = now

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.laps)


def components(revision: Revision) -> list[dict]:
    entries = ManifestEntry.objects.filter(revision=revision, path__in=ARTIFACTS).order_by("path")
    return [{"path": entry.path, "size": entry.size} for entry in entries]


def model_entry(revision: Revision, path: str = "model.onnx") -> ManifestEntry:
    entry = content.file_get(revision, path)
    if entry is None:
        raise ApplicationError("model_not_processed", "The revision has no processed model: upload one first.", status=409)
    return entry


def model_json(revision: Revision) -> dict:
    import json

    return json.loads(store.read_bytes(model_entry(revision, "model.json").object))
