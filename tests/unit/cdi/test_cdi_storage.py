"""Spec files: atomic writes (no partial or temp file ever left), removal, listing, reading."""

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from cdi_samples import KIND, device

import cdi
import cdi.storage

OTHER_KIND = "nvidia.com/gpu"


def _spec(kind: str = KIND, *names: str) -> cdi.Spec:
    return cdi.build_spec(kind, [device(name) for name in names or ("gpu0",)])


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- file names ----------------------------------------------------------------------------------


def test_file_name() -> None:
    assert cdi.spec_file_name(KIND, "uid-1") == "k8s.gpu.hami.io-claim_uid-1.json"
    assert cdi.spec_file_name(KIND, "ns/claim/req") == "k8s.gpu.hami.io-claim_ns_claim_req.json"
    assert cdi.spec_path("/var/run/cdi", KIND, "a") == Path("/var/run/cdi/k8s.gpu.hami.io-claim_a.json")


@pytest.mark.parametrize("file_id", ["", ".hidden", "a b", "a\x00b", "x\\y", "é"])
def test_bad_file_ids(file_id: str) -> None:
    with pytest.raises(cdi.CDIError, match=r"^file id: "):
        cdi.spec_file_name(KIND, file_id)


def test_file_name_needs_a_valid_kind() -> None:
    with pytest.raises(cdi.CDIError, match=r"^kind: "):
        cdi.spec_file_name("nokind", "a")


# --- write ---------------------------------------------------------------------------------------


def test_write_then_read(tmp_path: Path) -> None:
    spec = _spec(KIND, "1234-gpu0")
    path = cdi.write_spec(tmp_path, spec, "1234")
    assert path == tmp_path / "k8s.gpu.hami.io-claim_1234.json"
    assert path.read_text() == cdi.spec_to_json(spec)
    assert json.loads(path.read_text())["cdiVersion"] == "0.5.0"
    assert cdi.read_spec(path) == spec
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # runtimes may read as another user
    assert _leftovers(tmp_path) == [path.name]


def test_write_is_deterministic(tmp_path: Path) -> None:
    first = cdi.write_spec(tmp_path / "a", _spec(), "x").read_bytes()
    assert cdi.write_spec(tmp_path / "b", _spec(), "x").read_bytes() == first


def test_write_creates_the_directory(tmp_path: Path) -> None:
    path = cdi.write_spec(tmp_path / "run" / "cdi", _spec(), "x")
    assert path.is_file()


def test_write_replaces(tmp_path: Path) -> None:
    cdi.write_spec(tmp_path, _spec(KIND, "old"), "x")
    path = cdi.write_spec(tmp_path, _spec(KIND, "new"), "x")
    assert [d.name for d in cdi.read_spec(path).devices] == ["new"]
    assert _leftovers(tmp_path) == [path.name]


def test_invalid_spec_is_not_written(tmp_path: Path) -> None:
    spec = cdi.Spec(cdi_version="0.3.0", kind=KIND, devices=[device("-x")])
    with pytest.raises(cdi.CDIError, match=r"devices\[0\].name"):
        cdi.write_spec(tmp_path, spec, "x")
    assert _leftovers(tmp_path) == []


