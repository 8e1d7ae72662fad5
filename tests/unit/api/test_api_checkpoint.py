"""The checkpoint models read what the plugin writes, and what earlier plugins wrote (data/checkpoint-v1.json was
written by the plugin before the models existed: it must keep loading)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from dra_hami.api.checkpoint import CheckpointData, CheckpointDocument, ClaimEntry, DeviceEntry, ShareEntry
from dra_hami.plugin.cdi_spec import PreparedDevice
from dra_hami.plugin.checkpoint import Checkpoint, CheckpointError, ClaimRecord, ClaimState, ShareUse

WRITTEN_BEFORE = Path(__file__).parent / "data" / "checkpoint-v1.json"


def _records() -> dict[str, ClaimRecord]:
    device = PreparedDevice(("gpu",), "node-1", "hami-gpu-0", ("k8s.gpu.hami.io/claim=u1-hami-gpu-0",), "share-1")
    shares = [ShareUse("hami-gpu-0", 1 << 30, 20)]
    return {
        "u1": ClaimRecord("u1", "ns", "a", ClaimState.COMPLETED, "boot", {"kind": "x"}, [device], shares),
        "u2": ClaimRecord("u2", "ns", "b", ClaimState.STARTED, "boot"),
    }


def test_a_checkpoint_written_before_the_models_still_loads(tmp_path):
    path = tmp_path / "checkpoint.json"
    shutil.copy(WRITTEN_BEFORE, path)
    records = Checkpoint(path).load()
    assert sorted(records) == ["uid-a", "uid-b", "uid-c"]
    a = records["uid-a"]
    assert (a.namespace, a.name, a.state, a.boot_id) == ("team-a", "train", ClaimState.COMPLETED, "boot-1")
    assert a.devices[0].cdi_device_ids == ("k8s.gpu.hami.io/claim=uid-a-hami-gpu-0", "nvidia.com/gpu=GPU-0000")
    assert a.devices[0].share_id == "0a1b2c3d-0000-4000-8000-000000000001"
    assert a.shares == [ShareUse("hami-gpu-0", 1 << 30, 30)] and a.spec and a.spec["devices"]
    assert records["uid-b"].shares is None and records["uid-b"].devices[0].request_names == ("a", "b")
    assert records["uid-c"].state is ClaimState.STARTED and records["uid-c"].devices == []
    # Written again by this plugin, the file is byte for byte what the earlier one wrote.
    assert Checkpoint.encode(records) == WRITTEN_BEFORE.read_bytes()


def test_what_the_plugin_writes_is_what_the_models_read(tmp_path):
    checkpoint = Checkpoint(tmp_path / "checkpoint.json")
    checkpoint.save(_records())
    document = CheckpointDocument.model_validate_json(checkpoint.path.read_bytes())
    data = CheckpointData.model_validate(document.data)
    assert data.claims["u1"].shares == [ShareEntry(device="hami-gpu-0", memory=1 << 30, cores=20)]
    assert checkpoint.load() == _records()


def test_the_writer_and_the_models_know_the_same_fields():
    # plugin/checkpoint.py writes by hand (for speed): a field added there must be added to the model too.
    written = _records()["u1"].to_json()
    assert set(written) == {f.alias or n for n, f in ClaimEntry.model_fields.items()}
    assert set(written["devices"][0]) == {f.alias or n for n, f in DeviceEntry.model_fields.items()}
    assert set(written["shares"][0]) == set(ShareEntry.model_fields)


def test_a_bad_entry_is_an_error_naming_the_field(tmp_path):
    checkpoint = Checkpoint(tmp_path / "checkpoint.json")
    checkpoint.save(_records())
    document = json.loads(checkpoint.path.read_bytes())
    document["data"]["claims"]["u1"]["state"] = "Prepared?"
    body = json.dumps(document["data"], sort_keys=True, separators=(",", ":"))
    document["checksum"] = "sha256:" + hashlib.sha256(body.encode()).hexdigest()  # a sound file, a bad field
    checkpoint.path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=r"claims\.u1\.state"):
        checkpoint.load()
