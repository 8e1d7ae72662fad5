"""The replay protocol on tiny hand-made traces, with worked answers."""

from __future__ import annotations

import pytest

from dra_hami.allocator import PolicyChoice, SelectorCache, allocate_pod, parse_slices
from dra_hami.simulate.cluster import DRIVER, claim_object, memory_by_model, node_slices, spec_selector
from dra_hami.simulate.protocol import (
    POLICIES,
    ProtocolError,
    SeedResult,
    Simulation,
    parse_seeds,
    policy_choice,
    policy_names,
    workload,
)
from dra_hami.simulate.report import percentile, summarise
from dra_hami.simulate.selectors import FastSelectors, class_selector, product_selector
from dra_hami.simulate.trace import TraceNode, TracePod, load_nodes, load_pods


def node(name: str, gpus: int, model: str = "T4", cpu: int = 8000, memory: int = 32768) -> TraceNode:
    return load_nodes("n.csv", f"sn,cpu_milli,memory_mib,gpu,model\n{name},{cpu},{memory},{gpus},{model}\n")[0]


def pod(name: str, milli: int, num_gpu: int = 1, spec: str = "", cpu: int = 1000) -> TracePod:
    return load_pods(
        "p.csv", f"name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n{name},{cpu},1024,{num_gpu},{milli},{spec}\n"
    )[0]


PODS = [pod("a", 500), pod("b", 500), pod("c", 1000, 2), pod("d", 0, 0)]  # 3000 milli


# ------------------------------------------------------------------------------------------- workload


def test_shuffle_is_deterministic_per_seed() -> None:
    first = [p.name for p in workload(PODS, 3000, 42)]
    assert first == [p.name for p in workload(PODS, 3000, 42)]
    orders = {tuple(p.name for p in workload(PODS, 3000, s)[:4]) for s in range(42, 52)}
    assert len(orders) > 1  # seeds do shuffle
    # Shuffling starts from name order, so the file order does not matter.
    assert first == [p.name for p in workload(list(reversed(PODS)), 3000, 42)]


@pytest.mark.parametrize("seed", range(42, 52))
def test_original_pods_first_then_resampled_until_130_percent(seed: int) -> None:
    order = workload(PODS, 3000, seed)
    assert sorted(p.name for p in order[:4]) == ["a", "b", "c", "d"]
    total = sum(p.total_gpu_milli for p in order)
    assert total >= 1.3 * 3000
    assert total - order[-1].total_gpu_milli < 1.3 * 3000  # stops at the first pod that reaches 130%
    assert all(p in PODS for p in order[4:])


def test_inflation_when_the_trace_already_exceeds_the_target() -> None:
    assert len(workload(PODS, 1000, 1)) == 4  # 300% already: nothing is added


def test_no_gpu_pods_cannot_be_inflated() -> None:
    with pytest.raises(ProtocolError, match="no GPU pods"):
        workload([pod("d", 0, 0)], 1000, 1)


# ----------------------------------------------------------------------------------- claims (mapping)


def test_fraction_maps_to_the_same_share_of_memory_and_cores() -> None:
    claim = claim_object(pod("p", 470), "c", {"T4": 15000})
    exactly = claim["spec"]["devices"]["requests"][0]["exactly"]
    assert exactly["capacity"]["requests"] == {"memory": "7050Mi", "cores": "47"}  # 0.47 x 15000Mi, 0.47 x 100
    assert "count" not in exactly and "selectors" not in exactly


def test_whole_gpus_take_all_memory_and_cores() -> None:
    exactly = claim_object(pod("p", 1000, 4), "c", {"T4": 15000})["spec"]["devices"]["requests"][0]["exactly"]
    assert exactly["count"] == 4
    assert exactly["capacity"]["requests"] == {"cores": "100"}  # memory's default is the whole GPU


def test_cpu_only_pod_has_no_claim() -> None:
    assert claim_object(pod("p", 0, 0), "c", {"T4": 15000}) is None


