"""http.request: address vetting, IP pinning, redirects, bounds and credentials — no external network.

A local http.server on 127.0.0.1 plays every remote; `socket.getaddrinfo` is replaced to make
public-looking names resolve wherever a test needs them.
"""

import base64
import datetime
import gzip
import ipaddress
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from workflows.components import http as http_component
from workflows.components.base import ComponentError, component_class
from workflows.components.http import AllowList, HttpRequest, address_problem

SECRET = "Bearer s3cr3t-t0ken-value"
RELEASE = threading.Event()  # lets a /slow handler end at teardown


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def dispatch(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        self.server.seen.append(seen)
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path == "/echo":
            self.send(
                200,
                json.dumps(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body.decode("utf-8"),
                    }
                ).encode(),
                "application/json",
            )
        elif path == "/text":
            self.send(200, "héllo".encode("utf-8"), "text/plain; charset=utf-8")
        elif path == "/json":
            self.send(200, query["body"].encode(), "application/json")
        elif path == "/binary":
            self.send(200, bytes(range(256)), "application/octet-stream")
        elif path.startswith("/status/"):
            self.send(int(path.rsplit("/", 1)[1]), b'{"error": "nope"}', "application/json")
        elif path == "/redirect":
            self.send(int(query.get("code", 302)), b"", "text/plain", extra={"Location": query["to"]})
        elif path.startswith("/chain/"):
            left = int(path.rsplit("/", 1)[1])
            if left == 0:
                self.send(200, b'{"done": true}', "application/json")
            else:
                self.send(302, b"", "text/plain", extra={"Location": f"/chain/{left - 1}"})
        elif path == "/big":
            self.send(200, b"x" * int(query["n"]), "text/plain")
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(int(query["chunks"])):
                    chunk = b"y" * 500
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client hung up once it had enough
        elif path == "/gzip":
            self.send(200, gzip.compress(b"z" * int(query["n"])), "text/plain", extra={"Content-Encoding": "gzip"})
        elif path == "/slow":
            RELEASE.wait(5)
            self.send(200, b"late", "text/plain")
        else:
            self.send(404, b"", "text/plain")

    def send(self, status, body, content_type, extra=None):
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, ssl_context=None):
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen = []
        self.ssl_context = ssl_context
        self.sni = []

    def get_request(self):
        sock, address = super().get_request()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True)
        return sock, address

    @property
    def port(self):
        return self.server_address[1]


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def server():
    RELEASE.clear()
    srv = Server()
    _serve(srv)
    yield srv
    RELEASE.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def allow_local(settings):
    settings.WORKFLOW_HTTP_ALLOWLIST = ["127.0.0.1/32"]
    settings.WORKFLOW_HTTP_MAX_RESPONSE_BYTES = 10_000
    settings.WORKFLOW_HTTP_MAX_TIMEOUT_SECONDS = 60
    return settings


@pytest.fixture
def no_allowlist(settings):
    settings.WORKFLOW_HTTP_ALLOWLIST = []
    return settings


