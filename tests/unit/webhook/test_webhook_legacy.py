"""Every rule of reading HAMi's legacy requests out of a pod, with the outcome each input must have."""

from __future__ import annotations

import pytest
from webhook_fixtures import container, pod

from dra_hami.webhook.legacy import LegacyError, LegacyRequest, Selection, parse_legacy_pod


def one(limits: dict, **kwargs) -> LegacyRequest:
    legacy = parse_legacy_pod(pod(container("w", limits), **kwargs))
    assert legacy is not None
    (request,) = legacy.requests
    return request


def test_pod_without_hami_resources_is_not_legacy() -> None:
    assert parse_legacy_pod(pod(container("w", {"cpu": "1", "memory": "1Gi"}))) is None
    assert parse_legacy_pod(pod(container("w"))) is None


def test_homelab_worker_reads_count_percent_and_cores() -> None:
    r = one({"nvidia.com/gpu": 1, "nvidia.com/gpumem-percentage": 20, "nvidia.com/gpucores": 25})
    assert r == LegacyRequest("w", False, count=1, memory_mib=None, memory_percent=20, cores=25)


def test_values_arrive_as_strings_or_numbers_and_quantities() -> None:
    r = one({"nvidia.com/gpu": "2", "nvidia.com/gpumem": "3000", "nvidia.com/gpucores": "30"})
    assert (r.count, r.memory_mib, r.cores) == (2, 3000, 30)
    # a quantity suffix is a number too: 1k MiB = 1000 MiB
    assert one({"nvidia.com/gpu": 1, "nvidia.com/gpumem": "1k"}).memory_mib == 1000


def test_limits_win_over_missing_requests_and_requests_alone_count() -> None:
    c = container("w")
    c["resources"] = {"requests": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "2048"}}
    (r,) = parse_legacy_pod(pod(c)).requests
    assert (r.count, r.memory_mib) == (1, 2048)


def test_limits_and_requests_that_differ_are_refused() -> None:
    c = container("w", {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 2048})
    c["resources"]["requests"] = {"nvidia.com/gpumem": 1024}
    with pytest.raises(
        LegacyError,
        match=r"containers\[w\].resources: limits\['nvidia.com/gpumem'\] = 2048 and "
        r"requests\['nvidia.com/gpumem'\] = 1024 differ",
    ):
        parse_legacy_pod(pod(c))


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"nvidia.com/gpu": -1}, r"containers\[w\].resources.limits\['nvidia.com/gpu'\]: -1 is negative"),
        ({"nvidia.com/gpu": 1, "nvidia.com/gpumem": "-5"}, r"'-5' is negative"),
        ({"nvidia.com/gpu": "one"}, r"'one' is not a Kubernetes quantity; .*: nvidia.com/gpu takes a whole number"),
        ({"nvidia.com/gpu": 1, "nvidia.com/gpucores": "2.5"}, r"'2.5' is not a whole number"),
        ({"nvidia.com/gpu": 1, "nvidia.com/gpumem-percentage": 101}, r"gpumem-percentage is 101: it must be between 1"),
        ({"nvidia.com/gpu": 1, "nvidia.com/gpumem-percentage": 0}, r"gpumem-percentage is 0"),
        ({"nvidia.com/gpu": 1, "nvidia.com/gpucores": 150}, r"gpucores is 150: it must be between 0 and 100"),
        ({"nvidia.com/gpu": 1, "nvidia.com/gpumem": 0}, r"gpumem is 0: give the slice's memory in MiB"),
        ({"nvidia.com/gpu": 0, "nvidia.com/gpumem": 1024}, r"nvidia.com/gpu is 0 but nvidia.com/gpumem is set"),
    ],
)
def test_bad_values_are_refused_with_container_and_field(limits: dict, message: str) -> None:
    with pytest.raises(LegacyError, match=message):
        parse_legacy_pod(pod(container("w", limits)))


def test_gpu_zero_alone_strips_the_resource_and_gives_no_claim() -> None:
    legacy = parse_legacy_pod(pod(container("w", {"nvidia.com/gpu": 0})))
    assert legacy.requests == ()
    assert legacy.stripped == (("containers", "w"),)
    assert any("nvidia.com/gpu: 0 removed" in w for w in legacy.warnings)


def test_memory_without_gpu_count_means_one_gpu_with_a_warning() -> None:
    legacy = parse_legacy_pod(pod(container("w", {"nvidia.com/gpumem": 4096})))
    assert legacy.requests[0].count == 1
    assert any("one GPU assumed" in w for w in legacy.warnings)


