"""allocate_pod: requests, constraints, exclusive and shared devices, node filtering, the written allocation."""

import re

import pytest
from allocator_factories import (
    DRIVER,
    ShareIds,
    claim,
    device_class,
    devices_of,
    exactly,
    first_available,
    fixed_clock,
    gpu,
    node,
    place,
    pod,
    request,
    resource_slice,
    state_of,
)

from dra_hami.allocator import Placement, PolicyChoice, Unplaceable, allocate_pod, new_share_id

FIRST_FIT = PolicyChoice("first-fit", "first-fit")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def four_gpus(node_name="n", **kw):
    return resource_slice(node_name, [gpu(f"hami-gpu-{i}", **kw) for i in range(4)])


class TestWrittenAllocation:
    def test_fields_exactly_as_the_v1_api(self):
        state = state_of([four_gpus()])
        outcome = allocate_pod(
            state, pod(), [claim("c", request(memory="4Gi", cores="30"))], share_ids=ShareIds(), clock=fixed_clock
        )
        assert isinstance(outcome, Placement)
        assert outcome.node_name == "n"
        assert outcome.allocations == {
            "default/c": {
                "devices": {
                    "results": [
                        {
                            "request": "gpu",
                            "driver": DRIVER,
                            "pool": "n",
                            "device": "hami-gpu-0",
                            "shareID": "00000000-0000-4000-8000-000000000001",
                            "consumedCapacity": {"cores": "30", "memory": "4Gi", "shares": "1"},
                        }
                    ]
                },
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}
                    ]
                },
                "allocationTimestamp": "2026-11-22T05:08:35Z",
            }
        }

    def test_default_share_id_and_timestamp_formats(self):
        state = state_of([four_gpus()])
        outcome = allocate_pod(state, pod(), [claim("c", request(memory="1Gi"))])
        allocation = outcome.allocations["default/c"]
        assert UUID.match(allocation["devices"]["results"][0]["shareID"])
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", allocation["allocationTimestamp"])
        assert UUID.match(new_share_id())

    def test_every_result_gets_a_fresh_share_id(self):
        state = state_of([four_gpus()])
        outcome = allocate_pod(state, pod(), [claim("c", request(memory="1Gi", count=3))])
        ids = [r["shareID"] for r in outcome.allocations["default/c"]["devices"]["results"]]
        assert len(set(ids)) == 3

    def test_an_uppercase_share_id_is_refused(self):
        state = state_of([four_gpus()])
        with pytest.raises(ValueError, match="lowercase"):
            allocate_pod(
                state,
                pod(),
                [claim("c", request(memory="1Gi"))],
                share_ids=lambda: "ABCDEF00-0000-4000-8000-000000000000",
            )

    def test_config_from_class_first_then_claim(self):
        class_config = [{"opaque": {"driver": DRIVER, "parameters": {"from": "class"}}}]
        claim_config = [{"requests": ["b"], "opaque": {"driver": DRIVER, "parameters": {"from": "claim"}}}]
        state = state_of([four_gpus()], classes=[device_class(config=class_config), device_class("other")])
        c = claim(
            "c",
            request("a", memory="1Gi"),
            request("b", memory="1Gi"),
            request("z", memory="1Gi", device_class_name="other"),
            config=claim_config,
        )
        config = allocate_pod(state, pod(), [c]).allocations["default/c"]["devices"]["config"]
        assert config == [
            {
                "source": "FromClass",
                "requests": ["a", "b"],
                "opaque": {"driver": DRIVER, "parameters": {"from": "class"}},
            },
            {"source": "FromClaim", "requests": ["b"], "opaque": {"driver": DRIVER, "parameters": {"from": "claim"}}},
        ]

    def test_tolerations_are_copied_into_results(self):
        taint = {"key": "maintenance", "value": "soon", "effect": "NoSchedule"}
        state = state_of([resource_slice("n", [gpu("hami-gpu-0", taints=[taint])])])
        blocked = allocate_pod(state, pod(), [claim("c", request(memory="1Gi"))])
        assert isinstance(blocked, Unplaceable)
        assert "hami-gpu-0: taint maintenance=soon:NoSchedule not tolerated" in blocked.reasons["n"]
        toleration = {"key": "maintenance", "operator": "Exists", "effect": "NoSchedule"}
        ok = allocate_pod(state, pod(), [claim("c", request(memory="1Gi", tolerations=[toleration]))])
        assert ok.allocations["default/c"]["devices"]["results"][0]["tolerations"] == [toleration]