@pytest.fixture
def dns(monkeypatch):
    """`names[host] = [addresses]` makes host resolve there; `calls` records every lookup."""
    real = socket.getaddrinfo
    names: dict[str, list[str]] = {}
    calls: list[str] = []

    def fake(host, port, *args, **kwargs):
        calls.append(host)
        if host in names:
            answers = names[host]
            if callable(answers):
                answers = answers()
            result = []
            for address in answers:
                if ":" in address:
                    result.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
                else:
                    result.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
            return result
        if host.endswith(".test") or host.endswith(".example"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    fake.names = names
    fake.calls = calls
    return fake


class FakeCtx:
    """Only what http.request may use: credential, remaining and stopped."""

    __slots__ = ("_credentials", "_deadline", "_stopped", "asked")

    def __init__(self, credentials=None, remaining=30.0, stopped=False):
        self._credentials = dict(credentials or {})
        self._deadline = time.monotonic() + remaining
        self._stopped = stopped
        self.asked = []

    def credential(self, alias):
        self.asked.append(alias)
        if alias not in self._credentials:
            raise ComponentError("credential_not_found", f"The organization has no credential {alias!r}.")
        return self._credentials[alias]

    def remaining(self):
        return max(self._deadline - time.monotonic(), 0.0)

    def stopped(self):
        return self._stopped


def call(url, *, ctx=None, body=None, **config):
    inputs = {"body": body} if body is not None else {}
    return HttpRequest().run(ctx or FakeCtx(), {"url": url, **config}, inputs)["response"]


def refused(url, code="address_refused", ctx=None, **config):
    with pytest.raises(ComponentError) as info:
        call(url, ctx=ctx, **config)
    assert info.value.code == code, info.value.message
    return info.value


# --- Registration ---------------------------------------------------------------------------------
def test_registered_with_its_ports_and_retry_policy():
    import workflows.components  # noqa: F401

    cls = component_class("http.request")
    assert cls is HttpRequest
    assert set(cls.config) == {"method", "url", "headers", "credential_headers", "timeout"}
    assert cls.config["method"].default == "GET" and "HEAD" in cls.config["method"].choices
    assert cls.config["url"].required
    assert set(cls.inputs) == {"body"} and set(cls.outputs) == {"response"}
    assert (cls.retry.max_attempts, cls.retry.backoff_seconds) == (3, 0.5)


def test_engine_budget_covers_the_request_time(settings):
    settings.WORKFLOW_HTTP_MAX_TIMEOUT_SECONDS = 10
    assert HttpRequest.timeout_for({"timeout": 2}) > 2
    assert HttpRequest.timeout_for({"timeout": 500}) <= 10 + http_component.TIMEOUT_MARGIN_SECONDS


# --- Address classification -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.8.9.10", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "169.254.1.1",
        "100.64.0.1", "100.100.100.200", "0.0.0.0", "224.0.0.1", "239.255.255.250", "240.0.0.1",
        "255.255.255.255", "192.0.2.1", "198.18.0.1", "::1", "::", "fe80::1", "fc00::1", "fd00:ec2::254",
        "ff02::1", "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254", "::127.0.0.1",
        "2002:7f00:1::1", "2002:a9fe:a9fe::1", "64:ff9b::a00:1", "2001:db8::1",
    ],
)
def test_non_public_addresses_are_classified(address):
    assert address_problem(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert address_problem(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    "address, problem",
    [("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"), ("100.100.100.200", "cloud metadata"),
     ("::ffff:169.254.169.254", "cloud metadata"), ("100.64.1.1", "shared"), ("127.0.0.1", "loopback"),
     ("fe80::1", "link-local"), ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"), ("10.0.0.1", "private")],
)
def test_the_reason_is_named(address, problem):
    assert address_problem(ipaddress.ip_address(address)) == problem


def test_metadata_needs_an_exact_allowlist_entry():
    metadata = ipaddress.ip_address("169.254.169.254")
    assert not AllowList(["0.0.0.0/0", "169.254.0.0/16"]).admits(metadata, "169.254.169.254")
    assert not AllowList(["metadata.google.internal"]).admits(metadata, "metadata.google.internal")
    assert AllowList(["169.254.169.254/32"]).admits(metadata, "169.254.169.254")
    assert AllowList(["169.254.169.254"]).admits(ipaddress.ip_address("::ffff:169.254.169.254"), "x")
    link_local = ipaddress.ip_address("169.254.1.1")
    assert AllowList(["169.254.0.0/16"]).admits(link_local, "x")
    assert AllowList(["Device.Local."]).admits(link_local, "device.local")


# --- Refusals without the allow-list --------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/", "http://127.0.0.1:8000/x", "http://localhost/", "http://10.0.0.8/",
        "http://192.168.0.1/", "http://169.254.169.254/latest/meta-data/", "http://169.254.10.10/",
        "http://100.100.100.200/", "http://[::1]/", "http://[fd00:ec2::254]/", "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:127.0.0.1]/", "http://[fe80::1]/", "http://0.0.0.0/", "http://2130706433/",
        "http://0x7f.1/", "https://127.0.0.1/",
    ],
)
def test_local_and_metadata_addresses_are_refused(no_allowlist, url):
    refused(url)


