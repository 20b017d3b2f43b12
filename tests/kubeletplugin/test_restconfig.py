"""Connection settings without the kubernetes package (nvdra.kubeletplugin._restconfig)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from nvdra.core.errors import ConfigError
from nvdra.kubeletplugin import ApiServer, KubernetesKubeApi
from nvdra.kubeletplugin import _restconfig as rc


def _kubeconfig(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], *, yaml_text: bool = False
) -> Path:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    if yaml_text:
        import yaml

        path.write_text(yaml.safe_dump(doc))
    else:
        path.write_text(json.dumps(doc))
    return path


def test_token_and_relative_ca_file(tmp_path: Path) -> None:
    """A token user and a CA path relative to the kubeconfig's directory, as kubectl reads them."""
    path = _kubeconfig(
        tmp_path, {"server": "https://api:6443/", "certificate-authority": "ca.crt"}, {"token": "t"}
    )
    config = rc.kubeconfig_config(path)
    assert config == rc.RestConfig(host="https://api:6443", ca_file=str(tmp_path / "ca.crt"), token="t")


def test_yaml_kubeconfig_with_inline_client_certificate(tmp_path: Path) -> None:
    """A YAML kubeconfig's inline client certificate becomes a private file with that PEM."""
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    data = base64.b64encode(pem.encode()).decode()
    path = _kubeconfig(
        tmp_path,
        {"server": "https://api", "insecure-skip-tls-verify": True},
        {"client-certificate-data": data, "client-key": "/keys/k.pem"},
        yaml_text=True,
    )
    config = rc.kubeconfig_config(path)
    assert config is not None and not config.verify and config.key_file == "/keys/k.pem"
    assert config.cert_file is not None
    cert = Path(config.cert_file)
    assert cert.read_text() == pem and stat.S_IMODE(cert.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("cluster", "user"),
    [
        ({"server": "https://api"}, {"exec": {"command": "aws"}}),
        ({"server": "https://api"}, {"auth-provider": {"name": "oidc"}}),
        ({"server": "https://api", "proxy-url": "http://proxy"}, {"token": "t"}),
    ],
)
def test_what_only_the_client_library_handles_falls_back(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any]
) -> None:
    """exec/auth-provider credentials and proxies are left to the kubernetes client's loaders (None)."""
    assert rc.kubeconfig_config(_kubeconfig(tmp_path, cluster, user)) is None


def test_missing_current_context_names_it(tmp_path: Path) -> None:
    """A current-context that names no context is a ConfigError that says which."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({"contexts": [], "current-context": "nope"}))
    with pytest.raises(ConfigError, match="no context 'nope'"):
        rc.kubeconfig_config(path)


def test_unparsable_kubeconfig_is_a_config_error(tmp_path: Path) -> None:
    """Neither JSON nor YAML: a ConfigError naming --kubeconfig."""
    path = tmp_path / "kubeconfig"
    path.write_text("clusters: [unclosed\n")
    with pytest.raises(ConfigError, match="--kubeconfig"):
        rc.kubeconfig_config(path)


def test_in_cluster_needs_the_service_environment(tmp_path: Path) -> None:
    """Outside a pod: a ConfigError naming the missing variables; inside: host, CA and token file."""
    with pytest.raises(ConfigError, match="KUBERNETES_SERVICE_HOST"):
        rc.in_cluster_config({}, root=tmp_path)
    with pytest.raises(ConfigError, match="no service account file"):
        rc.in_cluster_config(
            {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, root=tmp_path
        )
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text("ca")
    config = rc.in_cluster_config(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, root=tmp_path
    )
    assert config.host == "https://[fd00::1]:443"
    assert config.token_file == str(tmp_path / "token") and config.ca_file == str(tmp_path / "ca.crt")


def test_token_file_is_read_again_after_the_refresh_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotated service account token is sent once the cached one is a minute old."""
    token = tmp_path / "token"
    token.write_text("one\n")
    now = [1000.0]
    monkeypatch.setattr("nvdra.kubeletplugin._restconfig.time.monotonic", lambda: now[0])
    client = rc.LightApiClient(rc.RestConfig(host="http://api", token_file=str(token)), pool_size=1)
    headers = client.param_serialize("GET", "/api", header_params={}, auth_settings=["BearerToken"])[2]
    assert headers["Authorization"] == "Bearer one"
    token.write_text("two\n")
    now[0] += rc.TOKEN_REFRESH_S - 1
    assert (
        client.param_serialize("GET", "/api", header_params={}, auth_settings=["BearerToken"])[2][
            "Authorization"
        ]
        == "Bearer one"
    )
    now[0] += 1
    assert (
        client.param_serialize("GET", "/api", header_params={}, auth_settings=["BearerToken"])[2][
            "Authorization"
        ]
        == "Bearer two"
    )
    client.close()


def test_adapter_on_the_light_client_talks_to_the_api_server(tmp_path: Path) -> None:
    """from_kubeconfig on a plain kubeconfig uses the light client, with the token and the user agent."""
    with ApiServer(token="abc") as srv:
        api = KubernetesKubeApi.from_kubeconfig(str(srv.write_kubeconfig(tmp_path / "kubeconfig")))
        assert isinstance(api._client, rc.LightApiClient)
        assert api.resource_api_version() == "v1"
        api.close()


def test_an_unusable_ca_or_client_certificate_is_a_config_error_at_start(tmp_path: Path) -> None:
    """The TLS files are read when the client is built, and a bad one is one line naming it (not a
    failure of every request later): a missing CA file, then a client certificate that is not PEM."""
    missing = _kubeconfig(tmp_path, {"server": "https://api", "certificate-authority": "gone.crt"}, {})
    with pytest.raises(ConfigError, match=r"certificate-authority: unusable CA .*gone\.crt"):
        KubernetesKubeApi.from_kubeconfig(str(missing))
    (tmp_path / "client.crt").write_text("not a certificate")
    bad_cert = _kubeconfig(
        tmp_path,
        {"server": "https://api", "insecure-skip-tls-verify": True},
        {"client-certificate": "client.crt", "client-key": "client.crt"},
    )
    with pytest.raises(ConfigError, match=r"client-certificate: unusable client certificate .*client\.crt"):
        KubernetesKubeApi.from_kubeconfig(str(bad_cert))
