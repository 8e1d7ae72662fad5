"""Node scenarios: libvgpu really loaded in a scheduled pod, GPU sharing and release, plugin/kubelet failures.

All of them use the session's dra-hami plugin (fake t4x2: two 15Gi "Tesla T4") and the real kube-scheduler, which
allocates the claims from the plugin's ResourceSlices (consumable capacity).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cluster import DRIVER, REPO_ROOT, Cluster, HamiPlugin, wait_for
from e2e_images import IMAGE_PREFIX, shared_libraries
from e2e_objects import CLAIMS_API, allocated_claim, busybox_pod, claim_template

pytestmark = pytest.mark.e2e

GiB = 1 << 30
LIBVGPU_DIR = REPO_ROOT / "libvgpu"
ALLOC_IMAGE = f"{IMAGE_PREFIX}/libvgpu-alloc:1"
FAKE_LIB_DIR = "/usr/local/fake-driver"  # where the image keeps the fake libcuda.so.1 / libnvidia-ml.so.1


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def libvgpu(hami_plugin: HamiPlugin) -> Path:
    """Build libvgpu (a no-op when built) and install the real libvgpu.so where the plugin's CDI specs mount it
    from (the session plugin starts with an empty stand-in). Returns the build directory."""
    proc = subprocess.run(["make", "-C", str(LIBVGPU_DIR), "-j2"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"make -C libvgpu failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    build = LIBVGPU_DIR / "build"
    tmp = hami_plugin.libvgpu.with_name(".libvgpu.so.tmp")
    shutil.copy2(build / "libvgpu.so", tmp)
    os.replace(tmp, hami_plugin.libvgpu)  # a new inode: containers started earlier keep their (empty) stand-in
    return build


@pytest.fixture(scope="session")
def alloc_image(images, libvgpu: Path) -> str:
    """busybox + the dynamically linked `alloc` test program, its glibc at the host's paths and the fake driver."""
    fake = libvgpu / "fake"
    alloc = libvgpu / "programs" / "alloc"
    files = shared_libraries(alloc, libvgpu / "libvgpu.so", exclude=fake)
    files["/usr/local/bin/alloc"] = alloc
    files[f"{FAKE_LIB_DIR}/libcuda.so.1"] = fake / "libcuda.so.1"
    files[f"{FAKE_LIB_DIR}/libnvidia-ml.so.1"] = fake / "libnvidia-ml.so.1"
    return images.add_busybox_based(ALLOC_IMAGE, files)


# ----------------------------------------------------------------------------------------------- helpers


def resource_claim(name: str, memory: str, cores: int) -> dict[str, Any]:
    template = claim_template(name, memory, cores)
    return {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": name},
            "spec": template["spec"]["spec"]}  # fmt: skip


def allocated_device(claim: dict[str, Any]) -> str:
    (result,) = claim["status"]["allocation"]["devices"]["results"]
    return result["device"]


def allocated_claims(cluster: Cluster) -> list[dict[str, Any]]:
    items = cluster.kube.get(f"{CLAIMS_API}/resourceclaims").get("items", [])
    return [c for c in items if c.get("status", {}).get("allocation")]


def wait_node_idle(cluster: Cluster, plugin: HamiPlugin, timeout: float = 120) -> None:
    """Earlier tests' pods and claims are gone: no allocated claim, no CDI spec, no claim dir (full capacity)."""
    wait_for(
        lambda: not allocated_claims(cluster) and not plugin.cdi_spec_uids() and not plugin.claim_dirs(),
        timeout,
        "the node to be idle (no allocated claims, CDI specs or claim dirs left by earlier tests)",
        details=lambda: (
            f"allocated: {[(c['metadata']['namespace'], c['metadata']['name']) for c in allocated_claims(cluster)]}"
            f"\nCDI specs: {plugin.cdi_spec_uids()}\nclaim dirs: {plugin.claim_dirs()}"
        ),
    )


