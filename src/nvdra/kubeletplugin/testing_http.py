"""The HTTP side of the test :class:`~nvdra.kubeletplugin.ApiServer`: keep-alive connections, JSON
answers with Kubernetes ``Status`` bodies, chunked watch streams."""

from __future__ import annotations

import http.server
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import attrs
import orjson

from nvdra.core.errors import ConfigError, KubeApiError
from nvdra.kubeletplugin.objects import WatchStream, failure_status
from nvdra.kubeletplugin.testing_requests import OBJECT_PATH
from nvdra.kubeletplugin.types import JsonObject

if TYPE_CHECKING:
    from nvdra.kubeletplugin.testing_apiserver import ApiServer

__all__ = ["Answer", "Handler", "Server", "WatchAnswer", "status_body"]

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


class Handler(http.server.BaseHTTPRequestHandler):
    """One keep-alive connection; routes to the owning :class:`ApiServer`."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
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


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    api: ApiServer
