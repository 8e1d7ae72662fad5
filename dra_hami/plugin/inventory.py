"""The devices a prepare may use: read back from the very slices this node publishes."""

from __future__ import annotations

from typing import Any

from dra_hami import wire
from dra_hami.plugin.claim import NodeDevice
from dra_hami.quantity import to_int


def node_devices(slices: list[dict[str, Any]]) -> dict[str, NodeDevice]:
    """NodeDevice per published device name; the claim checks compare against what we advertise."""
    devices = {}
    for slice_ in slices:
        for device in (slice_.get("spec") or {}).get("devices") or []:
            attributes = device.get("attributes") or {}
            capacity = device.get("capacity") or {}
            devices[device["name"]] = NodeDevice(
                name=device["name"],
                uuid=attributes["uuid"]["string"],
                minor=attributes["minor"]["int"],
                pci_bus_id=(attributes.get("pcieBusID") or {}).get("string", ""),
                memory=to_int(capacity[wire.CAPACITY_MEMORY]["value"], f"{device['name']}.capacity.memory"),
            )
    return devices
