"""Policies on small clusters whose answers are worked out by hand."""

import pytest
from allocator_factories import (
    DRIVER,
    GiB,
    claim,
    devices_of,
    gpu,
    node,
    place,
    pod,
    request,
    resource_slice,
    state_of,
)

from dra_hami.allocator import (
    ANNOTATION_GPU_POLICY,
    ANNOTATION_NODE_POLICY,
    PolicyChoice,
    PolicyError,
    TaskKind,
    allocate_pod,
)


def two_by_two():
    """Nodes n1, n2 with two 15Gi GPUs each; n2/hami-gpu-1 already holds 4Gi.

    Utilisation (mean of memory and cores shares): n2/hami-gpu-1 = (4/15 + 0) / 2 = 0.133, node n2 = 0.067, n1 = 0.
    """
    slices = [resource_slice(n, [gpu("hami-gpu-0"), gpu("hami-gpu-1")]) for n in ("n1", "n2")]
    state = state_of(slices)
    first_fit = PolicyChoice("first-fit", "first-fit")
    place(
        state,
        pod("seed", node_selector={"kubernetes.io/hostname": "n2"}),
        [claim("seed", request(memory="4Gi"))],
        first_fit,
    )
    state.release("default/seed")
    existing = claim(
        "seed",
        request(memory="4Gi"),
        allocation={
            "devices": {
                "results": [
                    {
                        "request": "gpu",
                        "driver": DRIVER,
                        "pool": "n2",
                        "device": "hami-gpu-1",
                        "shareID": "00000000-0000-4000-8000-0000000000ff",
                        "consumedCapacity": {"cores": "0", "memory": "4Gi", "shares": "1"},
                    }
                ]
            }
        },
    )
    state.record_claim(existing)
    return state


@pytest.mark.parametrize(
    ("node_policy", "gpu_policy", "expected"),
    [
        ("binpack", "binpack", ("n2", "hami-gpu-1")),  # the used node, the used GPU
        ("spread", "spread", ("n1", "hami-gpu-0")),  # the empty node; GPUs tie, name decides
        ("binpack", "spread", ("n2", "hami-gpu-0")),  # the used node, its least used GPU
        ("spread", "binpack", ("n1", "hami-gpu-0")),
        ("first-fit", "first-fit", ("n1", "hami-gpu-0")),
    ],
)
def test_node_and_gpu_level_binpack_and_spread(node_policy, gpu_policy, expected):
    state = two_by_two()
    outcome = allocate_pod(state, pod(), [claim("c", request(memory="2Gi"))], PolicyChoice(node_policy, gpu_policy))
    assert (outcome.node_name, devices_of(outcome)[0]) == expected


def test_binpack_skips_a_gpu_that_does_not_fit():
    state = two_by_two()
    outcome = allocate_pod(state, pod(), [claim("c", request(memory="12Gi"))], PolicyChoice("binpack", "binpack"))
    assert (outcome.node_name, devices_of(outcome)) == ("n2", ["hami-gpu-0"])  # 11Gi left on hami-gpu-1


def test_pod_annotations_override_the_cluster_default():
    state = two_by_two()
    annotated = pod(annotations={ANNOTATION_NODE_POLICY: "spread", ANNOTATION_GPU_POLICY: "spread"})
    outcome = allocate_pod(state, annotated, [claim("c", request(memory="2Gi"))], PolicyChoice("binpack", "binpack"))
    assert (outcome.node_name, outcome.policy) == ("n1", PolicyChoice("spread", "spread"))


def test_unknown_policy_names_list_the_valid_ones():
    with pytest.raises(PolicyError, match=r"unknown node policy 'pack'; valid: binpack, spread, first-fit"):
        PolicyChoice("pack", "binpack")
    with pytest.raises(PolicyError, match="valid: binpack, spread, first-fit, topology, fragmentation"):
        allocate_pod(two_by_two(), pod(annotations={ANNOTATION_GPU_POLICY: "best"}), [claim("c")])


def test_ties_break_by_node_name_then_natural_device_name():
    slices = [resource_slice(n, [gpu("hami-gpu-10"), gpu("hami-gpu-2")]) for n in ("b", "a")]
    state = state_of(slices)
    for policy in (PolicyChoice("binpack", "binpack"), PolicyChoice("spread", "spread")):
        outcome = allocate_pod(state, pod(), [claim("c", request(memory="1Gi"))], policy)
        assert (outcome.node_name, devices_of(outcome)) == ("a", ["hami-gpu-2"])
    # first-fit keeps the listed order instead.
    first_fit = allocate_pod(state, pod(), [claim("c", request(memory="1Gi"))], PolicyChoice("first-fit", "first-fit"))
    assert devices_of(first_fit) == ["hami-gpu-10"]


def test_same_inputs_same_answer():
    answers = set()
    for _ in range(3):
        state = two_by_two()
        outcomes = [
            place(
                state, pod(f"p{i}"), [claim(f"c{i}", request(memory=f"{i + 1}Gi"))], PolicyChoice("spread", "binpack")
            )
            for i in range(6)
        ]
        answers.add(tuple((o.node_name, tuple(devices_of(o))) for o in outcomes))
    assert len(answers) == 1


