"""The port check of `neural-memory serve`, on real sockets: a server that stopped while a client
kept its connection open, with and without resetting its connections first (serve.ports)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

import errors as E
from serve.ports import check_port_free, free_port

# A server as Serve's direct ingress is one: its listener bound without SO_REUSEADDR. It answers
# one connection, then exits, first resetting its connections if told to.
SERVER = """
import socket, sys
from serve.ports import reset_connections_on_close
port, reset = int(sys.argv[1]), sys.argv[2] == "reset"
listener = socket.socket(); listener.bind(("127.0.0.1", port)); listener.listen()
print("listening", flush=True)
conn, _ = listener.accept(); conn.recv(10)
if reset:
    assert reset_connections_on_close(port) == 1
"""


def _stopped_with_a_client_connected(port: int, reset: bool) -> socket.socket:
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), "reset" if reset else "fin"],
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "listening"
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(b"hello")
    assert server.wait(30) == 0
    time.sleep(0.2)
    return client  # kept open, as a keep-alive client keeps its connection


def test_a_listener_is_named_at_once():
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        started = time.monotonic()
        with pytest.raises(E.InvalidInput, match=f"port {port} on 127.0.0.1 is not free"):
            check_port_free("127.0.0.1", port, reuse_address=False, say=lambda *a, **k: None)
        assert time.monotonic() - started < 1  # no waiting for a port that is in use


def test_connections_of_a_stopped_server_are_waited_for_and_said():
    port, said = free_port(), []
    client = _stopped_with_a_client_connected(port, reset=False)
    try:
        with pytest.raises(E.InvalidInput, match=r"not free .*\(still, after waiting 2 s\)"):
            check_port_free("127.0.0.1", port, reuse_address=False, wait_s=1.5,
                            say=lambda text, **_: said.append(text))
        assert len(said) == 1 and "waiting for the system to release them" in said[0]
    finally:
        client.close()


def test_a_server_that_reset_its_connections_leaves_the_port_free():
    port = free_port()
    client = _stopped_with_a_client_connected(port, reset=True)
    try:
        check_port_free("127.0.0.1", port, reuse_address=False, wait_s=0, say=pytest.fail)
        with pytest.raises(ConnectionResetError):  # the client learns its connection is gone
            client.recv(10)
    finally:
        client.close()
