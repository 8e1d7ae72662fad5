"""Where the kubelet plugin puts its two sockets; the demo's stand-in kubelet looks for them in the same places."""

from __future__ import annotations

from pathlib import Path


def dra_socket(plugin_dir: Path) -> Path:
    """The DRA gRPC service (the registration tells the kubelet this path)."""
    return plugin_dir / "dra.sock"


def registration_socket(registry_dir: Path, driver_name: str) -> Path:
    """The registration service; the kubelet finds plugins by watching its plugins_registry directory."""
    return registry_dir / f"{driver_name}-reg.sock"
