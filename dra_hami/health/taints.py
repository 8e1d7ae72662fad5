"""Device taints for unhealthy GPUs (resource.k8s.io/v1 DeviceTaint; pure).

A NoSchedule taint keeps new claims off the GPU (claims without a matching toleration), while pods already
running on it keep running: deciding to evict is the cluster admin's (a DeviceTaintRule with NoExecute).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from dra_hami.health.tracker import REASON_XID, Problem

TAINT_NAME = "unhealthy"
EFFECT = "NoSchedule"
_VALUE_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


def taint_key(driver_name: str) -> str:
    return f"{driver_name}/{TAINT_NAME}"


def taint_value(problem: Problem) -> str:
    """A label value (<= 63 characters, alphanumerics, '-', '_', '.'): ``xid-79``, ``gpu-lost``."""
    raw = f"xid-{problem.xid}" if problem.reason == REASON_XID and problem.xid is not None else problem.reason
    value = _VALUE_CHARS.sub("-", raw)[:63].strip("-_.")
    return value or "unhealthy"


def time_added(since: float) -> str:
    """RFC 3339 in whole seconds, the form the API server stores, so the stored slice compares equal."""
    return datetime.fromtimestamp(int(since), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def device_taints(driver_name: str, problem: Problem | None) -> list[dict[str, Any]]:
    if problem is None:
        return []
    return [
        {
            "key": taint_key(driver_name),
            "value": taint_value(problem),
            "effect": EFFECT,
            "timeAdded": time_added(problem.since),
        }
    ]
