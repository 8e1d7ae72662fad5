"""`demo --output`: only the demo's files are written, replaced or removed."""

from __future__ import annotations

import pytest

from dra_hami.demo.output import MARKER, OutputError, check_output, write_output


def specs(tmp_path, *names):
    cdi = tmp_path / "run-cdi"
    cdi.mkdir(exist_ok=True)
    for old in cdi.iterdir():
        old.unlink()
    for name in names:
        (cdi / name).write_text("{}")
    return cdi


def test_a_new_or_empty_directory_is_fine(tmp_path):
    check_output(tmp_path / "new", force=False)
    check_output(tmp_path, force=False)


def test_a_foreign_directory_is_refused_unless_forced(tmp_path):
    (tmp_path / "cdi").mkdir()
    with pytest.raises(OutputError, match=r"not empty \(cdi\).*--force"):
        check_output(tmp_path, force=False)
    check_output(tmp_path, force=True)


def test_a_file_is_refused_even_when_forced(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputError, match="not a directory"):
        check_output(tmp_path / "f", force=True)


def test_a_rerun_replaces_only_what_the_last_run_wrote(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "cdi").mkdir()
    (out / "cdi" / "nvidia.yaml").write_text("keep")
    write_output(out, [], [], specs(tmp_path, "a.json", "b.json"))
    assert (out / MARKER).is_file()
    check_output(out, force=False)  # ours now: no --force needed
    write_output(out, [], [], specs(tmp_path, "b.json", "c.json"))
    assert sorted(p.name for p in (out / "cdi").iterdir()) == ["b.json", "c.json", "nvidia.yaml"]


def test_a_doctored_marker_cannot_delete_outside_or_foreign_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (out / MARKER).write_text('{"files": ["../victim.txt", "/etc/hostname"]}')
    write_output(out, [], [], specs(tmp_path, "a.json"))
    assert victim.read_text() == "keep"
