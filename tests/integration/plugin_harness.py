"""Claims for the plugin tests, plus the plugin process runner shared with the demo."""

from __future__ import annotations

import uuid
from typing import Any

from dra_hami.demo.kubelet import DRIVER, PluginProcess

NODE = "node-a"
__all__ = ["DRIVER", "NODE", "PluginProcess", "allocated_claim"]


def allocated_claim(
    name: str,
    memory: str = "4Gi",
    cores: str = "30",
    device: str = "hami-gpu-0",
    pool: str = NODE,
    reserved: bool = True,
    namespace: str = "default",
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "allocation": {
            "devices": {
                "results": [
                    {
                        "request": "gpu",
                        "driver": DRIVER,
                        "pool": pool,
                        "device": device,
                        "shareID": str(uuid.uuid4()),
                        "consumedCapacity": {"memory": memory, "cores": cores, "shares": "1"},
                    }
                ]
            },
            "nodeSelector": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [pool]}]}]
            },
        }
    }
    if reserved:
        status["reservedFor"] = [{"resource": "pods", "name": f"pod-{name}", "uid": str(uuid.uuid4())}]
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER}}]}},
        "status": status,
    }
