"""Per-claim CDI spec files in the runtime's dynamic CDI directory, through the ``cdi`` library."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cdi
from dra_hami import wire

log = logging.getLogger(__name__)


class ClaimSpecStore:
    """One spec file per claim, ``k8s.<driver>-claim_<claim uid>.json``, at the lowest cdiVersion it needs."""

    def __init__(self, directory: Path, driver_name: str):
        self._dir = directory
        self._kind = wire.cdi_kind(driver_name)
        vendor, cls = cdi.parse_kind(self._kind)
        self._prefix = f"{vendor}-{cls}_"  # the transient-spec file naming of cdi.spec_file_name

    def write(self, claim_uid: str, spec: dict[str, Any]) -> None:
        # Not fsynced: the plugin's checkpoint (fsynced before a prepare answers) holds every spec, and a
        # reboot (the only way to lose page-cache data) changes the boot id, upon which the plugin rewrites
        # each spec from the checkpoint; the rename still keeps every reader to the old or the new file.
        cdi.write_spec(self._dir, self._model(spec), claim_uid, durable=False)

    def holds(self, claim_uid: str, spec: dict[str, Any]) -> bool:
        try:
            return self.path(claim_uid).read_text() == cdi.spec_to_json(self._model(spec))
        except OSError:
            return False

    def _model(self, spec: dict[str, Any]) -> cdi.Spec:
        # cdi.build_spec, without its defensive deep copy of a model made here (a third of a prepare's spec cost)
        model = cdi.Spec(
            cdi_version="0.3.0",
            kind=spec["kind"],
            devices=[cdi.Device.model_validate(device) for device in spec["devices"]],
            container_edits=cdi.ContainerEdits.model_validate(spec.get("containerEdits") or {}),
        )
        model.cdi_version = cdi.minimum_version(model)
        return cdi.validate_spec(model)

    def remove(self, claim_uid: str) -> None:
        cdi.remove_spec(self._dir, claim_uid, self._kind)

    def specs(self) -> dict[str, dict[str, Any]]:
        listing = cdi.list_specs(self._dir, self._kind)
        for path, error in listing.errors.items():
            log.warning("ignoring unreadable CDI spec %s: %s", path, error)
        found = {}
        for path, spec in listing.specs.items():
            if path.name.startswith(self._prefix):
                found[path.stem.removeprefix(self._prefix)] = cdi.spec_to_dict(spec)
        return found

    def path(self, claim_uid: str) -> Path:
        return cdi.spec_path(self._dir, self._kind, claim_uid)
