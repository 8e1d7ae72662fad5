"""Render the dra-hami chart with helm and look objects up in the result (shared by the chart and e2e tests)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "dra-hami"
KUBE_VERSION = "1.36.0"  # the Kubernetes release the chart targets (Capabilities.KubeVersion)
# The one value an install must give besides the image: the CA of the API server's admission client certificate
# (or webhook.clientAuth.enabled=false), since the webhook is part of every install. Any PEM-looking text renders.
CLIENT_CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
INSTALL = {"webhook.clientAuth.caBundle!": CLIENT_CA}


class HelmError(RuntimeError):
    def __init__(self, args: list[str], stderr: str) -> None:
        super().__init__(f"helm {' '.join(args)} failed:\n{stderr}")
        self.stderr = stderr


def run_helm(helm: str, *args: str, timeout: float = 120) -> str:
    done = subprocess.run([helm, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise HelmError(list(args), done.stderr)
    return done.stdout


def set_args(values: dict[str, str] | None) -> list[str]:
    """``--set-string``/``--set`` pairs; keys ending in ``!`` are set as strings (helm's type guessing off)."""
    out: list[str] = []
    for key, value in (values or {}).items():
        if key.endswith("!"):
            out += ["--set-string", f"{key[:-1]}={value}"]
        else:
            out += ["--set", f"{key}={value}"]
    return out


def render(
    helm: str,
    values: dict[str, str] | None = None,
    release: str = "dra-hami",
    namespace: str = "dra-hami",
    values_files: Iterable[Path] = (),
    extra: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """``helm template`` (CRDs included) -> the list of rendered objects, empty documents dropped."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
            "--include-crds", *set_args(values), *extra]  # fmt: skip
    for f in values_files:
        args += ["--values", str(f)]
    return [obj for obj in yaml.safe_load_all(run_helm(helm, *args)) if obj]


def find(objects: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]
    assert len(matches) == 1, f"expected one {kind} *{name_suffix}, got {[o['metadata']['name'] for o in matches]}"
    return matches[0]


def kinds(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["kind"] for o in objects)


def container(pod_owner: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    spec = pod_owner["spec"]["template"]["spec"]
    (found,) = [c for c in spec["initContainers" if init else "containers"] if c["name"] == name]
    return found
