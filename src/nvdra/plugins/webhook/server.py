"""The webhook's HTTPS server (stdlib ``http.server`` + ``ssl``), with certificate reload on rotation.

Endpoints: ``POST /validate-resource-claim-parameters`` (AdmissionReview v1, ``Content-Type:
application/json``) and ``GET /readyz`` (``ok``). Anything else is 404 (405 for a wrong method).
Requests are routed on the URL path alone: the kube-apiserver appends a query string
(``?timeout=10s``, the webhook's ``timeoutSeconds``), which is parsed off and ignored.

Invariants owned here:
- each accepted connection is wrapped with the *current* TLS context: :class:`CertificateStore` looks
  at the certificate and key files (inode, size, mtime) and rebuilds the context when they changed,
  so a cert-manager rotation is served from the next connection on, without a restart;
- a rotation caught half-way (a certificate that does not match its key) keeps the previous, working
  context and is retried on the next connection; the first load must succeed (a webhook that cannot
  serve TLS refuses to start);
- the TLS handshake runs in the connection's thread with a timeout, so a slow or silent client never
  blocks the accept loop;
- request bodies are capped (:data:`MAX_BODY_BYTES`); Nagle is off (see ARCHITECTURE.md §8).
"""

from __future__ import annotations

__all__ = ["MAX_BODY_BYTES", "VALIDATE_PATH", "CertificateStore", "WebhookServer"]

import http.server
import json
import logging
import os
import signal
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nvdra.core.errors import ConfigError, HostError
from nvdra.core.featuregates import FeatureGates
from nvdra.plugins.webhook.admission import review

log = logging.getLogger(__name__)

VALIDATE_PATH = "/validate-resource-claim-parameters"
READYZ_PATH = "/readyz"
MAX_BODY_BYTES = 3 * 1024 * 1024
"""The API server's own request limit is ~3 MiB; an AdmissionReview cannot legitimately be larger."""
HANDSHAKE_TIMEOUT_S = 10.0

_Signature = tuple[tuple[int, int, int], tuple[int, int, int]]


def _signature(cert: Path, key: Path) -> _Signature:
    def one(path: Path) -> tuple[int, int, int]:
        st = path.stat()
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    return (one(cert), one(key))


class CertificateStore:
    """The TLS server context for a certificate/key file pair, rebuilt when the files change.

    Thread-safe. ``reloads`` counts successful loads (the first one included), for logs and tests.
    """

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        """Load the pair once.

        Raises:
            ConfigError: a file is missing or unreadable, or the key does not match the certificate.
        """
        self.cert_file = cert_file
        self.key_file = key_file
        self.reloads = 0
        self._lock = threading.Lock()
        try:
            self._signature = _signature(cert_file, key_file)
            self._context = self._load()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "--tls-cert-file/--tls-private-key-file",
                f"{cert_file}, {key_file}",
                "a readable PEM certificate and its matching private key",
                reason=f"cannot load the TLS key pair ({exc}):",
            ) from exc

    def _load(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        self.reloads += 1
        return context

    def context(self) -> ssl.SSLContext:
        """The context for a new connection: reloaded first if the files changed since the last load."""
        with self._lock:
            try:
                current = _signature(self.cert_file, self.key_file)
            except OSError as exc:  # mid-rotation (a file briefly missing): keep serving the old pair
                log.warning("TLS files unreadable, keeping the loaded pair: %s", exc)
                return self._context
            if current != self._signature:
                try:
                    self._context = self._load()
                    self._signature = current
                    log.info("reloaded TLS certificate from %s", self.cert_file)
                except (OSError, ssl.SSLError) as exc:
                    log.warning("TLS files changed but do not load yet, keeping the old pair: %s", exc)
            return self._context


class _Handler(http.server.BaseHTTPRequestHandler):
    server: WebhookServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def setup(self) -> None:
        conn = self.request
        conn.settimeout(HANDSHAKE_TIMEOUT_S)
        conn.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_text(self, code: int, text: str) -> None:
        self._send(code, (text + "\n").encode(), "text/plain; charset=utf-8")

    def _route(self) -> str:
        """The request's URL path without its query string or fragment (the apiserver adds ``?timeout=``)."""
        return urllib.parse.urlsplit(self.path).path

    def do_GET(self) -> None:
        path = self._route()
        if path == READYZ_PATH:
            self._send(200, b"ok", "text/plain; charset=utf-8")
        elif path == VALIDATE_PATH:
            self._send_text(405, f"{VALIDATE_PATH} takes POST")
        else:
            self._send_text(404, f"no such path {path}")

    def do_POST(self) -> None:
        path = self._route()
        if path != VALIDATE_PATH:
            self._send_text(404, f"no such path {path}")
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type != "application/json":
            self._send_text(415, f"Content-Type must be application/json, got {content_type!r}")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY_BYTES:
            self._send_text(413 if length > 0 else 400, f"Content-Length must be 1..{MAX_BODY_BYTES}")
            return
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError as exc:
            self._send_text(400, f"request body is not JSON: {exc}")
            return
        answer = review(body, self.server.gates)
        response = answer["response"]
        if not response["allowed"]:
            log.info("denied %s: %s", response["uid"], response["status"]["message"])
        self._send(200, json.dumps(answer).encode(), "application/json")


class WebhookServer(http.server.ThreadingHTTPServer):
    """The admission webhook: a threading HTTPS server that validates under fixed ``gates``."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        certificates: CertificateStore,
        gates: FeatureGates,
    ) -> None:
        """Bind (not yet serving; call :meth:`serve_forever`). Port 0 picks a free port."""
        self.certificates = certificates
        self.gates = gates
        host = address[0]
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        # Wrap with the context current *now*: a rotated certificate is served from this connection on.
        tls = self.certificates.context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return tls, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed handshake or a client that hung up is routine on a webhook port; log, don't print.
        log.debug("connection from %s failed", client_address, exc_info=True)

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self.server_address[1])


def serve(
    *,
    host: str,
    port: int,
    cert_file: Path,
    key_file: Path,
    gates: FeatureGates,
    ready: Callable[[WebhookServer], None] | None = None,
) -> None:
    """Load the key pair, bind, and serve until SIGTERM or SIGINT (main thread only: it installs handlers)."""
    certificates = CertificateStore(cert_file, key_file)
    try:
        server = WebhookServer((host, port), certificates=certificates, gates=gates)
    except OSError as exc:  # the port is taken, or the address is not this host's
        reason = exc.strerror or exc
        raise HostError(f"cannot listen on {host}:{port} (--bind-address, --port): {reason}") from exc

    def stop(signum: int, _frame: object) -> None:
        # shutdown() waits for serve_forever() to return, which runs in this (the main) thread: ask
        # from another thread so the handler itself returns at once.
        log.info("signal %d received; stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    log.info("nvdra-webhook listening on %s:%d (pid %d)", host, server.port, os.getpid())
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    finally:
        server.server_close()
