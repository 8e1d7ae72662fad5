import json

import pytest

from dra_hami.plugin.cdi_spec import PreparedDevice
from dra_hami.plugin.checkpoint import Checkpoint, CheckpointError, CheckpointTooNew, ClaimRecord, ClaimState


def record(uid="u1", state=ClaimState.COMPLETED):
    device = PreparedDevice(("gpu",), "node-a", "hami-gpu-0", ("k8s.x/claim=u1-hami-gpu-0",), "share-1")
    return ClaimRecord(uid, "ns", "c", state, "boot-1", {"kind": "k8s.x/claim", "devices": []}, [device])


def test_round_trip(tmp_path):
    checkpoint = Checkpoint(tmp_path / "checkpoint.json")
    assert checkpoint.load() == {}
    checkpoint.save({"u1": record(), "u2": record("u2", ClaimState.STARTED)})
    loaded = checkpoint.load()
    assert loaded["u1"] == record()
    assert loaded["u2"].state is ClaimState.STARTED
    assert oct((tmp_path / "checkpoint.json").stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.json"]  # no temp file left


def test_flipped_byte_is_detected(tmp_path):
    path = tmp_path / "checkpoint.json"
    Checkpoint(path).save({"u1": record()})
    document = json.loads(path.read_text())
    document["data"]["claims"]["u1"]["name"] = "tampered"
    path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        Checkpoint(path).load()


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"kind": "DraHamiCheckpoint"}', b"\xff\xfe"])
def test_garbage_is_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "checkpoint.json"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="checkpoint"):
        Checkpoint(path).load()


def test_newer_version_is_refused_not_rewritten(tmp_path):
    path = tmp_path / "checkpoint.json"
    path.write_text(json.dumps({"kind": "DraHamiCheckpoint", "version": 2, "checksum": "x", "data": {}}))
    with pytest.raises(CheckpointTooNew, match="version 2 was written by a newer dra-hami"):
        Checkpoint(path).load()


def test_quarantine_keeps_the_file(tmp_path):
    path = tmp_path / "checkpoint.json"
    path.write_text("garbage")
    moved = Checkpoint(path).quarantine()
    assert not path.exists() and moved.read_text() == "garbage"
