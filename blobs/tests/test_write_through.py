"""Twisted's TCP connections (under daphne) send a write to an idle connection at once."""

import socket

import pytest
from twisted.internet import tcp

from blobhub import server_tuning


class Reactor:
    """Just what a connection asks of its reactor when it has to wait for the socket."""

    def __init__(self):
        self.writers = set()

    def addWriter(self, writer):
        self.writers.add(writer)

    def removeWriter(self, writer):
        self.writers.discard(writer)


@pytest.fixture
def connection():
    server_tuning.write_through()
    ours, peer = socket.socketpair()
    peer.settimeout(5)  # a test that fails does not hang
    reactor = Reactor()
    conn = tcp.Connection(ours, protocol=None, reactor=reactor)
    conn.connected = True
    yield conn, peer, reactor
    ours.close()
    peer.close()


def test_a_write_to_an_idle_connection_goes_straight_to_the_socket(connection):
    conn, peer, reactor = connection
    conn.write(b"one frame")
    assert peer.recv(100) == b"one frame"
    assert not reactor.writers  # never registered with the event loop


def test_what_the_socket_does_not_take_is_buffered_and_later_writes_queue_behind_it(connection):
    conn, peer, reactor = connection
    big = bytes(range(256)) * (16 * 1024)  # 4 MiB: more than a socket buffer holds
    conn.write(big)
    assert reactor.writers == {conn}  # the rest waits for the socket to be writable
    conn.write(b"after")  # must not overtake what is buffered
    expected = big + b"after"
    received = b""
    while len(received) < len(expected):
        if conn in reactor.writers:  # what the reactor does once the socket has room
            conn.doWrite()
        received += peer.recv(65536)
    assert received == expected
    assert not reactor.writers
