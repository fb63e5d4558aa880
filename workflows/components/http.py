"""`http.request` (API.md §3.1): an HTTP call to an address the allow-list admits.

Security, in the order a request meets it:

- Only `http` and `https` URLs without userinfo.
- The host is resolved once with `socket.getaddrinfo`; the request is refused when any resolved
  address is private, loopback, link-local, multicast, reserved, unspecified, shared
  (100.64.0.0/10) or otherwise not global, unless `WORKFLOW_HTTP_ALLOWLIST` admits the address
  (a CIDR containing it) or the host name (an exact entry). Cloud metadata addresses are stricter:
  only an allow-list entry naming exactly that one address admits them.
- The connection goes to the vetted address itself: the URL is requested with the IP as host, the
  original `Host` header, and for https the original name as SNI and for certificate checks, so a
  second DNS answer (DNS rebinding) is never used. Proxies from the environment are ignored.
- Redirects are followed here, at most `MAX_REDIRECTS`, each hop's URL and addresses checked
  again; credential headers (and Authorization / Cookie) are dropped once a redirect leaves the
  origin.
- The response is streamed and refused past `WORKFLOW_HTTP_MAX_RESPONSE_BYTES` (on the wire and
  decompressed); the whole call, redirects included, is bounded by min(timeout, ctx.remaining()).
- Secrets come only from `ctx.credential(alias)` (which registers them for redaction); they are
  never logged and never put in error messages.

The component uses only `ctx.credential`, `ctx.remaining` and `ctx.stopped`.
"""

import base64
import functools
import ipaddress
import json
import math
import re
import socket
import ssl
import time
import zlib
from typing import Any

import httpx
from django.conf import settings

from blobhub.api.parsers import unstorable
from workflows.components.base import Component, ComponentError, Port, RetryPolicy, register

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")
DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "blobhub-workflow/1"
# What the engine allows beyond the HTTP budget before it abandons the step itself.
TIMEOUT_MARGIN_SECONDS = 5.0
READ_CHUNK_BYTES = 64 * 1024

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address) for address in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
SHARED_NETWORK = ipaddress.ip_network("100.64.0.0/10")
NAT64_NETWORK = ipaddress.ip_network("64:ff9b::/96")

TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Printable ASCII and tabs: no CR, LF, NUL or other controls (no header injection).
HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]*\Z")
# Headers the component sets itself; a definition may not set them.
RESERVED_HEADERS = frozenset(
    {
        "host", "content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection", "te", "trailer",
        "upgrade",
    }
)
# Dropped, with the credential headers, once a redirect leaves the origin.
CROSS_ORIGIN_DROPPED = frozenset({"authorization", "proxy-authorization", "cookie"})
JSON_MIME = re.compile(r"^application/(?:[\w.+-]+\+)?json\Z")
TEXT_MIMES = frozenset(
    {
        "application/xml", "application/javascript", "application/ecmascript", "application/x-www-form-urlencoded",
        "application/x-ndjson",
    }
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def _ssl_context() -> ssl.SSLContext:
    """The TLS verification httpx uses (certifi's CAs, built once; tests substitute their own)."""
    return _default_ssl_context()


# --- Addresses ------------------------------------------------------------------------------------
def _normal(address: Address) -> Address:
    """IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are their IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address tunnels to (6to4, Teredo, NAT64)."""
    found = []
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if address in NAT64_NETWORK:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def address_problem(address: Address) -> str | None:
    """Why an address may not be reached without the allow-list, or None when it is public."""
    address = _normal(address)
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv4Address) and address in SHARED_NETWORK:
        return "shared"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "non-public"
    if isinstance(address, ipaddress.IPv6Address):
        for inner in _embedded_ipv4(address):
            problem = address_problem(inner)
            if problem is not None:
                return f"{problem} (tunnelled)"
    return None


class AllowList:
    """`WORKFLOW_HTTP_ALLOWLIST`: CIDRs and exact host names, read at each call."""

    def __init__(self, entries: list[str] | tuple[str, ...]):
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.names: set[str] = set()
        for entry in entries or ():
            entry = str(entry).strip()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.names.add(_host_key(entry))

    @classmethod
    def from_settings(cls) -> "AllowList":
        return cls(getattr(settings, "WORKFLOW_HTTP_ALLOWLIST", ()) or ())

    def admits(self, address: Address, host: str) -> bool:
        normal = _normal(address)
        if normal in METADATA_ADDRESSES:
            # Only an entry naming exactly this address: neither a wider CIDR nor a host name.
            return any(network.num_addresses == 1 and normal in network for network in self.networks)
        if _host_key(host) in self.names:
            return True
        return any(normal in network or address in network for network in self.networks)


