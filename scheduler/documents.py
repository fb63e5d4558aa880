"""Schedule documents (API.md §3.2): validation at write and at commit, and rendering."""

import re
from datetime import datetime
from typing import Any

from blobhub.api.errors import ApplicationError
from blobs.registry import Problem
from orgs.principal import Principal
from scheduler import timing

FIELDS = {
    "alias", "description", "repeat", "cron_expression", "invocation_time", "timezone", "enabled",
    "start_date", "end_date", "invocation_target_type", "invocation_target", "overlap",
}  # fmt: skip
ALIAS = re.compile(r"^[a-z0-9_-]{1,64}\Z")
REPEATS = ("one_time", "recurring_cron")


def problems_of(document: dict) -> list[Problem]:
    """Structural problems (no database): types, cron, zone, times, window."""
    problems: list[Problem] = []

    def problem(path: str, message: str) -> None:
        problems.append(Problem(path=path, message=message))

    for key in sorted(set(document) - FIELDS - {"id", "state", "_owner"}):
        problem(key, "Unknown field.")
    alias = document.get("alias")
    if alias is not None and (not isinstance(alias, str) or not ALIAS.match(alias)):
        problem("alias", "Must match ^[a-z0-9_-]{1,64}$.")
    description = document.get("description", "")
    if not isinstance(description, str) or len(description) > 256:
        problem("description", "A string of at most 256 characters.")
    if not isinstance(document.get("enabled", True), bool):
        problem("enabled", "Must be true or false.")
    if document.get("overlap", "allow") not in ("allow", "skip"):
        problem("overlap", "Must be allow or skip.")
    if document.get("invocation_target_type", "workflow") != "workflow":
        problem("invocation_target_type", "Must be workflow.")
    tz = None
    try:
        tz = timing.zone(document.get("timezone"))
    except timing.ScheduleError as exc:
        problem("timezone", str(exc))
    repeat = document.get("repeat")
    if repeat not in REPEATS:
        problem("repeat", "Must be one_time or recurring_cron.")
    elif repeat == "recurring_cron":
        try:
            if timing.never_fires(timing.parse_cron(document.get("cron_expression"))):
                problem("cron_expression", "The cron expression names no date that exists.")
        except timing.ScheduleError as exc:
            problem("cron_expression", str(exc))
    elif tz is not None:
        try:
            timing.one_time_fire(document.get("invocation_time"), tz)
        except timing.ScheduleError as exc:
            problem("invocation_time", str(exc))
    start, end = (_utc(document, "start_date", problem), _utc(document, "end_date", problem))
    if start and end and start >= end:
        problem("end_date", "end_date must be after start_date.")
    target = document.get("invocation_target")
    if not _target_shape(target):
        problem("invocation_target", "{target: {org, blob, revision, session?}, workflow: {definition}, input_data?}.")
    return problems


def _utc(document: dict, key: str, problem) -> datetime | None:
    value = document.get(key)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00")) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        problem(key, "A UTC time in ISO 8601, e.g. 2026-12-01T00:00:00Z.")
        return None
    if not timing.in_range(parsed):
        problem(key, f"A time in the years {timing.FIRST_YEAR} to {timing.LAST_YEAR}.")
        return None
    return parsed


def start_date(document: dict) -> datetime | None:
    return _utc(document, "start_date", lambda *_: None)


def end_date(document: dict) -> datetime | None:
    return _utc(document, "end_date", lambda *_: None)


def _target_shape(target: Any) -> bool:
    if not isinstance(target, dict) or not set(target) <= {"target", "workflow", "input_data"}:
        return False
    where, workflow = target.get("target"), target.get("workflow")
    if not isinstance(where, dict) or not {"org", "blob", "revision"} <= set(where) <= {"org", "blob", "revision", "session"}:
        return False
    if not all(isinstance(value, str) and value for value in where.values()):
        return False
    if not isinstance(workflow, dict) or set(workflow) != {"definition"} or not isinstance(workflow["definition"], str):
        return False
    return isinstance(target.get("input_data", []), list)


def check_target(principal: Principal, target: dict) -> None:
    """The target resolves and the principal may run it; raises ApplicationError otherwise."""
    from workflows.services.executions import resolve_workflow

    revision = target_revision(principal, target)
    resolve_workflow(principal, revision, target["workflow"])
    session = target["target"].get("session")
    if session is not None:
        from workflows.services.sessions import session_get

        session_get(revision, session)


def target_revision(principal: Principal, target: dict):
    from blobs import policy, selectors
    from blobs.models import BlobType
    from orgs.models import Role

    where = target["target"]
    blob = selectors.blob_get(principal, where["org"], where["blob"])
    if blob.type != BlobType.WORKFLOW:
        raise ApplicationError("invalid_request_body", "The target blob is not a workflow blob.", status=400)
    policy.authorize_blob(principal, Role.WRITE, blob)
    return selectors.revision_in_blob(principal, blob, where["revision"])


def owner_of(document: dict) -> Principal:
    """The principal a schedule acts for: who created it, as of now."""
    from orgs.models import ApiKey, User

    owner = document.get("_owner") or {}
    if owner.get("api_key_id"):
        key = ApiKey.objects.select_related("org", "created_by").filter(id=owner["api_key_id"]).first()
        return Principal(user=key.created_by, api_key=key) if key is not None and key.is_usable else Principal()
    user = User.objects.filter(id=owner.get("user_id"), is_active=True).first() if owner.get("user_id") else None
    return Principal(user=user) if user else Principal()


def owner_record(principal: Principal) -> dict:
    return {
        "user_id": str(principal.user.id) if principal.user else None,
        "api_key_id": str(principal.api_key.id) if principal.api_key else None,
    }


def render(document: dict, state: str | None = None) -> dict:
    rendered = {key: value for key, value in document.items() if not key.startswith("_")}
    rendered.setdefault("description", "")
    rendered.setdefault("enabled", True)
    rendered.setdefault("invocation_target_type", "workflow")
    rendered.setdefault("overlap", "allow")
    rendered.setdefault("cron_expression", None)
    rendered.setdefault("invocation_time", None)
    rendered.setdefault("start_date", None)
    rendered.setdefault("end_date", None)
    rendered["state"] = state or document.get("state", "active")
    return rendered
