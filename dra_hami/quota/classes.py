"""Which DeviceClasses hand out our GPUs: every one of them is subject to GpuQuota and VGpuConfig admission.

Checking only the DeviceClass named after the driver let a claim through another class that selects our
devices skip GpuQuota (issue 18 item 9). A class counts as ours when it *could* select one of our devices:

- it has no selectors (it selects every device in the cluster, ours included);
- one of its selector expressions names our driver (``device.driver == '<driver>'``, our attribute domain,
  ...), whether or not such devices are published right now;
- all its selectors match one of our published devices (a selector written another way, e.g.
  ``device.driver.startsWith('hami')``);
- we cannot read it (a class the API server accepted but we cannot parse or compile): fail closed.

Counting a foreign class as ours only makes admission stricter; missing one of ours would be a bypass. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dra_hami.allocator.cel import SelectorCache
from dra_hami.allocator.errors import AllocatorError
from dra_hami.allocator.model import Device, parse_device_class, parse_slices
from dra_hami.kube import objects as k8s


def our_classes(driver: str, classes: Iterable[dict[str, Any]], slices: Iterable[dict[str, Any]]) -> frozenset[str]:
    """Names of the DeviceClasses (raw API objects) that can select ``driver``'s devices; always ``driver``."""
    ours = {driver}
    try:
        devices = [d for d in parse_slices(list(slices)) if d.key.driver == driver]
    except AllocatorError:
        devices = []  # the name test below still catches the classes that matter
    cache = SelectorCache()
    for raw in classes:
        name = k8s.name(raw)
        if name and _selects_ours(raw, driver, devices, cache):
            ours.add(name)
    return frozenset(ours)


def _selects_ours(raw: dict[str, Any], driver: str, devices: list[Device], cache: SelectorCache) -> bool:
    try:
        device_class = parse_device_class(raw)
    except AllocatorError:
        return True
    if not device_class.selectors or any(driver in expr for expr in device_class.selectors):
        return True
    where = f"DeviceClass {device_class.name}: spec.selectors"
    try:
        for expr in device_class.selectors:
            cache.compile(expr, where)
    except AllocatorError:
        return True
    for device in devices:
        try:
            if all(cache.matches(expr, device, where) for expr in device_class.selectors):
                return True
        except AllocatorError:
            return True  # a selector that errors on our device: the scheduler may still see it otherwise
    return False
