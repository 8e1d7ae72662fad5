"""The kubelet plugin as the kubelet sees it: a subprocess answering gRPC on real unix sockets."""

from __future__ import annotations

import json
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from plugin_harness import DRIVER, NODE, PluginProcess, allocated_claim

from dra_hami.demo.apiserver import FakeApiServer


@pytest.fixture
def api():
    server = FakeApiServer().start()
    yield server
    server.stop()


@pytest.fixture
def plugin(tmp_path, api):
    process = PluginProcess(tmp_path, api).start()
    yield process
    process.cleanup()


def create(api, *claims):
    for claim in claims:
        api.put("resourceclaims", claim)
    return list(claims)


def spec_path(plugin, claim):
    return plugin.cdi_dir / f"k8s.{DRIVER}-claim_{claim['metadata']['uid']}.json"


def test_registration_answer(plugin):
    info = plugin.get_info()
    assert info.type == "DRAPlugin"
    assert info.name == DRIVER
    assert info.endpoint == str(plugin.dra_socket)
    assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1alpha1.DRAResourceHealth"]
    plugin.notify_registered(True)
    plugin.notify_registered(False, "kubelet says no")
    assert "kubelet says no" in plugin.log_path.read_text()


def test_slices_are_published(plugin, api):
    import time

    deadline = time.monotonic() + 10
    while not api.list("resourceslices") and time.monotonic() < deadline:
        time.sleep(0.1)
    (slice_,) = api.list("resourceslices")
    assert slice_["spec"]["nodeName"] == NODE and slice_["spec"]["pool"]["name"] == NODE
    assert [d["name"] for d in slice_["spec"]["devices"]] == ["hami-gpu-0", "hami-gpu-1"]


def test_prepare_writes_spec_and_answers_devices(plugin, api):
    (claim,) = create(api, allocated_claim("c1", memory="4Gi", cores="30"))
    uid = claim["metadata"]["uid"]
    response = plugin.prepare([claim])
    entry = response.claims[uid]
    assert entry.error == ""
    (device,) = entry.devices
    share_id = claim["status"]["allocation"]["devices"]["results"][0]["shareID"]
    assert (device.pool_name, device.device_name, list(device.request_names)) == (NODE, "hami-gpu-0", ["gpu"])
    assert device.HasField("share_id") and device.share_id == share_id
    cdi_name = f"{uid}-hami-gpu-0-{share_id}"
    assert list(device.cdi_device_ids) == [f"k8s.{DRIVER}/claim={cdi_name}"]

    spec = json.loads(spec_path(plugin, claim).read_text())
    # The lowest version covering the fields: 0.5.0 only when the device name starts with a digit.
    assert spec["cdiVersion"] == ("0.5.0" if uid[0].isdigit() else "0.3.0")
    assert spec["kind"] == f"k8s.{DRIVER}/claim"
    env = spec["devices"][0]["containerEdits"]["env"]
    assert "CUDA_DEVICE_MEMORY_LIMIT_0=4096m" in env and "CUDA_DEVICE_SM_LIMIT_0=30" in env
    claim_dir = plugin.vgpu_dir / "claims" / uid
    assert claim_dir.is_dir() and stat.S_IMODE(claim_dir.stat().st_mode) == 0o777
    assert (plugin.vgpu_dir / "ld.so.preload").read_text() == "/usr/local/vgpu/libvgpu.so\n"


def test_v1beta1_has_no_share_id(plugin, api):
    (claim,) = create(api, allocated_claim("c1"))
    (device,) = plugin.prepare([claim], version="v1beta1").claims[claim["metadata"]["uid"]].devices
    assert not hasattr(device, "share_id") and device.device_name == "hami-gpu-0"


def test_64_concurrent_prepares(tmp_path, api):
    # 96 claims end up on hami-gpu-0: within its shares (split count 128) and memory (96 x 128Mi = 12Gi of 15Gi),
    # which the plugin checks before preparing.
    plugin = PluginProcess(tmp_path, api, extra_args=["--split-count", "128"]).start()
    try:
        _64_concurrent_prepares(plugin, api)
    finally:
        plugin.cleanup()


