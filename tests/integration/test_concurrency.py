"""Optimistic concurrency on PostgreSQL, through the real server: of two writers, one wins."""

import threading

import httpx
import pytest

from orgs import tokens
from orgs.models import Organization
from orgs.tests.factories import MembershipFactory

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def test_two_patches_with_the_same_if_match_give_one_success_and_one_412(asgi_server):
    membership = MembershipFactory(role="admin")
    org = membership.org
    token = tokens.issue_pair(user=membership.user)["access_token"]
    headers = {"Authorization": f"Bearer {token}", "If-Match": f'"{org.etag}"'}
    url = f"{asgi_server.url}/v1/orgs/{org.alias}"
    barrier = threading.Barrier(2)
    answers: dict[str, httpx.Response] = {}

    def patch(name: str) -> None:
        with httpx.Client(timeout=30) as client:
            barrier.wait(timeout=10)
            answers[name] = client.patch(url, json={"name": name}, headers=headers)

    writers = [threading.Thread(target=patch, args=(name,)) for name in ("First writer", "Second writer")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)

    assert sorted(answer.status_code for answer in answers.values()) == [200, 412]
    winner = next(name for name, answer in answers.items() if answer.status_code == 200)
    loser = next(answer for answer in answers.values() if answer.status_code == 412)
    assert loser.json()["status"] == "error"
    assert loser.json()["error"] == "precondition_failed"
    assert answers[winner].json()["organization"]["name"] == winner
    assert Organization.objects.get(id=org.id).name == winner