def test_a_public_name_resolving_to_a_private_address_is_refused(no_allowlist, dns):
    dns.names["api.example"] = ["10.1.2.3"]
    error = refused("http://api.example/v1")
    assert "api.example" in error.message and "10.1.2.3" in error.message and "private" in error.message
    dns.names["metadata.example"] = ["169.254.169.254"]
    assert "cloud metadata" in refused("http://metadata.example/").message
    dns.names["v6.example"] = ["::ffff:127.0.0.1"]
    refused("http://v6.example/")


def test_one_private_address_among_several_refuses_the_host(allow_local, dns, server):
    dns.names["multi.example"] = ["93.184.216.34", "10.0.0.5"]
    refused("http://multi.example/")
    dns.names["mixed.example"] = ["127.0.0.1", "192.168.7.7"]  # one admitted, one not
    refused(f"http://mixed.example:{server.port}/echo")
    assert server.seen == []


def test_the_allowlist_admits_addresses_not_metadata(settings, dns):
    settings.WORKFLOW_HTTP_ALLOWLIST = ["0.0.0.0/0", "::/0"]
    dns.names["meta.example"] = ["169.254.169.254"]
    refused("http://meta.example/")
    refused("http://169.254.169.254/")
    refused("http://[fd00:ec2::254]/")


# --- Allowed requests ------------------------------------------------------------------------------
def test_allowed_with_the_allowlist(allow_local, server):
    response = call(f"http://127.0.0.1:{server.port}/echo")
    assert response["status"] == 200
    assert response["body_base64"] is False
    assert response["body"]["method"] == "GET"
    assert response["headers"]["content-type"] == "application/json"


def test_a_host_name_in_the_allowlist_admits_its_addresses(settings, server, dns):
    settings.WORKFLOW_HTTP_ALLOWLIST = ["internal.test"]
    dns.names["internal.test"] = ["127.0.0.1"]
    assert call(f"http://internal.test:{server.port}/echo")["status"] == 200
    dns.names["other.test"] = ["127.0.0.1"]
    refused(f"http://other.test:{server.port}/echo")


def test_the_vetted_address_is_used_with_the_original_host_header(allow_local, server, dns):
    # The name resolves to loopback once, then to a metadata address: a second lookup would rebind.
    answers = iter([["127.0.0.1"]])
    dns.names["rebind.test"] = lambda: next(answers, ["169.254.169.254"])
    response = call(f"http://rebind.test:{server.port}/echo?q=1")
    assert response["status"] == 200
    assert response["body"]["headers"]["host"] == f"rebind.test:{server.port}"
    assert response["body"]["path"] == "/echo?q=1"
    assert dns.calls.count("rebind.test") == 1


def test_json_round_trip_with_post(allow_local, server):
    response = call(f"http://127.0.0.1:{server.port}/echo", method="POST", body={"a": [1, 2], "b": "é"})
    echoed = response["body"]
    assert echoed["method"] == "POST"
    assert echoed["headers"]["content-type"] == "application/json"
    assert json.loads(echoed["body"]) == {"a": [1, 2], "b": "é"}


