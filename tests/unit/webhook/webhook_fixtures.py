"""Shared pieces of the webhook tests: published slices of real fake-GPU profiles, pods, an in-memory API."""

from __future__ import annotations

import copy
import itertools
from typing import TYPE_CHECKING, Any

from dra_hami import wire
from dra_hami.allocator.cel import SelectorCache
from dra_hami.allocator.model import Device, parse_slices
from dra_hami.api.publisher_config import PublisherConfig
from dra_hami.discovery import load_discovery
from dra_hami.kube.client import ApiError
from dra_hami.publisher.slices import build_pool

DRIVER = wire.DEFAULT_DRIVER_NAME


def pool(profile: str, node: str) -> list[dict[str, Any]]:
    """The ResourceSlices the real publisher writes for ``profile`` on ``node``."""
    return build_pool(load_discovery(profile).discover(), PublisherConfig(node_name=node), generation=1)


def fleet(*profiles: str) -> list[dict[str, Any]]:
    return [s for i, p in enumerate(profiles) for s in pool(p, f"node-{i}-{p}")]


def devices(slices: list[dict[str, Any]]) -> list[Device]:
    return parse_slices(slices)


def matching(selectors: list[str], slices: list[dict[str, Any]]) -> list[str]:
    """Names ``node/device`` of the devices every selector accepts, evaluated by the allocator's CEL."""
    cache = SelectorCache()
    return [
        f"{d.key.pool}/{d.name}"
        for d in devices(slices)
        if all(cache.matches(s, d, "test selector") for s in selectors)
    ]


def container(name: str = "main", limits: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "image": "busybox:1.36"}
    if limits is not None:
        body["resources"] = {"limits": dict(limits)}
    body.update(extra)
    return body


def pod(*containers: dict[str, Any], annotations: dict[str, str] | None = None, labels=None, **spec) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": "ns"}
    if annotations:
        meta["annotations"] = dict(annotations)
    if labels:
        meta["labels"] = dict(labels)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": list(containers or [container()]), **spec},
    }


def review(obj: dict[str, Any], kind: str = "Pod", operation: str = "CREATE", dry_run: bool = False) -> dict[str, Any]:
    group = "" if kind == "Pod" else "resource.k8s.io"
    return {
        "uid": "0b6a9a5e-0000-4000-8000-000000000001",
        "kind": {"group": group, "version": "v1", "kind": kind},
        "operation": operation,
        "namespace": (obj.get("metadata") or {}).get("namespace", "ns"),
        "object": obj,
        "dryRun": dry_run,
    }


def template(name: str, spec: dict[str, Any], namespace: str = "ns") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"spec": spec},
    }


def claim(name: str, spec: dict[str, Any], namespace: str = "ns", allocation=None, uid: str = "") -> dict[str, Any]:
    obj = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": uid or f"uid-{name}"},
        "spec": spec,
    }
    if allocation is not None:
        obj["status"] = {"allocation": allocation}
    return obj


def slice_spec(memory: str | None = None, cores: str | None = None, count: int = 1, cls: str = DRIVER) -> dict:
    """A ResourceClaimSpec with one exactly request."""
    exactly: dict[str, Any] = {"deviceClassName": cls, "count": count}
    caps = {k: v for k, v in (("memory", memory), ("cores", cores)) if v is not None}
    if caps:
        exactly["capacity"] = {"requests": caps}
    return {"devices": {"requests": [{"name": "gpu", "exactly": exactly}]}}


def quota(name: str = "budget", namespace: str = "ns", used=None, rv: str = "1", charged_at=None, **hard) -> dict:
    obj: dict[str, Any] = {
        "apiVersion": "dra-hami.project-hami.io/v1alpha1",
        "kind": "GpuQuota",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": rv, "generation": 1},
        "spec": {"hard": hard},
    }
    if used is not None:
        obj["status"] = {"used": used}
        if charged_at:
            obj["status"]["chargedAt"] = charged_at
    return obj


