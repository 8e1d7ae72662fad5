"""`dra-hami translate`: what the admission webhook would make of a HAMi manifest, with no cluster.

The pure part runs the webhook's own steps (``webhook.legacy.parse_legacy_pod``, ``webhook.translate.translate``)
on each Pod of the input, so the claim templates, the rewritten pod and the error text are the webhook's. The only
input the webhook reads from the cluster is the GPUs it can see (gpumem-percentage becomes one alternative per
GPU memory size): here they come from ResourceSlice YAML (``kubectl get resourceslices -o yaml``) or a fake GPU
profile. ``dra-hami demo`` uses it for the examples' HAMi pods.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dra_hami.kube import objects as k8s
from dra_hami.webhook.legacy import LegacyError, has_legacy_resources, parse_legacy_pod
from dra_hami.webhook.translate import PublishedGpu, published_gpus, translate

# The start of the webhook's denial for a pod whose HAMi request cannot be translated (webhook/admission.py);
# tests/unit/webhook/test_translate_preview.py checks that both say the same.
DENIED = "dra-hami: HAMi resources of this pod cannot be translated: "
_LIST_KINDS = ("List", "ResourceSliceList")


class InputError(ValueError):
    """A manifest that cannot be read; the message names the file."""


@dataclass(frozen=True)
class PodPreview:
    where: str  # "FILE: Pod NAMESPACE/NAME"
    pod: dict[str, Any]  # the pod as the webhook would admit it (unchanged when it has no HAMi resources)
    templates: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    error: str = ""  # the webhook's denial; pod and templates are then the input and nothing
    translated: bool = False


@dataclass
class Preview:
    pods: list[PodPreview] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # documents that are not pods, with why


def rfc3339_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def load_documents(text: str, source: str) -> list[dict[str, Any]]:
    """The YAML documents of one file or stream (List items expanded); InputError names the source."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise InputError(f"{source}: not valid YAML: {err}") from None
    out: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise InputError(f"{source}: document {index + 1} is a {type(doc).__name__}, not a Kubernetes object")
        if doc.get("kind") in _LIST_KINDS:
            out.extend(item for item in doc.get("items") or [] if isinstance(item, dict))
        else:
            out.append(doc)
    return out


def gpus_of_slices(docs: Iterable[dict[str, Any]], driver: str) -> list[PublishedGpu]:
    return published_gpus([d for d in docs if d.get("kind") == "ResourceSlice"], driver)


def gpus_of_profile(profile: str, driver: str) -> list[PublishedGpu]:
    """The GPUs a node with this fake profile publishes (raises DiscoveryError for a bad profile)."""
    from dra_hami.api.publisher_config import PublisherConfig
    from dra_hami.discovery import load_discovery
    from dra_hami.publisher.slices import build_pool

    config = PublisherConfig(node_name="translate-preview", driver_name=driver)
    return published_gpus(build_pool(load_discovery(profile).discover(), config, generation=1), driver)


def preview_pod(pod: dict[str, Any], gpus: list[PublishedGpu], driver: str, where: str, now: str) -> PodPreview:
    """What the webhook does with this pod (translation on, as for a labelled namespace)."""
    namespace = k8s.namespace(pod) or "default"
    try:
        legacy = parse_legacy_pod(pod)
        if legacy is None:
            return PodPreview(where, pod)
        result = translate(pod, legacy, gpus, driver, namespace, now)
    except LegacyError as err:
        return PodPreview(where, pod, error=f"{DENIED}{err}")
    return PodPreview(
        where, result.pod, tuple(p.template for p in result.templates), tuple(result.warnings), translated=True
    )


def preview(docs: list[dict[str, Any]], gpus: list[PublishedGpu], driver: str, source: str, now: str) -> Preview:
    out = Preview()
    for doc in docs:
        meta = k8s.meta(doc)
        name = meta.get("name") or meta.get("generateName") or "?"
        if doc.get("kind") != "Pod":
            out.skipped.append(f"{source}: {doc.get('kind') or 'a document without kind'} {name}: not a Pod")
            continue
        name = f"{meta.get('namespace') or 'default'}/{name}"
        out.pods.append(preview_pod(doc, gpus, driver, f"{source}: Pod {name}", now))
    return out


def render(result: Preview) -> Iterator[str]:
    """The admitted objects as YAML documents: each pod's new templates, then the pod."""
    for pod in result.pods:
        if pod.error:
            continue
        head = f"# {pod.where}: " + (
            f"{len(pod.templates)} ResourceClaimTemplate(s) and the rewritten pod"
            if pod.translated
            else "no HAMi resources, admitted unchanged"
        )
        docs = [*pod.templates, pod.pod]
        yield head + "\n" + yaml.safe_dump_all(docs, sort_keys=False, explicit_start=True).rstrip()


def read_source(path: str, stdin_text: str | None = None) -> tuple[str, str]:
    """(text, source name) of ``-f``: a file, or standard input for ``-``."""
    if path == "-":
        return stdin_text or "", "<stdin>"
    try:
        return Path(path).read_text(), path
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None


def is_legacy(pod: dict[str, Any]) -> bool:
    return has_legacy_resources(pod)
