"""The HTTP side of the test :class:`~nvdra.kubeletplugin.ApiServer`: keep-alive connections, JSON
answers with Kubernetes ``Status`` bodies, chunked watch streams."""

from __future__ import annotations

__all__ = ["Answer", "Api", "Handler", "Server", "WatchAnswer", "status_body"]

import http.client
import http.server
import io
import json
import re
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

import attrs
import orjson

from nvdra.core.errors import ConfigError, KubeApiError
from nvdra.kubeletplugin.objects import WatchStream, failure_status
from nvdra.kubeletplugin.testing_requests import OBJECT_PATH
from nvdra.kubeletplugin.types import JsonObject

if TYPE_CHECKING:
    import socket
    from collections.abc import Mapping

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}

_OBJECT_EVENTS = frozenset({"ADDED", "MODIFIED", "DELETED"})


def status_body(code: int, message: str) -> JsonObject:
    """A ``meta/v1 Status`` failure body as the API server writes it, with the reason of ``code``."""
    return failure_status(code, _REASONS.get(code, "Unknown"), message)


@attrs.frozen
class Answer:
    code: int
    body: JsonObject
    warnings: list[str]


@attrs.frozen
class WatchAnswer:
    stream: WatchStream
    convert: Callable[[JsonObject], JsonObject]


def encode_json(body: Any) -> bytes:
    """An answer's JSON: orjson (~5x the standard library on a ResourceClaim); what it refuses or leaves
    to a hook (non-string keys, integers beyond 64 bits, str/int subclasses, dataclasses, datetimes)
    goes through the standard library as before, which encodes or refuses it the same way."""
    try:
        return orjson.dumps(body, option=_ORJSON_PLAIN)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(body).encode()