def claims_in_use(cluster: Cluster) -> set[str]:
    """UIDs of claims reserved for a pod that still exists (what the plugin should have prepared). A reservation
    for a pod already deleted is not "in use": the resourceclaim controller drops it a little later."""

    def pod_exists(namespace: str, ref: dict[str, Any]) -> bool:
        pod = cluster.pod(ref.get("name", ""), namespace) if ref.get("resource") == "pods" else None
        return pod is not None and pod["metadata"]["uid"] == ref.get("uid")

    return {
        c["metadata"]["uid"]
        for c in allocated_claims(cluster)
        if any(pod_exists(c["metadata"]["namespace"], ref) for ref in c["status"].get("reservedFor") or [])
    }


def assert_no_leaks(cluster: Cluster, plugin: HamiPlugin, timeout: float = 90) -> None:
    """Eventually, the CDI specs and claim dirs on the node are exactly those of the claims pods use."""

    def consistent() -> bool:
        in_use = claims_in_use(cluster)
        return plugin.cdi_spec_uids() == in_use and plugin.claim_dirs() == in_use

    wait_for(
        consistent,
        timeout,
        "the node's CDI specs and claim dirs to match the claims in use",
        details=lambda: (
            f"in use: {sorted(claims_in_use(cluster))}\nCDI specs: {sorted(plugin.cdi_spec_uids())}\n"
            f"claim dirs: {sorted(plugin.claim_dirs())}\n--- plugin log\n{plugin.component.tail(30)}"
        ),
    )


def restart_count(cluster: Cluster, pod_name: str, namespace: str) -> int:
    pod = cluster.pod(pod_name, namespace) or {}
    return sum(cs.get("restartCount", 0) for cs in pod.get("status", {}).get("containerStatuses", []))


def container_id(cluster: Cluster, pod_name: str, namespace: str) -> str:
    pod = cluster.pod(pod_name, namespace) or {}
    (status,) = pod["status"]["containerStatuses"]
    return status["containerID"]


def wait_plugin_published(cluster: Cluster, plugin: HamiPlugin, old_uids: set[str], timeout: float = 90) -> None:
    """The plugin is registered with the (current) kubelet and its slices are there and not ``old_uids``."""
    wait_for(
        lambda: (
            plugin.check_alive(),
            (s := plugin.slices()) and not old_uids & {x["metadata"]["uid"] for x in s},
        )[1],
        timeout,
        "the plugin's ResourceSlices to be (re-)published",
        details=lambda: node_logs(cluster),
    )


def node_logs(cluster: Cluster) -> str:
    plugin = cluster.components["dra-hami-kubelet-plugin"]
    return f"--- plugin\n{plugin.tail(30)}\n--- kubelet\n{cluster.components['kubelet'].tail(20)}"


def registered_lines(cluster: Cluster) -> list[str]:
    return cluster.components["kubelet"].grep("Registered DRA plugin", f'driverName="{DRIVER}"')


def restart_kubelet(cluster: Cluster, between: Any = None) -> None:
    kubelet = cluster.components["kubelet"]
    kubelet.stop()
    if between is not None:
        between()
    kubelet.start()
    wait_for(lambda: (kubelet.check_alive(), cluster.node_ready())[1], 120, "the node to be Ready again",
             details=lambda: f"{cluster.node_conditions()}\n{kubelet.tail(30)}")  # fmt: skip


# ----------------------------------------------------------------------------------------------- scenarios


