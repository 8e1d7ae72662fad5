import json
import os

from plugin_factories import DRIVER

from dra_hami.cdi_store import ClaimSpecStore

SPEC = {
    "kind": f"k8s.{DRIVER}/claim",
    "devices": [{"name": "1d0c-hami-gpu-0", "containerEdits": {"env": ["A=1"]}}],
    "containerEdits": {"mounts": [{"hostPath": "/h", "containerPath": "/c", "options": ["ro", "bind"]}]},
}


def test_write_list_remove(tmp_path):
    store = ClaimSpecStore(tmp_path, DRIVER)
    store.write("1d0c", SPEC)
    path = tmp_path / f"k8s.{DRIVER}-claim_1d0c.json"
    written = json.loads(path.read_text())
    assert written["cdiVersion"] == "0.5.0"  # a device name starting with a digit needs 0.5.0
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert store.specs() == {"1d0c": {"cdiVersion": "0.5.0", **SPEC}}
    store.remove("1d0c")
    store.remove("1d0c")
    assert store.specs() == {} and list(tmp_path.iterdir()) == []


def test_other_owners_and_garbage_are_not_ours(tmp_path):
    store = ClaimSpecStore(tmp_path, DRIVER)
    other = {**SPEC, "kind": "nvidia.com/gpu", "cdiVersion": "0.5.0"}
    (tmp_path / "nvidia.com-gpu.json").write_text(json.dumps(other))
    (tmp_path / f"k8s.{DRIVER}-claim_broken.json").write_text("{not json")
    assert store.specs() == {}


def test_the_spec_model_is_the_one_cdi_build_spec_makes(tmp_path):
    import cdi

    store = ClaimSpecStore(tmp_path, DRIVER)
    expected = cdi.build_spec(
        SPEC["kind"],
        [cdi.Device.model_validate(d) for d in SPEC["devices"]],
        container_edits=cdi.ContainerEdits.model_validate(SPEC["containerEdits"]),
    )
    assert cdi.spec_to_json(store._model(SPEC)) == cdi.spec_to_json(expected)
