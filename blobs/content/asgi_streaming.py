"""What streaming blobs needs from the ASGI stack (daphne 4.x, Django's ASGI handler).

1. Large request bodies, one chunk per receive(). Daphne spools a body to a temp file,
   then copies all of it into the application's receive queue, in 8 KiB messages,
   before the application runs: a 1 GiB upload would sit in the server's memory
   (django/daphne#483, open). For bodies past STREAM_ABOVE the application gets a
   queue that reads daphne's spool file lazily, so memory stays at one chunk.
2. Responses paced by the connection. Daphne writes every body message into Twisted's
   send buffer at once, so a download to a client slower than the disk piles up in
   memory. Here a response body message waits while Twisted reports the connection's
   buffer full (the IPushProducer pause/resume it gives producers). Twisted resumes a
   producer only once the buffer is empty, so the buffer is allowed SEND_BUFFER bytes
   (not its default 64 KiB): the socket keeps busy while the application catches up.
3. A response that fails half-way is cut off. When the application raises after the
   headers went out (a download whose object turns out corrupted), daphne tries to
   start a 500 response, cannot, and leaves the connection open: the client waits for
   the rest until it times out. Aborting the connection tells it at once that the
   answer is broken (its Content-Length is not met), as other ASGI servers do.
4. Response messages of a megabyte. Django's ASGI handler cuts every response body
   into 64 KiB messages, each a trip through daphne and Twisted: a 1 GiB download cost
   the server 2.8 s of CPU that way and 1.8 s with 1 MiB messages (of which about 1 s
   is verifying the SHA-256), measured on the embedded server.

5. Large request bodies read once. `StreamingASGIHandler` (blobhub.asgi's handler) hands
   the view daphne's spool file instead of copying it into a temp file of Django's own.
6. Bodies over their route's limit refused before they are received. Daphne runs the
   application (and BodySizeLimitMiddleware) only once Twisted has spooled the whole
   body, so any client could make the server write gigabytes. A declared Content-Length
   over `body_limit(path)` is answered with the middleware's 413 as soon as the headers
   are in, and a chunked body once it passes the limit; the connection is then closed
   without reading the rest.

The first three replace one daphne method each (`Server.create_application`,
`Server.handle_reply`, `WebRequest.handle_exception`), the fourth sets Django's
`ASGIHandler.chunk_size`, the sixth wraps the Twisted `Request` methods that take in a
body (`gotLength`, `handleContentChunk`, `requestReceived`) on daphne's `WebRequest`; it
reads the request's path from Twisted's `HTTPChannel._path`, which
test_stepflow_server.py would notice going. `BlobsConfig.ready()` installs them, so they
hold wherever daphne serves this project: `manage.py serve` and the `daphne` command
alike. Small bodies and failures before the response starts take daphne's own path
unchanged.
"""

import asyncio
import io
import json
import logging
from functools import partial
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from django.core.handlers.asgi import ASGIHandler

from blobhub.api.middleware import body_limit, too_large_body

logger = logging.getLogger("blobhub.daphne")

STREAM_ABOVE = 1024 * 1024
CHUNK = 1024 * 1024
RESPONSE_MESSAGE_BYTES = 1024 * 1024
SEND_BUFFER = 4 * 1024 * 1024


class SpooledBodyQueue(asyncio.Queue):
    """An application's receive queue that serves the request body from a file."""

    def __init__(self, body: Any, size: int):
        super().__init__()
        self._body = body
        self._left = size

    def put_nowait(self, item: dict) -> None:
        # Daphne still runs its copy loop, over an emptied body: that copy is dropped.
        # Everything else (a disconnect, say) is queued behind the body.
        if item.get("type") == "http.request":
            return
        super().put_nowait(item)

    def take_body(self) -> Any:
        """The body file itself, for an application that reads it on its own (from a worker
        thread); receive() then reports only what follows the body (a disconnect)."""
        body, self._body = self._body, None
        return body

    async def get(self) -> dict:
        if self._body is None:
            return await super().get()
        chunk = await asyncio.to_thread(self._body.read, min(CHUNK, self._left))
        self._left -= len(chunk)
        more = bool(chunk) and self._left > 0
        if not more:
            self._body.close()
            self._body = None
        return {"type": "http.request", "body": chunk, "more_body": more}


class StreamingASGIHandler(ASGIHandler):
    """Django's ASGI handler, except that a body daphne has spooled to a file is that file.

    Django's own `read_body` copies every body into a temp file of its own (spilling to
    disk past FILE_UPLOAD_MAX_MEMORY_SIZE) before the view runs: each byte of a large
    upload was written to disk twice before the view wrote it where it belongs. Here the
    request reads daphne's spool file directly; Django's size checks (Content-Length,
    DATA_UPLOAD_MAX_MEMORY_SIZE on `request.body`) apply as before.
    """

    async def read_body(self, receive):
        queue = getattr(receive, "__self__", None)
        if isinstance(queue, SpooledBodyQueue):
            body = queue.take_body()
            if body is not None:
                return body
        return await super().read_body(receive)


def install() -> None:
    """Apply the above (idempotent; the daphne parts are skipped without daphne)."""
    ASGIHandler.chunk_size = RESPONSE_MESSAGE_BYTES
    try:
        from daphne.http_protocol import WebRequest
        from daphne.server import Server
    except ImportError:
        return
    if getattr(Server, "_blobhub_streaming", False):
        return
    _stream_large_bodies(Server)
    _pace_responses(Server)
    _abort_failed_responses(WebRequest)
    _refuse_oversized_bodies(WebRequest)
    Server._blobhub_streaming = True