def test_libvgpu_caps_device_memory_in_a_scheduled_pod(
    cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict, namespace: str, alloc_image: str
) -> None:
    """The scheduler allocates 4Gi/30 cores of a T4; in the container, /etc/ld.so.preload (mounted by our CDI spec)
    loads the real libvgpu into the dynamically linked `alloc`, which then sees a 4Gi GPU and gets OOM on its
    second 3Gi allocation. The fake driver shows the claim's GPU under the UUID the plugin published. A process
    started without the container's environment (as by su -, ssh or env -i) gets the same cap from the claim's
    read-only limits file (HAMi#1090), and variables a tenant adds cannot raise it (issue 18)."""
    kube = cluster.kube
    kube.create(claim_template("slice-4g-30", "4Gi", 30), namespace)
    script = (
        # the GPU's UUID from our per-GPU limit variable: "<uuid>,<bytes>,<cores>"
        "uuid=$(env | sed -n 's/^VGPU_DEVICE_LIMIT_[^=]*=\\(GPU-[^,]*\\),.*/\\1/p' | head -n1); "
        "echo uuid=$uuid; echo preload=$(cat /etc/ld.so.preload); "
        "FAKE_CUDA_UUIDS=$uuid alloc --size=3221225472 --count=2; echo exit=$?; "
        "env -i PATH=$PATH LD_LIBRARY_PATH=$LD_LIBRARY_PATH FAKE_CUDA_DEVICE_COUNT=1 FAKE_CUDA_MEMORY=15Gi "
        "FAKE_CUDA_UUIDS=$uuid alloc --size=3221225472 --count=2 > /tmp/bare.out; bare_exit=$?; "
        "sed 's/^/bare_/' /tmp/bare.out; echo bare_exit=$bare_exit; "
        # issue 18: an added entry of the GPU, the kill switch and a region of its own raise nothing
        "VGPU_DEVICE_LIMIT_zz=$uuid,18446744073709551615,0 CUDA_DISABLE_CONTROL=1 CUDA_DEVICE_MEMORY_LIMIT=0 "
        "CUDA_DEVICE_MEMORY_SHARED_CACHE=/tmp/mine.cache FAKE_CUDA_UUIDS=$uuid "
        "alloc --size=3221225472 --count=2 > /tmp/raise.out; raise_exit=$?; "
        "sed 's/^/raise_/' /tmp/raise.out; echo raise_exit=$raise_exit; "
        "exec sleep 3600"  # keep the pod (and its claim) until the test has read the allocation
    )
    env = {"LD_LIBRARY_PATH": FAKE_LIB_DIR, "FAKE_CUDA_DEVICE_COUNT": "1", "FAKE_CUDA_MEMORY": "15Gi"}
    kube.create(busybox_pod("alloc", script, template="slice-4g-30", image=alloc_image, env=env), namespace)
    cluster.wait_pod_phase("alloc", ["Running"], namespace, timeout=180)
    log = cluster.wait_pod_log("alloc", r"^raise_exit=\d+$", "main", namespace, timeout=60)
    out = dict(line.split("=", 1) for line in log.splitlines() if "=" in line)

    # the UUID the container was given is the one our ResourceSlice publishes for the allocated device
    claim = allocated_claim(cluster, "alloc", namespace)
    device = allocated_device(claim)
    devices = [d for s in hami_plugin.slices() for d in s["spec"]["devices"]]
    published = {d["name"]: d["attributes"]["uuid"]["string"] for d in devices}
    assert out.get("uuid") == published[device], log
    assert out.get("preload") == "/usr/local/vgpu/libvgpu.so", log

    # libvgpu is loaded: the device has 4Gi, not the fake's 15Gi, and the second 3Gi allocation is refused
    assert out.get("total_mem") == str(4 * GiB), log
    assert out.get("info_total_during") == str(4 * GiB), log
    assert out.get("count") == "1" and out.get("allocated") == str(3 * GiB), log
    assert out.get("info_free_during") == str(1 * GiB), log
    assert out.get("result") == "CUDA_ERROR_OUT_OF_MEMORY", log
    assert out.get("exit") == "3", log

    # without any of the container's variables, the claim's read-only limits file gives the same cap
    assert out.get("bare_total_mem") == str(4 * GiB), log
    assert out.get("bare_count") == "1" and out.get("bare_result") == "CUDA_ERROR_OUT_OF_MEMORY", log
    assert out.get("bare_exit") == "3", log

    # variables the tenant sets itself cannot raise it
    assert out.get("raise_total_mem") == str(4 * GiB), log
    assert out.get("raise_count") == "1" and out.get("raise_result") == "CUDA_ERROR_OUT_OF_MEMORY", log
    assert out.get("raise_exit") == "3", log