class TestRequests:
    def test_exactly_count_two_takes_two_different_devices(self):
        state = state_of([four_gpus()])
        assert devices_of(place(state, pod(), [claim("c", request(memory="1Gi", count=2))], FIRST_FIT)) == [
            "hami-gpu-0",
            "hami-gpu-1",
        ]

    def test_all_takes_every_matching_device(self):
        state = state_of([four_gpus()])
        placement = place(state, pod(), [claim("c", request(memory="1Gi", mode="All"))])
        assert sorted(devices_of(placement)) == [f"hami-gpu-{i}" for i in range(4)]

    def test_all_fails_when_one_matching_device_is_full(self):
        state = state_of([four_gpus()])
        place(state, pod("filler"), [claim("filler", request())], FIRST_FIT)  # takes all of hami-gpu-0's memory
        outcome = allocate_pod(state, pod(), [claim("c", request(memory="1Gi", mode="All"))])
        assert isinstance(outcome, Unplaceable)
        assert "hami-gpu-0: capacity memory: needs 1Gi, 0 free" in outcome.reasons["n"]

    def test_first_available_prefers_the_first_subrequest_that_fits(self):
        state = state_of([resource_slice("n", [gpu("hami-gpu-0", "15Gi")])])
        req = first_available("gpu", ("big", exactly(memory="20Gi")), ("small", exactly(memory="8Gi")))
        placement = place(state, pod(), [claim("c", req)])
        (result,) = placement.allocations["default/c"]["devices"]["results"]
        assert result["request"] == "gpu/small"
        req2 = first_available("gpu", ("big", exactly(memory="7Gi")), ("small", exactly(memory="1Gi")))
        (result2,) = place(state, pod("p2"), [claim("c2", req2)]).allocations["default/c2"]["devices"]["results"]
        assert result2["request"] == "gpu/big"

    def test_request_selectors(self):
        slices = [
            resource_slice(
                "n",
                [
                    gpu("hami-gpu-0", attributes={"productName": {"string": "Tesla-T4"}}),
                    gpu("hami-gpu-1", attributes={"productName": {"string": "A100"}}),
                ],
            )
        ]
        state = state_of(slices)
        sel = [f"device.attributes['{DRIVER}'].productName == 'A100'"]
        assert devices_of(place(state, pod(), [claim("c", request(memory="1Gi", selectors=sel))], FIRST_FIT)) == [
            "hami-gpu-1"
        ]
        none = allocate_pod(
            state, pod(), [claim("c2", request(memory="1Gi", selectors=[sel[0].replace("A100", "H100")]))]
        )
        assert "did not match" in none.reasons["n"]

    def test_runtime_selector_error_is_a_non_match_with_a_reason(self):
        state = state_of([four_gpus()])
        outcome = allocate_pod(state, pod(), [claim("c", request(selectors=[f"device.attributes['{DRIVER}'].nosuch"]))])
        assert isinstance(outcome, Unplaceable)
        assert "spec.devices.requests[0].exactly.selectors[0].cel.expression" in outcome.reasons["n"]
        assert "nosuch" in outcome.reasons["n"]

    def test_compile_error_makes_the_pod_unplaceable_everywhere(self):
        state = state_of([four_gpus()])
        outcome = allocate_pod(state, pod(), [claim("c", request(selectors=["device.driver =="]))])
        assert isinstance(outcome, Unplaceable)
        assert outcome.message.startswith("ResourceClaim default/c: spec.devices.requests[0].exactly.selectors[0]")

    def test_unknown_device_class(self):
        state = state_of([four_gpus()])
        outcome = allocate_pod(state, pod(), [claim("c", request(device_class_name="nope"))])
        assert "DeviceClass 'nope' not found" in outcome.message