def _stream_large_bodies(Server) -> None:
    original = Server.create_application

    def create_application(self, protocol, scope):
        size = _spooled_size(protocol, scope)
        if size is None:
            return original(self, protocol, scope)
        body, protocol.content = protocol.content, io.BytesIO()
        return _start_application(self, protocol, scope, SpooledBodyQueue(body, size))

    Server.create_application = create_application


class SendWindow:
    """Open while the connection's send buffer has room; Twisted pauses and resumes it."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()

    def pauseProducing(self) -> None:
        self._open.clear()

    def resumeProducing(self) -> None:
        self._open.set()

    def stopProducing(self) -> None:
        # The connection is going away: nothing to wait for any more.
        self._open.set()

    async def wait(self) -> None:
        await self._open.wait()


def _pace_responses(Server) -> None:
    from twisted.internet.interfaces import IPushProducer
    from zope.interface import classImplements

    classImplements(SendWindow, IPushProducer)
    original = Server.handle_reply

    async def handle_reply(self, protocol, message):
        window = _send_window(protocol, message)
        await original(self, protocol, message)
        if window is not None:
            await window.wait()

    Server.handle_reply = handle_reply


def _send_window(protocol, message: dict) -> SendWindow | None:
    """The window a response body message waits on (registered with its first chunk)."""
    if message.get("type") != "http.response.body" or getattr(protocol, "channel", None) is None:
        return None
    window = protocol.producer if isinstance(protocol.producer, SendWindow) else None
    if not message.get("more_body", False):
        if window is not None:
            protocol.unregisterProducer()  # before daphne finishes the request
        return None
    if window is None and protocol.producer is None:
        window = SendWindow()
        protocol.registerProducer(window, True)
        if getattr(protocol, "transport", None) is not None:
            protocol.transport.bufferSize = SEND_BUFFER
    return window


def _abort_failed_responses(WebRequest) -> None:
    original = WebRequest.handle_exception

    def handle_exception(self, exception):
        if not getattr(self, "_response_started", False):
            return original(self, exception)
        transport = getattr(self, "transport", None)
        if transport is not None:
            logger.warning("the application failed after its response started: aborting the connection")
            transport.abortConnection()

    WebRequest.handle_exception = handle_exception


def _refuse_oversized_bodies(WebRequest) -> None:
    got_length = WebRequest.gotLength
    handle_content_chunk = WebRequest.handleContentChunk
    request_received = WebRequest.requestReceived
    WebRequest._body_room = None  # what a body without Content-Length may still bring
    WebRequest._body_refused = False

    def gotLength(self, length):
        path = _target_path(self.channel)
        if path is None:
            return got_length(self, length)
        if length is not None and length > body_limit(path):
            return _refuse_body(self, path)
        if length is None:  # Twisted itself holds a declared body to its length
            self._body_path, self._body_room = path, body_limit(path)
        got_length(self, length)

    def handleContentChunk(self, data):
        if self._body_refused:
            return
        if self._body_room is not None:
            self._body_room -= len(data)
            if self._body_room < 0:
                return _refuse_body(self, self._body_path)
        handle_content_chunk(self, data)

    def requestReceived(self, command, path, version):
        # A chunked body can end in the same read that took it past its limit.
        if not self._body_refused:
            # Twisted would read a form POST's whole body into memory to parse `request.args`,
            # which neither daphne nor Django reads: unauthenticated, up to the route's limit.
            self._parsePOSTFormSubmission = False
            request_received(self, command, path, version)

    WebRequest.gotLength = gotLength
    WebRequest.handleContentChunk = handleContentChunk
    WebRequest.requestReceived = requestReceived


def _target_path(channel) -> str | None:
    """The path of the request whose headers the channel has just read, as daphne will give
    it to the application; None on HTTP/2, whose streams do not keep it (the middleware
    still checks a declared length there)."""
    target = getattr(channel, "_path", None)
    if target is None:
        return None
    try:
        return unquote(target.split(b"?", 1)[0].decode("ascii"))
    except UnicodeDecodeError:
        return "/"  # daphne answers 400 for such a path, after the body: the general limit holds


def _refuse_body(request, path: str) -> None:
    """Answer 413 at once and close the connection, reading no more of the body."""
    request._body_refused = True
    # Twisted would otherwise invite the body with "100 Continue" after this answer.
    request.requestHeaders.removeHeader(b"Expect")
    body = json.dumps(too_large_body(path)).encode()
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    request.channel.transport.write(head.encode() + body)
    request.channel.loseConnection()


def _spooled_size(protocol, scope: dict) -> int | None:
    """The size of a large HTTP body waiting in daphne's spool file, else None."""
    body = getattr(protocol, "content", None)
    if scope.get("type") != "http" or body is None or not hasattr(body, "seek"):
        return None
    position = body.tell()
    size = body.seek(0, io.SEEK_END) - position
    body.seek(position)
    return size if size > STREAM_ABOVE else None


def _start_application(server, protocol, scope: dict, queue: asyncio.Queue) -> asyncio.Queue | None:
    # What daphne's own create_application does (daphne 4.2), with this queue.
    assert "application_instance" not in server.connections[protocol]
    scope.setdefault("asgi", {"version": "3.0"})
    application_instance = server.application(
        scope=scope, receive=queue.get, send=partial(server.handle_reply, protocol)
    )
    if protocol not in server.connections:
        return None
    server.connections[protocol]["application_instance"] = asyncio.ensure_future(
        application_instance, loop=asyncio.get_event_loop()
    )
    return queue
