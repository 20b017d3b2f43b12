"""The test API server's HTTP side: answers encoded with orjson (what orjson refuses as the standard
library would encode or refuse it), and request headers read as http.server reads them, as strictly."""

from __future__ import annotations

import enum
import http.client
import io
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from nvdra.kubeletplugin import ApiServer, FakeKube
from nvdra.kubeletplugin.testing_http import (
    MAX_HEADER_LINE,
    MAX_HEADERS,
    HeaderError,
    encode_json,
    read_headers,
)


class Color(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "ResourceClaim", "metadata": {"name": "c", "labels": {"ü": "ß"}}, "n": [1, 2.5, None, True]},
        {"status": {"code": 404, "message": 'a "quoted" \\ name\n'}},
        {1: "a non-string key"},  # orjson refuses: the standard library writes "1"
        {"big": 2**70},  # beyond 64 bits
        {"enum": Color.RED},  # a str subclass
        [],
    ],
)
def test_answers_read_back_as_the_standard_library_would_write_them(body: Any) -> None:
    assert json.loads(encode_json(body)) == json.loads(json.dumps(body))


def test_what_neither_can_encode_is_refused() -> None:
    with pytest.raises(TypeError):
        encode_json({"a": object()})


def _raw(server: ApiServer, request: bytes) -> bytes:
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


@pytest.fixture
def server() -> Iterator[ApiServer]:
    with ApiServer(FakeKube()) as srv:
        yield srv


def test_headers_read_as_the_email_package_reads_them() -> None:
    block = (
        b"Host: a\r\nX-Folded: one\r\n two\r\nAccept:  application/json \r\nx-dup: 1\r\nX-Dup: 2\r\n\r\nbody"
    )
    ours = read_headers(io.BytesIO(block))
    theirs = http.client.parse_headers(io.BytesIO(block))
    assert ours.items() == theirs.items()
    assert ours.get_all("x-dup") == ["1", "2"]
    assert ours["accept"] == "application/json "


def test_a_header_block_over_the_limits_is_refused() -> None:
    with pytest.raises(HeaderError, match="Line too long"):
        read_headers(io.BytesIO(b"X: " + b"a" * MAX_HEADER_LINE + b"\r\n\r\n"))
    with pytest.raises(HeaderError, match="Too many headers"):
        read_headers(io.BytesIO(b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n"))
    with pytest.raises(HeaderError, match="malformed MIME header line: 'no colon here'"):
        read_headers(io.BytesIO(b"Host: a\r\nno colon here\r\n\r\n"))


def test_the_server_answers_bad_header_blocks_and_keeps_good_connections(server: ApiServer) -> None:
    ok = _raw(server, b"GET /api HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 200 ") and b'"versions"' in ok
    bad = _raw(server, b"GET /api HTTP/1.1\r\nHost: x\r\n: empty name\r\n\r\n")
    assert bad.startswith(b"HTTP/1.1 400 Bad header line")
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(MAX_HEADERS + 1))
    assert _raw(server, b"GET /api HTTP/1.1\r\n" + many + b"\r\n").startswith(
        b"HTTP/1.1 431 Too many headers"
    )
    # an unsupported version gets http.server's 505 page (without a status line: it is not HTTP/1.x)
    assert b"Error code explanation: 505" in _raw(server, b"GET /api HTTP/2.0\r\n\r\n")
    two = _raw(server, b"GET /api HTTP/1.1\r\nHost: x\r\n\r\nGET /api HTTP/1.1\r\nHost: x\r\n\r\n")
    assert two.count(b"HTTP/1.1 200 ") == 2  # keep-alive: both answered on one connection


def test_expect_100_continue_is_answered_before_the_body(server: ApiServer) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    body = b'{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n1"}}'
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 201 ")


@pytest.mark.parametrize(
    ("request_line", "expected"),
    [
        (b"GET /api HTTP/1.x", b"Bad request version ('HTTP/1.x')"),
        (b"GET /api HTTP/1.1.1", b"Bad request version ('HTTP/1.1.1')"),
        (b"GET /api FTP/1.1", b"Bad request version ('FTP/1.1')"),
        (b"GET", b"Bad request syntax ('GET')"),
        (b"GET /a b HTTP/1.1", b"Bad request syntax ('GET /a b HTTP/1.1')"),
        (b"POST /api", b"Bad HTTP/0.9 request type ('POST')"),
        (b"GET //api HTTP/1.1", b'"versions"'),  # the path's leading slashes are one
    ],
)
def test_request_lines_are_checked_as_http_server_checks_them(
    server: ApiServer, request_line: bytes, expected: bytes
) -> None:
    assert expected in _raw(server, request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