def _64_concurrent_prepares(plugin, api):
    small = {"memory": "128Mi", "cores": "0"}
    claims = create(api, *(allocated_claim(f"c{i}", device=f"hami-gpu-{i % 2}", **small) for i in range(64)))
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda c: plugin.prepare([c]), claims))
    for claim, response in zip(claims, responses, strict=True):
        entry = response.claims[claim["metadata"]["uid"]]
        assert entry.error == "" and len(entry.devices) == 1
        assert spec_path(plugin, claim).is_file()
    # One batch of 64 at once too (the kubelet batches per driver).
    batch = create(api, *(allocated_claim(f"b{i}", **small) for i in range(64)))
    response = plugin.prepare(batch)
    assert sorted(response.claims) == sorted(c["metadata"]["uid"] for c in batch)
    assert all(e.error == "" for e in response.claims.values())
    assert len(list(plugin.cdi_dir.glob("*.json"))) == 128


def test_repeated_prepare_is_idempotent_without_api_reads(plugin, api):
    (claim,) = create(api, allocated_claim("c1"))
    first = plugin.prepare([claim])
    reads = len(api.requests)
    second = plugin.prepare([claim])
    assert first == second
    assert len(api.requests) - reads <= 2  # the publisher may poll; the prepare did not read the claim
    assert not [r for r in api.requests[reads:] if "resourceclaims" in r[1]]


def test_per_claim_errors_do_not_fail_the_batch(plugin, api):
    good, other_node, unreserved = create(
        api,
        allocated_claim("good"),
        allocated_claim("other-node", pool="node-b"),
        allocated_claim("unreserved", reserved=False),
    )
    unknown = allocated_claim("never-created")
    response = plugin.prepare([good, other_node, unreserved, unknown])
    errors = {uid: entry.error for uid, entry in response.claims.items()}
    assert errors[good["metadata"]["uid"]] == ""
    assert "pool 'node-b'" in errors[other_node["metadata"]["uid"]]
    assert "not reserved for a pod" in errors[unreserved["metadata"]["uid"]]
    assert "not found" in errors[unknown["metadata"]["uid"]]
    for bad in (other_node, unreserved, unknown):
        assert not spec_path(plugin, bad).exists()


def test_malformed_config_and_unknown_capacity_are_claim_errors(plugin, api):
    bad_config = allocated_claim("bad-config")
    bad_config["status"]["allocation"]["devices"]["config"] = [
        {
            "source": "FromClaim",
            "opaque": {
                "driver": DRIVER,
                "parameters": {"apiVersion": "gpu.hami.io/v1alpha1", "kind": "VGpuConfig", "priority": "urgent"},
            },
        }
    ]
    bad_key = allocated_claim("bad-key")
    bad_key["status"]["allocation"]["devices"]["results"][0]["consumedCapacity"]["bandwidth"] = "1"
    no_consumed = allocated_claim("no-consumed")
    del no_consumed["status"]["allocation"]["devices"]["results"][0]["consumedCapacity"]
    create(api, bad_config, bad_key, no_consumed)
    response = plugin.prepare([bad_config, bad_key, no_consumed])
    assert "parameters.priority: got 'urgent'" in response.claims[bad_config["metadata"]["uid"]].error
    assert "consumedCapacity[bandwidth]" in response.claims[bad_key["metadata"]["uid"]].error
    assert "consumedCapacity: missing" in response.claims[no_consumed["metadata"]["uid"]].error
    assert not list(plugin.cdi_dir.glob("*.json"))
    assert plugin.proc.poll() is None


def test_unprepare_removes_spec_and_claim_dir(plugin, api):
    (claim,) = create(api, allocated_claim("c1"))
    plugin.prepare([claim])
    uid = claim["metadata"]["uid"]
    response = plugin.unprepare([claim])
    assert response.claims[uid].error == ""
    assert not spec_path(plugin, claim).exists()
    assert not (plugin.vgpu_dir / "claims" / uid).exists()
    # Unpreparing again, or a claim never seen, is fine.
    assert plugin.unprepare([claim, allocated_claim("ghost")]).claims[uid].error == ""


