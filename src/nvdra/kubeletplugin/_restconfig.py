"""API server connection settings without the ``kubernetes`` package: in-cluster, or a plain kubeconfig.

``import kubernetes.client`` costs ~0.35 s and ~35 MB; a plugin reads its Node before it can register with
the kubelet, so loading the client there delays registration by that much (docs/performance.md). The
adapter only ever used the client for its configuration loaders and request signing; the requests go
through urllib3. This module covers what a node component's configuration says in practice:

- in-cluster: ``KUBERNETES_SERVICE_HOST``/``_PORT``, the service account token (re-read once a minute,
  as the client does, since bound tokens rotate) and CA;
- a kubeconfig (JSON, or YAML) whose current context's cluster has ``server``, a CA (file or data) or
  ``insecure-skip-tls-verify``, and whose user has a token (or token file) and/or a client certificate.

Anything else (exec or auth-provider credentials, basic auth, impersonation, proxies) returns None from
:func:`light_client`, and the adapter falls back to the ``kubernetes`` client's loaders.
"""

from __future__ import annotations

__all__ = [
    "LightApiClient",
    "RestConfig",
    "in_cluster_config",
    "kubeconfig_config",
    "light_client",
    "tls_context",
]

import atexit
import base64
import contextlib
import json
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from nvdra.core.errors import ConfigError

if TYPE_CHECKING:
    from nvdra.kubeletplugin._http1 import Http1Pool

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REFRESH_S = 60.0
"""Seconds a token read from a file is reused before the file is read again."""

_CLUSTER_KEYS = frozenset(
    {
        "server",
        "certificate-authority",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "extensions",
    }
)
_USER_KEYS = frozenset(
    {"token", "tokenFile", "client-certificate", "client-certificate-data", "client-key", "client-key-data"}
)


@attrs.frozen(kw_only=True)
class RestConfig:
    """Where the API server is and how to authenticate to it."""

    host: str
    verify: bool = True
    ca_file: str | None = None
    ca_data: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    token_file: str | None = None


def in_cluster_config(env: Mapping[str, str], root: Path = SERVICE_ACCOUNT) -> RestConfig:
    """The pod's service account, as ``rest.InClusterConfig`` reads it.

    Raises:
        ConfigError: not in a pod (no service host/port), or the token or CA file is missing.
    """
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError(
            "--kubeconfig", "", "a kubeconfig path, or a pod's in-cluster environment",
            reason="KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set",
        )  # fmt: skip
    for name in ("token", "ca.crt"):
        if not (root / name).is_file():
            raise ConfigError(
                "--kubeconfig", "", "a kubeconfig path, or a pod's in-cluster environment",
                reason=f"no service account file {root / name}",
            )  # fmt: skip
    bracketed = f"[{host}]" if ":" in host else host  # an IPv6 service address
    return RestConfig(
        host=f"https://{bracketed}:{port}", ca_file=str(root / "ca.crt"), token_file=str(root / "token")
    )


def _load_document(path: Path) -> Any:
    """A kubeconfig file as data: JSON without a YAML parser, YAML otherwise."""
    text = path.read_text()
    try:
        return json.loads(text)
    except ValueError:
        import yaml  # only for a YAML kubeconfig (in-cluster and JSON need no parser)

        return yaml.safe_load(text)


def _named(doc: Mapping[str, Any], section: str, name: str, key: str) -> Mapping[str, Any] | None:
    """The ``key`` mapping of the entry called ``name`` in the list ``section``."""
    for entry in doc.get(section) or []:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            value = entry.get(key)
            return value if isinstance(value, Mapping) else {}
    return None


def kubeconfig_config(path: str | Path) -> RestConfig | None:
    """The current context of a kubeconfig, or None when it needs what only the client library handles.

    Raises:
        ConfigError: the file cannot be read or parsed, or its current context names nothing usable.
    """
    file = Path(path)
    try:
        doc = _load_document(file)
    except Exception as exc:  # OSError, or yaml.YAMLError (not named, so that yaml stays unimported)
        # An OSError's text repeats the path the message already names: its strerror says it once.
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError("--kubeconfig", str(path), "a readable kubeconfig", reason=reason) from exc
    if not isinstance(doc, Mapping):
        raise ConfigError("--kubeconfig", str(path), "a kubeconfig (a mapping)", reason="not a mapping")
    context = _named(doc, "contexts", str(doc.get("current-context") or ""), "context")
    if context is None:
        raise ConfigError(
            "--kubeconfig", str(path), "a kubeconfig whose current-context names a context",
            reason=f"no context {doc.get('current-context')!r}",
        )  # fmt: skip
    cluster = _named(doc, "clusters", str(context.get("cluster") or ""), "cluster")
    user = _named(doc, "users", str(context.get("user") or ""), "user") or {}
    if cluster is None or not cluster.get("server"):
        raise ConfigError(
            "--kubeconfig", str(path), "a context whose cluster has a server",
            reason=f"no server for cluster {context.get('cluster')!r}",
        )  # fmt: skip
    if (
        set(cluster) - _CLUSTER_KEYS
        or set(user) - _USER_KEYS
        or set(context) - {"cluster", "user", "namespace"}
    ):
        return None  # exec/auth-provider credentials, proxies, impersonation: the client library's loaders
    base = file.parent

    def local(key: str) -> str | None:
        value = cluster.get(key) if key in _CLUSTER_KEYS else user.get(key)
        return str(base / str(value)) if value else None  # relative to the kubeconfig, as kubectl reads it

    def data(key: str) -> str | None:
        value = cluster.get(key) if key in _CLUSTER_KEYS else user.get(key)
        return base64.b64decode(str(value)).decode() if value else None

    return RestConfig(
        host=str(cluster["server"]).rstrip("/"),
        verify=not bool(cluster.get("insecure-skip-tls-verify")),
        ca_file=local("certificate-authority"),
        ca_data=data("certificate-authority-data"),
        cert_file=local("client-certificate") or _data_file(data("client-certificate-data")),
        key_file=local("client-key") or _data_file(data("client-key-data")),
        token=str(user["token"]) if user.get("token") else None,
        token_file=local("tokenFile"),
    )


