"""Raw HTTP to the test API server: bytes as sent, any Content-Type, headers of the answer kept."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import yaml

from nvdra.kubeletplugin.testing_apiserver import ApiServer

CRDS = Path(__file__).resolve().parents[2] / "deployments" / "helm" / "nvdra" / "crds"


def chart_crds() -> list[dict[str, Any]]:
    """The chart's CustomResourceDefinitions (ComputeDomain, ComputeDomainClique)."""
    return [d for p in sorted(CRDS.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


class Answer:
    """One HTTP answer: status, decoded JSON body, headers."""

    def __init__(self, status: int, body: Any, headers: http.client.HTTPMessage) -> None:
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def message(self) -> str:
        """A Status body's message ("" for objects)."""
        return str(self.body.get("message", "")) if isinstance(self.body, dict) else ""

    def __repr__(self) -> str:
        return f"Answer({self.status}, {json.dumps(self.body)[:300]})"


class Wire:
    """A keep-alive HTTP/1.1 connection to an :class:`ApiServer`."""

    def __init__(self, server: ApiServer, token: str | None = None) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=10)
        self.token = token

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: str | None = None,
        content_type: str = "application/json",
    ) -> Answer:
        headers = {"Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        payload = response.read()
        return Answer(response.status, json.loads(payload) if payload else None, response.headers)
