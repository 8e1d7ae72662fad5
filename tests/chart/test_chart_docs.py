"""docs/configuration.md documents every key of values.yaml, and values.yaml has every key the schema knows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import yaml
from chart_render import CHART, REPO_ROOT

# Maps whose own keys are user data (node labels, resources, ...), documented as one key.
OPAQUE = {"nodeSelector", "tolerations", "affinity", "resources", "initResources", "podAnnotations", "labels",
          "annotations", "issuerRef"}  # fmt: skip


def leaf_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in OPAQUE:
            yield from leaf_keys(value, f"{path}.")
        else:
            yield path


def test_every_value_is_documented():
    doc = (REPO_ROOT / "docs" / "configuration.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []
    for path in leaf_keys(values):
        parent, _, leaf = path.rpartition(".")
        # A row may name siblings in short form: `webhook.resources`, `.nodeSelector`, ...
        if f"`{path}`" not in doc and not (parent and f"`{parent}." in doc and f"`.{leaf}`" in doc):
            missing.append(path)
    assert not missing, f"add to docs/configuration.md: {missing}"


def test_values_and_schema_name_the_same_keys():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: dict[str, Any], value: Any, path: str) -> None:
        props = node.get("properties")
        if props is None or not isinstance(value, dict):
            return
        assert set(value) <= set(props), f"{path or '/'}: no schema for {sorted(set(value) - set(props))}"
        for key in props:
            if key != "global" and path.rsplit("/", 1)[-1] not in OPAQUE:
                assert key in value, f"{path}/{key} is in the schema but not in values.yaml"
                walk(props[key], value[key], f"{path}/{key}")

    walk(schema, values, "")