class _FailingFile:
    """Writes half of the data, then fails as a full disk would."""

    def __init__(self, real: Any, exc: BaseException) -> None:
        self.real, self.exc = real, exc

    def __enter__(self) -> "_FailingFile":
        return self

    def __exit__(self, *args: object) -> None:
        self.real.close()

    def fileno(self) -> int:
        return self.real.fileno()

    def write(self, data: bytes) -> int:
        self.real.write(data[: len(data) // 2])
        self.real.flush()
        raise self.exc

    def flush(self) -> None:
        self.real.flush()


@pytest.mark.parametrize(
    "exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()], ids=["ENOSPC", "interrupt"]
)
def test_failure_mid_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    seen: list[str] = []

    def failing_open(fd: int, mode: str) -> _FailingFile:
        seen.extend(_leftovers(tmp_path))  # the temp file exists while writing
        return _FailingFile(open(fd, mode), exc)  # closed by _FailingFile.__exit__

    monkeypatch.setattr(cdi.storage, "open", failing_open, raising=False)
    expected = cdi.CDIError if isinstance(exc, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as err:
        cdi.write_spec(tmp_path, _spec(), "x")
    if isinstance(exc, OSError):
        assert "No space left on device" in str(err.value)
    assert len(seen) == 1 and seen[0].startswith(".k8s.gpu.hami.io-claim_x.json.") and seen[0].endswith(".tmp")
    assert _leftovers(tmp_path) == []


def test_failure_mid_write_keeps_the_previous_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = cdi.write_spec(tmp_path, _spec(KIND, "old"), "x")
    before = path.read_bytes()

    def failing_open(fd: int, mode: str) -> _FailingFile:
        return _FailingFile(open(fd, mode), OSError(errno.EIO, "Input/output error"))

    monkeypatch.setattr(cdi.storage, "open", failing_open, raising=False)
    with pytest.raises(cdi.CDIError, match="Input/output error"):
        cdi.write_spec(tmp_path, _spec(KIND, "new"), "x")
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == [path.name]


@pytest.mark.parametrize("target", ["fsync", "replace"])
def test_failure_in_fsync_or_rename_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    def fail(*args: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(cdi.storage.os, target, fail)
    with pytest.raises(cdi.CDIError, match=r"cannot write CDI spec .*Input/output error"):
        cdi.write_spec(tmp_path, _spec(), "x")
    monkeypatch.undo()
    assert _leftovers(tmp_path) == []


def test_directory_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(cdi.CDIError, match="cannot create CDI spec directory"):
        cdi.write_spec(blocker / "cdi", _spec(), "x")


def test_unwritable_directory_is_a_cdi_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied")

    # Root ignores mode bits, so simulate what the kernel answers a non-root writer.
    monkeypatch.setattr(cdi.storage.tempfile, "mkstemp", denied)
    with pytest.raises(cdi.CDIError, match=r"cannot write CDI spec .*k8s.gpu.hami.io-claim_x.json: Permission denied"):
        cdi.write_spec(tmp_path, _spec(), "x")
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir(mode=0o555)
    try:
        with pytest.raises(cdi.CDIError, match="Permission denied"):
            cdi.write_spec(directory, _spec(), "x")
        assert _leftovers(directory) == []
    finally:
        directory.chmod(0o755)


# --- remove --------------------------------------------------------------------------------------


def test_remove_by_path_is_idempotent(tmp_path: Path) -> None:
    path = cdi.write_spec(tmp_path, _spec(), "x")
    assert cdi.remove_spec(tmp_path, path) is True
    assert not path.exists()
    assert cdi.remove_spec(tmp_path, path) is False


def test_remove_by_relative_path(tmp_path: Path) -> None:
    path = cdi.write_spec(tmp_path, _spec(), "x")
    assert cdi.remove_spec(tmp_path, Path(path.name)) is True


def test_remove_by_file_id(tmp_path: Path) -> None:
    cdi.write_spec(tmp_path, _spec(), "ns/claim")
    keep = cdi.write_spec(tmp_path, _spec(), "other")
    assert cdi.remove_spec(tmp_path, "ns/claim", kind=KIND) is True
    assert cdi.remove_spec(tmp_path, "ns/claim", kind=KIND) is False
    assert _leftovers(tmp_path) == [keep.name]


def test_remove_missing_directory(tmp_path: Path) -> None:
    assert cdi.remove_spec(tmp_path / "none", "x", kind=KIND) is False


def test_remove_by_file_id_needs_kind(tmp_path: Path) -> None:
    with pytest.raises(cdi.CDIError, match=r"^kind: "):
        cdi.remove_spec(tmp_path, "x")


def test_remove_refuses_files_outside_the_directory(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_text("{}")
    with pytest.raises(cdi.CDIError, match="is not in the CDI directory"):
        cdi.remove_spec(tmp_path / "cdi", outside)
    assert outside.exists()


# --- read ----------------------------------------------------------------------------------------


def test_read_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"cdiVersion": "0.3.0", "kind": KIND, "devices": [{"name": "-x"}]}))
    with pytest.raises(cdi.CDIError) as err:
        cdi.read_spec(path)
    assert err.value.field == "devices[0].name"
    assert str(path) in str(err.value)


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(cdi.CDIError, match="cannot read CDI spec"):
        cdi.read_spec(tmp_path / "none.json")


def test_read_yaml(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"cdiVersion: 0.3.0\nkind: {KIND}\ndevices:\n- name: g\n  containerEdits:\n    env: [A=1]\n")
    assert cdi.read_spec(path).kind == KIND


# --- list ----------------------------------------------------------------------------------------


def test_list_only_our_kind(tmp_path: Path) -> None:
    ours_b = cdi.write_spec(tmp_path, _spec(KIND, "b"), "b")
    ours_a = cdi.write_spec(tmp_path, _spec(KIND, "a"), "a")
    cdi.write_spec(tmp_path, _spec(OTHER_KIND), "x")
    listing = cdi.list_specs(tmp_path, KIND)
    assert list(listing.specs) == [ours_a, ours_b]  # file name order
    assert listing.specs[ours_a].devices[0].name == "a"
    assert listing.errors == {}


def test_list_finds_our_kind_under_any_file_name(tmp_path: Path) -> None:
    renamed = tmp_path / "whatever.json"
    renamed.write_text(cdi.spec_to_json(_spec()))
    assert list(cdi.list_specs(tmp_path, KIND).specs) == [renamed]


def test_list_skips_temp_hidden_and_foreign_files(tmp_path: Path) -> None:
    text = cdi.spec_to_json(_spec())
    (tmp_path / ".k8s.gpu.hami.io-claim_x.json.abc.tmp").write_text(text[:10])
    (tmp_path / ".hidden.json").write_text(text)
    (tmp_path / "notes.txt").write_text(text)
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "nvidia.com-gpu.json").write_text("{broken")  # someone else's broken file
    listing = cdi.list_specs(tmp_path, KIND)
    assert listing == cdi.SpecListing({}, {})


def test_list_reports_our_broken_files(tmp_path: Path) -> None:
    good = cdi.write_spec(tmp_path, _spec(), "good")
    truncated = tmp_path / "k8s.gpu.hami.io-claim_trunc.json"
    truncated.write_text(cdi.spec_to_json(_spec())[:40])
    invalid = tmp_path / "renamed.json"
    invalid.write_text(json.dumps({"cdiVersion": "0.3.0", "kind": KIND, "devices": []}))
    unreadable = tmp_path / "k8s.gpu.hami.io-claim_dir.json"
    unreadable.mkdir()  # not a file: skipped, not an error
    listing = cdi.list_specs(tmp_path, KIND)
    assert list(listing.specs) == [good]
    assert sorted(listing.errors) == [truncated, invalid]
    assert "not valid JSON" in str(listing.errors[truncated])
    assert str(listing.errors[invalid]).startswith("devices: must contain at least one device")


def test_list_missing_directory(tmp_path: Path) -> None:
    assert cdi.list_specs(tmp_path / "none", KIND) == cdi.SpecListing({}, {})


def test_list_needs_a_valid_kind(tmp_path: Path) -> None:
    with pytest.raises(cdi.CDIError, match=r"^kind: "):
        cdi.list_specs(tmp_path, "bad")


def test_atomic_write_not_durable_skips_fsync_but_replaces_atomically(tmp_path, monkeypatch):
    from cdi import atomic_write

    target = tmp_path / "f.json"
    target.write_text("old")
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    atomic_write(target, b"new", mode=0o444, durable=False)
    assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) == "0o444"
    assert synced == [] and [p.name for p in tmp_path.iterdir()] == ["f.json"]
    atomic_write(target, b"newer")
    assert len(synced) == 2  # the file and its directory
