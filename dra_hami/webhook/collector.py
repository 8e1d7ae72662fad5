"""Deletes the ResourceClaimTemplates the legacy translation created once no pod uses them.

A template is shared by every pod of one request shape in a namespace and owned by none (the pods did not
exist when it was made), so it is collected here: labelled ``dra-hami.project-hami.io/legacy-template=true``,
named by no translated pod's ``spec.resourceClaims``, and not used by an admission for ``grace`` (the
``last-used`` annotation, refreshed by the webhook at most every 5 minutes while pods keep coming). The delete
carries the resourceVersion that was read, so a template an admission touched meanwhile is kept. A template
deleted just as a new pod needs it is simply created again by that pod's admission.

The claims themselves are never collected here: Kubernetes creates them from the template with an
ownerReference to the pod and deletes them with it.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from dra_hami.kube import objects as k8s
from dra_hami.kube.client import ApiError
from dra_hami.webhook import labels as L
from dra_hami.webhook.admission import parse_rfc3339, utc_now

log = logging.getLogger(__name__)

GRACE = datetime.timedelta(minutes=10)


class CollectorApi(Protocol):
    def list_legacy_templates(self) -> list[dict[str, Any]]: ...
    def list_translated_pods(self) -> list[dict[str, Any]]: ...
    def delete_template(self, namespace: str, name: str, resource_version: str) -> bool: ...


def unused_templates(
    templates: Iterable[dict[str, Any]], pods: Iterable[dict[str, Any]], now: datetime.datetime,
    grace: datetime.timedelta = GRACE,
) -> list[tuple[str, str, str]]:  # fmt: skip
    """(namespace, name, resourceVersion) of the templates that may go."""
    referenced = set()
    for pod in pods:
        ns = k8s.namespace(pod)
        for entry in k8s.pod_claims(pod):
            if entry.get("resourceClaimTemplateName"):
                referenced.add((ns, entry["resourceClaimTemplateName"]))
    out = []
    for template in templates:
        meta = k8s.meta(template)
        if (meta.get("labels") or {}).get(L.TEMPLATE_LABEL) != "true":
            continue
        key = k8s.namespaced_name(template)
        if key in referenced:
            continue
        used = parse_rfc3339((meta.get("annotations") or {}).get(L.LAST_USED_ANNOTATION))
        used = used or parse_rfc3339(meta.get("creationTimestamp"))
        if used is not None and now - used < grace:
            continue
        out.append((key[0], key[1], str(meta.get("resourceVersion") or "")))
    return sorted(out)


class TemplateCollector:
    def __init__(
        self, api: CollectorApi, interval: float = 60.0, grace: datetime.timedelta = GRACE,
        clock: Callable[[], datetime.datetime] = utc_now,
    ) -> None:  # fmt: skip
        self.api, self.interval, self.grace, self.clock = api, interval, grace, clock

    def collect(self) -> list[str]:
        templates = self.api.list_legacy_templates()
        if not templates:
            return []
        deleted = []
        for ns, name, rv in unused_templates(templates, self.api.list_translated_pods(), self.clock(), self.grace):
            if self.api.delete_template(ns, name, rv):
                log.info("deleted unused legacy ResourceClaimTemplate %s/%s", ns, name)
                deleted.append(f"{ns}/{name}")
        return deleted

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.interval):
            try:
                self.collect()
            except (ApiError, OSError) as err:
                log.warning("legacy template collection failed, retrying: %s", err)
