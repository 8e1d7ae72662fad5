import pytest
from plugin_factories import DRIVER, NODE, claim, result, vgpu_config

from dra_hami.api.vgpu_config import CoreLimitPolicy, Priority
from dra_hami.plugin.claim import ClaimError, read_allocation


def read(obj, devices):
    return read_allocation(obj, obj["metadata"]["uid"], DRIVER, NODE, devices)


def test_reads_shares_with_exact_amounts(devices):
    obj = claim([result(memory="1500Mi", cores="25", share_id="6f1d8c1e-1111-4222-8333-444455556666")])
    allocation = read(obj, devices)
    (share,) = allocation.shares
    assert (share.device, share.memory, share.cores) == ("hami-gpu-0", 1500 << 20, 25)
    assert share.share_id == "6f1d8c1e-1111-4222-8333-444455556666"


def test_qualified_capacity_keys_are_ours(devices):
    obj = claim([result()])
    consumed = obj["status"]["allocation"]["devices"]["results"][0]["consumedCapacity"]
    consumed[f"{DRIVER}/memory"] = consumed.pop("memory")
    assert read(obj, devices).shares[0].memory == 4 << 30


def test_results_of_other_drivers_are_ignored(devices):
    other = result(device="gpu-7")
    other["driver"] = "gpu.nvidia.com"
    assert len(read(claim([other, result()]), devices).shares) == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o["metadata"].update(uid="other"), "UID is other"),
        (lambda o: o["status"].pop("allocation"), "not allocated"),
        (lambda o: o["status"].pop("reservedFor"), "not reserved for a pod"),
        (lambda o: _result(o).update(pool="node-b"), "pool 'node-b'"),
        (lambda o: _result(o).update(device="hami-gpu-9"), "'hami-gpu-9' is not published"),
        (lambda o: _result(o).pop("consumedCapacity"), "consumedCapacity: missing"),
        (lambda o: _consumed(o).update(bogus="1"), "consumedCapacity[bogus]: this driver publishes only"),
        (lambda o: _consumed(o).update(memory="-2Gi"), "negative"),
        (lambda o: _consumed(o).update(memory="100Gi"), "outside 1..16106127360"),
        (lambda o: _consumed(o).update(memory="0"), "outside 1.."),
        (lambda o: _consumed(o).pop("memory"), "has no 'memory' entry"),
        (lambda o: _consumed(o).update(cores="101"), "above 100"),
        (lambda o: _consumed(o).update(cores="1.5"), "not a whole number"),
        (lambda o: _consumed(o).update(memory="lots"), "not a Kubernetes quantity"),
        (lambda o: _result(o).update(driver="x"), "no allocation result of driver"),
    ],
)
def test_bad_claims_are_refused_with_the_field(devices, mutate, message):
    obj = claim([result()])
    mutate(obj)
    with pytest.raises(ClaimError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_allocation(obj, claim_uid(obj), DRIVER, NODE, devices)


def claim_uid(obj):
    return obj["metadata"]["uid"] if obj["metadata"]["uid"] != "other" else "expected"


def _result(obj):
    return obj["status"]["allocation"]["devices"]["results"][0]


def _consumed(obj):
    return _result(obj)["consumedCapacity"]


def test_error_names_claim_and_result_index(devices):
    obj = claim([result(), result(cores="500")])
    with pytest.raises(ClaimError, match=r"ResourceClaim default/c1: status.allocation.devices.results\[1\]"):
        read(obj, devices)


def test_admin_access_is_the_whole_device(devices):
    admin = result(share_id=None, adminAccess=True)
    admin.pop("consumedCapacity")
    (share,) = read(claim([admin]), devices).shares
    assert share.memory is None and share.cores == 0


def test_configs_merge_class_then_claim_per_request(devices):
    configs = [
        vgpu_config(source="FromClass", coreLimitPolicy="force", priority="low"),
        vgpu_config(requests=["gpu"], priority="high"),
        vgpu_config(requests=["other"], coreLimitPolicy="disable"),
    ]
    allocation = read(claim([result()], config=configs), devices)
    config = allocation.configs["gpu"]
    assert config.core_limit_policy is CoreLimitPolicy.FORCE
    assert config.priority is Priority.HIGH


def test_config_for_parent_request_covers_subrequest(devices):
    obj = claim([result(request="gpu/small")], config=[vgpu_config(requests=["gpu"], logLevel="debug")])
    assert read(obj, devices).configs["gpu/small"].env() == ["LIBCUDA_LOG_LEVEL=4"]


def test_other_drivers_configs_are_not_ours(devices):
    foreign = {"source": "FromClaim", "opaque": {"driver": "gpu.nvidia.com", "parameters": {"anything": 1}}}
    assert read(claim([result()], config=[foreign]), devices).configs == {}


def test_malformed_config_names_the_field(devices):
    obj = claim([result()], config=[vgpu_config(coreLimitPolicy="sometimes")])
    with pytest.raises(ClaimError, match=r"config\[0\]\.opaque\.parameters\.coreLimitPolicy: got 'sometimes'"):
        read(obj, devices)


def test_a_result_without_share_id_is_prepared_only_with_its_recorded_amounts(devices):
    # Accounting counts such a result as the whole device (AllocatedDevice.taken); the plugin enforces only
    # amounts that were written, and refuses to guess limits that were not.
    recorded = result(share_id=None, memory="2Gi", cores="10")
    (share,) = read(claim([recorded]), devices).shares
    assert (share.share_id, share.memory, share.cores) == (None, 2 << 30, 10)
    bare = result(share_id=None)
    bare.pop("consumedCapacity")
    with pytest.raises(ClaimError, match=r"results\[0\]\.consumedCapacity: missing"):
        read(claim([bare]), devices)


def test_a_malformed_result_is_refused_naming_the_field(devices):
    bad = result()
    bad["request"] = 7
    with pytest.raises(ClaimError, match=r"ResourceClaim default/c1: status.allocation.devices.results\[0\]\.request"):
        read(claim([bad]), devices)
