"""Peer comparison: the same 50-pod burst against dra-hami and against the upstream example DRA driver.

Workload (the same for both, one cluster, one kubelet): 50 busybox pods created at once, each with its own
ResourceClaim from one ResourceClaimTemplate, each claim one device. Each claim fits and both drivers have room
to spare, so the figures are about the driver path and not about waiting for capacity:

- dra-hami: fake ``h100x8`` node (8 GPUs, 10 shares each = 80 slots); a claim asks for ``memory: 1Gi, cores: 10``
  (consumable capacity: up to 10 claims share a GPU).
- example driver (``sigs.k8s.io/dra-example-driver``, pinned in build/dra-example-driver/go.mod): 64 fake GPUs,
  a claim takes a whole one (this release does not share devices). Its API client gets ``--kube-api-qps 100
  --kube-api-burst 200`` (PEER_EXAMPLE_QPS, PEER_EXAMPLE_BURST): its defaults (5/10) throttle the claim reads of
  its kubelet-plugin helper, and dra-hami's client has no client-side limit, so the defaults would measure a
  setting rather than the driver.

dra-hami runs first, so any cold-start cost lands on it (PEER_EXAMPLE_FIRST=1 swaps the order). Figures: wall
time from the first create to all 50 pods Running (and to all scheduled), and NodePrepareResources latency p50/p99
timed at the kubelet (see peer.py).
The goal is "no slower than the example driver". The test allows MAX_FACTOR (PEER_MAX_FACTOR) on the time to
all Running, for the noise of a shared 2-core machine, and PREPARE_FACTOR (PEER_PREPARE_FACTOR) on the prepare p50.
Both figures swing with the machine's load: on a busy machine ours' prepare p50 was up to 3x the example
driver's (a Python plugin starved of CPU while 50 containers start), on a quiet one 0.6x; so the prepare bound
only guards against gross regressions. Run alone, with the figures: ``pytest -m e2e -s
tests/e2e/test_peer_comparison.py``.
"""

from __future__ import annotations

import os

import pytest
from cluster import DRIVER, Cluster, HamiPlugin, wait_for
from e2e_objects import claim_template
from peer import EXAMPLE_DRIVER, BurstResult, ExampleDriverPlugin, clean_up_burst, example_device_class, run_burst

pytestmark = pytest.mark.e2e

PODS = 50
HAMI_PROFILE, HAMI_GPUS = "h100x8", 8
HAMI_CLAIM = {"memory": "1Gi", "cores": "10"}
EXAMPLE_GPUS = 64
# Ours may take at most this many times the example driver's time to all-Running.
MAX_FACTOR = float(os.environ.get("PEER_MAX_FACTOR", "1.5"))
# A guard against gross regressions of ours' prepare p50, not the goal (1x): it swings with load (see the docstring).
PREPARE_FACTOR = float(os.environ.get("PEER_PREPARE_FACTOR", "5"))
# The example driver's API client limits (its own defaults are 5/10: see the module docstring).
EXAMPLE_QPS = int(os.environ.get("PEER_EXAMPLE_QPS", "100"))
EXAMPLE_BURST = int(os.environ.get("PEER_EXAMPLE_BURST", "200"))
# dra-hami runs first (any cold-start cost lands on ours) unless PEER_EXAMPLE_FIRST=1.
EXAMPLE_FIRST = os.environ.get("PEER_EXAMPLE_FIRST", "") not in ("", "0")


def _switch_profile(plugin: HamiPlugin, profile: str, gpus: int) -> None:
    """Restart the session's plugin with another fake profile and wait for it to register and publish it."""
    kubelet = plugin.cluster.components["kubelet"]
    registrations = len(kubelet.grep("Registered DRA plugin", f'driverName="{DRIVER}"'))
    plugin.stop()
    plugin.profile = profile
    plugin.start()

    def published() -> bool:
        plugin.check_alive()
        names = {d["name"] for s in plugin.slices() for d in s["spec"].get("devices", [])}
        registered = len(kubelet.grep("Registered DRA plugin", f'driverName="{DRIVER}"')) > registrations
        return registered and names == {f"hami-gpu-{i}" for i in range(gpus)}

    wait_for(published, 60, f"dra-hami to register and publish the {gpus} GPUs of {profile}",
             details=lambda: plugin.component.tail(30))  # fmt: skip


def _wait_no_containers(cluster: Cluster) -> None:
    """Let the kubelet finish tearing the last run down, so it does not eat into the next one."""
    wait_for(lambda: cluster.ctr("tasks", "ls", "-q").stdout.split() == [], 60, "all containers to be gone")


def _report(result: BurstResult) -> BurstResult:
    print(f"\n[peer] {result.row()}")  # shown with -s, and with the captured output of a failure
    return result


def _run_hami(cluster: Cluster, plugin: HamiPlugin, namespace: str) -> BurstResult:
    saved_profile = plugin.profile
    try:
        _switch_profile(plugin, HAMI_PROFILE, HAMI_GPUS)
        result = _report(run_burst(cluster, namespace, DRIVER, claim_template("hami-burst", **HAMI_CLAIM), PODS))
        clean_up_burst(cluster, namespace, result, cluster.cdi_dir)
    finally:  # later tests expect the session's plugin as it was
        _switch_profile(plugin, saved_profile, 2 if saved_profile == "t4x2" else HAMI_GPUS)
    _wait_no_containers(cluster)
    return result


