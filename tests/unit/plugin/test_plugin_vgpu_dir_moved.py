"""hostPaths.vgpuDir moved between installs: claims prepared under the old directory are rebuilt and cleaned
up there (where their specs mount them from), not under the plugin's current --vgpu-dir."""

from __future__ import annotations

import pytest
from plugin_factories import DRIVER, NODE, claim, result

from dra_hami.kube.client import ApiError
from dra_hami.plugin.cdi_spec import CdiSettings, recorded_host_paths
from dra_hami.plugin.checkpoint import Checkpoint
from dra_hami.plugin.state import PluginState


class Api:
    def __init__(self) -> None:
        self.claims: dict[tuple[str, str], dict] = {}

    def add(self, obj):
        from dra_hami.plugin.state import ClaimRef

        self.claims[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return ClaimRef(obj["metadata"]["namespace"], obj["metadata"]["name"], obj["metadata"]["uid"])

    def get_resource_claim(self, namespace, name):
        try:
            return self.claims[(namespace, name)]
        except KeyError:
            raise ApiError(404, f"{name} not found", "NotFound") from None


class Specs:
    def __init__(self) -> None:
        self.files: dict[str, dict] = {}

    def write(self, uid, spec):
        self.files[uid] = spec

    def remove(self, uid):
        self.files.pop(uid, None)

    def holds(self, uid, spec):
        return self.files.get(uid) == spec

    def specs(self):
        return dict(self.files)


@pytest.fixture
def moved(tmp_path, devices):
    """A claim prepared with --vgpu-dir=old, and a plugin state that now runs with --vgpu-dir=new."""
    api, specs = Api(), Specs()
    libvgpu = tmp_path / "libvgpu.so"
    libvgpu.write_bytes(b"lib")
    old, new = tmp_path / "old", tmp_path / "new"

    def make(vgpu_dir, boot="boot-1"):
        settings = CdiSettings(DRIVER, vgpu_dir, libvgpu, injection="none")
        return PluginState(api, NODE, lambda: devices, settings, specs, Checkpoint(tmp_path / "cp.json"), boot)

    ref = api.add(claim([result()]))
    assert not make(old).prepare([ref])[ref.uid].error
    assert (old / "claims" / ref.uid).is_dir() and (old / "limits" / ref.uid).is_file()
    return api, specs, ref, old, new, make


def test_the_spec_records_where_the_claim_lives(moved):
    _api, specs, ref, old, _new, _make = moved
    assert recorded_host_paths(specs.files[ref.uid], ref.uid) == (old / "claims" / ref.uid, old / "limits" / ref.uid)


def test_unprepare_cleans_the_old_location(moved):
    _api, specs, ref, old, new, make = moved
    state = make(new)
    assert state.unprepare([ref]) == {ref.uid: ""}
    assert not (old / "claims" / ref.uid).exists()
    assert not (old / "limits" / ref.uid).exists()
    assert ref.uid not in specs.files and ref.uid not in state.records()


def test_sweep_of_a_deleted_claim_cleans_the_old_location(moved):
    api, _specs, ref, old, new, make = moved
    api.claims.clear()
    report = make(new).sweep()
    assert report.unprepared == [ref.uid]
    assert not (old / "claims" / ref.uid).exists() and not (old / "limits" / ref.uid).exists()


def test_heal_rebuilds_in_the_old_location_the_containers_mount(moved):
    _api, _specs, ref, old, new, make = moved
    (old / "limits" / ref.uid).unlink()
    assert make(new).heal() == [ref.uid]
    assert (old / "limits" / ref.uid).is_file()
    assert not (new / "claims" / ref.uid).exists() and not (new / "limits" / ref.uid).exists()


def test_a_reboot_resets_the_claim_where_it_was_prepared(moved):
    _api, _specs, ref, old, new, make = moved
    state = make(new, boot="boot-2")
    assert not state.prepare([ref])[ref.uid].error
    assert (old / "claims" / ref.uid).is_dir() and (old / "limits" / ref.uid).is_file()
    assert not (new / "claims" / ref.uid).exists()
    assert state.unprepare([ref]) == {ref.uid: ""}
    assert not (old / "claims" / ref.uid).exists()
