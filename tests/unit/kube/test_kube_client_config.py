"""RawKubeApi.from_config: the connection pool fits the plugin's concurrent claim reads."""

from pathlib import Path

import yaml

from dra_hami.kube.client import CONNECTION_POOL_SIZE, RawKubeApi


def write_kubeconfig(tmp_path: Path, token: str) -> str:
    """A kubeconfig for a closed loopback port with a bearer token; returns its path."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return str(kubeconfig)


def test_connection_pool_is_sized_for_concurrent_claim_reads(tmp_path: Path) -> None:
    api = RawKubeApi.from_config(write_kubeconfig(tmp_path, token="t"))
    assert api.api_client.configuration.connection_pool_maxsize >= CONNECTION_POOL_SIZE >= 16
    # urllib3 builds its pool with that size, so 16 concurrent reads reuse their connections.
    assert api.api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] >= 16


def test_token_refresh_hook_runs_at_most_once_per_period(tmp_path: Path) -> None:
    from dra_hami.kube.client import throttled_refresh

    now = [100.0]
    calls: list[object] = []
    refresh = throttled_refresh(calls.append, 5.0, clock=lambda: now[0])
    refresh("c1")
    refresh("c2")  # within the period: the token cannot have expired, nothing is re-read
    now[0] += 5.0
    refresh("c3")
    assert calls == ["c1", "c3"]


def test_requests_still_carry_the_token_with_the_throttled_hook(tmp_path: Path) -> None:
    api = RawKubeApi.from_config(write_kubeconfig(tmp_path, token="secret-token"))
    for _ in range(3):
        _method, _url, headers, _body, _ = api.api_client.param_serialize(
            method="GET", resource_path="/api", header_params={}, auth_settings=["BearerToken"]
        )
        assert headers["authorization"] == "Bearer secret-token"
