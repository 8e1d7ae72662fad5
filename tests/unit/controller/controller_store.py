"""An in-memory stand-in for the claim and pod writes of the controller, with the API server's concurrency rules:
every write bumps resourceVersion, a stale resourceVersion gets 409, a failed JSON-patch test of the gate list 422.
"""

from __future__ import annotations

import copy
import itertools
from typing import TYPE_CHECKING, Any

from controller_factories import NS

from dra_hami.controller.api import CONDITION_TYPE
from dra_hami.kube.client import ApiError


class StoreApi:
    """Claims and pods as an API server keeps them: every write bumps resourceVersion; stale writes get 409."""

    def __init__(self, claims: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.versions = itertools.count(10_000)
        self.claims = {f"{NS}/{c['metadata']['name']}": copy.deepcopy(c) for c in claims}
        self.pods = {f"{NS}/{p['metadata']['name']}": copy.deepcopy(p) for p in pods}
        self.writes: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.gate_error: ApiError | None = None

    def _bump(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self.versions))
        return copy.deepcopy(obj)

    def _claim(self, key: str) -> dict[str, Any]:
        if key not in self.claims:
            raise ApiError(404, f"resourceclaims {key} not found", "NotFound")
        return self.claims[key]

    def get_claim(self, key: str) -> dict[str, Any]:
        return copy.deepcopy(self._claim(key))

    def get_pod(self, key: str) -> dict[str, Any]:
        if key not in self.pods:
            raise ApiError(404, f"pods {key} not found", "NotFound")
        return copy.deepcopy(self.pods[key])

    def write_allocation(self, key: str, resource_version: str, allocation: dict[str, Any]) -> dict[str, Any]:
        current = self._claim(key)
        if current["metadata"]["resourceVersion"] != resource_version:
            raise ApiError(409, "the object has been modified", "Conflict")
        if (current.get("status") or {}).get("allocation"):
            raise ApiError(422, "status.allocation: field is immutable", "Invalid")
        self.writes.append(("allocate", key))
        current.setdefault("status", {})["allocation"] = copy.deepcopy(allocation)
        return self._bump(current)

    def clear_allocation(self, key: str, resource_version: str) -> dict[str, Any]:
        current = self._claim(key)
        if current["metadata"]["resourceVersion"] != resource_version:
            raise ApiError(409, "the object has been modified", "Conflict")
        self.writes.append(("deallocate", key))
        current["status"] = {}
        return self._bump(current)

    def remove_gate(self, key: str, current: list[dict[str, Any]], gate: str) -> dict[str, Any]:
        if self.gate_error is not None:
            raise self.gate_error
        obj = self.pods.get(key)
        if obj is None:
            raise ApiError(404, f"pods {key} not found", "NotFound")
        if obj["spec"].get("schedulingGates") != current:
            raise ApiError(422, "testing value /spec/schedulingGates failed", "Invalid")
        self.writes.append(("ungate", key))
        obj["spec"]["schedulingGates"] = [g for g in current if g["name"] != gate]
        return self._bump(obj)

    def set_condition(self, key: str, status: str, reason: str, message: str) -> dict[str, Any]:
        obj = self.pods[key]
        conditions = [c for c in obj["status"].get("conditions", []) if c["type"] != CONDITION_TYPE]
        conditions.append({"type": CONDITION_TYPE, "status": status, "reason": reason, "message": message})
        obj["status"]["conditions"] = conditions
        return self._bump(obj)

    def record_event(self, pod: dict[str, Any], reason: str, message: str, warning: bool) -> None:
        self.events.append((pod["metadata"]["name"], reason, message))


if TYPE_CHECKING:  # mypy (.ci/run) checks that each fake still has the shape of the Protocol it stands in for
    from dra_hami.controller.api import ControllerApi

    _controller_api: type[ControllerApi] = StoreApi
