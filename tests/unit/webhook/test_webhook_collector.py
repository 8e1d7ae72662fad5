"""Collection of legacy ResourceClaimTemplates: used, recent or changed ones stay; the rest go."""

from __future__ import annotations

import datetime

from webhook_fixtures import FakeApi, slice_spec, template

from dra_hami.webhook import labels as L
from dra_hami.webhook.collector import TemplateCollector, unused_templates

NOW = datetime.datetime(2026, 12, 3, 12, 0, 0, tzinfo=datetime.UTC)


def legacy(name: str, ns: str = "ns", last_used: str | None = "2026-12-03T11:00:00Z", rv: str = "5") -> dict:
    obj = template(name, slice_spec("1Gi"), ns)
    obj["metadata"]["labels"] = {L.TEMPLATE_LABEL: "true"}
    obj["metadata"]["resourceVersion"] = rv
    obj["metadata"]["creationTimestamp"] = "2026-12-01T00:00:00Z"
    if last_used:
        obj["metadata"]["annotations"] = {L.LAST_USED_ANNOTATION: last_used}
    return obj


def user_pod(ns: str, *templates: str) -> dict:
    return {
        "metadata": {"namespace": ns, "name": "p"},
        "spec": {
            "resourceClaims": [{"name": f"c{i}", "resourceClaimTemplateName": t} for i, t in enumerate(templates)]
        },
    }


def test_unused_and_stale_templates_are_listed_with_their_resource_version() -> None:
    templates = [
        legacy("in-use"),
        legacy("stale", rv="7"),
        legacy("recent", last_used="2026-12-03T11:55:00Z"),
        legacy("other-ns-same-name", ns="b"),
        legacy("never-touched", last_used=None),  # falls back to creationTimestamp (old)
        {**template("users-own", slice_spec()), "metadata": {"name": "users-own", "namespace": "ns"}},  # no label
    ]
    pods = [user_pod("ns", "in-use", "other-ns-same-name")]
    assert unused_templates(templates, pods, NOW) == [
        ("b", "other-ns-same-name", "5"),  # referenced only in namespace ns, not in b
        ("ns", "never-touched", "5"),
        ("ns", "stale", "7"),
    ]


def test_collector_deletes_with_precondition_and_keeps_a_template_touched_meanwhile() -> None:
    api = FakeApi()
    for t in (legacy("stale"), legacy("touched")):
        api.templates[("ns", t["metadata"]["name"])] = t
    collector = TemplateCollector(api, clock=lambda: NOW)
    original = api.list_legacy_templates

    def listing_then_touch() -> list[dict]:
        items = original()
        api.touch_template("ns", "touched", "2026-12-03T12:00:00Z")  # an admission refreshed it after our read
        return items

    api.list_legacy_templates = listing_then_touch  # type: ignore[method-assign]
    assert collector.collect() == ["ns/stale"]
    assert set(api.templates) == {("ns", "touched")}


def test_collector_with_nothing_to_do() -> None:
    assert TemplateCollector(FakeApi(), clock=lambda: NOW).collect() == []
