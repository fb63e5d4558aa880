"""Two changes to the Twisted and autobahn code under daphne, for many small writes.

Fanning one event out to hundreds of WebSocket connections is hundreds of small writes in
one process; py-spy showed (bench/ws_fanout.py) that most of their cost was here, not in
sending. Both are applied once, from the blobs app, and skipped without daphne installed.
"""


def install() -> None:
    plain_frame_log_arguments()
    write_through()


def plain_frame_log_arguments() -> None:
    """Have autobahn (daphne's WebSocket layer) format its per-frame debug arguments plainly.

    For every frame it sends, autobahn builds the arguments of a debug message with click's
    colour codes, whether or not debug messages are logged: a tenth of the server's time when
    one event goes out to hundreds of connections. Plain text costs next to nothing; the
    messages, when logged, read the same without colours.
    """
    try:
        from autobahn.websocket import protocol
    except ImportError:
        return
    protocol.hltype = lambda obj: f"<{getattr(obj, '__qualname__', obj)}>"
    protocol.hlval = lambda value, color=None, bold=True: f"{value}"


def write_through() -> None:
    """Have Twisted (under daphne) send at once what is written to an idle TCP connection.

    Twisted buffers every write and sends it when the reactor next finds the socket writable:
    per message, the socket is registered for writing with the event loop and unregistered
    again, which was more than a third of the server's work when an event goes out to
    hundreds of WebSocket connections. Like asyncio's own transports, a write to a connection
    with nothing buffered now goes straight to the socket; whatever the socket does not take
    is buffered as before (and Twisted's producers pause on it as before).
    """
    try:
        from twisted.internet import tcp
    except ImportError:
        return
    if getattr(tcp.Connection, "_blobhub_write_through", False):
        return
    buffered_write = tcp.Connection.write

    def write(self, data) -> None:
        if (
            data
            and not self.TLS
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and not self._tempDataBuffer
            and self.offset == len(self.dataBuffer)
        ):
            sent = self.writeSomeData(data)
            if isinstance(sent, int) and sent > 0:  # a lost connection is the buffered path's to report
                if sent == len(data):
                    return
                data = data[sent:]
        buffered_write(self, data)

    tcp.Connection.write = write
    tcp.Connection._blobhub_write_through = True