def _host_key(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _parse_address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def vet_host(host: str, port: int, allow: AllowList) -> list[str]:
    """The addresses of `host` to connect to, after checking every one of them."""
    literal = _parse_address(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError, OSError) as exc:
            temporary = isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN
            raise ComponentError(
                "connection_failed", f"The host {host} could not be resolved.", retryable=temporary
            ) from None
        addresses = []
        for info in infos:
            address = _parse_address(str(info[4][0]))
            if address is not None and address not in addresses:
                addresses.append(address)
        if not addresses:
            raise ComponentError("connection_failed", f"The host {host} has no address.", retryable=True)
    for address in addresses:
        problem = address_problem(address)
        if problem is not None and not allow.admits(address, host):
            raise ComponentError(
                "address_refused",
                f"The host {host} resolves to {address}, a {problem} address the allow-list does not admit.",
            )
    return [str(_normal(address)) for address in addresses]


# --- URLs and headers -----------------------------------------------------------------------------
def parse_url(text: Any) -> httpx.URL:
    if not isinstance(text, str) or not text.strip():
        raise ComponentError("invalid_url", "The url must be a non-empty text.")
    try:
        url = httpx.URL(text.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        raise ComponentError("invalid_url", "The url is not a valid URL.") from None
    return _check_url(url)


def _check_url(url: httpx.URL) -> httpx.URL:
    if url.scheme not in ("http", "https"):
        raise ComponentError("invalid_url", "Only http and https URLs are allowed.")
    if url.userinfo:
        raise ComponentError("invalid_url", "URLs may not carry a user name or password; use credential_headers.")
    if not url.raw_host:
        raise ComponentError("invalid_url", "The url has no host.")
    return url.copy_with(fragment=None)


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return url.scheme, _host_key(url.raw_host.decode("ascii")), url.port or (443 if url.scheme == "https" else 80)


def _header_map(value: Any, what: str) -> dict[str, str]:
    """A json object of header name → text, with names checked (values are checked by the caller)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ComponentError("invalid_config", f"{what} must be a json object of text to text.")
    for name in value:
        if not TOKEN.match(name):
            raise ComponentError("invalid_config", f"{what}: {name!r} is not a valid header name.")
        if name.lower() in RESERVED_HEADERS:
            raise ComponentError("invalid_config", f"{what}: the {name} header is set by the component.")
    return value


def _budget(config: dict) -> float:
    maximum = float(getattr(settings, "WORKFLOW_HTTP_MAX_TIMEOUT_SECONDS", 60))
    raw = config.get("timeout")
    if raw is None:
        raw = DEFAULT_TIMEOUT_SECONDS
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not raw > 0:
        raise ComponentError("invalid_config", "timeout must be a positive number of seconds.")
    return min(float(raw), maximum)


# --- Bodies ---------------------------------------------------------------------------------------
class _Inflater:
    """gzip / deflate decoding that never produces more than it is asked for (no zip bombs)."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        self._raw_fallback = encoding == "deflate"
        wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        self._d = zlib.decompressobj(wbits)
        self._started = False

    def feed(self, data: bytes, limit: int) -> bytes:
        """At most `limit + 1` decoded bytes (one more than allowed says "too large")."""
        out = bytearray()
        while data and len(out) <= limit and not self._d.eof:
            try:
                out += self._d.decompress(data, limit + 1 - len(out))
            except zlib.error:
                if self._raw_fallback and not self._started:
                    # Some servers send raw deflate without the zlib wrapper.
                    self._raw_fallback = False
                    self._d = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise ComponentError("invalid_response", f"The response's {self.encoding} body is corrupt.") from None
            self._started = True
            data = self._d.unconsumed_tail
        return bytes(out)

    def flush(self) -> bytes:
        try:
            return self._d.flush()
        except zlib.error:
            raise ComponentError("invalid_response", f"The response's {self.encoding} body is corrupt.") from None


def _inflater_for(response: httpx.Response) -> _Inflater | None:
    codings = [c.strip().lower() for c in response.headers.get("content-encoding", "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if len(codings) == 1 and codings[0] in ("gzip", "x-gzip", "deflate"):
        return _Inflater("deflate" if codings[0] == "deflate" else "gzip")
    return None  # none, or one we do not decode: the bytes are returned as they came


def _request_body(body: Any) -> tuple[bytes | None, str | None]:
    if body is None:
        return None, None
    if isinstance(body, str):
        return body.encode("utf-8"), "text/plain; charset=utf-8"
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), "application/json"


def _response_body(data: bytes, content_type: str) -> tuple[Any, bool]:
    """(body, is_base64): parsed JSON for JSON, text for text, base64 for anything else."""
    mime, _, params = content_type.partition(";")
    mime = mime.strip().lower()
    charset = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"').lower()
    is_json = bool(JSON_MIME.match(mime))
    textual = (
        is_json
        or mime.startswith("text/")
        or mime in TEXT_MIMES
        or mime.endswith("+xml")
        or charset is not None
        or not mime
    )
    if not textual:
        return base64.b64encode(data).decode("ascii"), True
    text = _decode(data, charset)
    if text is None:
        return base64.b64encode(data).decode("ascii"), True
    if is_json and text.strip():
        # NaN, Infinity and floats out of range (1e400) are not JSON, and no port value can hold
        # them, nor a string with a NUL or a lone surrogate (its escape, `\u0000`, stays as
        # written in the text): such a body stays text, as any other that does not parse.
        try:
            parsed = json.loads(text, parse_constant=_not_json, parse_float=_finite)
        except ValueError:
            return text, False
        if unstorable(parsed) is None:
            return parsed, False
    return text, False


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _finite(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"{literal} is out of range")
    return number


def _decode(data: bytes, charset: str | None) -> str | None:
    for encoding in (charset, "utf-8") if charset else ("utf-8",):
        try:
            return data.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            continue
    return None


def _response_headers(response: httpx.Response) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


# --- The component --------------------------------------------------------------------------------
@register
class HttpRequest(Component):
    type = "http.request"
    config = {
        "method": Port("choice", default="GET", choices=METHODS),
        "url": Port("text", required=True),
        "headers": Port("json"),
        "credential_headers": Port("json"),
        "timeout": Port("float", default=DEFAULT_TIMEOUT_SECONDS, minimum=0.001),
    }
    inputs = {"body": Port("any")}
    outputs = {"response": Port("json")}
    timeout_seconds = DEFAULT_TIMEOUT_SECONDS
    retry = RetryPolicy(max_attempts=3, backoff_seconds=0.5)

    @classmethod
    def timeout_for(cls, config: dict) -> float:
        try:
            budget = _budget(config)
        except ComponentError:
            budget = DEFAULT_TIMEOUT_SECONDS
        return budget + TIMEOUT_MARGIN_SECONDS

    def run(self, ctx, config, inputs):
        method = str(config.get("method") or "GET").upper()
        if method not in METHODS:
            raise ComponentError("invalid_config", f"method must be one of {', '.join(METHODS)}.")
        url = parse_url(config.get("url"))
        headers = _header_map(config.get("headers"), "headers")
        for name, value in headers.items():
            if not HEADER_VALUE.match(value):
                raise ComponentError(
                    "invalid_config", f"headers: the {name} value has characters a header cannot carry."
                )
        credential_headers = _header_map(config.get("credential_headers"), "credential_headers")
        deadline = time.monotonic() + min(_budget(config), max(float(ctx.remaining()), 0.0))

        secrets: list[str] = []
        outgoing: dict[str, tuple[str, str]] = {}  # lowercase name → (name, value)
        for name, value in headers.items():
            outgoing[name.lower()] = (name, value)
        for name, alias in credential_headers.items():
            secret = ctx.credential(alias)
            if not isinstance(secret, str) or not HEADER_VALUE.match(secret):
                raise ComponentError(
                    "invalid_credential", f"The credential {alias!r} cannot be sent as the {name} header's value."
                )
            secrets.append(secret)
            outgoing[name.lower()] = (name, secret)
        credential_names = {name.lower() for name in credential_headers}
        outgoing.setdefault("user-agent", ("User-Agent", USER_AGENT))
        outgoing.setdefault("accept-encoding", ("Accept-Encoding", "gzip, deflate"))

        content, content_type = _request_body(inputs.get("body"))
        if content is not None:
            outgoing.setdefault("content-type", ("Content-Type", content_type))

        call = _Call(ctx=ctx, deadline=deadline, secrets=secrets, allow=AllowList.from_settings())
        for hop in range(MAX_REDIRECTS + 1):
            status, response_headers, location, data = call.send(method, url, outgoing, content)
            if status in REDIRECT_STATUSES and location:
                if hop == MAX_REDIRECTS:
                    raise ComponentError("too_many_redirects", f"More than {MAX_REDIRECTS} redirects.")
                try:
                    target = _check_url(url.join(location))
                except httpx.InvalidURL:
                    raise ComponentError("invalid_url", "A redirect's Location is not a valid URL.") from None
                except ComponentError as exc:
                    raise ComponentError(exc.code, f"A redirect went to a refused URL: {exc.message}") from None
                if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                    method, content = "GET", None
                    for name in ("content-type", "content-encoding"):
                        outgoing.pop(name, None)
                if _origin(target) != _origin(url):
                    for name in credential_names | CROSS_ORIGIN_DROPPED:
                        outgoing.pop(name, None)
                url = target
                continue
            body, is_base64 = _response_body(data, response_headers.get("content-type", ""))
            return {
                "response": {"status": status, "headers": response_headers, "body": body, "body_base64": is_base64}
            }
        raise AssertionError("unreachable")  # pragma: no cover


class _Call:
    """One http.request run: its time budget, its secrets (for scrubbing) and the allow-list."""

    def __init__(self, *, ctx, deadline: float, secrets: list[str], allow: AllowList):
        self.ctx = ctx
        self.deadline = deadline
        self.secrets = secrets
        self.allow = allow
        self.max_bytes = int(getattr(settings, "WORKFLOW_HTTP_MAX_RESPONSE_BYTES", 1024 * 1024))

    def left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise ComponentError("timeout", "The HTTP request ran out of time.", retryable=True)
        return left

    def check(self) -> None:
        if self.ctx.stopped():
            raise ComponentError("stopped", "The execution was stopped.")
        self.left()

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "[redacted]")
        return text[:300]

    def send(self, method: str, url: httpx.URL, outgoing: dict, content: bytes | None):
        """(status, headers, Location or None, body bytes) of one hop, connected to a vetted address."""
        self.check()
        host = url.raw_host.decode("ascii")
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = vet_host(host, port, self.allow)
        headers = [(name, value) for name, value in outgoing.values()]
        headers.append(("Host", url.netloc.decode("ascii")))
        extensions = {"sni_hostname": host.rstrip(".")} if url.scheme == "https" else {}
        failure: ComponentError | None = None
        for address in addresses:
            self.check()
            try:
                return self._exchange(method, url.copy_with(host=address), headers, content, extensions)
            except _ConnectFailed as exc:
                failure = exc.error  # try the host's next vetted address
        assert failure is not None
        raise failure

    def _exchange(self, method, pinned: httpx.URL, headers, content, extensions):
        # A fresh client per hop: no pooled connection verified for another name is ever reused.
        try:
            with httpx.Client(
                verify=_ssl_context(), trust_env=False, follow_redirects=False, timeout=httpx.Timeout(self.left())
            ) as client:
                request = client.build_request(method, pinned, headers=headers, content=content, extensions=extensions)
                try:
                    response = client.send(request, stream=True)
                except httpx.ConnectError as exc:
                    raise _ConnectFailed(self._connect_error(exc)) from None
                try:
                    return self._read(response)
                finally:
                    response.close()
        except httpx.TimeoutException:
            raise ComponentError("timeout", "The HTTP request ran out of time.", retryable=True) from None
        except (httpx.LocalProtocolError, httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise ComponentError("invalid_request", "The request could not be sent as given.") from None
        except httpx.HTTPError as exc:
            raise ComponentError(
                "connection_failed", self.scrub(f"The connection failed: {type(exc).__name__}: {exc}"), retryable=True
            ) from None

    def _connect_error(self, exc: httpx.ConnectError) -> ComponentError:
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return ComponentError(
                    "tls_failed", self.scrub(f"The server's certificate was refused: {cause.verify_message}")
                )
            cause = cause.__cause__ or cause.__context__
        return ComponentError("connection_failed", self.scrub(f"Could not connect: {exc}"), retryable=True)

    def _read(self, response: httpx.Response):
        status = response.status_code
        headers = _response_headers(response)
        location = headers.get("location") if status in REDIRECT_STATUSES else None
        if location:
            return status, headers, location, b""  # not read: the redirect is followed or refused
        declared = headers.get("content-length", "")
        if declared.strip().isdigit() and int(declared) > self.max_bytes:
            raise self._too_large()
        inflater = _inflater_for(response)
        if inflater is not None:
            headers.pop("content-length", None)
        body = bytearray()
        received = 0
        for chunk in response.iter_raw(READ_CHUNK_BYTES):
            self.check()
            received += len(chunk)
            if received > self.max_bytes:
                raise self._too_large()
            body += inflater.feed(chunk, self.max_bytes - len(body)) if inflater else chunk
            if len(body) > self.max_bytes:
                raise self._too_large()
        if inflater is not None:
            body += inflater.flush()
            if len(body) > self.max_bytes:
                raise self._too_large()
        return status, headers, None, bytes(body)

    def _too_large(self) -> ComponentError:
        return ComponentError("response_too_large", f"The response is larger than {self.max_bytes} bytes.")


class _ConnectFailed(Exception):
    def __init__(self, error: ComponentError):
        self.error = error