def _numbered(i, **attrs):
    return gpu(f"hami-gpu-{i}", attributes={k: {"string": v} for k, v in attrs.items()})


class TestConstraints:
    def test_match_attribute(self):
        # Only gpu-1 and gpu-3 share a product: a pair must be those two.
        devices = [_numbered(0, productName="T4"), _numbered(1, productName="A10"), _numbered(2, productName="L4")]
        devices.append(_numbered(3, productName="A10"))
        state = state_of([resource_slice("n", devices)])
        c = claim("c", request(memory="1Gi", count=2), constraints=[{"matchAttribute": f"{DRIVER}/productName"}])
        assert devices_of(place(state, pod(), [c], FIRST_FIT)) == ["hami-gpu-1", "hami-gpu-3"]

    def test_match_attribute_across_requests(self):
        devices = [_numbered(0, productName="T4"), _numbered(1, productName="A10")]
        state = state_of([resource_slice("n", devices)])
        sel = [f"device.attributes['{DRIVER}'].productName == 'A10'"]
        c = claim(
            "c",
            request("a", memory="1Gi"),
            request("b", memory="1Gi", selectors=sel),
            constraints=[{"requests": ["a", "b"], "matchAttribute": f"{DRIVER}/productName"}],
        )
        assert devices_of(place(state, pod(), [c], FIRST_FIT)) == ["hami-gpu-1", "hami-gpu-1"]

    def test_distinct_attribute_keeps_two_requests_off_one_shared_device(self):
        state = state_of([four_gpus()])
        plain = claim("c", request("a", memory="1Gi"), request("b", memory="1Gi"))
        assert devices_of(allocate_pod(state, pod(), [plain], FIRST_FIT)) == ["hami-gpu-0", "hami-gpu-0"]
        distinct = claim(
            "d",
            request("a", memory="1Gi"),
            request("b", memory="1Gi"),
            constraints=[{"distinctAttribute": f"{DRIVER}/productName"}],
        )
        # Every card is a Tesla-T4: no two devices have distinct products.
        assert isinstance(allocate_pod(state, pod(), [distinct]), Unplaceable)
        by_name = claim(
            "e",
            request("a", memory="1Gi"),
            request("b", memory="1Gi"),
            constraints=[{"distinctAttribute": f"{DRIVER}/minor"}],
        )
        state2 = state_of(
            [resource_slice("n", [gpu(f"hami-gpu-{i}", attributes={"minor": {"int": i}}) for i in range(2)])]
        )
        assert devices_of(allocate_pod(state2, pod(), [by_name], FIRST_FIT)) == ["hami-gpu-0", "hami-gpu-1"]

    def test_missing_attribute_fails_the_constraint(self):
        state = state_of([four_gpus()])
        c = claim("c", request(memory="1Gi"), constraints=[{"matchAttribute": "example.com/rack"}])
        outcome = allocate_pod(state, pod(), [c])
        assert isinstance(outcome, Unplaceable) and "constraints" in outcome.reasons["n"]


