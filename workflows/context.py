"""What a running component may use (DESIGN §5): the session, the content store,
credentials by alias, events, and whether it should stop."""

import json
import time
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from blobs import store
from workflows.components.base import ComponentError
from workflows.models import Execution, ExecutionObject, Session, SessionObject, StepRun

REDACTED = "[redacted]"


class Redactor:
    """Remembers the secrets a step decrypted and scrubs them from everything it records."""

    def __init__(self) -> None:
        self.secrets: list[str] = []

    def add(self, secret: str) -> None:
        if secret and secret not in self.secrets:
            self.secrets.append(secret)
            self.secrets.sort(key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if not self.secrets:
            return value
        if isinstance(value, str):
            for secret in self.secrets:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, list):
            return [self.scrub(item) for item in value]
        if isinstance(value, dict):
            return {self.scrub(key): self.scrub(item) for key, item in value.items()}
        return value


class _Blobs:
    """`ctx.blobs.write_text / write_json / read_text` over the content store."""

    def __init__(self, ctx: "StepContext"):
        self._ctx = ctx

    def write_text(self, text: str) -> dict:
        return self._ctx.put_blob(text.encode(), kind="text")

    def write_json(self, value: Any) -> dict:
        return self._ctx.put_blob(store.canonical_json(value), kind="json")

    def read_text(self, blob: dict) -> str:
        return self._ctx.get_blob(blob).decode()

    def read_json(self, blob: dict) -> Any:
        return json.loads(self._ctx.get_blob(blob))


@dataclass
class StepContext:
    execution: Execution
    step: StepRun
    component: dict
    deadline: float  # time.monotonic() by which the step must end
    redactor: Redactor = field(default_factory=Redactor)
    _stop_checked_at: float = 0.0
    _stopped: bool = False

    def __post_init__(self) -> None:
        self.blobs = _Blobs(self)

    # --- The content store ------------------------------------------------------------
    def put_blob(self, data: bytes, kind: str = "binary") -> dict:
        obj = store.put_bytes(data, org=self.execution.org, kind=kind)
        # The put's hold covers the retention period; this one lasts as long as the execution.
        held = ExecutionObject(org_id=self.execution.org_id, execution_id=self.execution.id, object=obj)
        ExecutionObject.objects.bulk_create([held], ignore_conflicts=True)
        return {"blob_id": obj.sha256}

    def get_blob(self, blob: dict, max_size: int = 64 * 1024 * 1024) -> bytes:
        sha256 = blob.get("blob_id") if isinstance(blob, dict) else None
        obj = store.object_for_org(self.execution.org, sha256) if isinstance(sha256, str) else None
        if obj is None:
            raise ComponentError("blob_not_found", "The blob does not exist or this organization cannot read it.")
        try:
            return store.read_bytes(obj, max_size)
        except store.ObjectTooLarge:
            raise ComponentError("blob_too_large", f"The blob is larger than {max_size} bytes.") from None

    # --- The session --------------------------------------------------------------------
    def state_get(self, key: str) -> Any:
        return Session.objects.values_list("state", flat=True).get(id=self.execution.session_id).get(key)

    def state_set(self, key: str, value: Any) -> None:
        from workflows.services.sessions import session_state_set

        session_state_set(session_id=self.execution.session_id, key=key, value=value, execution_id=self.execution.id)

    def object_get(self, alias: str) -> Any:
        item = SessionObject.objects.select_related("object").filter(session_id=self.execution.session_id, alias=alias).first()
        if item is None:
            raise ComponentError("object_not_found", f"The session has no object {alias!r}.")
        return json.loads(store.read_bytes(item.object)) if item.kind == SessionObject.Kind.VALUE else {"blob_id": item.object_id}

    def object_put(self, alias: str, value: Any) -> None:
        from workflows.services.sessions import session_object_put

        session = Session.objects.get(id=self.execution.session_id)
        session_object_put(session=session, alias=alias, value=value, execution_id=self.execution.id)

    # --- Credentials --------------------------------------------------------------------
    def credential(self, alias: str) -> str:
        """The decrypted secret of an org credential; scrubbed from whatever the step records."""
        from orgs import crypto
        from orgs.models import Credential

        ciphertext = (
            Credential.objects.filter(org_id=self.execution.org_id, alias=alias).values_list("ciphertext", flat=True).first()
        )
        if ciphertext is None:
            raise ComponentError("credential_not_found", f"The organization has no credential {alias!r}.")
        secret = crypto.decrypt(ciphertext)
        self.redactor.add(secret)
        return secret

    # --- Time and stopping ----------------------------------------------------------------
    def remaining(self) -> float:
        return max(self.deadline - time.monotonic(), 0.0)

    def stopped(self) -> bool:
        """True once the execution is being stopped (checked at most twice a second)."""
        now = time.monotonic()
        if not self._stopped and now - self._stop_checked_at > 0.5:
            self._stop_checked_at = now
            status = Execution.objects.values_list("status", flat=True).get(id=self.execution.id)
            self._stopped = status != Execution.Status.RUNNING
        return self._stopped

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early when the execution stops or the step's time runs out."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.stopped():
                raise ComponentError("stopped", "The execution was stopped.")
            if self.remaining() <= 0:
                raise ComponentError("timeout", "The component ran out of time.", retryable=True)
            time.sleep(min(left, 0.2, max(self.remaining(), 0.01)))

    def emit(self, message: str, data: Any = None) -> None:
        from workflows.events import execution_event, processor_attributes

        with transaction.atomic():
            execution_event(
                self.execution,
                "processor.output",
                message=self.redactor.scrub(message),
                attributes=processor_attributes(self.component),
                data=self.redactor.scrub(data),
            )