def test_mixed_memory_sizes_give_one_alternative_per_size() -> None:
    sizes = {"T4": 15000, "V100M16": 16000, "P100": 16000}
    request = claim_object(pod("p", 500), "c", sizes)["spec"]["devices"]["requests"][0]
    alternatives = {a["name"]: a for a in request["firstAvailable"]}
    assert alternatives["m15000"]["capacity"]["requests"]["memory"] == "7500Mi"
    assert alternatives["m16000"]["capacity"]["requests"]["memory"] == "8000Mi"
    assert alternatives["m16000"]["selectors"][0]["cel"]["expression"] == spec_selector(("P100", "V100M16"))


def test_gpu_spec_becomes_a_product_name_selector() -> None:
    request = claim_object(pod("p", 1000, 1, "V100M32"), "c", {"T4": 15000, "V100M32": 32000})
    exactly = request["spec"]["devices"]["requests"][0]["exactly"]
    assert exactly["selectors"] == [{"cel": {"expression": spec_selector(("V100M32",))}}]


def test_one_model_with_two_memory_sizes_is_refused() -> None:
    nodes = [
        node("a", 1),
        load_nodes("n.csv", "sn,cpu_milli,memory_mib,gpu,model,gpu_memory_mib\nb,1,1,1,T4,16000\n")[0],
    ]
    with pytest.raises(ValueError, match="GPU model 'T4' has two memory sizes"):
        memory_by_model(nodes)


def test_fast_selectors_agree_with_cel() -> None:
    devices = parse_slices(node_slices(node("a", 2, "V100M32"), "a") + node_slices(node("b", 1, "T4"), "b"))
    fast, cel = FastSelectors(), SelectorCache()
    expressions = [class_selector(DRIVER)]
    for models in (("V100M32",), ("T4", "P100"), ("G2",)):
        expressions.append(product_selector(DRIVER, spec_selector(models), models))
    for expression, function in expressions:
        fast.register(expression, function)
        for device in devices:
            assert function(device) is not None  # the fast path answered
            assert fast.matches(expression, device, "x") == cel.matches(expression, device, "x")


# ----------------------------------------------------------------------------------------- replays


def test_skip_if_unplaceable_worked_example() -> None:
    # One T4 (1000 milli); pods of 400: arrivals 400, 800, 1200, 1600 (first >= 1300).
    sim = Simulation([node("n1", 1)], [pod("a", 400), pod("b", 400), pod("c", 400)])
    result = sim.replay(POLICIES["binpack"], 42)
    assert result.arrived == [400, 800, 1200, 1600]
    assert result.allocated == [400, 800, 800, 800]  # the third does not fit and is skipped; the replay goes on
    assert (result.placed, result.skipped, result.known_unplaceable) == (2, 2, 1)
    assert len(result.decision_s) == 3  # the fourth is the same shape as a refused one: not asked again
    assert result.allocation_at(100) == 80.0  # no sample in bin 100: the last one at or below
    assert result.allocation_at(130) == 80.0


def test_gpu_spec_constraint_is_honoured() -> None:
    # 600-milli pods that accept only V100M32: one fits (on b), the T4 stays empty.
    sim = Simulation([node("a", 1, "T4"), node("b", 1, "V100M32")], [pod("x", 600, 1, "V100M32")])
    result = sim.replay(POLICIES["binpack"], 7)
    assert result.arrived[-1] == 3000  # 5 x 600 >= 1.3 x 2000
    assert result.placed == 1 and result.allocated[-1] == 600


def test_cpu_and_memory_are_checked_against_the_node() -> None:
    # 2 GPUs but 3000m CPU: only one 2000m pod fits although GPU is left.
    sim = Simulation([node("a", 2, cpu=3000)], [pod("x", 300, cpu=2000)])
    result = sim.replay(POLICIES["binpack"], 1)
    assert result.placed == 1 and result.allocated[-1] == 300


def test_cpu_only_pods_consume_cpu_without_gpu() -> None:
    # 2000m of CPU; a CPU-only pod takes all of it. Inflation needs GPU pods: 3 x 500 milli >= 1300.
    sim = Simulation([node("a", 1, cpu=2000)], [pod("cpu", 0, 0, cpu=2000), pod("g", 500, cpu=1)])
    for seed in range(42, 52):
        result = sim.replay(POLICIES["binpack"], seed)
        order = [p.name for p in workload(sim.pods, 1000, seed)]
        if order[0] == "cpu":  # the CPU is gone: no GPU pod fits although the GPU is free
            assert result.allocated[-1] == 0
        else:  # "g" came first (1m CPU): the CPU-only pod no longer fits, the second "g" does
            assert result.allocated[-1] == 1000
            assert result.allocated[order.index("cpu")] == result.allocated[order.index("cpu") - 1]