def test_a_text_body_is_sent_as_is(allow_local, server):
    for method in ("PUT", "PATCH", "DELETE"):
        echoed = call(f"http://127.0.0.1:{server.port}/echo", method=method, body="a=1&b=2")["body"]
        assert (echoed["method"], echoed["body"]) == (method, "a=1&b=2")
        assert echoed["headers"]["content-type"].startswith("text/plain")
    echoed = call(
        f"http://127.0.0.1:{server.port}/echo", method="POST", body="<x/>", headers={"Content-Type": "application/xml"}
    )["body"]
    assert (echoed["body"], echoed["headers"]["content-type"]) == ("<x/>", "application/xml")


def test_response_bodies_text_binary_and_head(allow_local, server):
    text = call(f"http://127.0.0.1:{server.port}/text")
    assert (text["body"], text["body_base64"]) == ("héllo", False)
    binary = call(f"http://127.0.0.1:{server.port}/binary")
    assert binary["body_base64"] is True and base64.b64decode(binary["body"]) == bytes(range(256))
    head = call(f"http://127.0.0.1:{server.port}/echo", method="HEAD")
    assert head["status"] == 200 and head["body"] == ""


@pytest.mark.parametrize(
    "body", ['{"a": NaN}', "[Infinity]", '{"a": -Infinity}', "[1e400]", "{not json", '{"a": "x\\u0000"}', '["\\ud800"]']
)
def test_a_json_body_with_nan_infinity_nul_surrogate_or_no_json_form_is_returned_as_text(allow_local, server, body):
    response = call(f"http://127.0.0.1:{server.port}/json?body={quote(body)}")
    assert (response["body"], response["body_base64"]) == (body, False)


def test_a_json_body_with_finite_numbers_is_parsed(allow_local, server):
    response = call(f"http://127.0.0.1:{server.port}/json?body={quote('[1.5, -2e10, 7]')}")
    assert response["body"] == [1.5, -2e10, 7]


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_error_statuses_are_returned_not_raised(allow_local, server, status):
    response = call(f"http://127.0.0.1:{server.port}/status/{status}")
    assert response["status"] == status and response["body"] == {"error": "nope"}


def test_headers_and_credential_headers_are_sent(allow_local, server):
    ctx = FakeCtx(credentials={"api-token": SECRET})
    echoed = call(
        f"http://127.0.0.1:{server.port}/echo",
        ctx=ctx,
        headers={"X-Trace": "abc", "Accept": "application/json"},
        credential_headers={"Authorization": "api-token"},
    )["body"]
    assert echoed["headers"]["x-trace"] == "abc"
    assert echoed["headers"]["accept"] == "application/json"
    assert echoed["headers"]["authorization"] == SECRET
    assert ctx.asked == ["api-token"]


def test_a_missing_credential_fails_without_sending(allow_local, server):
    refused(f"http://127.0.0.1:{server.port}/echo", "credential_not_found", credential_headers={"X-Key": "nope"})
    assert server.seen == []


def test_secrets_stay_out_of_error_messages(allow_local, server, dns):
    ctx = FakeCtx(credentials={"token": SECRET, "bad": "line\r\nX-Injected: 1" + SECRET})
    error = refused("http://169.254.169.254/", ctx=ctx, credential_headers={"Authorization": "token"})
    assert SECRET not in error.message
    error = refused(
        f"http://127.0.0.1:{server.port}/", "invalid_credential", ctx=ctx, credential_headers={"X-Key": "bad"}
    )
    assert SECRET not in error.message and "line" not in error.message
    port = _closed_port()
    error = refused(
        f"http://127.0.0.1:{port}/", "connection_failed", ctx=ctx, credential_headers={"Authorization": "token"}
    )
    assert SECRET not in error.message and error.retryable
    assert server.seen == []


