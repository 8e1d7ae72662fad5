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


def _webhook_cluster_role_rules() -> list[dict[str, Any]]:
    """The webhook ClusterRole's rules as written in templates/rbac.yaml (plain YAML inside the template)."""
    text = (CHART / "templates" / "rbac.yaml").read_text()
    start = text.index("kind: ClusterRole\nmetadata:\n  name: {{ $webhook }}")
    block = text[start : text.index("\n---", start)]
    rules = yaml.safe_load(block[block.index("rules:") :])["rules"]
    assert rules, "no rules found for the webhook's ClusterRole"
    return rules


def test_the_migration_guide_lists_the_webhooks_permissions_as_granted():
    doc = (REPO_ROOT / "docs" / "migrating-from-hami.md").read_text()
    section = doc[doc.index("## The webhook's permissions") :]
    section = section[: section.index("\n## ", 3)]
    documented: set[tuple[str, str]] = set()
    for line in section.splitlines():
        if not line.startswith("* "):
            continue
        words = line[2:].split(" (")[0].replace(",", " ").split()
        resource = words[-1]
        documented |= {(verb, resource) for verb in words[:-1] if verb != "and"}
    granted = {
        (verb, res) for rule in _webhook_cluster_role_rules() for res in rule["resources"] for verb in rule["verbs"]
    }
    assert documented == granted, f"doc only: {documented - granted}; chart only: {granted - documented}"