def test_kill_9_then_restart_keeps_prepared_claims(plugin, api):
    (claim,) = create(api, allocated_claim("c1"))
    before = plugin.prepare([claim])
    plugin.kill()
    api.delete("resourceclaims", "c1", "default")  # the restarted plugin must not need the API
    plugin.start()
    assert plugin.prepare([claim]) == before


def test_reboot_rebuilds_the_spec(plugin, api):
    (claim,) = create(api, allocated_claim("c1"))
    uid = claim["metadata"]["uid"]
    before = plugin.prepare([claim])
    (plugin.vgpu_dir / "claims" / uid / "vgpu.cache").write_bytes(b"usage of the previous boot")
    plugin.kill()
    for spec in plugin.cdi_dir.glob("*.json"):
        spec.unlink()  # /var/run is a tmpfs
    plugin.boot_id_file.write_text(str(uuid.uuid4()))
    plugin.start()
    assert plugin.prepare([claim]) == before
    assert spec_path(plugin, claim).is_file()
    assert not (plugin.vgpu_dir / "claims" / uid / "vgpu.cache").exists()


def test_corrupt_checkpoint_is_kept_reported_and_recovered(plugin, api):
    (claim,) = create(api, allocated_claim("c1"))
    plugin.prepare([claim])
    plugin.kill()
    checkpoint = plugin.plugin_dir / "checkpoint.json"
    checkpoint.write_bytes(checkpoint.read_bytes()[:-40])
    plugin.start()
    uid = claim["metadata"]["uid"]
    first = plugin.prepare([claim]).claims[uid]
    assert "checkpoint" in first.error and "moved to" in first.error
    assert list(plugin.plugin_dir.glob("checkpoint.json.corrupt-*"))
    second = plugin.prepare([claim]).claims[uid]
    assert second.error == "" and len(second.devices) == 1


def test_newer_checkpoint_refuses_claims_and_is_not_overwritten(tmp_path, api):
    process = PluginProcess(tmp_path, api)
    process.plugin_dir.mkdir(parents=True)
    checkpoint = process.plugin_dir / "checkpoint.json"
    content = json.dumps({"kind": "DraHamiCheckpoint", "version": 99, "checksum": "", "data": {}})
    checkpoint.write_text(content)
    process.start()
    try:
        (claim,) = create(api, allocated_claim("c1"))
        error = process.prepare([claim]).claims[claim["metadata"]["uid"]].error
        assert "version 99 was written by a newer dra-hami" in error
        assert checkpoint.read_text() == content
    finally:
        process.cleanup()


def test_unwritable_cdi_dir_is_a_claim_error_without_half_written_spec(plugin, api):
    (claim,) = create(api, allocated_claim("c1"))
    plugin.cdi_dir.mkdir(exist_ok=True)
    (plugin.cdi_dir / f"k8s.{DRIVER}-claim_{claim['metadata']['uid']}.json").mkdir()  # blocks the rename
    error = plugin.prepare([claim]).claims[claim["metadata"]["uid"]].error
    assert "writing the CDI spec" in error
    assert not [p for p in plugin.cdi_dir.iterdir() if p.is_file()]
    assert not (plugin.vgpu_dir / "claims" / claim["metadata"]["uid"]).exists()


def test_fields_from_a_newer_api_server_do_not_break_prepare(plugin, api):
    """Claims are read as raw JSON: fields this client release does not know are carried, never fatal."""
    claim = allocated_claim("c1")
    claim["status"]["allocation"]["devices"]["results"][0]["futureResultField"] = {"mode": "x"}
    claim["status"]["allocation"]["futureAllocationField"] = [1, 2]
    claim["spec"]["futureSpecField"] = True
    create(api, claim)
    entry = plugin.prepare([claim]).claims[claim["metadata"]["uid"]]
    assert entry.error == "" and len(entry.devices) == 1


def test_typed_client_models_would_drop_such_fields():
    """Why objects stay dicts: the official client's typed models silently drop unknown fields."""
    from kubernetes.client import ResourceV1ResourceClaim

    raw = allocated_claim("c1")
    raw["status"]["allocation"]["devices"]["results"][0]["futureResultField"] = {"mode": "x"}
    typed = ResourceV1ResourceClaim.from_dict({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", **raw})
    assert "futureResultField" not in json.dumps(typed.to_dict())