@pytest.mark.parametrize("name", list(POLICIES))
def test_multi_gpu_pods_take_whole_gpus_under_every_policy(name: str) -> None:
    sim = Simulation([node("a", 4), node("b", 2)], [pod("m", 1000, 2), pod("s", 500)])
    result = sim.replay(POLICIES[name], 42)
    assert result.allocated[-1] <= 6000
    assert result.placed >= 3


def test_same_seed_same_result() -> None:
    sim = Simulation([node("a", 4), node("b", 2, "V100M32")], [pod("m", 1000, 2), pod("s", 300), pod("t", 700)])
    first, second = sim.replay(POLICIES["fragmentation"], 5), sim.replay(POLICIES["fragmentation"], 5)
    assert first.allocated == second.allocated and first.arrived == second.arrived


# ------------------------------------------------------------------------------------------ metrics


def test_allocation_at_averages_the_integer_bin() -> None:
    result = SeedResult(seed=1, capacity_milli=1000)
    result.arrived = [500, 995, 1000, 1004, 1006, 1300]
    result.allocated = [500, 900, 950, 960, 970, 980]
    # 99.5, 100 and 100.4 round to 100; 100.6 rounds to 101.
    assert result.allocation_at(100) == pytest.approx(100 * (900 + 950 + 960) / 3 / 1000)
    assert result.allocation_at(130) == pytest.approx(98.0)
    assert result.allocation_at(70) == pytest.approx(50.0)  # empty bin: last sample at or below
    assert result.curve()[:2] == [(50, 50.0), (100, pytest.approx(93.6666, abs=1e-3))]


def test_summary_mean_sd_and_percentile() -> None:
    results = []
    for seed, value in ((1, 900), (2, 1000)):
        r = SeedResult(seed=seed, capacity_milli=1000)
        r.arrived, r.allocated, r.decision_s = [1000, 1300], [value, value], [0.001 * seed, 0.002 * seed]
        results.append(r)
    summary = summarise("binpack", POLICIES["binpack"], results)
    assert summary.at[100].mean == pytest.approx(95.0)
    assert summary.at[100].sd == pytest.approx(7.0710678)  # sample sd of 90 and 100
    assert summary.decision_ms_p99 == pytest.approx(4.0)
    assert percentile([1, 2, 3, 4], 50) == 2 and percentile([], 99) == 0.0


# ------------------------------------------------------------------------------------- arguments


def test_policy_names() -> None:
    assert policy_names("all") == list(POLICIES)
    assert policy_names("spread,binpack,spread") == ["spread", "binpack"]
    assert policy_choice("spread/fragmentation") == PolicyChoice("spread", "fragmentation")
    with pytest.raises(ProtocolError, match=r"unknown policy 'bestfit'; valid: binpack, spread, first-fit, .*all"):
        policy_names("bestfit")
    with pytest.raises(ProtocolError, match="unknown GPU policy"):
        policy_choice("binpack/best")


@pytest.mark.parametrize(
    ("spec", "seeds"), [("42..51", list(range(42, 52))), ("1", [1]), ("1..3,7,2", [1, 2, 3, 7]), ("5..5", [5])]
)
def test_parse_seeds(spec: str, seeds: list[int]) -> None:
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize(
    ("spec", "message"),
    [("51..42", "is empty"), ("a..b", "not an integer"), ("1,,2", "empty item"), ("-3", "non-negative"), ("", "empty")],
)
def test_bad_seeds(spec: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_seeds(spec)


def test_allocator_accepts_the_generated_claims_directly() -> None:
    sim = Simulation([node("a", 1, "V100M32")], [pod("x", 250)])
    state = sim.state()
    shape = next(iter(sim.shapes.values()))
    p, claims = shape.instance(0)
    placement = allocate_pod(state, p, claims, POLICIES["binpack"])
    consumed = placement.claims[0].results[0].consumed
    assert consumed == {"memory": 8000 << 20, "cores": 25, "shares": 1}
