"""The API calls of the webhook process, over ``RawKubeApi.request`` (plain JSON), with short timeouts and small
TTL caches for what every admission reads (namespace labels, ResourceSlices). Tests use in-memory fakes with
the same methods (``WebhookApi``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from dra_hami.kube import objects as k8s
from dra_hami.kube.client import ApiError
from dra_hami.quota.model import GROUP, PLURAL, VERSION
from dra_hami.webhook import labels as L

RESOURCE = "/apis/resource.k8s.io/v1"
QUOTAS = f"/apis/{GROUP}/{VERSION}"
ADMISSION_TIMEOUT = 2.0  # per call while answering a review: the webhook itself has timeoutSeconds 5
BACKGROUND_TIMEOUT = 30.0


class WebhookApi(Protocol):
    def namespace_labels(self, namespace: str) -> dict[str, str]: ...
    def get_claim(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def get_template(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def list_slices(self) -> list[dict[str, Any]]: ...
    def list_device_classes(self) -> list[dict[str, Any]]: ...
    def create_template(self, template: dict[str, Any]) -> dict[str, Any]: ...
    def touch_template(self, namespace: str, name: str, now: str) -> None: ...
    def list_quotas(self, namespace: str) -> list[dict[str, Any]]: ...
    def list_claims(self, namespace: str) -> list[dict[str, Any]]: ...
    def replace_quota_status(self, quota: dict[str, Any]) -> dict[str, Any]: ...


class _Ttl:
    """A tiny thread-safe cache: value per key for ``ttl`` seconds."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.clock = ttl, clock
        self._data: dict[Any, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, load: Callable[[], Any]) -> Any:
        now = self.clock()
        with self._lock:
            hit = self._data.get(key)
        if hit and now - hit[0] < self.ttl:
            return hit[1]
        value = load()
        with self._lock:
            self._data[key] = (now, value)
        return value


