"""Injectable health for fake GPUs: a file that tests and the e2e harness edit while the plugin runs.

The file states what is wrong *now* (level, not events), so a missed poll loses nothing and recovery is
deleting the entry::

    # <plugin-dir>/fake-health.yaml
    hami-gpu-0: {xid: 79}                      # device name or GPU UUID
    GPU-1c2d...: {reason: gpu-lost, message: fell off the bus}

``xid: N`` means reason ``xid``; an XID on the ignore list is treated like NVML's: not a health problem.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dra_hami.health.tracker import REASON_LOST, REASON_XID, HealthTracker

log = logging.getLogger(__name__)


class FakeHealthError(ValueError):
    """The fake health file is malformed; the message names the entry and the fix."""


@dataclass(frozen=True)
class FakeProblem:
    reason: str
    message: str
    xid: int | None


def parse(raw: Any, source: str) -> dict[str, FakeProblem]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FakeHealthError(f"{source}: expected a mapping of device name or UUID to {{xid: N}} or {{reason: ...}}")
    out = {}
    for key, entry in raw.items():
        entry = entry or {}
        if not isinstance(entry, dict) or set(entry) - {"xid", "reason", "message"}:
            raise FakeHealthError(f"{source}: {key}: expected {{xid: N}} or {{reason: WORD, message: TEXT}}")
        xid = entry.get("xid")
        if xid is not None and (not isinstance(xid, int) or isinstance(xid, bool) or xid <= 0):
            raise FakeHealthError(f"{source}: {key}.xid: {xid!r} is not a positive integer")
        reason = str(entry.get("reason") or (REASON_XID if xid is not None else REASON_LOST))
        message = str(entry.get("message") or (f"XID {xid} (injected)" if xid is not None else f"{reason} (injected)"))
        out[str(key)] = FakeProblem(reason, message, xid)
    return out


class FakeHealthSource:
    """Polls the file (cheap stat) and makes the tracker say exactly what it says."""

    def __init__(self, tracker: HealthTracker, path: Path, ignored_xids: frozenset[int] = frozenset()):
        self._tracker = tracker
        self._path = path
        self._ignored = ignored_xids
        self._stamp: tuple[int, int, int] | None = None
        self._marked: set[str] = set()

    @property
    def path(self) -> Path:
        return self._path

    def poll(self) -> None:
        try:
            st = os.stat(self._path)
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp and stamp is not None:
            return
        try:
            wanted = parse(yaml.safe_load(self._path.read_text()) if stamp else None, str(self._path))
        except (OSError, yaml.YAMLError, FakeHealthError) as err:
            log.error("fake health file %s ignored until fixed: %s", self._path, err)
            self._stamp = stamp
            return
        self._stamp = stamp
        self.apply(wanted)

    def apply(self, wanted: dict[str, FakeProblem]) -> None:
        marked = set()
        for key, problem in wanted.items():
            gpu = self._tracker.device_of(key)
            if gpu is None:
                log.error("fake health file %s: %s is no GPU of this node", self._path, key)
                continue
            if problem.xid is not None and problem.xid in self._ignored:
                log.info("fake health: XID %d on %s is on the ignore list", problem.xid, gpu.device_name)
                continue
            self._tracker.mark_unhealthy(gpu.uuid, problem.reason, problem.message, problem.xid)
            marked.add(gpu.uuid)
        for uuid in self._marked - marked:
            self._tracker.mark_healthy(uuid)
        self._marked = marked

    def run(self, stop: threading.Event, interval: float = 0.5, inventory_interval: float = 10.0) -> None:
        waited = 0.0
        while not stop.is_set():
            try:
                self.poll()
                if waited >= inventory_interval:
                    waited = 0.0
                    self._tracker.refresh_inventory()
                    self._stamp = None  # a GPU that appeared may be named in the file
            except Exception:
                log.exception("fake health poll failed")
            stop.wait(interval)
            waited += interval
