"""Scoring policies keep node scores between pods and re-score only changed nodes: same choices as a full scan."""

import random

import pytest
from allocator_factories import ShareIds, claim, fixed_clock, gpu, node, pod, request, resource_slice, state_of

from dra_hami.allocator import DemandModel, Placement, PolicyChoice, allocate_pod
from dra_hami.allocator import search_cache as search_cache_module
from dra_hami.allocator import state as state_module
from dra_hami.allocator.fragmentation_policy import FragmentationPolicy

FRAGMENTATION = PolicyChoice("binpack", "fragmentation")


def two_nodes():
    slices = [resource_slice(n, [gpu("hami-gpu-0", "16Gi"), gpu("hami-gpu-1", "16Gi")]) for n in ("a", "b")]
    return state_of(slices, nodes=[node("a", cpu="16"), node("b", cpu="16")])


def place(state, name, memory, cpu="1"):
    outcome = allocate_pod(
        state,
        pod(name, cpu=cpu),
        [claim(name, request(memory=memory))],
        FRAGMENTATION,
        share_ids=ShareIds(),
        clock=fixed_clock,
    )
    assert isinstance(outcome, Placement), getattr(outcome, "message", outcome)
    state.commit(outcome)
    return outcome


class TestChangedSince:
    def test_names_the_nodes_a_commit_touched(self):
        state = two_nodes()
        mark = state.change_mark()
        assert state.changed_since(mark) == set()
        placement = place(state, "p", "4Gi")
        # The claim's device and the pod's CPU are both on the chosen node, and nowhere else.
        assert state.changed_since(mark) == {placement.node_name}

    def test_history_trimmed_past_the_mark_means_every_node(self, monkeypatch):
        monkeypatch.setattr(state_module, "MAX_CHANGE_LOG", 3)
        state = two_nodes()
        mark = state.change_mark()
        for i in range(3):  # each placement logs 2 changes (device, pod): the log is trimmed past the mark
            place(state, f"p{i}", "1Gi")
        assert state.changed_since(mark) is None
        assert state.changed_since(state.change_mark()) == set()


def test_a_pod_of_a_kind_seen_in_the_same_epoch_rescores_only_the_changed_node(monkeypatch):
    # Demand snapshots refresh after observations 1, 2, 4, ...: p1, p2 and p3 each see a new snapshot (full
    # scans); p4 is in p3's epoch (3 observations), so only the node p3 went to is scored again, and the choice
    # is the full scan's: the node already in use (binpack's node order breaks the fragmentation tie).
    state = two_nodes()
    assert [place(state, f"p{i}", "4Gi").node_name for i in (1, 2, 3)] == ["a", "a", "a"]
    scored = []
    original = FragmentationPolicy.node_score

    def counting(self, node_, outcome):
        scored.append(node_.name)
        return original(self, node_, outcome)

    monkeypatch.setattr(FragmentationPolicy, "node_score", counting)
    assert place(state, "p4", "4Gi").node_name == "a"
    assert scored == ["a"]


def replay(pods, full_scan: bool, monkeypatch) -> tuple[list[tuple[str, list[str]]], int]:
    """Place ``pods`` on a mixed cluster; with ``full_scan`` every pod scores every node (reuse off)."""
    slices = [
        resource_slice("a", [gpu(f"hami-gpu-{i}", "16Gi") for i in range(4)]),
        resource_slice("b", [gpu(f"hami-gpu-{i}", "16Gi") for i in range(4)]),
        resource_slice(
            "c", [gpu(f"hami-gpu-{i}", "32Gi", attributes={"productName": {"string": "V100"}}) for i in range(2)]
        ),
        resource_slice("d", [gpu("hami-gpu-0", "24Gi", attributes={"productName": {"string": "A10"}})]),
        resource_slice("e", [gpu(f"hami-gpu-{i}", "16Gi") for i in range(8)]),
    ]
    nodes = [node("a", cpu="32"), node("b", cpu="16"), node("c", cpu="24"), node("d", cpu="8"), node("e", cpu="96")]
    state = state_of(slices, nodes=nodes)
    state.demand = DemandModel(refresh_every=16)  # long epochs: many pods reuse kept scores
    scored = []
    original = FragmentationPolicy.node_score

    def counting(self, node_, outcome):
        scored.append(node_.name)
        return original(self, node_, outcome)

    monkeypatch.setattr(FragmentationPolicy, "node_score", counting)
    if full_scan:
        monkeypatch.setattr(FragmentationPolicy, "score_epoch", lambda self: None)
    chosen = []
    ids = ShareIds()
    for i, (memory, cpu, count) in enumerate(pods):
        req = request(count=count) if memory is None else request(memory=memory)
        outcome = allocate_pod(state, pod(f"p{i}", cpu=cpu), [claim(f"p{i}", req)], FRAGMENTATION, share_ids=ids)
        if isinstance(outcome, Placement):
            state.commit(outcome)
            devices = [r["device"] for c in outcome.claims for r in c.allocation["devices"]["results"]]
            chosen.append((outcome.node_name, devices))
        else:
            chosen.append(("-", []))
    monkeypatch.undo()
    return chosen, len(scored)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("entries", [300_000, 5])  # 5: kept scores are dropped for almost every new kind
def test_kept_scores_choose_exactly_as_a_full_scan(seed, entries, monkeypatch):
    monkeypatch.setattr(search_cache_module, "MAX_CACHED_NODE_ENTRIES", entries)
    rng = random.Random(seed)
    kinds = [
        ("2Gi", "1", None),
        ("4Gi", "2", None),
        ("8Gi", "4", None),
        (None, "8", 1),
        (None, "4", 2),
        ("1Gi", "6", None),
    ]
    pods = [rng.choice(kinds) for _ in range(60)]
    kept, kept_scored = replay(pods, full_scan=False, monkeypatch=monkeypatch)
    full, full_scored = replay(pods, full_scan=True, monkeypatch=monkeypatch)
    assert kept == full
    if entries > 5:
        assert kept_scored < full_scored  # and reuse did happen
