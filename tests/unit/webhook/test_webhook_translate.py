"""Translation of HAMi requests into claim templates: worked answers, and the CEL selectors evaluated by the
allocator's CEL engine against the slices the real publisher writes for the fake GPU profiles."""

from __future__ import annotations

import pytest
from webhook_fixtures import DRIVER, container, fleet, matching, pod

from dra_hami.webhook import labels as L
from dra_hami.webhook.legacy import LegacyError, LegacyRequest, Selection, parse_legacy_pod
from dra_hami.webhook.review import apply_patch, json_patch
from dra_hami.webhook.translate import (
    claim_spec,
    percent_of,
    pod_claim_name,
    published_gpus,
    template_name,
    translate,
)

MI = 1 << 20
NOW = "2026-12-03T09:00:00Z"
T4 = fleet("t4x2")
MIXED = fleet("t4x2", "a100x4", "l40sx2")  # 15360Mi, 40960Mi, 46068Mi cards


def req(count=1, mem=None, percent=None, cores=None, name="w") -> LegacyRequest:
    return LegacyRequest(name, False, count, mem, percent, cores)


def selectors_of(exactly: dict) -> list[str]:
    return [s["cel"]["expression"] for s in exactly.get("selectors", [])]


def test_published_gpus_reads_name_uuid_and_memory() -> None:
    gpus = published_gpus(MIXED, DRIVER)
    assert sorted({(g.product_name, g.memory // MI) for g in gpus}) == [
        ("NVIDIA A100-SXM4-40GB", 40960),
        ("NVIDIA L40S", 46068),
        ("Tesla T4", 15360),
    ]
    assert len(gpus) == 8 and all(g.uuid.startswith("GPU-") for g in gpus)
    assert published_gpus(MIXED, "other.example.com") == []


@pytest.mark.parametrize(
    ("size_mib", "percent", "answer_mib"),
    [
        (15360, 20, 3072),  # T4: 15360 x 0.20 = 3072 exactly
        (40960, 20, 8192),  # A100 40GB
        (46068, 20, 9213),  # L40S: 9213.6 rounds down to the 1Mi step
        (81559, 25, 20389),  # H100 80GB: 20389.75 -> 20389
        (15360, 100, 15360),  # the whole card = the published max
        (2, 1, 1),  # never below the 1Mi minimum
    ],
)
def test_percent_of_card_rounds_down_to_the_mib_step(size_mib: int, percent: int, answer_mib: int) -> None:
    assert percent_of(size_mib * MI, percent) == answer_mib * MI


def test_homelab_worker_on_t4_is_3072mi_and_25_cores_pinned_to_the_15360mi_card() -> None:
    spec = claim_spec(req(percent=20, cores=25), Selection(), published_gpus(T4, DRIVER), DRIVER)
    (request,) = spec["devices"]["requests"]
    assert request["name"] == "gpu"
    exactly = request["exactly"]
    assert exactly["deviceClassName"] == DRIVER
    assert exactly["count"] == 1
    assert exactly["capacity"] == {"requests": {"cores": "25", "memory": "3Gi"}}  # 3072Mi
    assert selectors_of(exactly) == [
        f"device.capacity['{DRIVER}'].memory.compareTo(quantity('15Gi')) == 0"  # 15360Mi
    ]
    assert "constraints" not in spec["devices"]
    assert len(matching(selectors_of(exactly), T4)) == 2


def test_gpumem_in_mib_becomes_an_absolute_memory_request_without_selectors() -> None:
    spec = claim_spec(req(mem=3000, cores=30), Selection(), published_gpus(T4, DRIVER), DRIVER)
    exactly = spec["devices"]["requests"][0]["exactly"]
    assert exactly["capacity"] == {"requests": {"cores": "30", "memory": "3000Mi"}}
    assert "selectors" not in exactly


def test_only_count_asks_for_whole_cards_memory_default_and_no_cores_cap() -> None:
    spec = claim_spec(req(count=1), Selection(), published_gpus(T4, DRIVER), DRIVER)
    exactly = spec["devices"]["requests"][0]["exactly"]
    assert "capacity" not in exactly  # memory defaults to the whole card, cores to 0 (no cap), as in HAMi


def test_several_gpus_must_be_distinct_devices() -> None:
    spec = claim_spec(req(count=2, mem=1024), Selection(), published_gpus(T4, DRIVER), DRIVER)
    assert spec["devices"]["requests"][0]["exactly"]["count"] == 2
    assert spec["devices"]["constraints"] == [{"requests": ["gpu"], "distinctAttribute": f"{DRIVER}/uuid"}]


def test_percentage_on_a_mixed_fleet_is_first_available_per_card_size_smallest_first() -> None:
    spec = claim_spec(req(percent=20, cores=10), Selection(), published_gpus(MIXED, DRIVER), DRIVER)
    (request,) = spec["devices"]["requests"]
    subs = request["firstAvailable"]
    assert [(s["name"], s["capacity"]["requests"]["memory"]) for s in subs] == [
        ("mem-15360mi", "3Gi"),
        ("mem-40960mi", "8Gi"),
        ("mem-46068mi", "9213Mi"),
    ]
    assert all(s["capacity"]["requests"]["cores"] == "10" and s["count"] == 1 for s in subs)
    # each alternative lands only on its own card size
    assert [len(matching(selectors_of(s), MIXED)) for s in subs] == [2, 4, 2]
    assert all(m.startswith("node-2-l40sx2/") for m in matching(selectors_of(subs[2]), MIXED))


def test_type_annotations_filter_sizes_and_become_case_insensitive_substring_selectors() -> None:
    sel = Selection(use_types=("a100", "L40S"), nouse_types=("SXM4-80GB",))
    spec = claim_spec(req(percent=50), sel, published_gpus(MIXED, DRIVER), DRIVER)
    subs = spec["devices"]["requests"][0]["firstAvailable"]
    assert [s["capacity"]["requests"]["memory"] for s in subs] == ["20Gi", "23034Mi"]  # A100 40GB, L40S (46068/2)
    assert selectors_of(subs[0])[:2] == [
        f"device.attributes['{DRIVER}'].productName.matches('(?i)(a100|L40S)')",
        f"!device.attributes['{DRIVER}'].productName.matches('(?i)(SXM4-80GB)')",
    ]
    chosen = sorted(m.split("/")[0] for s in subs for m in matching(selectors_of(s), MIXED))
    assert chosen == ["node-1-a100x4"] * 4 + ["node-2-l40sx2"] * 2


def test_type_with_regex_characters_is_matched_literally() -> None:
    sel = Selection(use_types=("Tesla T4 (x.y)",))
    (expr,) = [e for e in claim_spec_selectors(sel) if "productName" in e]
    assert expr == f"device.attributes['{DRIVER}'].productName.matches('(?i)(Tesla T4 \\\\(x\\\\.y\\\\))')"
    assert matching([expr], T4) == []  # "Tesla T4" does not contain "(x.y)"


def claim_spec_selectors(sel: Selection) -> list[str]:
    spec = claim_spec(req(mem=1), sel, [], DRIVER)
    return selectors_of(spec["devices"]["requests"][0]["exactly"])


def test_uuid_annotations_pick_and_exclude_exact_devices() -> None:
    gpus = published_gpus(T4, DRIVER)
    first, second = sorted(g.uuid for g in gpus)
    use = claim_spec_selectors(Selection(use_uuids=(first,)))
    assert use == [f"device.attributes['{DRIVER}'].uuid in ['{first}']"]
    assert len(matching(use, T4)) == 1
    avoid = claim_spec_selectors(Selection(nouse_uuids=(first,)))
    assert avoid == [f"!(device.attributes['{DRIVER}'].uuid in ['{first}'])"]
    (only,) = matching(avoid, T4)
    assert only in matching(claim_spec_selectors(Selection(use_uuids=(second,))), T4)


def test_gpumem_larger_than_every_gpu_is_refused_with_the_largest_size() -> None:
    with pytest.raises(
        LegacyError,
        match=r"containers\[w\]: nvidia.com/gpumem is 16000 MiB but the largest GPU has "
        r"15360 MiB: ask for at most 15360",
    ):
        claim_spec(req(mem=16000), Selection(), published_gpus(T4, DRIVER), DRIVER)
    # among the GPUs the annotations allow
    with pytest.raises(LegacyError, match="largest GPU matching the annotations has 15360 MiB"):
        claim_spec(req(mem=20000), Selection(use_types=("T4",)), published_gpus(MIXED, DRIVER), DRIVER)
    # on a cluster that has not published anything yet there is nothing to compare with: accepted
    assert claim_spec(req(mem=20000), Selection(), [], DRIVER)


def test_percentage_without_any_published_gpu_is_refused() -> None:
    with pytest.raises(
        LegacyError,
        match=r"gpumem-percentage needs the GPU's memory size, and no published GPU of "
        rf"driver {DRIVER} exists yet: use nvidia.com/gpumem \(MiB\) instead",
    ):
        claim_spec(req(percent=20), Selection(), [], DRIVER)
    with pytest.raises(LegacyError, match="matches the annotations"):
        claim_spec(req(percent=20), Selection(use_types=("H100",)), published_gpus(T4, DRIVER), DRIVER)


def test_more_than_eight_card_sizes_keep_the_eight_smallest() -> None:
    from dra_hami.webhook.translate import PublishedGpu

    gpus = [PublishedGpu("G", f"GPU-{i}", (1000 + i) * MI) for i in range(10)]
    subs = claim_spec(req(percent=10), Selection(), gpus, DRIVER)["devices"]["requests"][0]["firstAvailable"]
    assert [s["name"] for s in subs] == [f"mem-{1000 + i}mi" for i in range(8)]


def test_translate_homelab_pod_end_to_end() -> None:
    original = pod(
        container(
            "worker", {"nvidia.com/gpu": 1, "nvidia.com/gpumem-percentage": 20, "nvidia.com/gpucores": 25, "cpu": "1"}
        ),
        annotations={"nvidia.com/use-gputype": "T4"},
    )
    original["spec"]["containers"][0]["resources"]["requests"] = {"cpu": "500m", "nvidia.com/gpu": 1}
    legacy = parse_legacy_pod(original)
    result = translate(original, legacy, published_gpus(T4, DRIVER), DRIVER, "ns", NOW)
    (plan,) = result.templates
    assert plan.pod_claim == "hami-worker"
    assert plan.name == template_name(plan.template["spec"]) and plan.name.startswith("hami-legacy-")
    assert plan.template["metadata"] == {
        "name": plan.name,
        "namespace": "ns",
        "labels": {L.TEMPLATE_LABEL: "true"},
        "annotations": {L.LAST_USED_ANNOTATION: NOW},
    }
    assert plan.template["spec"]["metadata"] == {"labels": {L.TRANSLATED_LABEL: "true"}}
    worker = result.pod["spec"]["containers"][0]
    assert worker["resources"] == {
        "limits": {"cpu": "1"},
        "requests": {"cpu": "500m"},
        "claims": [{"name": "hami-worker"}],
    }
    assert result.pod["spec"]["resourceClaims"] == [{"name": "hami-worker", "resourceClaimTemplateName": plan.name}]
    assert result.pod["metadata"]["labels"] == {L.TRANSLATED_LABEL: "true"}
    assert result.pod["metadata"]["annotations"][L.SOURCE_ANNOTATION] == f"worker={plan.name}"
    assert original["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1  # input untouched
    # the JSON patch the webhook returns turns the original into exactly this pod
    assert apply_patch(original, json_patch(original, result.pod)) == result.pod


def test_same_shape_shares_one_template_and_different_shapes_do_not() -> None:
    def name_for(limits: dict, ctr: str = "w") -> str:
        p = pod(container(ctr, limits))
        return translate(p, parse_legacy_pod(p), published_gpus(T4, DRIVER), DRIVER, "ns", NOW).templates[0].name

    a = name_for({"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1024})
    assert a == name_for({"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1024"}, ctr="other")  # replicas share
    assert a != name_for({"nvidia.com/gpu": 1, "nvidia.com/gpumem": 2048})


def test_container_without_resources_left_and_gpu_zero_container() -> None:
    p = pod(container("a", {"nvidia.com/gpu": 1}), container("b", {"nvidia.com/gpu": 0}))
    result = translate(p, parse_legacy_pod(p), published_gpus(T4, DRIVER), DRIVER, "ns", NOW)
    a, b = result.pod["spec"]["containers"]
    assert a["resources"] == {"claims": [{"name": "hami-a"}]}
    assert "resources" not in b
    assert [c["name"] for c in result.pod["spec"]["resourceClaims"]] == ["hami-a"]


def test_pod_claim_names_stay_dns_labels() -> None:
    assert pod_claim_name("w", "containers") == "hami-w"
    assert pod_claim_name("w", "initContainers") == "hami-init-w"
    long = pod_claim_name("c" * 63, "containers")
    assert len(long) == 63 and long != pod_claim_name("c" * 62 + "d", "containers")