def _data_file(pem: str | None) -> str | None:
    """Inline PEM data as a private file (the TLS stack loads client certificates from files only)."""
    if pem is None:
        return None
    fd, name = tempfile.mkstemp(prefix="nvdra-kubeconfig-", suffix=".pem")  # mode 0600
    with os.fdopen(fd, "w") as out:
        out.write(pem)
    atexit.register(_remove, name)
    return name


def _remove(name: str) -> None:
    """Remove a file if it is still there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name)


class _Rest:
    """What the adapter reads from ``ApiClient.rest_client``: the pool."""

    def __init__(self, pool_manager: Any) -> None:
        self.pool_manager = pool_manager


def tls_context(config: RestConfig) -> ssl.SSLContext | None:
    """The client TLS context of an ``https`` server (None for ``http``), as urllib3 builds one from the
    same settings: TLS 1.2 or newer, the server's certificate checked against the configured CA (the
    system's when none is given) and its name, unless ``insecure-skip-tls-verify``; ALPN
    ``http/1.1``; the client certificate when one is given. Both of the adapter's pools get one.

    Raises:
        ConfigError: the CA, or the client certificate or key, cannot be read or is not PEM.
    """
    if not config.host.startswith("https:"):
        return None
    try:
        if config.verify:
            context = ssl.create_default_context(cafile=config.ca_file, cadata=config.ca_data)
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
    except OSError as exc:  # ssl.SSLError too
        raise ConfigError(
            "certificate-authority", config.ca_file or "<certificate-authority-data>",
            "a readable PEM CA certificate", reason=f"unusable CA ({exc})",
        ) from exc  # fmt: skip
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    if config.cert_file:
        try:
            context.load_cert_chain(config.cert_file, config.key_file)
        except OSError as exc:
            raise ConfigError(
                "client-certificate", config.cert_file,
                "a readable PEM client certificate, with its key (client-key) where it holds none",
                reason=f"unusable client certificate ({exc})",
            ) from exc  # fmt: skip
    return context


class LightApiClient:
    """The part of ``kubernetes.client.ApiClient`` the adapter uses, on urllib3 alone.

    ``param_serialize`` gives the method, the URL, and the headers with the bearer token (re-read from
    its file once a minute) and the user agent; ``rest_client.pool_manager`` sends the request.
    """

    def __init__(self, config: RestConfig, *, pool_size: int) -> None:
        import urllib3

        self.config = config
        self.pool_size = pool_size
        self.user_agent = "nvdra"
        # Checked now (a bad CA or certificate is a ConfigError at start, not a failure of every request);
        # urllib3 gets a context of its own, since it may turn its hostname check over to itself.
        self._tls = tls_context(config)
        if not config.verify:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.rest_client = _Rest(
            urllib3.PoolManager(num_pools=4, maxsize=pool_size, ssl_context=tls_context(config))
        )
        self._token_lock = threading.Lock()
        self._token: str | None = config.token
        self._token_read_at = -TOKEN_REFRESH_S

    def _bearer(self) -> str | None:
        """The token to send: the configured one, or the token file's content (cached a minute)."""
        if self.config.token_file is None:
            return self._token
        with self._token_lock:
            now = time.monotonic()
            if now - self._token_read_at >= TOKEN_REFRESH_S:
                try:
                    self._token = Path(self.config.token_file).read_text().strip()
                except OSError as exc:
                    if self._token is None:
                        raise ConfigError(
                            "tokenFile", self.config.token_file, "a readable token file", reason=str(exc)
                        ) from exc
                    # a rotation in progress: keep sending the previous token until the file is back
                self._token_read_at = now
            return self._token

    def param_serialize(
        self, method: str, path: str, *, header_params: Mapping[str, str], auth_settings: list[str]
    ) -> tuple[str, str, dict[str, str], None, list[Any]]:
        """(method, url, headers, body, post params), as the client's ``param_serialize`` answers."""
        headers = {**header_params, "User-Agent": self.user_agent}
        token = self._bearer() if "BearerToken" in auth_settings else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return method, self.config.host + path, headers, None, []

    def http1_pool(self, *, timeout: tuple[float, float]) -> Http1Pool:
        """A pool of kept-alive connections for GETs, with the TLS settings of the urllib3 pool."""
        from nvdra.kubeletplugin._http1 import Http1Pool

        return Http1Pool(self.config.host, tls=self._tls, timeout=timeout, size=self.pool_size)

    def close(self) -> None:
        """Close the pool's connections."""
        self.rest_client.pool_manager.clear()


def light_client(
    path: str | None, *, pool_size: int, env: Mapping[str, str] | None = None
) -> LightApiClient | None:
    """A client for ``path`` (None: in-cluster) without the ``kubernetes`` package, or None when the
    kubeconfig needs the package's loaders.

    Raises:
        ConfigError: the kubeconfig or the in-cluster environment is unusable.
    """
    config = (
        in_cluster_config(os.environ if env is None else env) if path is None else kubeconfig_config(path)
    )
    return None if config is None else LightApiClient(config, pool_size=pool_size)