class TestAccounting:
    def test_dedicated_devices_are_exclusive(self):
        state = state_of([resource_slice("n", [gpu("g0", shared=False), gpu("g1", shared=False)])])
        first = place(state, pod("a"), [claim("a", request(memory="1Gi"))], FIRST_FIT)
        (result,) = first.allocations["default/a"]["devices"]["results"]
        assert "shareID" not in result and "consumedCapacity" not in result
        assert devices_of(place(state, pod("b"), [claim("b", request(memory="1Gi"))], FIRST_FIT)) == ["g1"]
        outcome = allocate_pod(state, pod("c"), [claim("c", request(memory="1Gi"))])
        assert outcome.reasons["n"] == "needs 1 free devices, 0 of 2 are free (claim default/c)"
        # With a share still free on another card the search runs, and names the held device.
        state2 = state_of([resource_slice("n", [gpu("g0", shared=False), gpu("g1")])])
        place(state2, pod("a"), [claim("a", request(memory="1Gi"))], FIRST_FIT)
        place(state2, pod("b"), [claim("b", request(memory="1Gi"))], FIRST_FIT)
        outcome2 = allocate_pod(state2, pod("c"), [claim("c", request())], FIRST_FIT)
        assert outcome2.reasons["n"].startswith(
            "g0: allocated exclusively to another claim; g1: capacity memory: needs 15Gi, 14Gi free"
        )
        # request <= value is the only capacity check on a dedicated device.
        state.release("default/a")
        too_big = allocate_pod(state, pod("d"), [claim("d", request(memory="16Gi"))])
        assert too_big.reasons["n"] == "g0: capacity memory: needs 16Gi, 15Gi free (claim default/d)"

    def test_allocations_made_elsewhere_are_counted_the_same_way(self):
        def allocated(name, device, **extra):
            result = {"request": "gpu", "driver": DRIVER, "pool": "n", "device": device, **extra}
            return claim(name, request(), allocation={"devices": {"results": [result]}})

        claims = [
            allocated("shared", "hami-gpu-0", shareID="00000000-0000-4000-8000-0000000000aa",
                      consumedCapacity={"memory": "14Gi", "cores": "0", "shares": "1"}),
            allocated("exclusive", "hami-gpu-1"),
            allocated("admin", "hami-gpu-2", adminAccess=True),
        ]  # fmt: skip
        state = state_of([resource_slice("n", [gpu(f"hami-gpu-{i}") for i in range(3)])], claims=claims)
        outcome = allocate_pod(state, pod(), [claim("c", request(memory="2Gi", count=2))], FIRST_FIT)
        # gpu-0 has 1Gi left, gpu-1 is held exclusively; the admin-access result on gpu-2 holds nothing.
        assert isinstance(outcome, Unplaceable)
        assert outcome.reasons["n"].startswith(
            "needs 2 devices, 1 usable: hami-gpu-0: capacity memory: needs 2Gi, 1Gi free"
        )
        assert "hami-gpu-1: allocated exclusively to another claim" in outcome.reasons["n"]
        assert devices_of(allocate_pod(state, pod(), [claim("c", request(memory="2Gi"))], FIRST_FIT)) == ["hami-gpu-2"]

    def test_admin_access_uses_a_busy_device_and_is_not_counted(self):
        state = state_of([resource_slice("n", [gpu("hami-gpu-0")])])
        place(state, pod("a"), [claim("a", request())])  # the whole card
        admin = place(state, pod("mon"), [claim("mon", request(admin=True))])
        (result,) = admin.allocations["default/mon"]["devices"]["results"]
        assert result["adminAccess"] is True and "shareID" not in result
        state.release("default/a")
        assert devices_of(place(state, pod("b"), [claim("b", request())])) == ["hami-gpu-0"]

    def test_already_allocated_claims_pin_the_node(self):
        slices = [four_gpus("n1"), four_gpus("n2")]
        shared = claim(
            "shared",
            request(memory="1Gi"),
            allocation={
                "devices": {"results": []},
                "nodeSelector": {
                    "nodeSelectorTerms": [
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}
                    ]
                },
            },
        )
        state = state_of(slices, claims=[shared])
        placement = place(state, pod(), [shared, claim("mine", request(memory="1Gi"))], FIRST_FIT)
        assert placement.node_name == "n2"
        assert [c.claim_key for c in placement.claims] == ["default/mine"]  # the given claim is not rewritten