_ORJSON_PLAIN = (
    orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


MAX_HEADER_LINE = 65536  # http.client's limits, which http.server applies
MAX_HEADERS = 100
_HEADER_LINE = re.compile(r"([!-9;-~]+):(.*)\Z", re.DOTALL)  # a field name is visible ASCII but ':'


class HeaderError(Exception):
    """A request's header block is refused: the HTTP status, reason and detail to answer with."""

    def __init__(self, status: HTTPStatus, reason: str, detail: str) -> None:
        super().__init__(f"{status.value} {reason}: {detail}")
        self.status, self.reason, self.detail = status, reason, detail


def read_headers(rfile: io.BufferedIOBase) -> http.client.HTTPMessage:
    """Read a request's header block, up to its empty line, as ``http.server`` would.

    Raises:
        HeaderError: a line over :data:`MAX_HEADER_LINE` bytes or more than :data:`MAX_HEADERS` headers
            (431), or a line that is neither ``Name: value`` nor a folded continuation (400).
    """
    fields: list[list[str]] = []  # each header's lines: its own, then folded continuations
    while True:
        raw = rfile.readline(MAX_HEADER_LINE + 1)
        if len(raw) > MAX_HEADER_LINE:
            raise HeaderError(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Line too long",
                f"got more than {MAX_HEADER_LINE} bytes when reading header line",
            )
        if raw in (b"\r\n", b"\n", b""):
            break
        line = raw.decode("iso-8859-1")
        if line[0] in " \t" and fields:
            fields[-1].append(line)
            continue
        if not _HEADER_LINE.match(line):
            raise HeaderError(
                HTTPStatus.BAD_REQUEST, "Bad header line", f"malformed MIME header line: {line.rstrip()!r}"
            )
        if len(fields) >= MAX_HEADERS:
            raise HeaderError(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Too many headers",
                f"got more than {MAX_HEADERS} headers",
            )
        fields.append([line])
    message = http.client.HTTPMessage()
    for first, *folded in fields:
        name, value = first.split(":", 1)
        message[name] = (value.lstrip(" \t") + "".join(folded)).rstrip("\r\n")
    return message


def _http_version(word: str) -> tuple[int, int] | None:
    """``HTTP/<major>.<minor>`` (digits, at most 10 each) as numbers, or None."""
    major, dot, minor = word.removeprefix("HTTP/").partition(".")
    if not word.startswith("HTTP/") or not dot:
        return None
    if not all(part.isdigit() and len(part) <= 10 for part in (major, minor)):
        return None
    return int(major), int(minor)


class Handler(http.server.BaseHTTPRequestHandler):
    """One keep-alive connection; routes to the owning :class:`Api`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    raw_requestline: bytes  # set by handle_one_request
    # Buffered: an answer's status line, headers and body leave in one send when the request is done
    # (handle_one_request flushes; a watch flushes its headers and each event; so does a 100 Continue).
    wbufsize = -1
    timeout = 60
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests and benchmarks read stdout."""

    def setup(self) -> None:
        super().setup()
        self.server.api.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.api.track(self.connection, open_=False)
        super().finish()

    def parse_request(self) -> bool:
        """The request line and header block, checked as ``http.server`` checks them, read here.

        ``http.server`` parses headers through the email package, a third of this server's CPU per GET
        (even for an empty block); this reads the same ``Name: value`` lines into the same
        ``HTTPMessage`` (folded lines joined as the email package joins them), with the same limits and
        answers, and refuses a line that is not a header with a 400 as the kube-apiserver does
        ("malformed MIME header line") instead of dropping it and the lines after it.
        """
        if not self._request_line():
            return False
        try:
            self.headers = read_headers(self.rfile)
        except HeaderError as exc:
            self.send_error(exc.status, exc.reason, exc.detail)
            return False
        connection = self.headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = self.headers.get("Expect", "").lower()
        if (
            expect == "100-continue"
            and self.protocol_version >= "HTTP/1.1"
            and self.request_version >= "HTTP/1.1"
        ):
            return self.handle_expect_100()
        return True

    def _request_line(self) -> bool:
        """Method, path and version from the request line; False once an error is answered (or for an
        empty line, which gets no answer)."""
        self.command = None  # type: ignore[assignment]  # http.server's "no request line yet"
        self.request_version = self.default_request_version
        self.close_connection = True
        self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = self.requestline.split()
        if not words:
            return False
        if len(words) >= 3:
            version = _http_version(words[-1])
            if version is None:
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({words[-1]!r})")
                return False
            self.close_connection = not (version >= (1, 1) and self.protocol_version >= "HTTP/1.1")
            if version >= (2, 0):
                self.send_error(
                    HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({words[-1][5:]})"
                )
                return False
            self.request_version = words[-1]
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({self.requestline!r})")
            return False
        if len(words) == 2:  # HTTP/0.9: GET only, one request a connection
            self.close_connection = True
            if words[0] != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({words[0]!r})")
                return False
        self.command, self.path = words[0], words[1]
        if self.path.startswith("//"):  # never read as a scheme-less absolute URI
            self.path = "/" + self.path.lstrip("/")
        return True

    def handle_expect_100(self) -> bool:
        """Send the interim 100 Continue now: the client waits for it before its body."""
        ok = super().handle_expect_100()
        self.wfile.flush()
        return ok

    def _send(self, code: int, body: JsonObject, warnings: list[str] | None = None) -> None:
        data = encode_json(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        for warning in warnings or []:
            self.send_header("Warning", f"299 - {json.dumps(warning)}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, watch: WatchAnswer) -> None:
        """A watch: newline-delimited JSON events in chunks, until the watch ends or the client goes."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()  # the client waits for the headers before the first event
        api = self.server.api
        api.track_watch(watch.stream, open_=True)
        try:
            for event in watch.stream:
                obj = watch.convert(event.object) if event.type in _OBJECT_EVENTS else event.object
                data = (
                    json.dumps({"type": event.type, "object": obj}, separators=(",", ":")) + "\n"
                ).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client went away
        finally:
            watch.stream.close()
            api.track_watch(watch.stream, open_=False)

    def _read(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query: dict[str, str] = {k: v[-1] for k, v in parse_qs(url.query).items()}
        api = self.server.api
        try:
            data = self._read() if method in ("POST", "PUT", "PATCH", "DELETE") else b""
            user = api.authenticate(self.headers.get("Authorization"))
            api.authorize_request(user, method, url.path, query)
            content_type = (self.headers.get("Content-Type") or "application/json").split(";")[0].strip()
            answer = api.handle(method, url.path, query, data, content_type)
            if method == "GET" and OBJECT_PATH.match(url.path):
                answer = api.as_table(answer, self.headers.get("Accept"), query)
        except KubeApiError as exc:
            code = exc.status or 500
            self._send(code, status_body(code, str(exc)))
            return
        except ConfigError as exc:  # a v1 body that v1beta1 cannot express
            self._send(422, status_body(422, str(exc)))
            return
        except Exception as exc:  # a bug here answers as the apiserver's panic handler does: a 500
            self._send(500, status_body(500, f"Internal error occurred: {type(exc).__name__}: {exc}"))
            return
        if isinstance(answer, WatchAnswer):
            self._stream(answer)
        else:
            self._send(answer.code, answer.body, answer.warnings)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")


class Api(Protocol):
    """What the HTTP side asks of the API server it serves (:class:`~nvdra.kubeletplugin.ApiServer`)."""

    def track(self, conn: socket.socket, *, open_: bool) -> None:
        """Note a connection opened or closed (the server closes the open ones when it stops)."""

    def track_watch(self, stream: WatchStream, *, open_: bool) -> None:
        """Note a watch opened or closed."""

    def authenticate(self, header: str | None) -> str | None:
        """The user an ``Authorization`` header names (None: no authentication configured)."""

    def authorize_request(self, user: str | None, method: str, path: str, query: Mapping[str, str]) -> None:
        """Raise :class:`KubeApiError` 403 when RBAC does not allow the request."""

    def handle(
        self, method: str, path: str, query: dict[str, str], data: bytes, content_type: str
    ) -> Answer | WatchAnswer:
        """Answer one request."""

    def as_table(
        self, answer: Answer | WatchAnswer, accept: str | None, query: Mapping[str, str]
    ) -> Answer | WatchAnswer:
        """The answer as a Table when the ``Accept`` header asks for one."""


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    api: Api
