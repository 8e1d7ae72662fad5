"""gpuspec-like variants: a share of the GPU pods restricted to one GPU model that can host them."""

import pytest

from dra_hami.simulate.trace import TraceNode, TracePod
from dra_hami.simulate.variants import constrain_models

NODES = [
    TraceNode("n-g2", 96_000, 1 << 18, 8, "G2", 32_000),
    TraceNode("n-t4", 104_000, 1 << 18, 2, "T4", 15_000),
]


def pods():
    return [
        TracePod("cpu", 4_000, 1024, 0, 0),
        TracePod("eight", 64_000, 1024, 8, 1000),
        TracePod("half", 4_000, 1024, 1, 500),
        TracePod("whole", 8_000, 1024, 1, 1000),
        TracePod("pinned", 8_000, 1024, 1, 1000, ("T4",)),
    ]


def test_all_free_gpu_pods_get_one_model_that_can_host_them():
    out = constrain_models(pods(), NODES, 1.0)
    by_name = {p.name: p for p in out}
    assert by_name["cpu"].gpu_spec == ()  # CPU-only pods have no GPU to constrain
    assert by_name["eight"].gpu_spec == ("G2",)  # only the 8-GPU nodes can host it
    assert by_name["half"].gpu_spec in {("G2",), ("T4",)}
    assert by_name["whole"].gpu_spec in {("G2",), ("T4",)}
    assert by_name["pinned"].gpu_spec == ("T4",)  # an existing constraint is kept
    assert [p.name for p in out] == [p.name for p in pods()]  # order kept


def test_the_share_counts_the_unconstrained_gpu_pods():
    # Three GPU pods without a constraint (eight, half, whole): a third of them is one pod.
    out = constrain_models(pods(), NODES, 1 / 3, seed=7)
    changed = [a.name for a, b in zip(out, pods(), strict=True) if a.gpu_spec != b.gpu_spec]
    assert len(changed) == 1
    assert constrain_models(pods(), NODES, 1 / 3, seed=7) == out  # the seed fixes the draw
    assert constrain_models(pods(), NODES, 0.0) == pods()


def test_share_outside_0_to_1_is_refused():
    with pytest.raises(ValueError, match=r"share 1\.5"):
        constrain_models(pods(), NODES, 1.5)


def test_uniform_draw_still_picks_only_models_that_can_host_the_pod():
    for seed in range(5):
        out = {p.name: p for p in constrain_models(pods(), NODES, 1.0, seed=seed, by_capacity=False)}
        assert out["eight"].gpu_spec == ("G2",)
        assert out["half"].gpu_spec in {("G2",), ("T4",)}
