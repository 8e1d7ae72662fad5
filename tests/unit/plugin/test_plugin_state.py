"""Prepare/unprepare ordering and crash points, with the API and the CDI dir replaced by dicts."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from plugin_factories import DRIVER, NODE, claim, result

from dra_hami import wire
from dra_hami.kube.client import ApiError
from dra_hami.plugin.cdi_spec import CONTAINER_CLAIMS_DIR, CdiSettings
from dra_hami.plugin.checkpoint import Checkpoint, ClaimState
from dra_hami.plugin.state import ClaimRef, PluginState


class Api:
    def __init__(self) -> None:
        self.claims: dict[tuple[str, str], dict] = {}
        self.reads = 0

    def add(self, obj):
        self.claims[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        return ClaimRef(obj["metadata"]["namespace"], obj["metadata"]["name"], obj["metadata"]["uid"])

    def get_resource_claim(self, namespace, name):
        self.reads += 1
        try:
            return self.claims[(namespace, name)]
        except KeyError:
            raise ApiError(404, f"{name} not found", "NotFound") from None


class Specs:
    def __init__(self) -> None:
        self.files: dict[str, dict] = {}
        self.fail_writes = False

    def write(self, uid, spec):
        if self.fail_writes:
            raise OSError("No space left on device")
        self.files[uid] = spec

    def remove(self, uid):
        self.files.pop(uid, None)

    def holds(self, uid, spec):
        return self.files.get(uid) == spec

    def specs(self):
        return dict(self.files)


class CrashingCheckpoint(Checkpoint):
    """Raises on the n-th save, as if the process died right there."""

    crash_on: int | None = None
    saves = 0

    def write(self, content):
        self.saves += 1
        if self.saves == self.crash_on:
            raise SystemExit("killed")
        super().write(content)


@pytest.fixture
def env(tmp_path, devices):
    api, specs = Api(), Specs()
    libvgpu = tmp_path / "libvgpu.so"
    libvgpu.write_bytes(b"lib")
    settings = CdiSettings(DRIVER, tmp_path / "vgpu", libvgpu, injection="none")

    def make(checkpoint=None, boot="boot-1"):
        return PluginState(
            api, NODE, lambda: devices, settings, specs, checkpoint or Checkpoint(tmp_path / "cp.json"), boot
        )

    return api, specs, settings, make


def test_crash_before_completion_is_redone_by_the_next_prepare(env, tmp_path):
    api, specs, _settings, make = env
    ref = api.add(claim([result()]))
    crashing = CrashingCheckpoint(tmp_path / "cp.json")
    crashing.crash_on = 1  # after the spec and claim dir are written, before the checkpoint records them
    with pytest.raises(SystemExit):
        make(crashing).prepare([ref])
    assert ref.uid in specs.files
    assert ref.uid not in Checkpoint(tmp_path / "cp.json").load()  # one write per prepare: none yet

    state = make()
    result_ = state.prepare([ref])[ref.uid]
    assert result_.error == "" and len(result_.devices) == 1
    assert state.records()[ref.uid].state is ClaimState.COMPLETED


def test_crash_before_completion_is_undone_by_unprepare(env, tmp_path):
    api, specs, settings, make = env
    ref = api.add(claim([result()]))
    crashing = CrashingCheckpoint(tmp_path / "cp.json")
    crashing.crash_on = 1
    with pytest.raises(SystemExit):
        make(crashing).prepare([ref])
    assert make().unprepare([ref]) == {ref.uid: ""}
    assert specs.files == {} and not settings.claim_dir(ref.uid).exists()
    assert Checkpoint(tmp_path / "cp.json").load() == {}


def test_crash_before_completion_is_swept(env, tmp_path):
    # Nobody calls again (the pod went away while the plugin was down): the sweep removes what no record names.
    api, specs, settings, make = env
    ref = api.add(claim([result()]))
    crashing = CrashingCheckpoint(tmp_path / "cp.json")
    crashing.crash_on = 1
    with pytest.raises(SystemExit):
        make(crashing).prepare([ref])
    assert settings.claim_dir(ref.uid).is_dir()
    report = make().sweep()
    assert report.orphan_specs == [ref.uid] and report.orphan_dirs == [ref.uid]
    assert specs.files == {} and not settings.claim_dir(ref.uid).exists()


def test_one_checkpoint_write_per_prepare(env, tmp_path):
    api, _specs, _settings, make = env
    refs = [api.add(claim([result()], name=f"c{i}")) for i in range(3)]
    counting = CrashingCheckpoint(tmp_path / "cp.json")
    state = make(counting)
    for ref in refs:
        assert state.prepare([ref])[ref.uid].error == ""
    assert counting.saves == 3
    assert state.prepare(refs[1:]) and counting.saves == 3  # repeats are answered from memory
    assert all(r.state is ClaimState.COMPLETED for r in Checkpoint(tmp_path / "cp.json").load().values())


def test_failed_spec_write_leaves_nothing(env, tmp_path):
    api, specs, settings, make = env
    ref = api.add(claim([result()]))
    specs.fail_writes = True
    state = make()
    assert "No space left on device" in state.prepare([ref])[ref.uid].error
    assert state.records() == {} and not settings.claim_dir(ref.uid).exists()


def test_missing_libvgpu_is_a_clear_error(env, tmp_path):
    api, specs, settings, make = env
    ref = api.add(claim([result()]))
    settings.libvgpu_path.unlink()
    assert "libvgpu is not installed at" in make().prepare([ref])[ref.uid].error
    assert specs.files == {}


def test_sweep_unprepares_deleted_claims_and_orphans(env, tmp_path):
    api, specs, settings, make = env
    kept, gone, recreated = (api.add(claim([result()], name=n)) for n in ("kept", "gone", "recreated"))
    state = make()
    state.prepare([kept, gone, recreated])
    del api.claims[("default", "gone")]
    api.claims[("default", "recreated")]["metadata"]["uid"] = "new-uid"  # same name, new object
    specs.files["orphan-uid"] = {"kind": "x"}
    settings.claim_dir("orphan-dir").mkdir(parents=True)

    report = state.sweep()
    assert sorted(report.unprepared) == sorted([gone.uid, recreated.uid])
    assert report.orphan_specs == ["orphan-uid"] and report.orphan_dirs == ["orphan-dir"]
    assert set(specs.files) == {kept.uid} and set(state.records()) == {kept.uid}


def test_sweep_keeps_claims_when_the_api_is_down(env):
    api, specs, _settings, make = env
    ref = api.add(claim([result()]))
    state = make()
    state.prepare([ref])

    def broken(namespace, name):
        raise ApiError(0, "connection refused", "Unreachable")

    api.get_resource_claim = broken
    assert state.sweep().unprepared == []
    assert ref.uid in specs.files


def test_prepare_after_reboot_resets_the_shared_region(env, tmp_path):
    api, specs, settings, make = env
    ref = api.add(claim([result()]))
    make().prepare([ref])
    region = settings.claim_dir(ref.uid) / "vgpu.cache"
    region.write_bytes(b"old boot")
    specs.files.clear()
    rebooted = make(boot="boot-2")
    assert rebooted.prepare([ref])[ref.uid].error == ""
    assert ref.uid in specs.files and not region.exists()
    assert Checkpoint(tmp_path / "cp.json").load()[ref.uid].boot_id == "boot-2"


def test_same_boot_reprepare_keeps_the_shared_region(env):
    api, _specs, settings, make = env
    ref = api.add(claim([result()]))
    state = make()
    state.prepare([ref])
    region = settings.claim_dir(ref.uid) / "vgpu.cache"
    region.write_bytes(b"live usage")
    reads = api.reads
    assert state.prepare([ref])[ref.uid].error == ""
    assert region.read_bytes() == b"live usage" and api.reads == reads


def test_preload_file_names_the_container_library(env):
    *_, settings, make = env
    make()
    assert Path(settings.preload_path).read_text() == "/usr/local/vgpu/libvgpu.so\n"


def test_group_commit_shares_writes_between_concurrent_callers():
    import threading
    import time

    from dra_hami.plugin.state import GroupCommit

    writes = []

    def slow_save():
        writes.append(1)
        time.sleep(0.05)

    commit = GroupCommit(slow_save)
    threads = [threading.Thread(target=commit.wait_durable) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= len(writes) <= 3  # one for the first caller, one or two for everybody who came meanwhile


def test_group_commit_failure_reaches_the_callers_and_is_retried():
    from dra_hami.plugin.state import GroupCommit

    attempts = []

    def flaky_save():
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("disk full")

    commit = GroupCommit(flaky_save)
    with pytest.raises(OSError, match="disk full"):
        commit.wait_durable()
    commit.wait_durable()
    assert len(attempts) == 2


def _limits_lines(settings, uid) -> list[str]:
    text = settings.limits_file(uid).read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_limits_file_holds_the_claims_variables_outside_the_claim_dir(env):
    """Issue 18: the claim's limits live in a root-owned 0444 file outside the tenant-writable claim dir
    (its CDI spec mounts it read-only); sessions without the container's variables read it too (HAMi#1090)."""
    api, specs, settings, make = env
    ref = api.add(claim([result()]))
    make().prepare([ref])
    spec = specs.files[ref.uid]
    want = [*spec["devices"][0]["containerEdits"]["env"], *spec["containerEdits"]["env"]]
    assert _limits_lines(settings, ref.uid) == want
    assert any(v.startswith("VGPU_DEVICE_LIMIT_") for v in want)
    assert any(v.startswith("CUDA_DEVICE_MEMORY_SHARED_CACHE=/usr/local/vgpu/claims/") for v in want)
    path = settings.limits_file(ref.uid)
    assert path.parent == settings.vgpu_dir / "limits" and settings.claim_dir(ref.uid) not in path.parents
    assert stat.S_IMODE(path.stat().st_mode) == 0o444 and stat.S_IMODE(path.parent.stat().st_mode) == 0o755
    assert not (settings.claim_dir(ref.uid) / "vgpu.env").exists()  # nothing a tenant could rewrite
    mounts = {m["containerPath"]: m for m in spec["containerEdits"]["mounts"]}
    assert mounts[f"/usr/local/vgpu/limits/{ref.uid}"]["hostPath"] == str(path)


