"""The web console in headless Chromium, against the real daphne server and Celery worker.

Chromium is Debian's /usr/bin/chromium, driven by Playwright (never `playwright install`,
SERVICES.md). Without either the tests are skipped, or fail when BLOBHUB_REQUIRE_INTEGRATION
is set, like the other prerequisites of this suite (conftest.py).
"""

import importlib.util
import os
import re
from collections.abc import Iterator

import httpx
import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from orgs import services
from orgs.bootstrap import DEMO_ORG_ALIAS
from orgs.principal import Principal
from orgs.tests.factories import UserFactory
from tests.processes import require

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
]  # fmt: skip
PASSWORD = "correct horse battery"  # UserFactory's
LIVE_TIMEOUT_MS = 30_000  # a commit goes through the worker process


def _require_browser() -> None:
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (requirements.txt)")
    require(missing, "browser tests")


@pytest.fixture
def demo_user(integration_services):
    """A user who administers the demo organization, as on a first start (orgs.bootstrap)."""
    user = UserFactory()
    # The servers check it with their own hasher, not the test settings' fast MD5.
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(PASSWORD, hasher.salt())
    user.save(update_fields=["password"])
    services.organization_create(principal=Principal(user=user), alias=DEMO_ORG_ALIAS, name="Demo organization")
    return user


@pytest.fixture
def page(integration_services, demo_user, asgi_server, celery_worker_process) -> Iterator:
    """A Chromium page; any script error or console error (a CSP refusal, say) fails the test.

    Set up after the database rows: while Playwright's sync API is active its event loop
    counts as running, and Django refuses ORM calls from such a thread.
    """
    _require_browser()
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(base_url=asgi_server.url)
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            page.on("console", lambda message: message.type == "error" and errors.append(f"console: {message.text}"))
            yield page
        finally:
            browser.close()
    assert not errors, "\n".join(errors)


def sign_in(page, user) -> None:
    page.goto("/console/")
    assert "/console/login/" in page.url  # no session yet
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_a_user_signs_in_creates_a_workflow_blob_and_watches_its_commit_live(page, demo_user):
    from playwright.sync_api import expect

    sign_in(page, demo_user)
    expect(page.get_by_role("heading", name="Organizations")).to_be_visible()
    page.get_by_role("link", name="Demo organization").click()

    new_blob = page.locator("#new-blob")
    new_blob.get_by_label("Alias").fill("console-flow")
    new_blob.get_by_label("Type").select_option("blobhub.compute.workflow")
    new_blob.get_by_role("button", name="New blob").click()
    expect(page).to_have_url(re.compile(r"#/orgs/demo-org/blobs/console-flow$"))

    first = page.locator("#revisions tr[data-number='1']")
    expect(first.locator(".phase")).to_have_text("draft")
    expect(first.locator(".status")).to_have_text("ready")
    # Subscribed to the blob's stream: what follows can only arrive over the WebSocket.
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    page.evaluate("window.notReloaded = true")

    first.get_by_role("button", name="Commit").click()
    expect(first.locator(".phase")).to_have_text("commit", timeout=LIVE_TIMEOUT_MS)
    expect(first.locator(".status")).to_have_text("ready")
    expect(first.get_by_role("button", name="Snapshot")).to_be_visible()
    assert page.evaluate("window.notReloaded") is True

    # A commit that fails shows its reason live: an ONNX blob has no model to validate yet.
    page.get_by_role("link", name="demo-org").click()
    new_blob.get_by_label("Alias").fill("console-model")
    new_blob.get_by_label("Type").select_option("blobhub.model.onnx")
    new_blob.get_by_role("button", name="New blob").click()
    expect(page).to_have_url(re.compile(r"#/orgs/demo-org/blobs/console-model$"))
    expect(first.locator(".status")).to_have_text("ready")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    first.get_by_role("button", name="Commit").click()
    expect(first.locator(".status")).to_contain_text("no processed model", timeout=LIVE_TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True


def test_an_api_key_is_shown_once_works_and_stops_working_when_revoked(page, demo_user, asgi_server):
    from playwright.sync_api import expect

    sign_in(page, demo_user)
    page.get_by_role("link", name="Demo organization").click()

    form = page.locator("#new-key-form")
    form.get_by_label("Description").fill("console key")
    form.get_by_label("Role").select_option("read")
    form.get_by_role("button", name="Create key").click()
    shown = page.locator("#new-key")
    expect(shown).to_contain_text("it will not be shown again")
    key = shown.locator("code").inner_text()
    assert re.fullmatch(r"bh_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", key)
    assert httpx.get(f"{asgi_server.url}/v1/users/me", headers={"X-API-Key": key}).status_code == 200

    row = page.locator("#api-keys tr", has_text="console key")
    expect(row).to_contain_text("read")
    page.reload()
    expect(row).to_be_visible()
    assert key not in page.content()

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_have_count(0)
    assert httpx.get(f"{asgi_server.url}/v1/users/me", headers={"X-API-Key": key}).status_code == 401