def _run_example(cluster: Cluster, namespace: str) -> BurstResult:
    cluster.kube.apply(example_device_class())
    example = ExampleDriverPlugin(cluster, EXAMPLE_GPUS, qps=EXAMPLE_QPS, burst=EXAMPLE_BURST)
    try:
        example.start()
        template = claim_template("example-burst", device_class=EXAMPLE_DRIVER)
        result = _report(run_burst(cluster, namespace, EXAMPLE_DRIVER, template, PODS))
        clean_up_burst(cluster, namespace, result, cluster.cdi_dir)
    finally:
        example.stop()
        cluster.kube.delete(f"/apis/resource.k8s.io/v1/deviceclasses/{EXAMPLE_DRIVER}")
    _wait_no_containers(cluster)
    return result


def test_fifty_pod_burst_hami_vs_example_driver(
    cluster: Cluster, hami_plugin: HamiPlugin, device_class: dict, namespace: str
) -> None:
    if EXAMPLE_FIRST:
        theirs = _run_example(cluster, namespace)
        ours = _run_hami(cluster, hami_plugin, namespace)
    else:
        ours = _run_hami(cluster, hami_plugin, namespace)
        theirs = _run_example(cluster, namespace)

    for r in (ours, theirs):
        # every claim was prepared once, without errors, and every call was timed
        assert r.failed_prepares == 0, r.row()
        assert len(r.claim_uids) == PODS and len(r.prepare_s) == PODS, r.row()
    assert ours.running_s <= MAX_FACTOR * theirs.running_s, (
        f"dra-hami took {ours.running_s:.2f} s to get {PODS} pods Running, the example driver "
        f"{theirs.running_s:.2f} s (allowed: x{MAX_FACTOR})"
    )
    assert ours.prepare_p50_ms <= PREPARE_FACTOR * theirs.prepare_p50_ms, (
        f"dra-hami's prepare p50 is {ours.prepare_p50_ms:.1f} ms, the example driver's "
        f"{theirs.prepare_p50_ms:.1f} ms (allowed: x{PREPARE_FACTOR})"
    )


# The kubelet's lines as v1.36 writes them (--vmodule=dra_plugin=4), shortened: what prepare_rpc_latencies parses.
_CALL_LINE = (
    'I1203 {t}   19892 dra_plugin.go:80] "Calling NodePrepareResources rpc" logger="dra-plugin" '
    'driverName="{d}" endpoint="/x/dra.sock" request="claims:{{namespace:\\"ns\\" uid:\\"{u}\\" name:\\"c\\"}}"'
)
_DONE_LINE = (
    'I1203 {t}   19892 dra_plugin.go:99] "Done calling NodePrepareResources rpc" logger="dra-plugin" '
    'driverName="{d}" endpoint="/x/dra.sock" response="claims:{{key:\\"{u}\\" value:{{devices:{{}}}}}}" err=null'
)
_FAILED_LINE = (
    'I1203 {t}   19892 dra_plugin.go:99] "Done calling NodePrepareResources rpc" logger="dra-plugin" '
    'driverName="{d}" endpoint="/x/dra.sock" response=null err="rpc error: code = Unavailable"'
)


def test_prepare_rpc_latencies_pairs_calls_by_claim_and_driver() -> None:
    from peer import percentile, prepare_rpc_latencies

    a, b = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
    lines = [
        _CALL_LINE.format(t="09:21:34.400000", d=DRIVER, u=a),
        _CALL_LINE.format(t="09:21:34.410000", d=DRIVER, u=b),
        _CALL_LINE.format(t="09:21:34.415000", d=EXAMPLE_DRIVER, u=a),  # another driver: ignored
        _FAILED_LINE.format(t="09:21:34.420000", d=DRIVER),  # b's first call failed
        _DONE_LINE.format(t="09:21:34.450000", d=DRIVER, u=a),
        _CALL_LINE.format(t="09:21:35.000000", d=DRIVER, u=b),  # b's retry is the call that counts
        _DONE_LINE.format(t="09:21:35.025000", d=DRIVER, u=b),
        "I1203 09:21:35.100000   19892 kubelet.go:1] unrelated",
    ]
    calls = prepare_rpc_latencies(lines, DRIVER)
    assert calls.seconds == pytest.approx({a: 0.050, b: 0.025})
    assert calls.failed == 1 and calls.unanswered == 0
    other = prepare_rpc_latencies(lines, EXAMPLE_DRIVER)
    assert other.seconds == {} and other.unanswered == 1
    # across midnight
    wrap = [
        _CALL_LINE.format(t="23:59:59.990000", d=DRIVER, u=a),
        _DONE_LINE.format(t="00:00:00.010000", d=DRIVER, u=a),
    ]
    assert prepare_rpc_latencies(wrap, DRIVER).seconds[a] == pytest.approx(0.020)
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile(range(1, 101), 99) == 99
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
