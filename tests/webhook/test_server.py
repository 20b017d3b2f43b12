"""The webhook over real HTTPS with a generated CA: endpoints, errors, and certificate rotation."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from nvdra.core.errors import ConfigError
from nvdra.plugins.webhook import VALIDATE_PATH, CertificateStore, WebhookServer
from tests.webhook.conftest import admission_review, claim, opaque
from tests.webhook.tls import TestCA, served_serial

Https = Callable[..., tuple[int, bytes]]
BAD = opaque({"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig", "sharing": {"strategy": "X"}})


def presented_serial(port: int, ca: TestCA) -> int:
    """Open a fresh TLS connection and return the serial of the certificate the server presents."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ca.client_context().wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return served_serial(tls.getpeercert(binary_form=True))


def test_readyz_answers_ok_over_verified_tls(server: WebhookServer, https: Https) -> None:
    """GET /readyz is 200 ``ok`` (a query string is ignored), and the client verified the server's CA."""
    assert https(server.port, "GET", "/readyz") == (200, b"ok")
    assert https(server.port, "GET", "/readyz?verbose") == (200, b"ok")


def test_review_allows_and_denies_over_https(server: WebhookServer, https: Https) -> None:
    """POSTed AdmissionReviews come back allowed or denied with the field path and the request's uid."""
    status, body = https(server.port, "POST", VALIDATE_PATH, admission_review(claim(), uid="a1"))
    assert status == 200
    assert json.loads(body)["response"] == {"uid": "a1", "allowed": True}
    status, body = https(server.port, "POST", VALIDATE_PATH, admission_review(claim(BAD), uid="d1"))
    response = json.loads(body)["response"]
    assert (status, response["uid"], response["allowed"]) == (200, "d1", False)
    assert response["status"]["message"].startswith(
        "spec.devices.config[0].opaque.parameters.sharing.strategy:"
    )


def test_review_with_the_apiservers_timeout_query_is_answered(
    server: WebhookServer, ca: TestCA, tls_files: tuple[Path, Path]
) -> None:
    """Exactly what the kube-apiserver sends: POST to the path with ``?timeout=10s``, JSON body and headers.

    The answer follows the AdmissionReview v1 response rules: apiVersion/kind echoed, the request's uid,
    ``allowed``, and on denial ``status.code`` and ``status.message``.
    """
    conn = http.client.HTTPSConnection("localhost", server.port, context=ca.client_context(), timeout=10)
    answers = {}
    try:
        for uid, obj in (("705ab4f5-6393-11e8-b7cc-42010a800002", claim()), ("deny-1", claim(BAD))):
            body = json.dumps(admission_review(obj, uid=uid)).encode()
            conn.request(
                "POST",
                f"{VALIDATE_PATH}?timeout=10s",
                body=body,
                headers={"Content-Type": "application/json", "Accept": "application/json, */*"},
            )
            response = conn.getresponse()
            assert response.status == 200
            assert response.getheader("Content-Type") == "application/json"
            answers[uid] = json.loads(response.read())
    finally:
        conn.close()
    allowed = answers["705ab4f5-6393-11e8-b7cc-42010a800002"]
    assert allowed == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True},
    }
    denied = answers["deny-1"]
    assert (denied["apiVersion"], denied["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    response = denied["response"]
    assert (response["uid"], response["allowed"], response["status"]["code"]) == ("deny-1", False, 422)
    assert response["status"]["message"].startswith("spec.devices.config[0].opaque.parameters.sharing")


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "code"),
    [
        ("POST", VALIDATE_PATH, b"{}", "text/plain", 415),
        ("POST", VALIDATE_PATH, b"{not json", "application/json", 400),
        ("GET", VALIDATE_PATH, None, "application/json", 405),
        ("GET", "/healthz", None, "application/json", 404),
        ("POST", "/mutate", b"{}", "application/json", 404),
        ("POST", "/mutate?timeout=10s", b"{}", "application/json", 404),
        ("POST", f"{VALIDATE_PATH}/extra?timeout=10s", b"{}", "application/json", 404),
        ("GET", f"{VALIDATE_PATH}?timeout=10s", None, "application/json", 405),
    ],
)
def test_bad_requests_get_http_errors(
    server: WebhookServer,
    https: Https,
    method: str,
    path: str,
    body: bytes | None,
    content_type: str,
    code: int,
) -> None:
    """Wrong content type, bad JSON, wrong method or path each get their HTTP status."""
    status, _ = https(server.port, method, path, body, content_type=content_type)
    assert status == code


def test_rotated_certificate_is_served_from_the_next_connection(
    server: WebhookServer, tls_files: tuple[Path, Path], ca: TestCA, https: Https
) -> None:
    """After the key pair files change, new connections get the new certificate without a restart."""
    before = presented_serial(server.port, ca)
    cert, key = tls_files
    serial = ca.issue(cert, key)
    assert serial != before
    assert presented_serial(server.port, ca) == serial
    assert server.certificates.reloads == 2
    assert https(server.port, "GET", "/readyz") == (200, b"ok")


def test_half_written_rotation_keeps_the_working_pair(
    server: WebhookServer, tls_files: tuple[Path, Path], ca: TestCA, tmp_path: Path
) -> None:
    """A new certificate whose key has not arrived yet is not loaded; the old pair is served until it has."""
    before = presented_serial(server.port, ca)
    cert, key = tls_files
    new_cert, new_key = tmp_path / "new.crt", tmp_path / "new.key"
    serial = ca.issue(new_cert, new_key)
    os.replace(new_cert, cert)  # the certificate is rotated, its key not yet: they do not match
    assert presented_serial(server.port, ca) == before
    os.replace(new_key, key)
    assert presented_serial(server.port, ca) == serial


def test_silent_client_does_not_block_other_connections(server: WebhookServer, https: Https) -> None:
    """A client that connects and sends nothing holds only its own thread; others are still served."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10):
        assert https(server.port, "GET", "/readyz") == (200, b"ok")


def test_plain_http_client_is_refused(server: WebhookServer) -> None:
    """Speaking plain HTTP to the TLS port gets no HTTP answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not raw.recv(1024).startswith(b"HTTP/1.1 200")


def test_untrusted_server_is_rejected_by_a_verifying_client(server: WebhookServer) -> None:
    """A client that trusts another CA refuses the handshake (the certificate really is checked)."""
    other = TestCA()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, pytest.raises(ssl.SSLError):
        other.client_context().wrap_socket(raw, server_hostname="localhost")


def test_store_refuses_a_mismatched_pair_at_start(ca: TestCA, tmp_path: Path) -> None:
    """The first load must work: a key that does not belong to the certificate is a ConfigError."""
    cert_a, key_a = tmp_path / "a.crt", tmp_path / "a.key"
    cert_b, key_b = tmp_path / "b.crt", tmp_path / "b.key"
    ca.issue(cert_a, key_a)
    ca.issue(cert_b, key_b)
    with pytest.raises(ConfigError, match="cannot load the TLS key pair"):
        CertificateStore(cert_a, key_b)
    with pytest.raises(ConfigError, match="--tls-cert-file"):
        CertificateStore(tmp_path / "missing.crt", key_a)