class KubeWebhookApi:
    """WebhookApi and the background calls (reconciler, collector) over a ``RawKubeApi``."""

    def __init__(self, raw: Any, namespace_ttl: float = 5.0, slice_ttl: float = 10.0) -> None:
        self.raw = raw
        self._namespaces = _Ttl(namespace_ttl)
        self._slices = _Ttl(slice_ttl)
        self._classes = _Ttl(slice_ttl)

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """``raw.request``: raises only ApiError (RawKubeApi maps every transport failure to status 0)."""
        return self.raw.request(method, path, **kwargs)

    def _get(self, path: str, timeout: float = ADMISSION_TIMEOUT) -> dict[str, Any] | None:
        try:
            return self._request("GET", path, timeout=timeout)
        except ApiError as err:
            if err.not_found:
                return None
            raise

    def _list(
        self, path: str, query: dict[str, str] | None = None, timeout: float = ADMISSION_TIMEOUT
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        params = {"limit": "500", **(query or {})}
        while True:
            page = self._request("GET", path, query=params, timeout=timeout)
            items.extend(page.get("items") or [])
            token = k8s.list_meta(page).get("continue")
            if not token:
                return items
            params["continue"] = token

    # ------------------------------------------------------------------ admission

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        def load() -> dict[str, str]:
            ns = self._get(f"/api/v1/namespaces/{namespace}") or {}
            return dict(k8s.labels(ns))

        return self._namespaces.get(namespace, load)

    def get_claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(f"{RESOURCE}/namespaces/{namespace}/resourceclaims/{name}")

    def get_template(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._get(f"{RESOURCE}/namespaces/{namespace}/resourceclaimtemplates/{name}")

    def list_slices(self) -> list[dict[str, Any]]:
        return self._slices.get("all", lambda: self._list(f"{RESOURCE}/resourceslices"))

    def list_device_classes(self) -> list[dict[str, Any]]:
        return self._classes.get("all", lambda: self._list(f"{RESOURCE}/deviceclasses"))

    def create_template(self, template: dict[str, Any]) -> dict[str, Any]:
        ns = template["metadata"]["namespace"]
        return self._request("POST", f"{RESOURCE}/namespaces/{ns}/resourceclaimtemplates", body=template,
                                timeout=ADMISSION_TIMEOUT)  # fmt: skip

    def touch_template(self, namespace: str, name: str, now: str) -> None:
        patch = {"metadata": {"annotations": {L.LAST_USED_ANNOTATION: now}}}
        self._request("PATCH", f"{RESOURCE}/namespaces/{namespace}/resourceclaimtemplates/{name}", body=patch,
                         content_type="application/merge-patch+json", timeout=ADMISSION_TIMEOUT)  # fmt: skip

    def list_quotas(self, namespace: str) -> list[dict[str, Any]]:
        return self._list(f"{QUOTAS}/namespaces/{namespace}/{PLURAL}")

    def list_claims(self, namespace: str) -> list[dict[str, Any]]:
        return self._list(f"{RESOURCE}/namespaces/{namespace}/resourceclaims")

    def replace_quota_status(self, quota: dict[str, Any]) -> dict[str, Any]:
        meta = quota["metadata"]
        path = f"{QUOTAS}/namespaces/{meta['namespace']}/{PLURAL}/{meta['name']}/status"
        return self._request("PUT", path, body=quota, timeout=ADMISSION_TIMEOUT)

    # ------------------------------------------------------------------ background (reconciler, collector)

    def list_all_quotas(self) -> list[dict[str, Any]]:
        return self._list(f"{QUOTAS}/{PLURAL}", timeout=BACKGROUND_TIMEOUT)

    def list_namespace_claims(self, namespace: str) -> list[dict[str, Any]]:
        return self._list(f"{RESOURCE}/namespaces/{namespace}/resourceclaims", timeout=BACKGROUND_TIMEOUT)

    def list_namespace_quotas(self, namespace: str) -> list[dict[str, Any]]:
        return self._list(f"{QUOTAS}/namespaces/{namespace}/{PLURAL}", timeout=BACKGROUND_TIMEOUT)

    def list_all_slices(self) -> list[dict[str, Any]]:
        return self._list(f"{RESOURCE}/resourceslices", timeout=BACKGROUND_TIMEOUT)

    def list_all_device_classes(self) -> list[dict[str, Any]]:
        return self._list(f"{RESOURCE}/deviceclasses", timeout=BACKGROUND_TIMEOUT)

    def patch_quota_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self._request("PATCH", f"{QUOTAS}/namespaces/{namespace}/{PLURAL}/{name}/status", body={"status": status},
                         content_type="application/merge-patch+json", timeout=BACKGROUND_TIMEOUT)  # fmt: skip

    def list_legacy_templates(self) -> list[dict[str, Any]]:
        return self._list(f"{RESOURCE}/resourceclaimtemplates", {"labelSelector": f"{L.TEMPLATE_LABEL}=true"},
                          timeout=BACKGROUND_TIMEOUT)  # fmt: skip

    def list_translated_pods(self) -> list[dict[str, Any]]:
        return self._list("/api/v1/pods", {"labelSelector": f"{L.TRANSLATED_LABEL}=true"}, timeout=BACKGROUND_TIMEOUT)

    def delete_template(self, namespace: str, name: str, resource_version: str) -> bool:
        """Delete unless it changed since it was read (a pod admitted meanwhile touched it). False: kept."""
        body = {"preconditions": {"resourceVersion": resource_version}}
        try:
            self._request("DELETE", f"{RESOURCE}/namespaces/{namespace}/resourceclaimtemplates/{name}", body=body,
                             timeout=BACKGROUND_TIMEOUT)  # fmt: skip
        except ApiError as err:
            if err.not_found or err.conflict:
                return False
            raise
        return True

    # ------------------------------------------------------------------ the reflector's calls (quota watches)

    def list_objects(
        self, path: str, query: dict[str, str] | None = None, first_page_only: bool = False
    ) -> tuple[list[dict[str, Any]], str]:
        """Where a watch of ``path`` starts (dra_hami.kube.reflector lists before it watches).

        A watch needs a resourceVersion: Kubernetes 1.36 answers one without (or with "0") by a consistent
        read from its cache, which needs etcd's RequestWatchProgress; without it the API server answers 200,
        sends one ERROR event and closes the stream."""
        return self.raw.list_objects(path, query, first_page_only=first_page_only)

    def watch(
        self, path: str, resource_version: str, timeout_seconds: int, query: dict[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        return self.raw.watch(path, resource_version, timeout_seconds, query)
