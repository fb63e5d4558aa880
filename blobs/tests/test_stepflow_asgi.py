"""The pieces that make daphne stream blob bodies, on their own (the real server is
exercised end to end in test_stepflow_server.py)."""

import asyncio
import io
import tempfile

from blobs.content import asgi_streaming
from blobs.content.asgi_streaming import CHUNK, SendWindow, SpooledBodyQueue, StreamingASGIHandler


async def test_a_spooled_body_is_served_chunk_by_chunk_and_then_the_queue_as_usual():
    body = tempfile.TemporaryFile()
    body.write(b"a" * CHUNK + b"b" * 10)
    body.seek(0)
    queue = SpooledBodyQueue(body, CHUNK + 10)

    # Daphne's own copy of the (emptied) body is dropped; a disconnect waits its turn.
    queue.put_nowait({"type": "http.request", "body": b"", "more_body": False})
    queue.put_nowait({"type": "http.disconnect"})

    first, second, third = await queue.get(), await queue.get(), await queue.get()
    assert first == {"type": "http.request", "body": b"a" * CHUNK, "more_body": True}
    assert second == {"type": "http.request", "body": b"b" * 10, "more_body": False}
    assert third == {"type": "http.disconnect"}
    assert body.closed


async def test_the_handler_gives_the_request_the_spool_file_itself_and_receive_reports_what_follows():
    body = tempfile.TemporaryFile()
    body.write(b"x" * (CHUNK + 1))
    body.seek(0)
    queue = SpooledBodyQueue(body, CHUNK + 1)
    queue.put_nowait({"type": "http.request", "body": b"", "more_body": False})  # daphne's copy
    queue.put_nowait({"type": "http.disconnect"})

    assert await StreamingASGIHandler().read_body(queue.get) is body  # no copy of Django's own
    assert body.read() == b"x" * (CHUNK + 1)
    assert await queue.get() == {"type": "http.disconnect"}  # what Django listens for meanwhile


async def test_a_body_daphne_did_not_spool_is_read_as_django_does():
    queue: asyncio.Queue = asyncio.Queue()
    queue.put_nowait({"type": "http.request", "body": b"small", "more_body": False})

    body = await StreamingASGIHandler().read_body(queue.get)
    assert body.read() == b"small"


async def test_a_body_shorter_than_announced_ends_instead_of_waiting():
    queue = SpooledBodyQueue(io.BytesIO(b"short"), 100)

    assert await queue.get() == {"type": "http.request", "body": b"short", "more_body": True}
    assert await queue.get() == {"type": "http.request", "body": b"", "more_body": False}


class FakeRequest:
    """Twisted's Request, as far as response pacing uses it."""

    def __init__(self):
        self.channel = object()
        self.transport = type("Transport", (), {"bufferSize": 64 * 1024})()
        self.producer = None
        self.registrations = []

    def registerProducer(self, producer, streaming):
        self.producer = producer
        self.registrations.append(("register", streaming))

    def unregisterProducer(self):
        self.producer = None
        self.registrations.append(("unregister", None))


class FakeServer:
    def __init__(self):
        self.sent = []

    async def handle_reply(self, protocol, message):
        self.sent.append(message.get("body"))


async def test_response_bodies_wait_while_the_connection_buffer_is_full():
    asgi_streaming._pace_responses(FakeServer)
    server, request = FakeServer(), FakeRequest()

    await server.handle_reply(request, {"type": "http.response.start", "status": 200})
    await server.handle_reply(request, {"type": "http.response.body", "body": b"1", "more_body": True})
    window = request.producer
    assert isinstance(window, SendWindow) and request.registrations == [("register", True)]
    assert request.transport.bufferSize == asgi_streaming.SEND_BUFFER, "room for a few chunks in flight"

    window.pauseProducing()  # Twisted: the send buffer is full
    blocked = asyncio.ensure_future(
        server.handle_reply(request, {"type": "http.response.body", "body": b"2", "more_body": True})
    )
    for _ in range(5):
        await asyncio.sleep(0)
    assert not blocked.done(), "a body message went on while the buffer was full"
    assert server.sent[-1] == b"2", "the chunk is written, and the next one waits"

    window.resumeProducing()  # Twisted: the buffer drained
    await asyncio.wait_for(blocked, timeout=5)
    await server.handle_reply(request, {"type": "http.response.body", "body": b"", "more_body": False})
    assert request.registrations == [("register", True), ("unregister", None)]
    assert request.producer is None


class RecordingServer:
    """Daphne's Server, as far as its HTTP requests reach it before the application runs."""

    proxy_forwarded_address_header = None
    root_path = ""

    def __init__(self):
        self.applications = []

    def protocol_connected(self, protocol):
        pass

    def protocol_disconnected(self, protocol):
        pass

    def create_application(self, protocol, scope):
        self.applications.append(scope["path"])


def fed_to_daphne(data: bytes) -> tuple[bytes, bool, list]:
    """What daphne's HTTP channel answers to `data` read at once; whether it is closing the
    connection; the paths it started the application for."""
    from daphne.http_protocol import HTTPFactory
    from twisted.internet.testing import StringTransport

    server = RecordingServer()
    channel = HTTPFactory(server).buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    return transport.value(), transport.disconnecting, server.applications


def test_a_declared_body_over_the_limit_is_refused_without_inviting_it(settings):
    settings.MAX_REQUEST_BODY_BYTES = 1000

    answer, closing, applications = fed_to_daphne(
        b"POST /v1/orgs HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n"
    )

    assert answer.startswith(b"HTTP/1.1 413 "), "no 100 Continue"
    assert answer.endswith(b'"message": "The request body is larger than the limit of 1000 bytes.", "details": []}')
    assert closing and applications == []


def test_a_chunked_body_that_passes_the_limit_and_ends_in_the_same_read_never_reaches_the_application(settings):
    settings.MAX_REQUEST_BODY_BYTES = 1000
    chunk = b"x" * 600

    answer, closing, applications = fed_to_daphne(
        b"POST /v1/orgs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"258\r\n%s\r\n258\r\n%s\r\n0\r\n\r\n" % (chunk, chunk)
    )

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"payload_too_large"' in answer
    assert closing and applications == []