@pytest.mark.parametrize(
    "config",
    [
        {"headers": {"X-A": 1}},
        {"headers": ["X-A"]},
        {"headers": {"Bad Name": "x"}},
        {"headers": {"X-A": "a\r\nX-B: b"}},
        {"headers": {"Host": "evil.example"}},
        {"headers": {"Content-Length": "5"}},
        {"credential_headers": {"Authorization": 5}},
        {"credential_headers": {"Transfer-Encoding": "token"}},
        {"timeout": 0},
        {"timeout": "fast"},
        {"method": "TRACE"},
    ],
)
def test_invalid_config_is_refused(allow_local, server, config):
    refused(f"http://127.0.0.1:{server.port}/echo", "invalid_config", **config)
    assert server.seen == []


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "file:///etc/passwd", "gopher://127.0.0.1/", "http://user:pw@example.com/",
     "http://user@127.0.0.1/", "http:///path", "not a url", "", "//example.com/"],
)
def test_invalid_urls(allow_local, url):
    refused(url, "invalid_url")


def test_a_non_text_url_is_invalid(allow_local):
    refused(None, "invalid_url")


# --- Redirects ------------------------------------------------------------------------------------
def test_redirects_are_followed_and_limited(allow_local, server):
    assert call(f"http://127.0.0.1:{server.port}/chain/5")["body"] == {"done": True}
    refused(f"http://127.0.0.1:{server.port}/chain/6", "too_many_redirects")
    assert len(server.seen) == 5 + 1 + 6


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://10.0.0.1/",
        "http://192.168.1.1:8080/",
    ],
)
def test_each_redirect_is_checked_again(allow_local, server, target):
    refused(f"http://127.0.0.1:{server.port}/redirect?to={target}")
    assert len(server.seen) == 1


def test_a_redirect_to_a_name_resolving_to_metadata_is_refused(allow_local, server, dns):
    dns.names["sneaky.example"] = ["169.254.169.254"]
    refused(f"http://127.0.0.1:{server.port}/redirect?to=http://sneaky.example/")


def test_redirects_to_other_schemes_or_userinfo_are_refused(allow_local, server):
    refused(f"http://127.0.0.1:{server.port}/redirect?to=file:///etc/passwd", "invalid_url")
    refused(f"http://127.0.0.1:{server.port}/redirect?to=http://a:b@127.0.0.1:{server.port}/echo", "invalid_url")


def test_redirect_methods(allow_local, server):
    base = f"http://127.0.0.1:{server.port}"
    echoed = call(f"{base}/redirect?code=303&to=/echo", method="POST", body={"a": 1})["body"]
    assert (echoed["method"], echoed["body"]) == ("GET", "")
    assert "content-type" not in echoed["headers"]
    echoed = call(f"{base}/redirect?code=307&to=/echo", method="POST", body={"a": 1})["body"]
    assert (echoed["method"], json.loads(echoed["body"])) == ("POST", {"a": 1})
    echoed = call(f"{base}/redirect?code=308&to=/echo", method="PUT", body="x")["body"]
    assert (echoed["method"], echoed["body"]) == ("PUT", "x")


def test_credentials_are_dropped_when_a_redirect_changes_origin(allow_local, server, dns):
    dns.names["elsewhere.test"] = ["127.0.0.1"]
    ctx = FakeCtx(credentials={"token": SECRET})
    config = {"headers": {"X-Trace": "abc", "Cookie": "c=1"}, "credential_headers": {"X-Api-Key": "token"}}
    same = call(f"http://127.0.0.1:{server.port}/redirect?to=/echo", ctx=ctx, **config)["body"]
    assert same["headers"]["x-api-key"] == SECRET and same["headers"]["cookie"] == "c=1"
    other = f"http://elsewhere.test:{server.port}/echo"
    moved = call(f"http://127.0.0.1:{server.port}/redirect?to={other}", ctx=ctx, **config)["body"]
    assert moved["headers"]["host"] == f"elsewhere.test:{server.port}"
    assert moved["headers"]["x-trace"] == "abc"
    assert "x-api-key" not in moved["headers"] and "cookie" not in moved["headers"]
    # Once dropped they stay dropped, even when a later redirect comes back to the first origin.
    back = f"http://127.0.0.1:{server.port}/echo"
    there_and_back = f"http://elsewhere.test:{server.port}/redirect%3Fto%3D{back}"
    bounced = call(f"http://127.0.0.1:{server.port}/redirect?to={there_and_back}", ctx=ctx, **config)
    assert bounced["body"]["path"] == "/echo"
    assert "x-api-key" not in bounced["body"]["headers"]


