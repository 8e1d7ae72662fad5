"""FGD's fragmentation measure with the node's CPU, the demand model's refresh schedule, and the policy using them.

Every expected number is worked out in the comments.
"""

import pytest
from allocator_factories import claim, gpu, node, place, pod, request, resource_slice, state_of

from dra_hami.allocator import DemandModel, PolicyChoice, TaskKind, allocate_pod
from dra_hami.allocator.fragmentation import DemandSnapshot, FragmentationScorer, GpuState, cpu_stranded

# Two kinds, equally likely: A = one GPU, half of it, 4 cores of CPU; B = two whole GPUs, 8 cores.
A = TaskKind(1, 0.5, 0, 4000)
B = TaskKind(2, 1.0, 0, 8000)
SCORER = FragmentationScorer(DemandSnapshot(((A, 0.5), (B, 0.5)), 1))


def gpu_state(free: int) -> GpuState:
    return GpuState(memory_total=100, memory_free=free, cores_total=100, cores_free=100, usable=True)


class TestNodeFragmentation:
    def test_a_gpu_too_small_for_a_kind_is_fragment_for_it(self):
        # GPU0 has 30 free (idle 0.3), GPU1 is free (idle 1.0). A fits GPU1 only: 0.3 is fragment for A.
        # B needs two free GPUs, there is one: all 1.3 idle is fragment for B. F = 0.5*0.3 + 0.5*1.3 = 0.8.
        gpus = [gpu_state(30), gpu_state(100)]
        assert SCORER.node_fragmentation(gpus, cpu_free=10_000) == pytest.approx(0.8)
        assert SCORER.node_fragmentation(gpus) == pytest.approx(0.8)  # no CPU limit reported

    def test_a_node_without_the_cpu_for_a_kind_strands_all_its_idle_gpu(self):
        # With 6 cores free B is excluded anyway (it was already all fragment): still 0.8.
        # With 3 cores free A cannot run either: F = 0.5*1.3 + 0.5*1.3 = 1.3.
        gpus = [gpu_state(30), gpu_state(100)]
        assert SCORER.node_fragmentation(gpus, cpu_free=6_000) == pytest.approx(0.8)
        assert SCORER.node_fragmentation(gpus, cpu_free=3_000) == pytest.approx(1.3)

    def test_multi_gpu_kind_uses_the_gpus_it_fits(self):
        # Two free GPUs (idle 2.0): A and B can each use both, F = 0. Without B's 8 cores: 0.5 * 2.0 = 1.0.
        gpus = [gpu_state(100), gpu_state(100)]
        assert SCORER.node_fragmentation(gpus, cpu_free=8_000) == pytest.approx(0.0)
        assert SCORER.node_fragmentation(gpus, cpu_free=7_999) == pytest.approx(1.0)

    def test_cpu_levels_count_the_kinds_the_cpu_admits(self):
        # Kinds by CPU: 4000 (A), 8000 (B).
        assert [SCORER.cpu_level(c) for c in (3_999, 4_000, 7_999, 8_000, None)] == [0, 1, 1, 2, 2]


def test_task_kinds_are_bucketed_on_a_fine_grid():
    # 0.81 of a GPU stays 0.81 (a 0.05 grid would round it up to 0.85 and call a GPU with 0.82 free too small).
    assert TaskKind.bucketed(1, 0.81, 81, 3152) == TaskKind(1, 0.81, 81, 3200)
    assert TaskKind.bucketed(0, 0.0001, 0) == TaskKind(1, 0.01, 0, 0)


def test_demand_snapshots_refresh_after_1_2_4_then_every_n_observations():
    model = DemandModel(refresh_every=4)
    versions = []
    for _ in range(12):
        model.observe(TaskKind(1, 0.5, 50))
        versions.append(model.snapshot().version)
    # Refreshes at observation 1, 2, 4, 8 (4 + min(4, 4)) and 12.
    assert versions == [1, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5]


