"""The kept-alive GET pool (``_http1``): answers framed every way HTTP/1.1 frames them, connections kept
and given up as the server says, a GET sent again only when it got no answer at all."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from nvdra.kubeletplugin._http1 import Http1Pool, ProtocolError

Script = Callable[[socket.socket, int], None]
"""Serves one accepted connection (and its number, from 0)."""


class _Server:
    """A TCP server running a script on each connection; records the requests' heads."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.heads: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            number, self.connections = self.connections, self.connections + 1
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        with conn:
            self.script(conn, number)

    def read_head(self, conn: socket.socket) -> bytes:
        """One request's head (GETs have no body), or b"" when the client closed."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return b""
            data += chunk
        self.heads.append(data)
        return data

    def pool(self, *, timeout: float = 2.0, retries: int = 3) -> Http1Pool:
        return Http1Pool(f"http://127.0.0.1:{self.port}", timeout=(timeout, timeout), size=4, retries=retries)


@pytest.fixture
def serve() -> Iterator[Callable[[Script], _Server]]:
    servers: list[_Server] = []

    def start(script: Script) -> _Server:
        servers.append(_Server(script))
        return servers[-1]

    yield start
    for server in servers:
        server.listener.close()


def _ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_a_kept_alive_connection_serves_the_next_get(serve: Callable[[Script], _Server]) -> None:
    """Two GETs, one connection; the request names the host and carries the headers as given."""

    def script(conn: socket.socket, _: int) -> None:
        while server.read_head(conn):
            conn.sendall(_ok(b'{"a":1}'))

    server = serve(script)
    pool = server.pool()
    assert pool.get("/api/v1/nodes/n?x=1", {"Accept": "application/json"}) == (200, b'{"a":1}')
    assert pool.get("/api/v1/nodes/m", {}) == (200, b'{"a":1}')
    pool.close()
    assert server.connections == 1
    assert server.heads[0] == (
        b"GET /api/v1/nodes/n?x=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: application/json\r\n\r\n"
        % server.port
    )


def test_a_chunked_answer_is_joined_and_its_status_kept(serve: Callable[[Script], _Server]) -> None:
    """Transfer-Encoding: chunked (what the API server sends for a large object), in pieces that
    split the chunks anywhere; a 404's body is returned with its status."""

    def script(conn: socket.socket, _: int) -> None:
        server.read_head(conn)
        answer = (
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'5\r\n{"a":\r\n3\r\n"b"\r\n1\r\n}\r\n0\r\n\r\n'
        )
        for i in range(0, len(answer), 7):
            conn.sendall(answer[i : i + 7])
        server.read_head(conn)

    server = serve(script)
    pool = server.pool()
    assert pool.get("/x", {}) == (404, b'{"a":"b"}')
    pool.close()


def test_a_body_that_ends_with_the_connection(serve: Callable[[Script], _Server]) -> None:
    """An answer with neither Content-Length nor chunking ends when the server closes; that
    connection is not kept."""

    def script(conn: socket.socket, _: int) -> None:
        server.read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")

    server = serve(script)
    pool = server.pool()
    assert pool.get("/x", {}) == (200, b"all of it")
    assert pool.get("/x", {}) == (200, b"all of it")
    assert server.connections == 2


def test_connection_close_is_honoured(serve: Callable[[Script], _Server]) -> None:
    """An answer saying ``Connection: close`` leaves its connection out of the pool."""

    def script(conn: socket.socket, _: int) -> None:
        server.read_head(conn)
        conn.sendall(_ok(b"x", b"Connection: close\r\n"))

    server = serve(script)
    pool = server.pool()
    for _ in range(3):
        assert pool.get("/x", {}) == (200, b"x")
    assert server.connections == 3


def test_an_idle_connection_the_server_closed_is_replaced(serve: Callable[[Script], _Server]) -> None:
    """The server answers once per connection, then closes it without a word: the next GET finds the
    kept connection dead and goes out again on a new one, without costing one of its retries."""

    def script(conn: socket.socket, _: int) -> None:
        server.read_head(conn)
        conn.sendall(_ok(b"x"))

    server = serve(script)
    pool = server.pool(retries=0)
    for _ in range(3):
        assert pool.get("/x", {}) == (200, b"x")
    assert server.connections == 3


def test_no_answer_at_all_is_retried_then_reported(serve: Callable[[Script], _Server]) -> None:
    """A server that closes every connection unanswered: the GET is sent 1 + retries times, then
    fails as a ProtocolError (an OSError: the adapter's KubeUnavailable)."""

    def script(conn: socket.socket, _: int) -> None:
        server.read_head(conn)

    server = serve(script)
    pool = server.pool(retries=2)
    with pytest.raises(ProtocolError, match="no answer after 3 attempts"):
        pool.get("/x", {})
    assert len(server.heads) == 3


def test_an_answer_broken_off_is_not_sent_again(serve: Callable[[Script], _Server]) -> None:
    """Half a body, then the connection ends: the GET got an answer, so it fails without a resend."""

    def script(conn: socket.socket, _: int) -> None:
        server.read_head(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")

    server = serve(script)
    pool = server.pool()
    with pytest.raises(ProtocolError, match="closed before the answer was complete"):
        pool.get("/x", {})
    assert len(server.heads) == 1


def test_not_http_is_a_protocol_error(serve: Callable[[Script], _Server]) -> None:
    def script(conn: socket.socket, _: int) -> None:
        server.read_head(conn)
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        server.read_head(conn)

    server = serve(script)
    pool = server.pool()
    with pytest.raises(ProtocolError, match=r"not an HTTP/1\.1 answer"):
        pool.get("/x", {})
    assert len(server.heads) == 1


def test_a_silent_server_times_out_once(serve: Callable[[Script], _Server]) -> None:
    """No answer within the read timeout: a timeout error, the GET not sent again."""
    release = threading.Event()

    def script(conn: socket.socket, _: int) -> None:
        server.read_head(conn)
        release.wait(5)

    server = serve(script)
    pool = server.pool(timeout=0.2)
    with pytest.raises(TimeoutError):
        pool.get("/x", {})
    release.set()
    assert len(server.heads) == 1


def test_a_refused_connection_is_an_os_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    pool = Http1Pool(f"http://127.0.0.1:{port}", timeout=(1.0, 1.0), retries=1)
    with pytest.raises(ConnectionRefusedError):
        pool.get("/x", {})


def test_a_header_with_a_line_break_is_refused_before_sending(serve: Callable[[Script], _Server]) -> None:
    """A token read from a file with a stray newline would end the request's head early."""

    def script(conn: socket.socket, _: int) -> None:
        server.read_head(conn)

    server = serve(script)
    pool = server.pool()
    with pytest.raises(ValueError, match="'Authorization' holds a line break"):
        pool.get("/x", {"Authorization": "Bearer abc\r\nX-Evil: 1"})
    assert server.connections == 0


def test_only_http_urls() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Http1Pool("unix:///run/k8s.sock")