def test_pods_share_gpus_and_a_deleted_pod_frees_its_share(
    cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict, namespace: str
) -> None:
    """4 pods of 6Gi fill 2x15Gi (two per GPU), a 5th stays Pending; deleting one unprepares it (CDI spec and
    claim dir gone) and the Pending pod gets its share."""
    kube = cluster.kube
    wait_node_idle(cluster, hami_plugin)
    kube.create(claim_template("slice-6g", "6Gi", 10), namespace)
    names = [f"share-{i}" for i in range(4)]
    for name in names:
        kube.create(busybox_pod(name, template="slice-6g", restart="Always"), namespace)
    for name in names:
        cluster.wait_pod_phase(name, ["Running"], namespace, timeout=180)
    claims = {name: allocated_claim(cluster, name, namespace) for name in names}
    devices = {name: allocated_device(c) for name, c in claims.items()}
    assert Counter(devices.values()) == {"hami-gpu-0": 2, "hami-gpu-1": 2}, devices
    uids = {name: c["metadata"]["uid"] for name, c in claims.items()}
    assert hami_plugin.cdi_spec_uids() == set(uids.values())
    assert hami_plugin.claim_dirs() == set(uids.values())
    for name in names:  # each container got its own 6Gi limit
        log = cluster.wait_pod_log(name, r"^READY$", "main", namespace)
        assert log == "READY\n"

    # no GPU has 6Gi left: the scheduler cannot allocate the 5th claim
    kube.create(busybox_pod("waiting", template="slice-6g", restart="Always"), namespace)
    wait_for(
        lambda: "cannot allocate all claims" in cluster.events_for("waiting", namespace),
        60,
        "a FailedScheduling event 'cannot allocate all claims' for the 5th pod",
        details=lambda: cluster.describe_pod("waiting", namespace),
    )
    pod = cluster.pod("waiting", namespace)
    assert pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName"), cluster.describe_pod("waiting")

    # deleting a pod unprepares its claim: CDI spec and claim dir go away, the others stay
    gone = names[0]
    cluster.delete_pod(gone, namespace)
    wait_for(
        lambda: uids[gone] not in hami_plugin.cdi_spec_uids() and uids[gone] not in hami_plugin.claim_dirs(),
        60,
        "the plugin to remove the deleted pod's CDI spec and claim dir",
        details=lambda: hami_plugin.component.tail(30),
    )
    remaining = {uids[n] for n in names[1:]}
    assert remaining <= hami_plugin.cdi_spec_uids() and remaining <= hami_plugin.claim_dirs()

    # the freed 6Gi goes to the pending pod, on the same GPU
    cluster.wait_pod_phase("waiting", ["Running"], namespace, timeout=120)
    assert allocated_device(allocated_claim(cluster, "waiting", namespace)) == devices[gone]
    for name in names[1:]:
        assert cluster.pod(name, namespace)["status"]["phase"] == "Running"
    assert_no_leaks(cluster, hami_plugin)


def test_plugin_sigkill_keeps_pods_and_recovers(
    cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict, namespace: str
) -> None:
    """SIGKILL the plugin with pods running: they keep running; restarted, it prepares a new pod; nothing leaks."""
    kube = cluster.kube
    kube.create(claim_template("slice-2g", "2Gi", 10), namespace)
    for name in ("before-0", "before-1"):
        kube.create(busybox_pod(name, template="slice-2g", restart="Always"), namespace)
    for name in ("before-0", "before-1"):
        cluster.wait_pod_phase(name, ["Running"], namespace, timeout=180)
    ids = {name: container_id(cluster, name, namespace) for name in ("before-0", "before-1")}
    registrations = len(registered_lines(cluster))

    hami_plugin.kill()
    time.sleep(3)  # the kubelet notices the dead sockets; pods must not care
    for name in ids:
        pod = cluster.pod(name, namespace)
        assert pod["status"]["phase"] == "Running", cluster.describe_pod(name, namespace)
    hami_plugin.start()
    wait_for(
        lambda: (hami_plugin.check_alive(), len(registered_lines(cluster)) > registrations and hami_plugin.slices())[1],
        60,
        "the restarted plugin to register with the kubelet again and publish its slices",
        details=lambda: node_logs(cluster),
    )

    # a new pod is prepared by the restarted plugin and runs
    kube.create(busybox_pod("after", template="slice-2g", restart="Always"), namespace)
    cluster.wait_pod_phase("after", ["Running"], namespace, timeout=120)
    cluster.wait_pod_log("after", r"^READY$", "main", namespace)
    # the old pods' containers were never restarted
    for name, cid in ids.items():
        assert container_id(cluster, name, namespace) == cid
        assert restart_count(cluster, name, namespace) == 0
    assert_no_leaks(cluster, hami_plugin)

    # and the restarted plugin still unprepares
    cluster.delete_pod("before-0", namespace)
    assert_no_leaks(cluster, hami_plugin)


