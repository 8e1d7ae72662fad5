"""Consumable capacity, worked by hand against docs/design/consumable-capacity.md and the
scheduler's allocations in docs/design/observed-1.36.md#what-the-scheduler-allocated."""

import pytest
from allocator_factories import (
    GiB,
    MiB,
    claim,
    devices_of,
    gpu,
    place,
    pod,
    request,
    resource_slice,
    state_of,
)

from dra_hami.allocator import Unplaceable, allocate_pod, parse_slices
from dra_hami.allocator.capacity import consumed_capacity_field, consumption, format_amount, shortfall


def _device(capacity: dict, shared: bool = True):
    raw = {"name": "d0", "capacity": capacity}
    if shared:
        raw["allowMultipleAllocations"] = True
    return parse_slices([resource_slice("n", [raw])])[0]


RANGE = {"value": "100", "requestPolicy": {"default": "10", "validRange": {"min": "10", "max": "60", "step": "4"}}}


class TestRounding:
    def test_unrequested_key_takes_the_default(self):
        assert consumption(_device({"k": RANGE}), {}) == ({"k": 10}, None)

    def test_unrequested_key_without_default_takes_the_full_value(self):
        assert consumption(_device({"k": {"value": "7"}}), {}) == ({"k": 7}, None)

    def test_requested_key_without_policy_is_taken_as_is(self):
        assert consumption(_device({"k": {"value": "7"}}), {"k": 3}) == ({"k": 3}, None)

    def test_below_min_rounds_up_to_min(self):
        assert consumption(_device({"k": RANGE}), {"k": 2}) == ({"k": 10}, None)

    def test_step_rounds_up_from_min(self):
        # min 10, step 4: 11 -> 10 + ceil(1/4)*4 = 14; 14 stays 14; 15 -> 18.
        device = _device({"k": RANGE})
        assert consumption(device, {"k": 11})[0] == {"k": 14}
        assert consumption(device, {"k": 14})[0] == {"k": 14}
        assert consumption(device, {"k": 15})[0] == {"k": 18}

    def test_range_without_step_keeps_the_request(self):
        no_step = {"value": "100", "requestPolicy": {"default": "10", "validRange": {"min": "10", "max": "60"}}}
        assert consumption(_device({"k": no_step}), {"k": 33})[0] == {"k": 33}

    def test_above_max_is_rejected(self):
        # 59 rounds to 10 + ceil(49/4)*4 = 62 > max 60.
        amounts, reason = consumption(_device({"k": RANGE}), {"k": 59})
        assert amounts is None
        assert reason == "capacity k: needs 62, more than one allocation may take (60)"

    def test_valid_values_pick_the_smallest_that_covers(self):
        values = {"value": "100", "requestPolicy": {"default": "8", "validValues": ["8", "16", "32"]}}
        device = _device({"k": values})
        assert consumption(device, {"k": 9})[0] == {"k": 16}
        assert consumption(device, {"k": 32})[0] == {"k": 32}
        assert consumption(device, {"k": 1})[0] == {"k": 8}

    def test_valid_values_reject_above_the_largest(self):
        values = {"value": "100", "requestPolicy": {"default": "8", "validValues": ["8", "16", "32"]}}
        assert consumption(_device({"k": values}), {"k": 33}) == (
            None,
            "capacity k: 33 is not one of the valid values [8, 16, 32]",
        )

    def test_request_for_a_key_the_device_lacks_makes_it_ineligible(self):
        amounts, reason = consumption(_device({"k": RANGE}), {"other": 1})
        assert amounts is None and "other" in reason

    def test_more_than_the_value_without_policy_is_rejected(self):
        amounts, reason = consumption(_device({"k": {"value": "7"}}), {"k": 8})
        assert amounts is None and reason == "capacity k: needs 8, the device has 7"

    def test_our_wire_contract(self):
        device = parse_slices([resource_slice("n", [gpu("g", "15Gi")])])[0]
        # No request: whole memory (default = max), cores 0, one share.
        assert consumption(device, {}) == ({"cores": 0, "memory": 15 * GiB, "shares": 1}, None)
        # 1500Mi at step 1Mi from min 1Mi is exact; 1.5 MiB rounds up to 2 MiB.
        assert consumption(device, {"memory": 1500 * MiB})[0]["memory"] == 1500 * MiB
        assert consumption(device, {"memory": MiB + MiB // 2})[0]["memory"] == 2 * MiB
        assert consumption(device, {"shares": 2})[0] is None


class TestSumCheck:
    def test_sum_of_used_pending_and_this_per_key(self):
        device = _device({"a": {"value": "10"}, "b": {"value": "10"}})
        assert shortfall(device, {"a": 4, "b": 4}, {"a": 3}, {"a": 3}) is None  # 3 + 3 + 4 = 10
        assert shortfall(device, {"a": 5, "b": 1}, {"a": 3}, {"a": 3}) == "capacity a: needs 5, 4 free"
        assert shortfall(device, {"a": 0, "b": 7}, {"b": 4}, None) == "capacity b: needs 7, 6 free"

    def test_shares_exhaustion_is_named(self):
        device = _device({"shares": {"value": "10"}})
        assert shortfall(device, {"shares": 1}, {"shares": 10}, None) == "shares exhausted (10 of 10 in use)"

    def test_formatting(self):
        assert format_amount("memory", 4 * GiB) == "4Gi"
        assert format_amount("memory", 1500 * MiB) == "1500Mi"
        assert format_amount("memory", 0) == "0"
        assert format_amount("cores", 30) == "30"
        assert consumed_capacity_field({"memory": 4 * GiB, "cores": 0, "shares": 1}) == {
            "cores": "0",
            "memory": "4Gi",
            "shares": "1",
        }


FIRST_FIT = None  # set below to avoid importing policies at module import in every test


def _first_fit():
    from dra_hami.allocator import PolicyChoice

    return PolicyChoice(node="first-fit", gpu="first-fit")


class TestObservedScheduler:
    """docs/design/observed-1.36.md#what-the-scheduler-allocated: the real 1.36 scheduler's consumedCapacity."""

    def test_e2_sequence(self):
        state = state_of([resource_slice("fakenode", [gpu("hami-gpu-0"), gpu("hami-gpu-1")])])
        expected = [
            ("a", {"memory": "4Gi"}, "hami-gpu-0", {"cores": "0", "memory": "4Gi", "shares": "1"}),
            ("b", {"memory": "4Gi", "cores": "30"}, "hami-gpu-0", {"cores": "30", "memory": "4Gi", "shares": "1"}),
            ("c", {}, "hami-gpu-1", {"cores": "0", "memory": "15Gi", "shares": "1"}),
            ("e", {"memory": "1500Mi"}, "hami-gpu-0", {"cores": "0", "memory": "1500Mi", "shares": "1"}),
        ]
        for name, req, device, consumed in expected:
            placement = place(state, pod(name), [claim(f"{name}-gpu", request(**req))], _first_fit())
            (result,) = placement.claims[0].allocation["devices"]["results"]
            assert (result["device"], result["consumedCapacity"]) == (device, consumed), name
        # A second whole-card claim (pod-c2) finds no device: gpu-0 holds 9.5Gi, gpu-1 is full.
        outcome = allocate_pod(state, pod("c2"), [claim("c2-gpu")], _first_fit())
        assert isinstance(outcome, Unplaceable)
        assert "capacity memory: needs 15Gi" in outcome.reasons["fakenode"]

    def test_e2_shares_exhausted_at_ten(self):
        state = state_of([resource_slice("fakenode", [gpu("hami-gpu-0")])])
        for i in range(1, 11):
            placement = place(state, pod(f"d{i}"), [claim(f"d{i}-gpu", request(memory="1Gi"))])
            assert devices_of(placement) == ["hami-gpu-0"]
        # 5Gi of memory is still free, but every share is taken.
        outcome = allocate_pod(state, pod("d11"), [claim("d11-gpu", request(memory="1Gi"))])
        assert isinstance(outcome, Unplaceable)
        assert outcome.reasons["fakenode"].startswith("hami-gpu-0: shares exhausted (10 of 10 in use)")
        state.release("default/d1-gpu")
        assert devices_of(place(state, pod("d11"), [claim("d11-gpu", request(memory="1Gi"))])) == ["hami-gpu-0"]
        assert isinstance(allocate_pod(state, pod("d12"), [claim("d12-gpu", request(memory="1Gi"))]), Unplaceable)

    def test_asking_for_two_shares_is_never_schedulable(self):
        state = state_of([resource_slice("fakenode", [gpu("hami-gpu-0")])])
        outcome = allocate_pod(state, pod(), [claim("c", request(capacity={"shares": "2"}))])
        assert isinstance(outcome, Unplaceable)
        assert "capacity shares: 2 is not one of the valid values [1]" in outcome.reasons["fakenode"]

    def test_zero_cores_is_allocated(self):
        state = state_of([resource_slice("fakenode", [gpu("hami-gpu-0")])])
        placement = place(state, pod(), [claim("c", request(memory="1Gi", cores="0"))])
        assert placement.claims[0].allocation["devices"]["results"][0]["consumedCapacity"]["cores"] == "0"

    def test_two_requests_of_one_claim_sum_on_one_device(self):
        # 10Gi + 5Gi = 15Gi fits one 15Gi card exactly; 10Gi + 6Gi does not, and there is only one card.
        state = state_of([resource_slice("n", [gpu("hami-gpu-0")])])
        ok = allocate_pod(state, pod(), [claim("c", request("a", memory="10Gi"), request("b", memory="5Gi"))])
        assert devices_of(ok) == ["hami-gpu-0", "hami-gpu-0"]
        too_much = allocate_pod(state, pod(), [claim("c", request("a", memory="10Gi"), request("b", memory="6Gi"))])
        assert isinstance(too_much, Unplaceable)
        assert "combination" in too_much.reasons["n"]

    def test_requests_of_two_claims_of_one_pod_sum_too(self):
        state = state_of([resource_slice("n", [gpu("hami-gpu-0")])])
        outcome = allocate_pod(state, pod(), [claim("c1", request(memory="8Gi")), claim("c2", request(memory="8Gi"))])
        assert isinstance(outcome, Unplaceable)

    @pytest.mark.parametrize(("cores", "fits"), [("70", True), ("71", False)])
    def test_per_key_totals(self, cores, fits):
        state = state_of([resource_slice("n", [gpu("hami-gpu-0")])])
        place(state, pod("first"), [claim("first", request(memory="1Gi", cores="30"))])
        outcome = allocate_pod(state, pod(), [claim("c", request(memory="1Gi", cores=cores))])
        assert isinstance(outcome, Unplaceable) != fits
        if not fits:
            assert "capacity cores: needs 71, 70 free" in outcome.reasons["n"]