class TestNodeFiltering:
    def _state(self, **node_kw):
        return state_of([four_gpus("a"), four_gpus("b")], nodes=[node("a", **node_kw), node("b")])

    def test_node_selector(self):
        state = state_of([four_gpus("a"), four_gpus("b")], nodes=[node("a"), node("b", labels={"gpu": "yes"})])
        outcome = allocate_pod(state, pod(node_selector={"gpu": "yes"}), [claim("c", request(memory="1Gi"))], FIRST_FIT)
        assert outcome.node_name == "b"
        miss = allocate_pod(state, pod(node_selector={"gpu": "no"}), [claim("c", request(memory="1Gi"))])
        assert miss.reasons == {"a": "node selector gpu=no does not match", "b": "node selector gpu=no does not match"}

    def test_required_affinity_match_expressions_and_fields(self):
        state = state_of([four_gpus("a"), four_gpus("b")], nodes=[node("a", labels={"zone": "z1"}), node("b")])
        terms = [{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["z1"]}]}]
        assert allocate_pod(state, pod(affinity_terms=terms), [claim("c", request(memory="1Gi"))]).node_name == "b"
        fields = [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a"]}]}]
        assert allocate_pod(state, pod(affinity_terms=fields), [claim("c", request(memory="1Gi"))]).node_name == "a"
        nothing = allocate_pod(state, pod(affinity_terms=[]), [claim("c", request(memory="1Gi"))])
        assert nothing.reasons["a"] == "required node affinity does not match"

    def test_taints_and_tolerations(self):
        state = self._state(taints=[{"key": "x", "value": "y", "effect": "NoSchedule"}])
        spread = PolicyChoice("spread", "binpack")
        # Prefer-no-schedule would not matter; NoSchedule does.
        outcome = allocate_pod(state, pod(node_selector={"kubernetes.io/hostname": "a"}), [claim("c")], spread)
        assert outcome.reasons["a"] == "taint x=y:NoSchedule not tolerated"
        tolerating = pod(tolerations=[{"key": "x", "operator": "Equal", "value": "y", "effect": "NoSchedule"}],
                         node_selector={"kubernetes.io/hostname": "a"})  # fmt: skip
        assert allocate_pod(state, tolerating, [claim("c")]).node_name == "a"

    def test_allocatable_cpu_memory_pods(self):
        state = state_of([four_gpus("a")], nodes=[node("a", cpu="4", memory="8Gi", pods="2")])
        assert (
            "insufficient cpu: needs 5000m, 4000m free" in allocate_pod(state, pod(cpu="5"), [claim("c")]).reasons["a"]
        )
        assert "insufficient memory" in allocate_pod(state, pod(memory="9Gi"), [claim("c")]).reasons["a"]
        place(state, pod("p1", cpu="3"), [claim("c1", request(memory="1Gi"))])
        assert (
            "insufficient cpu: needs 2000m, 1000m free"
            in allocate_pod(state, pod("p2", cpu="2"), [claim("c2")]).reasons["a"]
        )
        place(state, pod("p2"), [claim("c2", request(memory="1Gi"))])
        assert allocate_pod(state, pod("p3"), [claim("c3")]).reasons["a"] == "too many pods (2 of 2)"
        state.forget_pod("default/p1")
        assert isinstance(allocate_pod(state, pod("p3"), [claim("c3", request(memory="1Gi"))]), Placement)

    def test_pods_bound_elsewhere_count_against_allocatable(self):
        bound = pod("old", cpu="60", node_name="a")
        state = state_of([four_gpus("a"), four_gpus("b")], nodes=[node("a"), node("b")], pods=[bound])
        assert allocate_pod(state, pod(cpu="8"), [claim("c")], FIRST_FIT).node_name == "b"