# --- Bounds ---------------------------------------------------------------------------------------
def test_response_size_is_bounded(allow_local, server):
    assert len(call(f"http://127.0.0.1:{server.port}/big?n=10000")["body"]) == 10_000
    refused(f"http://127.0.0.1:{server.port}/big?n=10001", "response_too_large")  # by Content-Length
    assert len(call(f"http://127.0.0.1:{server.port}/chunked?chunks=20")["body"]) == 10_000
    refused(f"http://127.0.0.1:{server.port}/chunked?chunks=21", "response_too_large")  # while streaming


def test_compressed_bodies_are_bounded_after_decompression(allow_local, server):
    assert call(f"http://127.0.0.1:{server.port}/gzip?n=5000")["body"] == "z" * 5000
    # 2 MB of "z" compress to about 2 kB: under the wire limit, far over it once decompressed.
    assert len(gzip.compress(b"z" * 2_000_000)) < 10_000
    refused(f"http://127.0.0.1:{server.port}/gzip?n=2000000", "response_too_large")
    assert call(f"http://127.0.0.1:{server.port}/gzip?n=10000")["body"] == "z" * 10_000  # exactly the limit


def test_timeout(allow_local, server):
    started = time.monotonic()
    error = refused(f"http://127.0.0.1:{server.port}/slow", "timeout", timeout=0.3)
    assert error.retryable and time.monotonic() - started < 2


def test_the_step_deadline_bounds_the_timeout(allow_local, server):
    started = time.monotonic()
    refused(f"http://127.0.0.1:{server.port}/slow", "timeout", ctx=FakeCtx(remaining=0.3), timeout=30)
    assert time.monotonic() - started < 2
    refused(f"http://127.0.0.1:{server.port}/echo", "timeout", ctx=FakeCtx(remaining=0))


def test_the_settings_bound_the_timeout(allow_local, server):
    allow_local.WORKFLOW_HTTP_MAX_TIMEOUT_SECONDS = 0.3
    started = time.monotonic()
    refused(f"http://127.0.0.1:{server.port}/slow", "timeout", timeout=30)
    assert time.monotonic() - started < 2


def test_connection_failures_are_retryable(allow_local):
    error = refused(f"http://127.0.0.1:{_closed_port()}/", "connection_failed")
    assert error.retryable


def test_an_unknown_name_fails(allow_local, dns):
    error = refused("http://nowhere.test/", "connection_failed")
    assert not error.retryable