def test_reprepare_restores_a_missing_limits_file(env):
    api, _specs, settings, make = env
    ref = api.add(claim([result()]))
    state = make()
    state.prepare([ref])
    limits = settings.limits_file(ref.uid)
    want = limits.read_text()
    region = settings.claim_dir(ref.uid) / "vgpu.cache"
    region.write_bytes(b"live usage")
    limits.unlink()  # e.g. prepared by a plugin version that did not write it
    assert state.prepare([ref])[ref.uid].error == ""
    assert limits.read_text() == want and region.read_bytes() == b"live usage"


def test_unprepare_and_sweep_remove_limits_files(env):
    api, _specs, settings, make = env
    ref = api.add(claim([result()]))
    state = make()
    state.prepare([ref])
    assert settings.limits_file(ref.uid).is_file()
    assert state.unprepare([ref]) == {ref.uid: ""}
    assert not settings.limits_file(ref.uid).exists()
    orphan = settings.limits_file("0a0a0a0a-0000-4000-8000-000000000000")
    orphan.write_text("VGPU_DEVICE_LIMIT_x=GPU-1,1,0\n")
    state.sweep()
    assert not orphan.exists()


def test_claim_file_names_match_libvgpu():
    """The plugin writes where libvgpu looks: same file name, same container directory."""
    limits_h = (Path(__file__).resolve().parents[3] / "libvgpu" / "src" / "limits_file.h").read_text()
    assert f'#define VGPU_LIMITS_DIR "{wire.CONTAINER_LIMITS_DIR}"' in limits_h
    header = (Path(__file__).resolve().parents[3] / "libvgpu" / "src" / "claim_env.h").read_text()
    assert f'#define VGPU_CLAIM_ENV_FILE "{wire.CLAIM_ENV_FILE}"' in header
    assert f'#define VGPU_CLAIMS_DIR_DEFAULT "{CONTAINER_CLAIMS_DIR}"' in header


if TYPE_CHECKING:  # mypy (.ci/run) checks that each fake still has the shape of the Protocol it stands in for
    from dra_hami.plugin.state import ClaimReader, SpecStore

    _claim_reader: type[ClaimReader] = Api
    _spec_store: type[SpecStore] = Specs