def test_kubelet_restart_keeps_pods_and_slices_come_back(
    cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict, namespace: str
) -> None:
    kube = cluster.kube
    kube.create(claim_template("slice-2g", "2Gi", 10), namespace)
    kube.create(busybox_pod("steady", template="slice-2g", restart="Always"), namespace)
    cluster.wait_pod_phase("steady", ["Running"], namespace, timeout=180)
    cid = container_id(cluster, "steady", namespace)
    old_slices = {s["metadata"]["uid"] for s in hami_plugin.slices()}
    started = time.monotonic()

    restart_kubelet(cluster)
    # the kubelet deletes the node's slices when it starts; the plugin re-registers and publishes them again
    wait_plugin_published(cluster, hami_plugin, old_slices)
    wait_for(hami_plugin.kubelet_registered, 30, "the plugin to register with the new kubelet")
    cluster.wait_pod_phase("steady", ["Running"], namespace, timeout=60)
    assert container_id(cluster, "steady", namespace) == cid, "the kubelet restart restarted the container"

    # the node still prepares new pods after the restart
    kube.create(busybox_pod("fresh", template="slice-2g", restart="Always"), namespace)
    cluster.wait_pod_phase("fresh", ["Running"], namespace, timeout=120)
    assert_no_leaks(cluster, hami_plugin)
    assert time.monotonic() - started < 180


def test_simulated_reboot_rebuilds_cdi_specs(
    cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict, namespace: str
) -> None:
    """Stop kubelet and plugin, wipe the CDI dir (a tmpfs on a real node), change the boot id, start both: a new
    pod sharing the allocated claim gets it prepared again; the plugin, seeing a new boot, rebuilds the CDI spec
    and the container (which needs that spec) starts. (The restarted kubelet does not re-prepare the claim of
    the pod that kept running, so the spec is only back once a container needs it.)"""
    kube = cluster.kube
    boot_id = cluster.dir / "boot_id"
    boot_id.write_text(f"{uuid.uuid4()}\n")
    if hami_plugin.boot_id_file != boot_id:  # from now on the plugin reads its boot id from our file
        hami_plugin.boot_id_file = boot_id
        hami_plugin.restart()
        wait_for(hami_plugin.slices, 60, "the plugin's slices after switching to --boot-id-file")

    kube.create(resource_claim("shared-2g", "2Gi", 10), namespace)
    kube.create(busybox_pod("first", claim="shared-2g", restart="Always"), namespace)
    cluster.wait_pod_phase("first", ["Running"], namespace, timeout=180)
    claim_uid = allocated_claim(cluster, "first", namespace)["metadata"]["uid"]
    assert claim_uid in hami_plugin.cdi_spec_uids()
    old_slices = {s["metadata"]["uid"] for s in hami_plugin.slices()}

    def reboot() -> None:
        hami_plugin.stop()
        for entry in cluster.cdi_dir.iterdir():
            entry.unlink()
        boot_id.write_text(f"{uuid.uuid4()}\n")
        hami_plugin.start()

    restart_kubelet(cluster, between=reboot)
    wait_plugin_published(cluster, hami_plugin, old_slices)
    cluster.wait_pod_phase("first", ["Running"], namespace, timeout=60)

    # a second pod on the same (already allocated) claim: its container is created from the rebuilt spec
    second = busybox_pod("second", "env | sort; echo READY; exec sleep 3600", claim="shared-2g", restart="Always")
    kube.create(second, namespace)
    cluster.wait_pod_phase("second", ["Running"], namespace, timeout=120)
    assert claim_uid in hami_plugin.cdi_spec_uids()
    log = cluster.wait_pod_log("second", r"^READY$", "main", namespace)
    env = dict(line.split("=", 1) for line in log.splitlines() if "=" in line)
    assert env.get("CUDA_DEVICE_MEMORY_LIMIT_0") == "2048m", log
    assert_no_leaks(cluster, hami_plugin)
