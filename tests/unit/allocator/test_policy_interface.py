"""The policy interface: the registries, a policy added from outside, and how the allocator drives the hooks."""

import gc

import pytest
from allocator_factories import claim, gpu, node, place, pod, request, resource_slice, state_of

from dra_hami.allocator import GPU_POLICY, NODE_POLICY, GpuPolicy, NodePolicy, Placement, PolicyChoice, allocate_pod
from dra_hami.allocator.errors import PolicyError
from dra_hami.allocator.policy import PodSearch
from dra_hami.allocator.search_cache import search_cache
from dra_hami.allocator.topology import TopologyPolicy


def test_every_registered_policy_is_an_object_under_its_own_name():
    assert list(NODE_POLICY) == ["binpack", "spread", "first-fit"]
    assert list(GPU_POLICY) == ["binpack", "spread", "first-fit", "topology", "fragmentation"]
    assert all(isinstance(p, NodePolicy) and p.name == n for n, p in NODE_POLICY.items())
    assert all(isinstance(p, GpuPolicy) and p.name == n for n, p in GPU_POLICY.items())
    choice = PolicyChoice("spread", "topology")
    assert (choice.node_policy, choice.gpu_policy) == (NODE_POLICY["spread"], GPU_POLICY["topology"])


class LastFit(GpuPolicy):
    """Greedy, devices in reverse name order: only device_order_key is needed."""

    name = "last-fit"

    def device_order_key(self, device, utilisation):
        return tuple(-ord(c) for c in device.name)


class PreferLastNode(GpuPolicy):
    """Scores each node by the position of its name; stops after ``limit`` feasible nodes."""

    name = "prefer-last-node"

    def __init__(self, limit=None):
        self.limit = limit
        self.scored = []

    def device_order_key(self, device, utilisation):
        return (device.order,)

    def node_score(self, node, outcome):
        self.scored.append(node.name)
        return (int(node.name[1:]),), 0

    def stop_early(self, score, feasible):
        return self.limit is not None and feasible >= self.limit


def four_nodes():
    return state_of([resource_slice(f"n{i}", [gpu("hami-gpu-0"), gpu("hami-gpu-1")]) for i in range(4)])


def test_a_greedy_policy_added_from_outside_needs_only_a_device_order(monkeypatch):
    monkeypatch.setitem(GPU_POLICY, "last-fit", LastFit())
    state = four_nodes()
    placement = place(state, pod("a"), [claim("a", request(memory="1Gi"))], PolicyChoice("first-fit", "last-fit"))
    assert (placement.node_name, placement.claims[0].results[0].device.device) == ("n0", "hami-gpu-1")
    with pytest.raises(PolicyError, match="unknown GPU policy 'nosuch'"):
        PolicyChoice("binpack", "nosuch")


@pytest.mark.parametrize(("limit", "scored", "chosen"), [(None, 4, "n3"), (2, 2, "n1")])
def test_a_scoring_policy_scores_feasible_nodes_in_node_order_until_it_stops(monkeypatch, limit, scored, chosen):
    policy = PreferLastNode(limit)
    monkeypatch.setitem(GPU_POLICY, policy.name, policy)
    state = four_nodes()
    outcome = allocate_pod(state, pod("a"), [claim("a", request(memory="1Gi"))], PolicyChoice("first-fit", policy.name))
    assert isinstance(outcome, Placement)
    assert policy.scored == ["n0", "n1", "n2", "n3"][:scored]
    assert outcome.node_name == chosen


def test_the_earlier_node_wins_a_tie(monkeypatch):
    class Flat(PreferLastNode):
        name = "flat"

        def node_score(self, node, outcome):
            return (0,), 0

    monkeypatch.setitem(GPU_POLICY, "flat", Flat())
    state = four_nodes()
    outcome = allocate_pod(state, pod("a"), [claim("a", request(memory="1Gi"))], PolicyChoice("spread", "flat"))
    assert outcome.node_name == "n0"


def test_for_pod_sees_the_pod_and_topology_is_greedy_for_one_device():
    state = four_nodes()
    several = PodSearch(state, object(), search_cache(state), several_devices=True)
    one = PodSearch(state, object(), search_cache(state), several_devices=False)
    topology = TopologyPolicy()
    assert topology.for_pod(several) is topology
    single = topology.for_pod(one)
    assert single.stop_early((0, 0, 0), 1) and single.device_groups([]) == (None,)
    assert single.cache_key != topology.cache_key  # they search differently: outcomes must not be shared


def test_a_policy_bound_to_a_pod_keeps_its_state_per_pod():
    fragmentation = GPU_POLICY["fragmentation"]
    state = four_nodes()
    search = PodSearch(state, object(), search_cache(state), several_devices=False)
    assert fragmentation.for_pod(search) is not fragmentation.for_pod(search)


def test_the_search_cache_belongs_to_the_allocator_and_lives_as_long_as_its_state():
    state = four_nodes()
    assert not any(hasattr(state, name) for name in ("outcomes", "static_shapes", "shape_ids", "refusals"))
    place(state, pod("a"), [claim("a", request(memory="1Gi"))])
    cache = search_cache(state)
    assert cache is search_cache(state)
    assert cache.static_ids()  # the placement above filled it
    other = four_nodes()
    assert search_cache(other) is not cache
    del state
    gc.collect()
    from dra_hami.allocator.search_cache import _CACHES

    assert cache not in _CACHES.values()


def test_outcomes_are_cached_per_policy():
    state = state_of([resource_slice("n0", [gpu("hami-gpu-0"), gpu("hami-gpu-1")])], nodes=[node("n0")])
    place(state, pod("a"), [claim("a", request(memory="4Gi"))])  # hami-gpu-0 now used
    binpack = place(state, pod("b"), [claim("b", request(memory="1Gi"))], PolicyChoice("binpack", "binpack"))
    spread = place(state, pod("c"), [claim("c", request(memory="1Gi"))], PolicyChoice("spread", "spread"))
    assert [p.claims[0].results[0].device.device for p in (binpack, spread)] == ["hami-gpu-0", "hami-gpu-1"]
