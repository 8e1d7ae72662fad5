"""AdmissionReview v1 in and out (pure): parse the request, build allow / deny / patch responses."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

API_VERSION = "admission.k8s.io/v1"


class ReviewError(ValueError):
    """The body is not an AdmissionReview v1 request (answered with HTTP 400)."""


@dataclass(frozen=True)
class Response:
    allowed: bool
    message: str = ""
    code: int = 0
    patch: list[dict[str, Any]] | None = None
    warnings: tuple[str, ...] = field(default=())

    @classmethod
    def allow(cls, warnings: Iterable[str] = ()) -> Response:
        return cls(True, warnings=tuple(warnings))

    @classmethod
    def deny(cls, message: str, code: int = 403, warnings: Iterable[str] = ()) -> Response:
        return cls(False, message, code, warnings=tuple(warnings))

    @classmethod
    def mutate(cls, old: Mapping[str, Any], new: Mapping[str, Any], warnings: Iterable[str] = ()) -> Response:
        ops = json_patch(old, new)
        return cls(True, patch=ops or None, warnings=tuple(warnings))


def parse(body: bytes) -> dict[str, Any]:
    """The review's ``request``; raises ReviewError for anything else."""
    try:
        review = json.loads(body)
    except ValueError as err:
        raise ReviewError(f"body is not JSON: {err}") from None
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise ReviewError("body is not an AdmissionReview")
    if review.get("apiVersion") != API_VERSION:
        raise ReviewError(f"AdmissionReview {review.get('apiVersion')!r} is not supported: register with {API_VERSION}")
    request = review.get("request")
    if not isinstance(request, dict) or not request.get("uid"):
        raise ReviewError("AdmissionReview has no request.uid")
    return request


def render(uid: str, response: Response) -> bytes:
    out: dict[str, Any] = {"uid": uid, "allowed": response.allowed}
    if not response.allowed:
        code = response.code or 403
        out["status"] = {"code": code, "message": response.message, "reason": _REASONS.get(code, "Forbidden")}
    if response.patch:
        out["patchType"] = "JSONPatch"
        out["patch"] = base64.b64encode(json.dumps(response.patch).encode()).decode()
    if response.warnings:
        # the API server shows at most 120 characters per warning... in kubectl; keep them whole but bounded
        out["warnings"] = [w[:1000] for w in response.warnings]
    return json.dumps({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": out}).encode()


_REASONS = {400: "BadRequest", 403: "Forbidden", 503: "ServiceUnavailable"}


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


# Parts of a pod the webhook may change; each becomes one whole-value "add" (add replaces an existing member).
_POD_PATHS = (
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("spec", "containers"),
    ("spec", "initContainers"),
    ("spec", "resourceClaims"),
    ("spec", "schedulingGates"),
)


def json_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A JSON Patch turning ``old`` into ``new`` for the pod paths above (the only ones the webhook edits)."""
    ops: list[dict[str, Any]] = []
    created: set[str] = set()
    for parent, child in _POD_PATHS:
        before = (old.get(parent) or {}).get(child)
        after = (new.get(parent) or {}).get(child)
        if before == after:
            continue
        path = f"/{parent}/{_escape(child)}"
        if after is None:
            ops.append({"op": "remove", "path": path})
        else:
            if parent not in old and parent not in created:
                created.add(parent)
                ops.append({"op": "add", "path": f"/{parent}", "value": {}})
            ops.append({"op": "add", "path": path, "value": after})
    return ops


def apply_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply the subset of JSON Patch that ``json_patch`` writes (tests, and a check on ourselves)."""
    out = json.loads(json.dumps(doc))
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target = out
        for part in parts[:-1]:
            target = target[part]
        if op["op"] == "add":
            target[parts[-1]] = op["value"]
        elif op["op"] == "remove":
            del target[parts[-1]]
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return out