def numa_node(name, busy=()):
    """hami-gpu-0/1 on NUMA node 0 (PCIe root A), hami-gpu-2/3 on NUMA node 1 (PCIe root B)."""
    devices = []
    for i in range(4):
        attrs = {
            "minor": {"int": i},
            "numaNode": {"int": i // 2},
            "resource.kubernetes.io/pcieRoot": {"string": "AB"[i // 2]},
        }
        devices.append(gpu(f"hami-gpu-{i}", attributes=attrs))
    return resource_slice(name, devices)


def fill(state, node_name, minors):
    """Give whole GPUs (by minor number) of one node to filler claims."""
    for minor in minors:
        name = f"fill-{node_name}-{minor}"
        c = claim(name, request(selectors=[f"device.attributes['{DRIVER}'].minor == {minor}"]))
        only_there = pod(name, node_selector={"kubernetes.io/hostname": node_name})
        state.commit(allocate_pod(state, only_there, [c], PolicyChoice("first-fit", "first-fit")))


class TestTopology:
    def test_picks_two_gpus_on_one_numa_node(self):
        state = state_of([numa_node("n")])
        fill(state, "n", [0])  # takes the whole of hami-gpu-0
        pair = claim("c", request(memory="1Gi", count=2))
        binpack = allocate_pod(state, pod(), [pair], PolicyChoice("binpack", "binpack"))
        assert devices_of(binpack) == ["hami-gpu-1", "hami-gpu-2"]  # most used first, then names: crosses NUMA
        topology = allocate_pod(state, pod(), [pair], PolicyChoice("binpack", "topology"))
        assert devices_of(topology) == ["hami-gpu-2", "hami-gpu-3"]

    def test_prefers_the_node_with_an_aligned_set(self):
        state = state_of([numa_node("n1"), numa_node("n2")])
        fill(state, "n1", [0, 2])  # n1 has one free GPU per NUMA node
        fill(state, "n2", [0])
        pair = claim("c", request(memory="1Gi", count=2))
        # binpack alone prefers n1 (half its GPUs are full, n2 only a quarter).
        assert allocate_pod(state, pod(), [pair], PolicyChoice("binpack", "binpack")).node_name == "n1"
        outcome = allocate_pod(state, pod(), [pair], PolicyChoice("binpack", "topology"))
        assert (outcome.node_name, devices_of(outcome)) == ("n2", ["hami-gpu-2", "hami-gpu-3"])

    def test_single_gpu_claims_behave_like_binpack(self):
        state = state_of([numa_node("n")])
        fill(state, "n", [0])
        place(state, pod("half"), [claim("half", request(memory="7Gi"))], PolicyChoice("first-fit", "first-fit"))
        outcome = allocate_pod(state, pod(), [claim("c", request(memory="1Gi"))], PolicyChoice("binpack", "topology"))
        assert devices_of(outcome) == ["hami-gpu-1"]


class TestFragmentation:
    def test_keeps_whole_gpus_free(self):
        # n1: hami-gpu-0 has 5Gi used, hami-gpu-1 is empty; n2: both empty. Nothing learnt yet, so the prior is
        # "whole-GPU tasks": breaking any empty GPU makes its idle memory unusable for them; adding to the
        # used GPU of n1 only shrinks memory that is already fragmented. Spread alone would pick n2.
        state = state_of([resource_slice(n, [gpu("hami-gpu-0"), gpu("hami-gpu-1")]) for n in ("n1", "n2")])
        place(state, pod("seed"), [claim("seed", request(memory="5Gi"))], PolicyChoice("first-fit", "first-fit"))
        state.demand = type(state.demand)()  # forget what the seed taught
        spread = allocate_pod(state, pod(), [claim("c", request(memory="2Gi"))], PolicyChoice("spread", "spread"))
        assert spread.node_name == "n2"
        outcome = allocate_pod(
            state, pod(), [claim("c", request(memory="2Gi"))], PolicyChoice("spread", "fragmentation")
        )
        assert (outcome.node_name, devices_of(outcome)) == ("n1", ["hami-gpu-0"])

    def test_learnt_half_gpu_demand_keeps_room_for_halves(self):
        # Typical tasks take half a GPU (7.5Gi). hami-gpu-0 has 9Gi free, hami-gpu-1 11Gi. A 3Gi pod on
        # hami-gpu-0 would leave 6Gi (< 7.5Gi: 0.4 GPU fragmented); on hami-gpu-1 it leaves 8Gi, still usable.
        # Binpack takes the fuller hami-gpu-0; fragmentation takes hami-gpu-1.
        state = state_of([resource_slice("n", [gpu("hami-gpu-0"), gpu("hami-gpu-1")])])
        first_fit = PolicyChoice("first-fit", "first-fit")
        place(state, pod("a"), [claim("a", request(memory="6Gi"))], first_fit)
        place(state, pod("b"), [claim("b", request(memory="4Gi"))], PolicyChoice("first-fit", "spread"))
        state.demand = type(state.demand)(refresh_every=1)
        for _ in range(20):
            state.demand.observe(TaskKind.bucketed(1, 0.5, 0))
        used = {
            d: state.usage(state.devices[k].key).consumed.get("memory", 0) // GiB
            for k, d in ((k, k.device) for k in state.devices)
        }
        assert used == {"hami-gpu-0": 6, "hami-gpu-1": 4}
        pack = allocate_pod(state, pod(), [claim("c", request(memory="3Gi"))], PolicyChoice("binpack", "binpack"))
        assert devices_of(pack) == ["hami-gpu-0"]
        frag = allocate_pod(state, pod(), [claim("c", request(memory="3Gi"))], PolicyChoice("binpack", "fragmentation"))
        assert devices_of(frag) == ["hami-gpu-1"]

    def test_demand_is_learnt_from_commits(self):
        state = state_of([resource_slice("n", [gpu("hami-gpu-0", "16Gi")])], nodes=[node("n")])
        place(state, pod("a"), [claim("a", request(memory="4Gi", cores="20"))])
        kinds = dict(state.demand.snapshot().kinds)
        assert kinds == {TaskKind(1, 0.25, 20): 1.0}