def test_gpumem_wins_over_percentage_like_hami() -> None:
    legacy = parse_legacy_pod(
        pod(container("w", {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 4096, "nvidia.com/gpumem-percentage": 50}))
    )
    (r,) = legacy.requests
    assert (r.memory_mib, r.memory_percent) == (4096, None)
    assert any("nvidia.com/gpumem (4096 MiB) wins" in w for w in legacy.warnings)


def test_cores_zero_is_best_effort_and_allowed() -> None:
    assert one({"nvidia.com/gpu": 1, "nvidia.com/gpucores": 0}).cores == 0


def test_init_containers_and_several_containers_each_get_a_request() -> None:
    p = pod(
        container("a", {"nvidia.com/gpu": 1, "nvidia.com/gpumem": 1024}),
        container("plain"),
        container("b", {"nvidia.com/gpu": 2}),
        initContainers=[container("warm", {"nvidia.com/gpu": 1, "nvidia.com/gpucores": 10})],
    )
    legacy = parse_legacy_pod(p)
    assert [(r.container, r.init, r.count) for r in legacy.requests] == [
        ("warm", True, 1),
        ("a", False, 1),
        ("b", False, 2),
    ]


def test_mixing_legacy_and_dra_is_refused() -> None:
    p = pod(container("w", {"nvidia.com/gpu": 1}), resourceClaims=[{"name": "x", "resourceClaimTemplateName": "t"}])
    with pytest.raises(
        LegacyError,
        match=r"mixes HAMi resources \(nvidia.com/gpu\) with DRA \(spec.resourceClaims\)"
        r": use one or the other",
    ):
        parse_legacy_pod(p)
    c = container("w", {"nvidia.com/gpucores": 10})
    c["resources"]["claims"] = [{"name": "x"}]
    with pytest.raises(LegacyError, match=r"containers\[w\].resources.claims"):
        parse_legacy_pod(pod(c))


def test_selection_annotations_split_trim_and_validate() -> None:
    legacy = parse_legacy_pod(
        pod(
            container("w", {"nvidia.com/gpu": 1}),
            annotations={
                "nvidia.com/use-gputype": " T4, A100 ,",
                "nvidia.com/nouse-gputype": "A100-SXM4-80GB",
                "nvidia.com/use-gpuuuid": "GPU-aaa,GPU-bbb",
                "nvidia.com/nouse-gpuuuid": "GPU-ccc",
            },
        )
    )
    assert legacy.selection == Selection(("T4", "A100"), ("A100-SXM4-80GB",), ("GPU-aaa", "GPU-bbb"), ("GPU-ccc",))


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({"nvidia.com/use-gputype": " , "}, r"use-gputype'\]: empty: list GPU types separated by commas"),
        ({"nvidia.com/use-gputype": "T4'||true"}, r"\"T4'\|\|true\" is not a valid GPU type"),
        ({"nvidia.com/use-gpuuuid": "GPU-1 2"}, r"'GPU-1 2' is not a valid GPU UUID"),
        ({"nvidia.com/vgpu-mode": "mig"}, r"vgpu-mode'\]: 'mig': dra-hami shares GPUs the hami-core way only"),
    ],
)
def test_bad_annotations_are_refused(annotations: dict, message: str) -> None:
    with pytest.raises(LegacyError, match=message):
        parse_legacy_pod(pod(container("w", {"nvidia.com/gpu": 1}), annotations=annotations))


def test_unknown_nvidia_annotations_are_ignored_with_a_warning() -> None:
    legacy = parse_legacy_pod(
        pod(
            container("w", {"nvidia.com/gpu": 1}),
            annotations={"nvidia.com/use-gpu-type": "T4", "nvidia.com/vgpu-mode": "hami-core", "other.io/x": "1"},
        )
    )
    (warning,) = legacy.warnings
    assert warning.startswith("annotations nvidia.com/use-gpu-type are not HAMi GPU-selection annotations")
    assert "nvidia.com/use-gputype" in warning  # the known ones are listed, so a typo is easy to spot
    assert legacy.selection == Selection()


def test_selection_accepts_like_hami_case_insensitive_substring() -> None:
    sel = Selection(use_types=("t4",), nouse_uuids=("GPU-2",))
    assert sel.accepts("Tesla T4", "GPU-1")
    assert not sel.accepts("Tesla T4", "GPU-2")
    assert not sel.accepts("NVIDIA L40S", "GPU-1")