def test_a_stopped_execution_stops(allow_local, server):
    refused(f"http://127.0.0.1:{server.port}/echo", "stopped", ctx=FakeCtx(stopped=True))
    assert server.seen == []


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- TLS: the vetted IP is dialled, the name is verified ------------------------------------------
@pytest.fixture
def tls(monkeypatch):
    """A CA the component trusts, and a server certificate for api.example.test."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject, issuer, key, signer, *, ca, names=()):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        if names:
            alternative = x509.SubjectAlternativeName([x509.DNSName(name) for name in names])
            builder = builder.add_extension(alternative, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = certificate("test ca", "test ca", ca_key, ca_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate("api.example.test", "test ca", leaf_key, ca_key, ca=False, names=["api.example.test"])

    import tempfile
    from pathlib import Path

    directory = Path(tempfile.mkdtemp(prefix="http-tls-"))
    (directory / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "leaf.key").write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(directory / "leaf.pem", directory / "leaf.key")

    client_context = ssl.create_default_context(cadata=ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    monkeypatch.setattr(http_component, "_ssl_context", lambda: client_context)

    srv = Server(ssl_context=server_context)
    server_context.sni_callback = lambda sock, name, context: srv.sni.append(name)
    _serve(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def test_https_dials_the_vetted_ip_and_verifies_the_name(allow_local, dns, tls):
    dns.names["api.example.test"] = ["127.0.0.1"]
    response = call(f"https://api.example.test:{tls.port}/echo")
    assert response["status"] == 200
    assert response["body"]["headers"]["host"] == f"api.example.test:{tls.port}"
    assert tls.sni == ["api.example.test"]
    assert dns.calls.count("api.example.test") == 1


def test_https_to_a_name_the_certificate_does_not_cover_fails(allow_local, dns, tls):
    dns.names["wrong.example.test"] = ["127.0.0.1"]
    error = refused(f"https://wrong.example.test:{tls.port}/echo", "tls_failed")
    assert not error.retryable
    refused(f"https://127.0.0.1:{tls.port}/echo", "tls_failed")


# --- Through the engine: the secret is sent, and redacted from everything recorded ----------------
@pytest.mark.django_db(transaction=True)
def test_an_execution_sends_the_credential_and_records_it_nowhere(allow_local, server, client_for, org, write_key):
    from orgs import crypto
    from orgs.models import Credential
    from workflows.models import StepRun
    from workflows.tests.support import Channel, component, connect, document, text

    Credential.objects.create(org=org, alias="api-token", provider="custom", ciphertext=crypto.encrypt(SECRET))
    client = client_for(key=write_key)
    blob = {"alias": "http-calls", "type": "blobhub.compute.workflow"}
    assert client.post(f"/v1/orgs/{org.alias}/blobs", blob, format="json").status_code in (200, 201)
    revision_id = client.get(f"/v1/blobs/{org.alias}/http-calls/revisions").json()["revisions"][0]["id"]
    channel = Channel(client, revision_id)
    doc = document(
        [
            component("start", "flow.start"),
            component(
                "call",
                "http.request",
                config={
                    "method": {"type": "choice", "id": "POST"},
                    "url": text(f"http://127.0.0.1:{server.port}/echo"),
                    "headers": {"type": "json", "json": {"X-Trace": "abc"}},
                    "credential_headers": {"type": "json", "json": {"Authorization": "api-token"}},
                    "timeout": {"type": "float", "float": 5},
                },
            ),
            component("end", "flow.end"),
        ],
        [
            connect("c1", "start", "call"),
            connect("c2", "call", "end", source_port="response", target_port="response"),
            connect("c3", "call", "end", route="failure", source_port="error", target_port="error"),
        ],
    )
    assert channel.command("create_definition", alias="call", category="workflow").status_code == 200
    assert channel.command("upload_definition", alias="call", definition=doc).status_code == 200
    assert channel.query("check_definition", alias="call").json() == {"status": "valid", "events": []}
    session = channel.command("create_session", alias="http-session")
    assert session.status_code == 200, session.json()
    answer = channel.command("create_execution", target={"session": "http-session"}, workflow={"definition": "call"})
    assert answer.status_code == 200, answer.json()
    execution_id = answer.json()["execution"]["id"]
    execution = channel.query("get_execution", execution_id=execution_id).json()["execution"]

    assert execution["status"] == "completed", execution
    assert server.seen[-1]["headers"]["Authorization"] == SECRET  # the server did get it
    echoed = execution["output"]["response"]["json"]["body"]
    assert echoed["method"] == "POST" and echoed["headers"]["x-trace"] == "abc"
    assert echoed["headers"]["authorization"] == "[redacted]"
    events = channel.query("list_execution_events", execution_id=execution_id).json()
    recorded = json.dumps([execution, events, list(StepRun.objects.values())], default=str)
    assert SECRET not in recorded and "s3cr3t" not in recorded


def test_the_default_tls_context_verifies_names():
    context = http_component._ssl_context()
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
