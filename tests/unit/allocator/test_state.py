"""Incremental state: commit, release, allocations recorded from elsewhere, and the caches staying correct."""

from allocator_factories import (
    DRIVER,
    GiB,
    claim,
    device_class,
    gpu,
    node,
    place,
    pod,
    request,
    resource_slice,
    state_of,
)

from dra_hami.allocator import ClusterState, Placement, PolicyChoice, Unplaceable, allocate_pod


def _used(state, device="hami-gpu-0", pool="n"):
    usage = state.usage((DRIVER, pool, device))
    return usage.consumed.get("memory", 0) // GiB, usage.shares, usage.exclusive


def test_commit_and_release_are_exact_inverses():
    state = state_of([resource_slice("n", [gpu("hami-gpu-0")])])
    place(state, pod("a"), [claim("a", request(memory="4Gi"))])
    place(state, pod("b"), [claim("b", request(memory="3Gi"))])
    assert _used(state) == (7, 2, 0)
    state.release("default/a")
    assert _used(state) == (3, 1, 0)
    state.release("default/a")  # releasing twice is harmless
    state.release("default/b")
    assert _used(state) == (0, 0, 0)
    assert state.usage((DRIVER, "n", "hami-gpu-0")).idle


def test_a_placement_written_and_read_back_is_counted_once():
    state = state_of([resource_slice("n", [gpu("hami-gpu-0")])])
    c = claim("a", request(memory="4Gi"))
    placement = place(state, pod("a"), [c])
    # The informer later delivers the claim with the allocation we wrote: same claim key, counted once.
    c["status"]["allocation"] = placement.allocations["default/a"]
    state.record_claim(c)
    assert _used(state) == (4, 1, 0)
    c["status"] = {}
    state.record_claim(c)  # deallocated
    assert _used(state) == (0, 0, 0)


def test_cached_refusals_are_forgotten_when_the_node_changes():
    state = state_of([resource_slice("n", [gpu("hami-gpu-0")])])
    place(state, pod("a"), [claim("a", request(memory="12Gi"))])
    first = allocate_pod(state, pod("b"), [claim("b", request(memory="8Gi"))])
    assert isinstance(first, Unplaceable)
    # Same request from another pod: the cached reason names this pod's claim, not the first one's.
    second = allocate_pod(state, pod("c"), [claim("c", request(memory="8Gi"))])
    assert second.reasons["n"] == "hami-gpu-0: capacity memory: needs 8Gi, 3Gi free (claim default/c)"
    state.release("default/a")
    assert isinstance(allocate_pod(state, pod("c"), [claim("c", request(memory="8Gi"))]), Placement)


def test_node_order_follows_commits():
    slices = [resource_slice(n, [gpu("hami-gpu-0"), gpu("hami-gpu-1")]) for n in ("n1", "n2")]
    state = state_of(slices)
    spread = PolicyChoice("spread", "spread")
    nodes = [place(state, pod(f"p{i}"), [claim(f"c{i}", request(memory="1Gi"))], spread).node_name for i in range(4)]
    assert nodes == ["n1", "n2", "n1", "n2"]
    binpack = PolicyChoice("binpack", "binpack")
    state.release("default/c1")  # n2 now has less in use
    assert allocate_pod(state, pod(), [claim("x", request(memory="1Gi"))], binpack).node_name == "n1"


def test_a_simulation_places_many_pods_without_reparsing():
    slices = [resource_slice(f"n{i}", [gpu(f"hami-gpu-{j}") for j in range(4)]) for i in range(3)]
    state = ClusterState.from_objects(
        slices=slices,
        device_classes=[device_class()],
        nodes=[node(f"n{i}") for i in range(3)],
    )
    placed = 0
    for i in range(130):  # 12 GPUs * 10 shares = 120 claims at most
        outcome = allocate_pod(state, pod(f"p{i}"), [claim(f"c{i}", request(memory="1Gi"))])
        if isinstance(outcome, Placement):
            state.commit(outcome)
            placed += 1
    assert placed == 120
    assert state.selectors.evaluations == 12  # one CEL evaluation per device, cached afterwards
