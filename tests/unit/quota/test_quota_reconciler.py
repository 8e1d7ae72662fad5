"""The GpuQuota status reconciler: status follows the claims, deletions free quota, fresh charges are held."""

from __future__ import annotations

import datetime
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "webhook"))
from webhook_fixtures import FakeApi, claim, fleet, quota, slice_spec

from dra_hami.quota.reconciler import QuotaReconciler, status_updates
from dra_hami.quota.usage import Accounting

NOW = datetime.datetime(2026, 12, 3, 9, 0, 0, tzinfo=datetime.UTC)


def reconciler(api: FakeApi, **kwargs) -> QuotaReconciler:
    return QuotaReconciler(api, "hami-core-gpu.project-hami.io", clock=lambda: NOW, **kwargs)


def test_status_follows_claims_and_deleting_a_claim_frees_quota() -> None:
    api = FakeApi(fleet("t4x2"))
    api.add_quota(quota(memory="8Gi", gpus=2))
    api.add_quota(quota("elsewhere", namespace="other", gpus=1))
    api.add_claim(claim("a", slice_spec("4Gi", "30")))
    api.add_claim(claim("b", slice_spec("2Gi", "10")))
    r = reconciler(api)
    assert r.reconcile() == 2
    assert api.quotas[("ns", "budget")]["status"]["used"] == {"memory": "6Gi", "cores": 40, "gpus": 2}
    assert api.quotas[("other", "elsewhere")]["status"]["used"] == {"memory": "0", "cores": 0, "gpus": 0}
    assert r.reconcile() == 0  # nothing changed: nothing written
    del api.claims[("ns", "a")]
    assert r.reconcile({"ns"}) == 1
    assert api.quotas[("ns", "budget")]["status"]["used"] == {"memory": "2Gi", "cores": 10, "gpus": 1}


def test_a_fresh_admission_charge_is_held_then_released() -> None:
    acct = Accounting.from_slices("hami-core-gpu.project-hami.io", fleet("t4x2"))
    charged = quota(gpus=2, used={"memory": "4Gi", "cores": 30, "gpus": 1}, charged_at="2026-12-03T08:59:55Z")
    updates, held = status_updates([charged], [], acct, NOW)  # 5 s ago: the claim may not be stored yet
    assert (updates, held) == ([], True)
    later = NOW + datetime.timedelta(seconds=10)
    updates, held = status_updates([charged], [], acct, later)  # never created (a later webhook refused it)
    assert updates == [("ns", "budget", {"used": {"memory": "0", "cores": 0, "gpus": 0}})] and not held
    # once the claim exists, the claims alone give the same number and nothing is held
    updates, held = status_updates([charged], [claim("a", slice_spec("4Gi", "30"))], acct, NOW)
    assert (updates, held) == ([], False)


def test_run_reacts_to_watch_events_without_waiting_for_the_resync() -> None:
    api = FakeApi(fleet("t4x2"))
    api.add_quota(quota(gpus=4))
    events: list[dict] = []
    arrived = threading.Event()

    class Watcher:
        def list_objects(self, path: str, query=None, first_page_only=False):
            return [], "1"

        def watch(self, path: str, version: str, timeout: int, query=None):
            arrived.wait(5)
            arrived.clear()
            yield from events if "resourceclaims" in path else []

    r = reconciler(api, resync=3600, watch=Watcher())
    stop = threading.Event()
    thread = threading.Thread(target=r.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while r.passes < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert api.quotas[("ns", "budget")]["status"]["used"]["gpus"] == 0
        api.add_claim(claim("a", slice_spec("1Gi")))
        events.append({"type": "ADDED", "object": {"kind": "ResourceClaim", "metadata": {"namespace": "ns"}}})
        arrived.set()
        while api.quotas[("ns", "budget")]["status"]["used"]["gpus"] != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert api.quotas[("ns", "budget")]["status"]["used"]["gpus"] == 1
    finally:
        stop.set()
        arrived.set()
        thread.join(5)
    assert not thread.is_alive()