class FakeApi:
    """In-memory WebhookApi + QuotaApi + CollectorApi with resourceVersion checks, recording every write."""

    def __init__(self, slices: list[dict[str, Any]] | None = None) -> None:
        self.slices = slices or []
        self.device_classes: list[dict[str, Any]] = []
        self.namespaces: dict[str, dict[str, str]] = {}
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}
        self.templates: dict[tuple[str, str], dict[str, Any]] = {}
        self.quotas: dict[tuple[str, str], dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.writes: list[tuple[str, str]] = []
        self.fail: dict[str, ApiError] = {}  # method name -> error to raise
        self.conflicts = 0  # replace_quota_status answers 409 this many times first
        self._rv = itertools.count(100)
        self.template_gets: dict[str, int] = {}
        self.appear_after: dict[str, int] = {}  # template name -> GETs before it exists (created "just after")

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise self.fail[name]

    def add_claim(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.claims[(meta["namespace"], meta["name"])] = copy.deepcopy(obj)

    def add_quota(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.quotas[(meta["namespace"], meta["name"])] = copy.deepcopy(obj)

    # WebhookApi
    def namespace_labels(self, namespace: str) -> dict[str, str]:
        self._maybe_fail("namespace_labels")
        return dict(self.namespaces.get(namespace, {}))

    def get_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._maybe_fail("get_claim")
        return copy.deepcopy(self.claims.get((namespace, name)))

    def get_template(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._maybe_fail("get_template")
        self.template_gets[name] = self.template_gets.get(name, 0) + 1
        pending = self.appear_after.get(name)
        if pending is not None and self.template_gets[name] <= pending:
            return None
        return copy.deepcopy(self.templates.get((namespace, name)))

    def list_slices(self) -> list[dict[str, Any]]:
        self._maybe_fail("list_slices")
        return copy.deepcopy(self.slices)

    def list_device_classes(self) -> list[dict[str, Any]]:
        self._maybe_fail("list_device_classes")
        return copy.deepcopy(self.device_classes)

    def list_all_device_classes(self) -> list[dict[str, Any]]:
        return self.list_device_classes()

    def create_template(self, template: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail("create_template")
        meta = template["metadata"]
        key = (meta["namespace"], meta["name"])
        if key in self.templates:
            raise ApiError(409, f"resourceclaimtemplates {meta['name']!r} already exists", "AlreadyExists")
        obj = copy.deepcopy(template)
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.templates[key] = obj
        self.writes.append(("create_template", meta["name"]))
        return obj

    def touch_template(self, namespace: str, name: str, now: str) -> None:
        from dra_hami.webhook import labels as L

        obj = self.templates[(namespace, name)]
        obj["metadata"].setdefault("annotations", {})[L.LAST_USED_ANNOTATION] = now
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.writes.append(("touch_template", name))

    def list_quotas(self, namespace: str) -> list[dict[str, Any]]:
        self._maybe_fail("list_quotas")
        return [copy.deepcopy(q) for (ns, _), q in sorted(self.quotas.items()) if ns == namespace]

    def list_claims(self, namespace: str) -> list[dict[str, Any]]:
        return [copy.deepcopy(c) for (ns, _), c in sorted(self.claims.items()) if ns == namespace]

    def replace_quota_status(self, quota: dict[str, Any]) -> dict[str, Any]:
        meta = quota["metadata"]
        key = (meta["namespace"], meta["name"])
        current = self.quotas[key]
        if self.conflicts > 0:
            self.conflicts -= 1
            current["metadata"]["resourceVersion"] = str(next(self._rv))  # somebody else wrote meanwhile
        if current["metadata"]["resourceVersion"] != meta.get("resourceVersion"):
            raise ApiError(409, "the object has been modified", "Conflict")
        current["status"] = copy.deepcopy(quota.get("status"))
        current["metadata"]["resourceVersion"] = str(next(self._rv))
        self.writes.append(("replace_quota_status", meta["name"]))
        return copy.deepcopy(current)

    # QuotaApi
    def list_all_quotas(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(q) for _, q in sorted(self.quotas.items())]

    def list_namespace_quotas(self, namespace: str) -> list[dict[str, Any]]:
        return self.list_quotas(namespace)

    def list_namespace_claims(self, namespace: str) -> list[dict[str, Any]]:
        return self.list_claims(namespace)

    def list_all_slices(self) -> list[dict[str, Any]]:
        return self.list_slices()

    def patch_quota_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        current = self.quotas[(namespace, name)]
        current.setdefault("status", {}).update(copy.deepcopy(status))
        current["metadata"]["resourceVersion"] = str(next(self._rv))
        self.writes.append(("patch_quota_status", name))

    # CollectorApi
    def list_legacy_templates(self) -> list[dict[str, Any]]:
        from dra_hami.webhook import labels as L

        return [
            copy.deepcopy(t)
            for _, t in sorted(self.templates.items())
            if (t["metadata"].get("labels") or {}).get(L.TEMPLATE_LABEL) == "true"
        ]

    def list_translated_pods(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.pods)

    def delete_template(self, namespace: str, name: str, resource_version: str) -> bool:
        current = self.templates.get((namespace, name))
        if current is None or current["metadata"]["resourceVersion"] != resource_version:
            return False
        del self.templates[(namespace, name)]
        self.writes.append(("delete_template", name))
        return True


if TYPE_CHECKING:  # mypy (.ci/run) checks that each fake still has the shape of the Protocol it stands in for
    from dra_hami.quota.reconciler import QuotaApi
    from dra_hami.webhook.collector import CollectorApi
    from dra_hami.webhook.kube import WebhookApi

    _webhook_api: type[WebhookApi] = FakeApi
    _quota_api: type[QuotaApi] = FakeApi
    _collector_api: type[CollectorApi] = FakeApi
