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


def load(directory: Path) -> Manifests:
    """Every YAML document of the directory's *.yaml files, sorted by file name; unknown kinds are ignored."""
    found = Manifests()
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
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
