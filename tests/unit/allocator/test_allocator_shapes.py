"""The caches that keep a scan over many nodes cheap: the incrementally sorted node order and the outcomes
shared by nodes of the same shape. Both must give exactly the answers of a fresh computation."""

from allocator_factories import DRIVER, claim, gpu, node, place, pod, request, resource_slice, state_of

from dra_hami.allocator import PolicyChoice, Unplaceable, allocate_pod
from dra_hami.allocator.policies import NODE_POLICY
from dra_hami.allocator.search_cache import search_cache

FIRST_FIT = PolicyChoice("first-fit", "first-fit")


def on(name):
    return {"kubernetes.io/hostname": name}


def two_gpu_nodes(*names):
    return state_of([resource_slice(n, [gpu("hami-gpu-0"), gpu("hami-gpu-1")]) for n in names])


def fresh_order(state, policy):
    return sorted(state.node_names, key=lambda n: policy.order_key(n, state.summary(state.nodes[n]).utilisation))


BINPACK, SPREAD = NODE_POLICY["binpack"], NODE_POLICY["spread"]


def test_node_order_follows_commits_and_releases():
    # Node utilisation is the mean over its GPUs of (memory share + cores share) / 2.
    # n2 gets 4Gi of 15Gi: (4/15)/2/2 = 0.067. Then n1 gets 8Gi: (8/15)/2/2 = 0.133 > n2.
    state = two_gpu_nodes("n1", "n2", "n3")
    assert state.in_policy_order(BINPACK, state.node_names) == ["n1", "n2", "n3"]  # all idle: by name
    place(state, pod("a", node_selector=on("n2")), [claim("a", request(memory="4Gi"))], FIRST_FIT)
    assert state.in_policy_order(BINPACK, state.node_names) == ["n2", "n1", "n3"]
    assert state.in_policy_order(SPREAD, state.node_names) == ["n1", "n3", "n2"]
    place(state, pod("b", node_selector=on("n1")), [claim("b", request(memory="8Gi"))], FIRST_FIT)
    assert state.in_policy_order(BINPACK, state.node_names) == ["n1", "n2", "n3"]
    assert state.in_policy_order(BINPACK, ["n3", "n2"]) == ["n2", "n3"]  # a subset keeps the same order
    state.release("default/b")
    assert state.in_policy_order(BINPACK, state.node_names) == ["n2", "n1", "n3"]
    for policy in NODE_POLICY.values():
        assert state.in_policy_order(policy, state.node_names) == fresh_order(state, policy)


def test_unknown_node_names_are_ordered_as_idle_nodes():
    state = two_gpu_nodes("n1", "n2")
    place(state, pod("a", node_selector=on("n2")), [claim("a", request(memory="4Gi"))], FIRST_FIT)
    assert state.in_policy_order(BINPACK, ["n1", "gone", "n2"]) == ["n2", "gone", "n1"]


def test_nodes_of_one_shape_share_the_search_but_get_their_own_devices():
    state = two_gpu_nodes("n1", "n2")
    first = allocate_pod(state, pod("a", node_selector=on("n1")), [claim("a", request(memory="2Gi"))])
    second = allocate_pod(state, pod("b", node_selector=on("n2")), [claim("b", request(memory="2Gi"))])
    results = [o.claims[0].allocation["devices"]["results"][0] for o in (first, second)]
    assert [(r["pool"], r["device"]) for r in results] == [("n1", "hami-gpu-0"), ("n2", "hami-gpu-0")]
    assert [ids["n1"] == ids["n2"] for ids in search_cache(state).static_ids().values()] == [True]
    assert state.node_usage_id(state.nodes["n1"]) == state.node_usage_id(state.nodes["n2"])


def test_a_cached_refusal_names_each_pods_own_claim_and_ends_when_usage_changes():
    state = two_gpu_nodes("n1")
    place(state, pod("a"), [claim("a", request(memory="14Gi")), claim("a2", request(memory="14Gi"))])
    for name in ("x", "y"):
        outcome = allocate_pod(state, pod(name), [claim(name, request(memory="2Gi"))])
        assert isinstance(outcome, Unplaceable)
        assert outcome.reasons["n1"] == f"hami-gpu-0: capacity memory: needs 2Gi, 1Gi free (claim default/{name})"
    state.release("default/a")
    assert allocate_pod(state, pod("z"), [claim("z", request(memory="2Gi"))]).node_name == "n1"


def test_selector_errors_cached_for_one_pod_name_the_next_pods_claim():
    state = two_gpu_nodes("n1")
    bad = [f"device.attributes['{DRIVER}'].nosuch == 1"]
    for name in ("x", "y"):
        outcome = allocate_pod(state, pod(name), [claim(name, request(selectors=bad))])
        assert isinstance(outcome, Unplaceable)
        assert f"ResourceClaim default/{name}: spec.devices.requests[0].exactly.selectors[0]" in outcome.reasons["n1"]


def test_many_full_nodes_are_reported_with_their_reasons():
    state = state_of(
        [resource_slice(f"n{i}", [gpu("hami-gpu-0")]) for i in range(40)],
        nodes=[node(f"n{i}", cpu="1" if i % 2 else "64") for i in range(40)],
    )
    for i in range(0, 40, 2):
        place(state, pod(f"f{i}", node_selector=on(f"n{i}")), [claim(f"f{i}", request())], FIRST_FIT)
    outcome = allocate_pod(state, pod("p", cpu="2"), [claim("c", request(memory="1Gi"))])
    assert isinstance(outcome, Unplaceable)
    assert outcome.reasons["n1"] == "insufficient cpu: needs 2000m, 1000m free"
    assert outcome.reasons["n0"].endswith("(claim default/c)")
    assert outcome.message.startswith("0/40 nodes can take pod default/p: n0: ")
