"""The devices a prepare may use: the pool this node last published, not what discovery says right now.

A claim was allocated against the published slices, so that is what a prepare checks it against. Live
discovery would make every prepare on the node fail while one GPU is off the bus (NVML enumeration can
fail as a whole) and would need NVML on the prepare path. The publisher hands each pool it published (or
found in sync) to ``Inventory.published``; the inventory is also kept in a file, so a plugin restarted while
the API server is down still knows it. Before the first publish of a fresh node, discovery is the fallback.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cdi import atomic_write
from dra_hami import wire
from dra_hami.plugin.claim import NodeDevice
from dra_hami.quantity import to_int

log = logging.getLogger(__name__)

KIND = "DraHamiInventory"


class InventoryError(Exception):
    """No inventory is known (never published, no file, discovery failing); the message says why."""


def node_devices(slices: list[dict[str, Any]]) -> dict[str, NodeDevice]:
    """NodeDevice per published device name; the claim checks compare against what we advertise."""
    devices = {}
    for slice_ in slices:
        for device in (slice_.get("spec") or {}).get("devices") or []:
            attributes = device.get("attributes") or {}
            capacity = device.get("capacity") or {}
            shares = capacity.get(wire.CAPACITY_SHARES) or {}
            devices[device["name"]] = NodeDevice(
                name=device["name"],
                uuid=attributes["uuid"]["string"],
                minor=attributes["minor"]["int"],
                pci_bus_id=(attributes.get("pcieBusID") or {}).get("string", ""),
                memory=to_int(capacity[wire.CAPACITY_MEMORY]["value"], f"{device['name']}.capacity.memory"),
                shares=to_int(shares["value"], f"{device['name']}.capacity.shares") if shares else 0,
            )
    return devices


class Inventory:
    """Thread-safe: the publisher thread writes, prepare threads read."""

    def __init__(self, path: Path, fallback: Callable[[], list[dict[str, Any]]]) -> None:
        self._path = path
        self._fallback = fallback  # the pool discovery would publish now (raises when it cannot)
        self._lock = threading.Lock()
        self._devices: dict[str, NodeDevice] | None = None

    def published(self, slices: list[dict[str, Any]]) -> None:
        """The pool this node's slices hold now (just written or found in sync)."""
        devices = node_devices(slices)
        with self._lock:
            if devices == self._devices:
                return
            self._devices = devices
        try:
            self._save(devices)
        except OSError as err:  # the in-memory copy still serves; the next change tries again
            log.warning("saving the published inventory to %s: %s", self._path, err)

    def devices(self) -> dict[str, NodeDevice]:
        with self._lock:
            if self._devices is not None:
                return self._devices
        loaded = self._load()
        if loaded is not None:
            with self._lock:
                if self._devices is None:
                    self._devices = loaded
                return self._devices
        try:
            return node_devices(self._fallback())  # not kept: the first publish decides
        except Exception as err:  # discovery failed and nothing was ever published
            raise InventoryError(
                f"this node has not published its devices yet and GPU discovery failed ({err}); the kubelet retries"
            ) from err

    def _load(self) -> dict[str, NodeDevice] | None:
        try:
            document = json.loads(self._path.read_bytes())
            if document.get("kind") != KIND:
                raise ValueError(f"kind is {document.get('kind')!r}, expected {KIND!r}")
            return {d["name"]: NodeDevice(**d) for d in document["devices"]}
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("ignoring the saved inventory %s (%s); it is rewritten at the next publish", self._path, err)
            return None

    def _save(self, devices: dict[str, NodeDevice]) -> None:
        document = {"kind": KIND, "devices": [asdict(d) for _, d in sorted(devices.items())]}
        self._path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self._path, json.dumps(document, indent=1).encode(), mode=0o600)
