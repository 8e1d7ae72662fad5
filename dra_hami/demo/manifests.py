"""Read example manifests and create the claims Kubernetes would create for their pods (pure)."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Manifests:
    device_classes: list[dict[str, Any]] = field(default_factory=list)
    templates: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    claims: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    pods: list[dict[str, Any]] = field(default_factory=list)


class ManifestError(ValueError):
    """An example file that cannot be read; the message names the file and the document."""


def _documents(path: Path) -> list[dict[str, Any]]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as err:
        raise ManifestError(f"{path}: not valid YAML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: cannot read: {err}") from None
    for index, doc in enumerate(docs, 1):
        if not isinstance(doc, dict) or not isinstance(doc.get("metadata") or {}, dict):
            raise ManifestError(f"{path}: document {index} is not a Kubernetes object (a mapping with metadata)")
        if doc.get("kind") in ("DeviceClass", "ResourceClaimTemplate", "ResourceClaim", "Pod") and not (
            doc.get("metadata") or {}
        ).get("name"):
            raise ManifestError(f"{path}: document {index} ({doc['kind']}) has no metadata.name")
    return docs


def load(directory: Path) -> Manifests:
    """Every YAML document of the directory's *.yaml files, sorted by file name; unknown kinds are ignored.

    Raises ManifestError naming the file for YAML that does not parse or a document that is not an object."""
    found = Manifests()
    for path in sorted(directory.glob("*.yaml")):
        for doc in _documents(path):
            meta = doc.setdefault("metadata", {})
            meta.setdefault("namespace", "default")
            key = (meta["namespace"], meta["name"])
            kind = doc.get("kind")
            if kind == "DeviceClass":
                meta.pop("namespace")
                found.device_classes.append(doc)
            elif kind == "ResourceClaimTemplate":
                found.templates[key] = doc
            elif kind == "ResourceClaim":
                meta.setdefault("uid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"claim/{key[0]}/{key[1]}")))
                found.claims[key] = doc
            elif kind == "Pod":
                meta.setdefault("uid", str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod/{key[0]}/{key[1]}")))
                found.pods.append(doc)
    return found


def translate_legacy_pods(manifests: Manifests, slices: list[dict[str, Any]], driver: str, now: str) -> list[str]:
    """Run each HAMi pod through `dra-hami translate` (the webhook's translation), in place: translated pods use
    the templates it made, refused pods are dropped. Returns report lines."""
    from dra_hami.translate_preview import gpus_of_slices, is_legacy, preview_pod

    gpus = gpus_of_slices(slices, driver)
    report, kept = [], []
    for pod in manifests.pods:
        if not is_legacy(pod):
            kept.append(pod)
            continue
        meta = pod["metadata"]
        shown = preview_pod(pod, gpus, driver, f"pod {meta['namespace']}/{meta['name']}", now)
        if shown.error:
            report.append(f"{shown.where}: refused, as the webhook would: {shown.error}")
            continue
        for template in shown.templates:
            tmeta = template["metadata"]
            manifests.templates[(tmeta["namespace"], tmeta["name"])] = template
            report.append(
                f"{shown.where}: HAMi resources -> ResourceClaimTemplate {tmeta['name']} ({_wants(template)})"
            )
        for warning in shown.warnings:
            report.append(f"{shown.where}: warning: {warning}")
        kept.append(shown.pod)
    manifests.pods = kept
    return report


def _wants(template: dict[str, Any]) -> str:
    """What a translated template asks for, in one phrase."""
    request = template["spec"]["spec"]["devices"]["requests"][0]
    if "firstAvailable" in request:  # gpumem-percentage over several card sizes
        return f"one of {len(request['firstAvailable'])} sizes, by the card it lands on"
    wanted = (request["exactly"].get("capacity") or {}).get("requests") or {}
    return ", ".join(f"{k}={v}" for k, v in sorted(wanted.items())) or "a whole GPU"


def pod_claims(pod: dict[str, Any], manifests: Manifests) -> list[dict[str, Any]]:
    """The pod's ResourceClaims: named ones as they are, templated ones generated like the claim controller."""
    meta = pod["metadata"]
    claims = []
    for entry in pod["spec"].get("resourceClaims") or []:
        if name := entry.get("resourceClaimName"):
            claim = manifests.claims.get((meta["namespace"], name))
            if claim is None:
                raise ValueError(f"Pod {meta['namespace']}/{meta['name']}: resourceClaimName {name!r} does not exist")
            claims.append(claim)
            continue
        template_name = entry.get("resourceClaimTemplateName")
        template = manifests.templates.get((meta["namespace"], template_name))
        if template is None:
            raise ValueError(
                f"Pod {meta['namespace']}/{meta['name']}: resourceClaimTemplateName {template_name!r} does not exist"
            )
        claim_name = f"{meta['name']}-{entry['name']}"
        claims.append(
            {
                "apiVersion": "resource.k8s.io/v1",
                "kind": "ResourceClaim",
                "metadata": {
                    "name": claim_name,
                    "namespace": meta["namespace"],
                    "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"claim/{meta['namespace']}/{claim_name}")),
                    "annotations": {"resource.kubernetes.io/pod-claim-name": entry["name"]},
                    "ownerReferences": [_owner(meta)],
                },
                "spec": copy.deepcopy(template["spec"]["spec"]),
            }
        )
    return claims


def _owner(pod_meta: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "name": pod_meta["name"], "uid": pod_meta["uid"], "controller": True}
