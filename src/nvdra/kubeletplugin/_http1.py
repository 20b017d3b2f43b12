"""GETs on kept-alive HTTP/1.1 connections, the answer parsed by llhttp (``httptools``).

The claim GET is on the kubelet's critical path: a 64-claim prepare makes 64 of them. Through urllib3 a
claim GET costs ~230 µs of CPU here, most of it in ``http.client`` parsing the answer's header lines
with the ``email`` package and in urllib3's per-request bookkeeping; :class:`Http1Pool` sends the
request as one buffer and lets llhttp (C) parse the answer, ``Content-Length`` or chunked: ~55 µs
(benchmarks/claim_get.py; docs/performance.md).

Only GETs come here: they are safe to send twice. A GET that got no answer at all (the connection
refused, reset or closed before the first byte: a kept-alive connection the server closed while it sat
idle, a server restarting) is sent again, as urllib3 would; a timeout, or an answer broken off midway,
is not. Writes, watches, proxies and the ``kubernetes`` client's own configurations go through urllib3
(:mod:`nvdra.kubeletplugin._kube`).

Every failure is an ``OSError`` (socket and TLS errors as they are; a malformed answer or a connection
closed mid-answer as :class:`ProtocolError`), which the adapter reports as ``KubeUnavailable``.
"""

from __future__ import annotations

__all__ = ["Http1Pool", "ProtocolError"]

import socket
import ssl
from collections.abc import Mapping
from urllib.parse import urlsplit

import httptools

_RECV = 65536


class ProtocolError(OSError):
    """The server's answer was not HTTP/1.1, or the connection ended before the answer did."""


class _NoAnswer(Exception):
    """The connection closed or was reset before the first byte of the answer (the GET may be sent
    again: it changes nothing)."""


class _Answer:
    """The parser's callbacks for one answer."""

    __slots__ = ("body", "complete", "headers_done", "keep_alive", "length_known", "parser", "status")

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.complete = False
        self.headers_done = False
        self.keep_alive = False
        self.length_known = False  # Content-Length or Transfer-Encoding: the body does not end at EOF
        self.status = 0
        # Dropped once the answer is read: the parser holds this object, which would make a cycle.
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.length_known = True

    def on_headers_complete(self) -> None:
        assert self.parser is not None  # only the parser calls this
        self.headers_done = True
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the answer is complete

    def on_body(self, data: bytes) -> None:
        self.body.append(data)

    def on_message_complete(self) -> None:
        self.complete = True


class Http1Pool:
    """Kept-alive connections to one server, for GETs (thread-safe: a connection serves one request at
    a time, and up to ``size`` idle ones are kept).

    Args:
        url: the server (``https://host:port``; a path is ignored: targets are absolute paths).
        tls: the TLS context for an ``https`` URL (None: the system's CAs, as ``ssl`` defaults;
            the adapter passes :func:`nvdra.kubeletplugin._restconfig.tls_context`'s).
        timeout: (connect, read) seconds; the read timeout bounds each wait for bytes.
        size: idle connections kept.
        retries: how often a GET that got no answer is sent again (see :meth:`get`).
    """

    def __init__(
        self,
        url: str,
        *,
        tls: ssl.SSLContext | None = None,
        timeout: tuple[float, float] = (5.0, 30.0),
        size: int = 16,
        retries: int = 3,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) server URL: {url!r}")
        https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if https else 80)
        self._authority = parts.netloc.rpartition("@")[2].encode("ascii")
        self._tls = (tls or ssl.create_default_context()) if https else None
        self._timeout = timeout
        self._size = size
        self._retries = retries
        self._idle: list[socket.socket] = []  # list.append and list.pop are atomic: no lock needed

    def get(self, target: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        """GET ``target`` (an absolute path with its query) with ``headers``: (status, body).

        A GET that got no answer at all (refused, reset or closed before the first byte) is sent again,
        up to ``retries`` times, as urllib3's retries do; an idle connection the server had closed does
        not count. A timeout is not retried.

        Raises:
            ValueError: a header name or value holds a line break (it would end the header early).
            OSError: the server could not be reached, the connection broke, or the answer was not HTTP.
        """
        head = self._head(target, headers)
        failures = 0
        while True:
            try:
                sock = self._idle.pop()
            except IndexError:
                sock = None
            try:
                return self._exchange(sock or self._connect(), head)
            except (_NoAnswer, ConnectionError) as exc:
                if sock is None:  # a new connection: an attempt that failed
                    failures += 1
                    if failures > self._retries:
                        if isinstance(exc, _NoAnswer):
                            raise ProtocolError(f"no answer after {failures} attempts: {exc}") from exc
                        raise

    def close(self) -> None:
        """Close the idle connections (idempotent; a later GET opens a new one)."""
        while self._idle:
            try:
                self._idle.pop().close()
            except IndexError:
                break

    def _head(self, target: str, headers: Mapping[str, str]) -> bytes:
        lines = [b"GET " + target.encode("ascii") + b" HTTP/1.1", b"Host: " + self._authority]
        for name, value in headers.items():
            if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                raise ValueError(f"the header {name!r} holds a line break")
            lines.append(f"{name}: {value}".encode("latin-1"))
        lines.append(b"\r\n")
        return b"\r\n".join(lines)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self._host, self._port), timeout=self._timeout[0])
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(self._timeout[1])
        except BaseException:
            sock.close()
            raise
        return sock

    def _exchange(self, sock: socket.socket, head: bytes) -> tuple[int, bytes]:
        answer = _Answer()
        try:
            self._read(sock, head, answer)
        finally:
            answer.parser = None
        if answer.keep_alive and len(self._idle) < self._size:
            self._idle.append(sock)
        else:
            sock.close()
        return answer.status, b"".join(answer.body)

    @staticmethod
    def _read(sock: socket.socket, head: bytes, answer: _Answer) -> None:
        """Send ``head``, read the answer into ``answer``; closes ``sock`` when it raises."""
        assert answer.parser is not None
        feed = answer.parser.feed_data
        received = False
        try:
            sock.sendall(head)
            while not answer.complete:
                data = sock.recv(_RECV)
                if not data:
                    if answer.headers_done and not answer.length_known:
                        answer.keep_alive = False
                        return  # a body that ends with the connection (HTTP/1.0 style)
                    if not received:
                        raise _NoAnswer("the server closed the connection")
                    raise ProtocolError("the connection closed before the answer was complete")
                received = True
                feed(data)
        except httptools.HttpParserError as exc:
            sock.close()
            raise ProtocolError(f"not an HTTP/1.1 answer: {exc}") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            sock.close()
            if not received:
                raise _NoAnswer(str(exc)) from exc
            raise
        except BaseException:
            sock.close()
            raise
