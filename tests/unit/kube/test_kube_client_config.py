"""RawKubeApi.from_config: the connection pool fits the plugin's concurrent claim reads."""

from pathlib import Path

import yaml

from dra_hami.kube.client import CONNECTION_POOL_SIZE, RawKubeApi


def test_connection_pool_is_sized_for_concurrent_claim_reads(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    api = RawKubeApi.from_config(str(kubeconfig))
    assert api.api_client.configuration.connection_pool_maxsize >= CONNECTION_POOL_SIZE >= 16
    # urllib3 builds its pool with that size, so 16 concurrent reads reuse their connections.
    assert api.api_client.rest_client.pool_manager.connection_pool_kw["maxsize"] >= 16