class TestPolicyCountsCpu:
    def test_a_cpu_only_pod_goes_where_it_strands_no_gpu(self):
        # Nodes a (10 cores) and b (4 cores), one free GPU each. Typical task: a whole GPU with 8 cores.
        # b's GPU is stranded already (4 < 8 cores); a's is usable. A 4-core CPU-only pod on a leaves 6 cores:
        # a's GPU becomes unusable too (+1 GPU of fragmentation); on b it changes nothing (+0). Binpack ties
        # on GPU use and takes a, by name.
        slices = [resource_slice(n, [gpu("hami-gpu-0")]) for n in ("a", "b")]
        state = state_of(slices, nodes=[node("a", cpu="10"), node("b", cpu="4")])
        state.demand = DemandModel(refresh_every=1)
        for _ in range(3):
            state.demand.observe(TaskKind.bucketed(1, 1.0, 100, 8000))
        cpu_only = pod("cpu", cpu="4")
        assert allocate_pod(state, cpu_only, [], PolicyChoice("binpack", "binpack")).node_name == "a"
        assert allocate_pod(state, cpu_only, [], PolicyChoice("binpack", "fragmentation")).node_name == "b"

    def test_commits_teach_the_pods_cpu(self):
        state = state_of([resource_slice("n", [gpu("hami-gpu-0", "16Gi")])], nodes=[node("n")])
        place(state, pod("a", cpu="3"), [claim("a", request(memory="4Gi", cores="20"))])
        assert dict(state.demand.snapshot().kinds) == {TaskKind(1, 0.25, 20, 3000): 1.0}


def test_cpu_only_pods_are_scored_on_each_nodes_own_gpus():
    # Typical task: half a GPU with 8 cores. Node a: 10 cores, its GPU half used (idle 0.5, usable by the
    # task). Node b: 10 cores and no GPU. A 4-core CPU-only pod leaves 6 cores either way: on a the 0.5 idle
    # becomes unusable (+0.5), on b there is nothing to strand (+0). Binpack order visits a first (its GPU is
    # in use), so a score computed on a must not be reused for b although both lose the same kinds' CPU.
    state = state_of(
        [resource_slice("a", [gpu("hami-gpu-0", "16Gi")])], nodes=[node("a", cpu="10"), node("b", cpu="10")]
    )
    place(state, pod("half"), [claim("half", request(memory="8Gi"))], PolicyChoice("first-fit", "first-fit"))
    state.demand = DemandModel(refresh_every=1)
    for _ in range(3):
        state.demand.observe(TaskKind.bucketed(1, 0.5, 0, 8000))
    cpu_only = pod("cpu", cpu="4")
    assert allocate_pod(state, cpu_only, [], PolicyChoice("binpack", "binpack")).node_name == "a"
    assert allocate_pod(state, cpu_only, [], PolicyChoice("binpack", "fragmentation")).node_name == "b"


def test_cpu_stranding_is_idle_gpu_beyond_what_free_cpu_can_feed():
    # Typical tasks' CPU per GPU for A and B: (0.5*4000 + 0.5*8000) / (0.5*1*0.5 + 0.5*2*1.0) = 6000 / 1.25.
    assert SCORER.cpu_per_gpu == pytest.approx(4800)
    # 2 idle GPUs at 10 cores per GPU need 20 cores: 18 cores feed 1.8 of them, 0.2 is stranded.
    assert cpu_stranded(2.0, 18_000, 10_000) == pytest.approx(0.2)
    assert cpu_stranded(2.0, 20_000, 10_000) == 0.0
    assert cpu_stranded(0.5, 0, 10_000) == 0.5
    assert cpu_stranded(2.0, 0, 0.0) == 0.0  # tasks that ask for no CPU strand nothing


def test_cpu_is_kept_where_idle_gpus_need_it_before_any_kind_loses_its_fit():
    # Typical task: a whole GPU with 10 cores (10 cores per GPU). Nodes a (22 cores) and b (40 cores), two idle
    # GPUs each. A 4-core CPU-only pod leaves 18 cores on a: every kind still fits (FGD's gradient is 0), but
    # 18 cores feed only 1.8 of a's 2 idle GPUs: +0.2 stranded. On b 36 cores feed both: +0. Binpack (a tie
    # on GPU use) takes a by name; fragmentation takes b.
    slices = [resource_slice(n, [gpu("hami-gpu-0"), gpu("hami-gpu-1")]) for n in ("a", "b")]
    state = state_of(slices, nodes=[node("a", cpu="22"), node("b", cpu="40")])
    state.demand = DemandModel(refresh_every=1)
    for _ in range(3):
        state.demand.observe(TaskKind.bucketed(1, 1.0, 100, 10_000))
    cpu_only = pod("cpu", cpu="4")
    assert allocate_pod(state, cpu_only, [], PolicyChoice("binpack", "binpack")).node_name == "a"
    assert allocate_pod(state, cpu_only, [], PolicyChoice("binpack", "fragmentation")).node_name == "b"
