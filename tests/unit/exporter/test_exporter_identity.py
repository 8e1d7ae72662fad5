"""Which pod and containers use a claim, and the cache that keeps the API off the scrape path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dra_hami.exporter.identity import ClaimUsers, Consumer, IdentityCache, claim_containers, resolve
from dra_hami.kube.client import ApiError


class Api:
    def __init__(self, claims: dict[str, dict[str, Any]], pods: dict[str, dict[str, Any]]):
        self.claims, self.pods, self.fail, self.calls = claims, pods, False, 0

    def get_resource_claim(self, namespace: str, name: str) -> dict[str, Any]:
        self.calls += 1
        if self.fail:
            raise ApiError(0, "connection refused", "Unreachable")
        if name not in self.claims:
            raise ApiError(404, "gone", "NotFound")
        return self.claims[name]

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        if name not in self.pods:
            raise ApiError(404, "gone", "NotFound")
        return self.pods[name]


def pod(uid: str, claim_ref: dict[str, str], containers: dict[str, list[str]], init: dict | None = None) -> dict:
    def cs(spec: dict[str, list[str]]) -> list[dict]:
        return [{"name": n, "resources": {"claims": [{"name": r} for r in refs]}} for n, refs in spec.items()]

    return {
        "metadata": {"uid": uid},
        "spec": {"resourceClaims": [claim_ref], "containers": cs(containers), "initContainers": cs(init or {})},
    }


def claim(uid: str, *pods: tuple[str, str]) -> dict:
    return {
        "metadata": {"uid": uid},
        "status": {"reservedFor": [{"resource": "pods", "name": n, "uid": u} for n, u in pods]},
    }


def test_containers_by_direct_claim_reference_including_init_containers() -> None:
    p = pod("p1", {"name": "g", "resourceClaimName": "shared"}, {"a": ["g"], "b": ["other"]}, init={"i": ["g"]})
    assert claim_containers(p, "shared") == ("i", "a")
    assert claim_containers(p, "nope") == ()


def test_single_pod_single_container_and_shared_cases() -> None:
    api = Api(
        {"c1": claim("u1", ("p", "pu")), "c2": claim("u2", ("p", "pu"), ("q", "qu"))},
        {
            "p": pod("pu", {"name": "g", "resourceClaimName": "c1"}, {"main": ["g"]}),
            "q": pod("qu", {"name": "g", "resourceClaimName": "c2"}, {"x": ["g"], "y": ["g"]}),
        },
    )
    one = resolve(api, "ns", "c1", "u1")
    assert (one.pod, one.container) == ("p", "main")
    two = resolve(api, "ns", "c2", "u2")
    assert (two.pod, two.container) == ("", "")  # two pods: a claim-level number is no single pod's
    assert two.consumers == (
        Consumer("p", (), "pu"),
        Consumer("q", ("x", "y"), "qu", ("0", "1")),
    )  # pod UIDs: the guard's cgroup match


def test_gone_replaced_or_unreserved_claims_are_unknown_with_a_reason() -> None:
    api = Api({"c": claim("new-uid"), "free": claim("u")}, {})
    assert "no longer exists" in resolve(api, "ns", "missing", "u").why_unknown
    assert "another object" in resolve(api, "ns", "c", "old-uid").why_unknown
    assert "no pod" in resolve(api, "ns", "free", "u").why_unknown


def test_cache_resolves_in_background_retries_errors_and_forgets() -> None:
    api = Api(
        {"c1": claim("u1", ("p", "pu"))}, {"p": pod("pu", {"name": "g", "resourceClaimName": "c1"}, {"m": ["g"]})}
    )
    cache = IdentityCache(api, retry_after=30, refresh_after=600)
    assert cache.lookup("u1", "ns", "c1").why_unknown == "not resolved yet"
    assert api.calls == 0  # lookup never calls the API
    api.fail = True
    assert cache.resolve_due(now=100) == 1
    assert "API error" in cache.lookup("u1", "ns", "c1").why_unknown
    api.fail = False
    assert cache.resolve_due(now=110) == 0  # not due for a retry yet
    assert cache.resolve_due(now=131) == 1
    assert cache.lookup("u1", "ns", "c1").pod == "p"
    assert cache.resolve_due(now=200) == 0  # resolved: refreshed only after refresh_after
    cache.forget_except(set())
    assert cache.resolve_due(now=2000) == 0


def test_no_api_says_so() -> None:
    assert IdentityCache(None).lookup("u", "ns", "c") == ClaimUsers(
        why_unknown="the exporter has no Kubernetes API access", reason="no_api"
    )


if TYPE_CHECKING:  # mypy (.ci/run) checks that each fake still has the shape of the Protocol it stands in for
    from dra_hami.exporter.identity import PodApi

    _pod_api: type[PodApi] = Api
