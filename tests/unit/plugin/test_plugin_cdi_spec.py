from pathlib import Path

from plugin_factories import DRIVER, NODE, claim, result, vgpu_config

from dra_hami.exporter.claims import claim_limits
from dra_hami.plugin.cdi_spec import CdiSettings, build_spec, claim_identity
from dra_hami.plugin.claim import read_allocation

SETTINGS = CdiSettings(DRIVER, Path("/usr/local/vgpu"), Path("/usr/local/vgpu/libvgpu.so"))


def spec_for(obj, devices, settings=SETTINGS):
    allocation = read_allocation(obj, obj["metadata"]["uid"], DRIVER, NODE, devices)
    return build_spec(allocation, devices, NODE, settings)


def env_of(edits):
    return dict(entry.split("=", 1) for entry in edits["env"])


def test_single_slice_env_mounts_and_answer(devices):
    obj = claim([result(memory="4Gi", cores="30", share_id="aaaaaaaa-0000-4000-8000-000000000001")])
    uid = obj["metadata"]["uid"]
    spec, prepared = spec_for(obj, devices)

    assert spec["kind"] == f"k8s.{DRIVER}/claim"
    (device,) = spec["devices"]
    assert device["name"] == f"{uid}-hami-gpu-0-aaaaaaaa-0000-4000-8000-000000000001"
    env = env_of(device["containerEdits"])
    assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "4096m"
    assert env["CUDA_DEVICE_SM_LIMIT_0"] == "30"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    (limit_key,) = [k for k in env if k.startswith("VGPU_DEVICE_LIMIT_")]
    assert limit_key == f"VGPU_DEVICE_LIMIT_{uid.replace('-', '')[:8]}_0"
    assert env[limit_key] == f"GPU-00000000-0000-0000-0000-000000000000,{4 << 30},30"

    claim_env = env_of(spec["containerEdits"])
    assert claim_env["CUDA_DEVICE_MEMORY_SHARED_CACHE"] == f"/usr/local/vgpu/claims/{uid}/vgpu.cache"
    assert claim_identity(spec) == ("default", "c1")
    mounts = {m["containerPath"]: m for m in spec["containerEdits"]["mounts"]}
    assert mounts["/etc/ld.so.preload"]["hostPath"] == "/usr/local/vgpu/ld.so.preload"
    assert "ro" in mounts["/etc/ld.so.preload"]["options"]
    assert mounts["/usr/local/vgpu/libvgpu.so"]["hostPath"] == "/usr/local/vgpu/libvgpu.so"
    assert mounts[f"/usr/local/vgpu/claims/{uid}"]["options"] == ["rw", "nosuid", "nodev", "noexec", "bind"]
    # the claim's limits: a read-only, nosuid, nodev bind mount of a file outside the claim's directory
    limits = mounts[f"/usr/local/vgpu/limits/{uid}"]
    assert limits["hostPath"] == f"/usr/local/vgpu/limits/{uid}"
    assert limits["options"] == ["ro", "nosuid", "nodev", "bind"]

    (answer,) = prepared
    assert answer.pool_name == NODE and answer.device_name == "hami-gpu-0"
    assert answer.request_names == ("gpu",)
    assert answer.share_id == "aaaaaaaa-0000-4000-8000-000000000001"
    assert answer.cdi_device_ids == (
        f"k8s.{DRIVER}/claim={device['name']}",
        "nvidia.com/gpu=GPU-00000000-0000-0000-0000-000000000000",
    )


def test_indices_follow_pci_bus_order_not_names(devices):
    # hami-gpu-1 sits on bus 3b, hami-gpu-0 on bus af: inside the container gpu-1 is CUDA device 0.
    obj = claim([result("hami-gpu-0", "a", "8Gi", "60"), result("hami-gpu-1", "b", "4Gi", "30")])
    spec, prepared = spec_for(obj, devices)
    by_device = {p.device_name: env_of(d["containerEdits"]) for p, d in zip(prepared, spec["devices"], strict=True)}
    assert by_device["hami-gpu-1"]["CUDA_DEVICE_MEMORY_LIMIT_0"] == "4096m"
    assert by_device["hami-gpu-0"]["CUDA_DEVICE_MEMORY_LIMIT_1"] == "8192m"
    assert [p.device_name for p in prepared] == ["hami-gpu-1", "hami-gpu-0"]


