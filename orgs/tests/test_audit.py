"""The audit log: every mutating route leaves who, what, which target, when and from where."""

import re
from dataclasses import dataclass

import pytest
from django.utils import timezone

from orgs.api import urls
from orgs.models import AuditEntry
from orgs.tests.support import NO_BODY, CREDENTIAL_VALUE, World, api, as_user, assert_success, build_world, secret_of

pytestmark = pytest.mark.django_db

CLIENT_IP = "203.0.113.9"
NEW_VALUE = "sk-live-replacement-value-99"


@dataclass(frozen=True)
class Mutation:
    method: str
    path: str
    action: str
    target_type: str
    body: object = NO_BODY


MUTATIONS = [
    Mutation("POST", "orgs", "organization.create", "orgs.organization", {"alias": "audit-new-org", "name": "N"}),
    Mutation("PATCH", "orgs/acme-corp", "organization.update", "orgs.organization", {"name": "Renamed"}),
    Mutation("POST", "orgs/acme-corp/members", "member.add", "orgs.membership", {"user_id": "{stranger}", "role": "read"}),
    Mutation("PATCH", "orgs/acme-corp/members/{reader}", "member.update", "orgs.membership", {"role": "write"}),
    Mutation("DELETE", "orgs/acme-corp/members/{reader}", "member.remove", "orgs.membership"),
    Mutation("POST", "orgs/acme-corp/api_keys", "api_key.create", "orgs.apikey", {"role": "read"}),
    Mutation("DELETE", "orgs/acme-corp/api_keys/{key}", "api_key.revoke", "orgs.apikey"),
    Mutation(
        "POST",
        "orgs/acme-corp/credentials",
        "credential.create",
        "orgs.credential",
        {"alias": "new-token", "provider": "http", "value": NEW_VALUE},
    ),
    Mutation(
        "PUT", "orgs/acme-corp/credentials/mail-token", "credential.replace", "orgs.credential",
        {"provider": "http", "value": NEW_VALUE},
    ),
    Mutation("DELETE", "orgs/acme-corp/credentials/mail-token", "credential.delete", "orgs.credential"),
]


def _fill(world: World, text: str) -> str:
    return text.format(reader=world.reader.id, key=world.key_row.id, stranger=world.stranger.id)


# The id each action's entry must name: from the answer, or the row the path names.
EXPECTED_TARGET = {
    "organization.create": lambda w, answer, member: answer["organization"]["id"],
    "organization.update": lambda w, answer, member: str(w.org.id),
    "member.add": lambda w, answer, member: str(w.org.memberships.get(user=w.stranger).id),
    "member.update": lambda w, answer, member: member,
    "member.remove": lambda w, answer, member: member,
    "api_key.create": lambda w, answer, member: answer["api_key"]["id"],
    "api_key.revoke": lambda w, answer, member: str(w.key_row.id),
    "credential.create": lambda w, answer, member: answer["credential"]["id"],
    "credential.replace": lambda w, answer, member: str(w.credential.id),
    "credential.delete": lambda w, answer, member: str(w.credential.id),
}


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.action)
def test_a_mutating_route_leaves_one_audit_entry_naming_actor_action_target_and_address(mutation: Mutation):
    world = build_world()
    member_id = str(world.org.memberships.get(user=world.reader).id)
    body = NO_BODY if mutation.body is NO_BODY else _fill_body(world, mutation.body)
    before = set(AuditEntry.objects.values_list("id", flat=True))
    started = timezone.now()

    answer = api(as_user(world.admin), mutation.method, _fill(world, mutation.path), body, REMOTE_ADDR=CLIENT_IP)

    payload = assert_success(answer, 201 if mutation.method == "POST" else 200)
    entries = AuditEntry.objects.exclude(id__in=before)
    assert entries.count() == 1
    entry = entries.get()
    assert entry.action == mutation.action
    assert entry.actor_user == world.admin and entry.actor_api_key is None
    assert entry.actor == f"user {world.admin.username}"
    assert entry.target_type == mutation.target_type
    assert entry.target_id == EXPECTED_TARGET[mutation.action](world, payload, member_id)
    assert entry.org_id is not None
    assert entry.client_ip == CLIENT_IP
    assert started <= entry.created_at <= timezone.now()


@pytest.mark.parametrize(
    ("proxies", "forwarded_for", "recorded"),
    [
        (0, "203.0.113.66, 198.51.100.7", "10.0.0.2"),  # no trusted proxy: the header is the client's
        (1, "203.0.113.66, 198.51.100.7", "198.51.100.7"),  # the client wrote the first entry
        (1, "not an address", None),
    ],
)
def test_the_audit_log_records_the_address_the_last_trusted_proxy_saw(settings, proxies, forwarded_for, recorded):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": proxies}  # TRUSTED_PROXIES
    world = build_world()
    headers = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": forwarded_for}
    answer = api(as_user(world.admin), "POST", "orgs", {"alias": "audit-new-org", "name": "N"}, **headers)
    assert_success(answer, 201)
    assert AuditEntry.objects.get(action="organization.create").client_ip == recorded


def _fill_body(world: World, body: dict) -> dict:
    return {key: _fill(world, value) if isinstance(value, str) else value for key, value in body.items()}


def test_reads_leave_no_audit_entry():
    world = build_world()
    client = as_user(world.admin)
    for path in ("users/me", "users/me/orgs", "orgs/acme-corp", "orgs/acme-corp/members", "orgs/acme-corp/api_keys",
                 "orgs/acme-corp/credentials", "orgs/acme-corp/credentials/mail-token"):
        assert_success(client.get(f"/v1/{path}"))
    assert not AuditEntry.objects.exists()


def test_no_audit_entry_holds_a_secret():
    world = build_world()
    secrets = [CREDENTIAL_VALUE, NEW_VALUE]
    for mutation in MUTATIONS:
        if mutation.action in ("member.remove", "credential.delete"):
            continue  # keep the targets of the other mutations in place
        body = NO_BODY if mutation.body is NO_BODY else _fill_body(world, mutation.body)
        answer = api(as_user(world.admin), mutation.method, _fill(world, mutation.path), body)
        assert answer.status_code in (200, 201), answer.content
        if mutation.action == "api_key.create":
            secrets.append(answer.json()["api_key"]["key"])
    secrets.append(world.write_key)

    stored = repr(list(AuditEntry.objects.values()))
    assert AuditEntry.objects.count() == len(MUTATIONS) - 2
    for secret in secrets:
        assert secret not in stored
        if secret.startswith("bh_"):
            assert secret_of(secret) not in stored


def test_every_mutating_route_of_the_orgs_api_is_covered_here():
    mutating = set()
    for pattern in urls.urlpatterns:
        path = re.sub(r"<str:(\w+)>", r"{\1}", str(pattern.pattern))
        for method in ("post", "put", "patch", "delete"):
            if hasattr(pattern.callback.view_class, method) and not path.startswith("auth/"):
                mutating.add((method.upper(), path))
    names = {"acme-corp": "{org}", "{reader}": "{user_id}", "{key}": "{key_id}", "mail-token": "{alias}"}
    covered = set()
    for mutation in MUTATIONS:
        path = mutation.path
        for concrete, placeholder in names.items():
            path = path.replace(concrete, placeholder)
        covered.add((mutation.method, path))
    assert covered == mutating
