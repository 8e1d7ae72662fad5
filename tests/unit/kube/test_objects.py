"""The typed views answer what the hand-written ``(obj.get("metadata") or {})`` reads answered, for every shape
the API server (or a fake) can send: present, absent, null."""

from __future__ import annotations

from dra_hami.kube import objects as k8s

POD = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": "7", "labels": {"a": "b"}},
    "spec": {"resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": "t"}]},
    "status": {"resourceClaimStatuses": [{"name": "gpu", "resourceClaimName": "p-gpu-x"}]},
}


def test_present_fields_are_read():
    assert (k8s.name(POD), k8s.namespace(POD), k8s.uid(POD), k8s.resource_version(POD)) == ("p", "ns", "u1", "7")
    assert k8s.namespaced_name(POD) == ("ns", "p")
    assert k8s.labels(POD) == {"a": "b"} and k8s.annotations(POD) == {}
    assert k8s.pod_claims(POD) == [{"name": "gpu", "resourceClaimTemplateName": "t"}]
    assert k8s.pod_claim_statuses(POD)[0]["resourceClaimName"] == "p-gpu-x"


def test_absent_or_null_parts_read_as_empty():
    for obj in ({}, {"metadata": None}, {"metadata": {"labels": None, "name": None}}, None):
        assert k8s.meta(obj).get("uid") is None
        assert k8s.name(obj) == "" and k8s.namespaced_name(obj) == ("", "")
        assert k8s.labels(obj) == {} and k8s.annotations(obj) == {}
        assert k8s.pod_claims(obj) == [] and k8s.pod_claim_statuses(obj) == []
        assert k8s.allocation(obj) is None


def test_the_views_are_the_objects_own_dicts():
    # Code that patches metadata in place (the webhook's mutations) must still change the object.
    pod = {"metadata": {"name": "p"}}
    k8s.meta(pod)["labels"] = {"x": "y"}
    assert pod["metadata"]["labels"] == {"x": "y"}


def test_allocation_is_none_until_allocated():
    claim = {"status": {"allocation": None}}
    assert k8s.allocation(claim) is None
    claim["status"]["allocation"] = {"devices": {"results": [{"request": "r", "device": "hami-gpu-0"}]}}
    assert k8s.allocation(claim) == claim["status"]["allocation"]


def test_a_list_page_continue_token():
    assert k8s.list_meta({"metadata": {"continue": "abc", "resourceVersion": "9"}}).get("continue") == "abc"
    assert k8s.list_meta({"items": []}) == {}