def test_two_shares_of_one_gpu_get_one_summed_limit(devices):
    """libvgpu takes the lowest of several entries of one GPU (a process could add one), so the claim's
    total on a GPU is ONE entry, carried by every share device of that GPU."""
    obj = claim([result(request="a", memory="2Gi", cores="70"), result(request="b", memory="1Gi", cores="50")])
    spec, prepared = spec_for(obj, devices)
    assert len({d["name"] for d in spec["devices"]}) == 2
    for device in spec["devices"]:
        env = env_of(device["containerEdits"])
        assert env["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3072m"
        assert env["CUDA_DEVICE_SM_LIMIT_0"] == "100"  # capped
    limits = {(k, v) for d in spec["devices"] for k, v in env_of(d["containerEdits"]).items() if "VGPU_DEVICE" in k}
    uid8 = obj["metadata"]["uid"].replace("-", "")[:8]
    assert limits == {(f"VGPU_DEVICE_LIMIT_{uid8}_0", f"GPU-00000000-0000-0000-0000-000000000000,{3 << 30},100")}
    assert claim_limits(spec) == {"GPU-00000000-0000-0000-0000-000000000000": (3 << 30, 100)}
    assert {p.request_names for p in prepared} == {("a",), ("b",)}


def test_device_node_injection(devices):
    settings = CdiSettings(DRIVER, Path("/v"), Path("/v/libvgpu.so"), injection="device-nodes")
    spec, prepared = spec_for(claim([result("hami-gpu-1")]), devices, settings)
    assert spec["devices"][0]["containerEdits"]["deviceNodes"] == [{"path": "/dev/nvidia1"}]
    assert {n["path"] for n in spec["containerEdits"]["deviceNodes"]} == {
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
        "/dev/nvidia-uvm-tools",
    }
    assert len(prepared[0].cdi_device_ids) == 1


def test_no_injection_and_index_template(devices):
    none = CdiSettings(DRIVER, Path("/v"), Path("/v/l.so"), injection="none")
    spec, prepared = spec_for(claim([result()]), devices, none)
    assert "deviceNodes" not in spec["containerEdits"] and len(prepared[0].cdi_device_ids) == 1
    by_index = CdiSettings(DRIVER, Path("/v"), Path("/v/l.so"), nvidia_cdi_template="nvidia.com/gpu={minor}")
    _, prepared = spec_for(claim([result("hami-gpu-1")]), devices, by_index)
    assert prepared[0].cdi_device_ids[1] == "nvidia.com/gpu=1"


def test_config_env_lands_on_its_request_only(devices):
    obj = claim(
        [result(request="a"), result("hami-gpu-1", request="b")],
        config=[vgpu_config(requests=["a"], coreLimitPolicy="force", oomPolicy="kill")],
    )
    spec, prepared = spec_for(obj, devices)
    envs = {p.request_names[0]: env_of(d["containerEdits"]) for p, d in zip(prepared, spec["devices"], strict=True)}
    assert envs["a"]["GPU_CORE_UTILIZATION_POLICY"] == "force"
    assert envs["a"]["VGPU_OOM_POLICY"] == "kill"
    assert "GPU_CORE_UTILIZATION_POLICY" not in envs["b"]


def test_admin_access_sets_no_limits(devices):
    admin = result(share_id=None, adminAccess=True)
    admin.pop("consumedCapacity")
    spec, _ = spec_for(claim([admin]), devices)
    env = env_of(spec["devices"][0]["containerEdits"])
    assert not [k for k in env if "LIMIT" in k]
