"""docs/metrics.md's HAMi table against what the exporter really serves: every row's name is served under
its name set with exactly its labels, no HAMi series is missing from the table, and the ``ours`` column
names series the exporter serves. The series are read from a live scrape with a resolved, allocated claim,
so every family has samples."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from exporter_fixtures import GiB, claim_record, save_checkpoint
from test_exporter_collector import G0, GPUS, Node, Pods, share

from dra_hami.exporter.hami import CHOICES, FAMILIES

DOC = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"


def table() -> list[tuple[str, str, frozenset[str], set[str]]]:
    text = DOC.read_text()
    section = text[text.index("## HAMi-compatible series") :]
    section = section[: section.index("\n## ")]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        name, names, labels, ours = cells
        rows.append(
            (name.strip("`"), names, frozenset(re.findall(r"`(\w+)`", labels)), set(re.findall(r"`(\w+)`", ours)))
        )
    return rows


def scrape(tmp_path: Path, names: tuple[str, ...]) -> dict[str, set[frozenset[str]]]:
    pods = Pods()
    node = Node(tmp_path, pods, names)
    try:
        save_checkpoint(node.plugin, [claim_record("u1", "c1", [(G0.device_name, 4 * GiB, 30)], GPUS)])
        pods.add("default", "c1", "u1", {"p": ["main"]}, [share(G0.device_name, "4Gi", "30", "s1")])
        node.scrape()
        node.identities.resolve_due()
        samples = node.scrape()
    finally:
        node.server.shutdown()
        node.server.server_close()
    return {name: {frozenset(labels) for labels, _ in rows} for name, rows in samples.items()}


def test_the_table_lists_every_hami_family_once():
    rows = table()
    assert len(rows) == len({r[0] for r in rows}) == len(FAMILIES)
    assert {r[0] for r in rows} == {f.name for f in FAMILIES}


@pytest.mark.parametrize("setting", ["current", "legacy"])
def test_each_row_is_served_with_exactly_its_labels(tmp_path, setting):
    served = scrape(tmp_path, CHOICES[setting])
    both = scrape(tmp_path / "both", CHOICES["both"])
    for name, names, labels, ours in table():
        assert names in ("current", "legacy"), name
        if names != setting:
            assert name not in served, f"{name} is served without the {names} set"
            continue
        assert served.get(name) == {labels}, f"{name}: the table says {sorted(labels)}, served {served.get(name)}"
        assert ours <= set(both), f"{name}: {sorted(ours - set(both))} in 'ours' is not served"


def test_the_table_reader_finds_the_rows():
    rows = {r[0]: r for r in table()}
    assert rows["GPUDeviceMemoryAllocated"][2] == {
        "nodeid",
        "deviceuuid",
        "deviceidx",
        "devicecores",
        "devicetype",
        "zone",
    }
    assert rows["vGPUMemoryAllocated"][2] == {
        "podnamespace",
        "nodename",
        "podname",
        "containeridx",
        "deviceuuid",
        "zone",
    }
