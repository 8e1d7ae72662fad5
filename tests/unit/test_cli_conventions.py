"""Conventions every `dra-hami` command keeps (issue 14): prefixed, documented environment variables, listening
options that agree on port 0, name the option once with a fitting example, and name the address when busy."""

from __future__ import annotations

import socket
import subprocess
import sys

import click
from click.testing import CliRunner

from dra_hami.cli import main
from dra_hami.cli_options import PORT_ZERO_HELP


def all_commands(group: click.Group = main, prefix: str = ""):
    for name, command in group.commands.items():
        yield f"{prefix}{name}", command
        if isinstance(command, click.Group):
            yield from all_commands(command, f"{prefix}{name} ")


def test_every_environment_variable_is_prefixed_and_shown_in_help():
    seen = 0
    for name, command in all_commands():
        help_text = CliRunner().invoke(main, [*name.split(), "--help"], terminal_width=200).output
        for param in command.params:
            if isinstance(param, click.Option) and param.envvar:
                names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
                assert all(n.startswith("DRA_HAMI_") for n in names), (name, param.name, names)
                assert f"env var: {names[0]}" in " ".join(help_text.split()), (name, param.name)
                seen += 1
    assert seen >= 20


def test_an_unprefixed_variable_no_longer_changes_an_option():
    # LOG_LEVEL=DEBUG (another program's variable) used to reach --log-level and break the exporter.
    result = CliRunner().invoke(main, ["exporter", "--help"], env={"LOG_LEVEL": "DEBUG"})
    assert result.exit_code == 0
    bad = CliRunner().invoke(main, ["exporter", "--node-name", "n", "--metrics-bind-address", "x"],
                             env={"LOG_LEVEL": "DEBUG"})  # fmt: skip
    assert "log-level" not in bad.output  # the failure is the address, not the stray variable


def test_every_metrics_bind_address_means_the_same_by_port_0():
    helps = []
    for name, command in all_commands():
        for param in command.params:
            if isinstance(param, click.Option) and "--metrics-bind-address" in param.opts:
                helps.append((name, param.help or ""))
    assert {n for n, _ in helps} >= {"controller", "exporter", "webhook"}
    assert all(PORT_ZERO_HELP in h for _, h in helps), helps


def test_a_bad_host_port_names_the_option_once_with_this_commands_port():
    result = CliRunner().invoke(main, ["exporter", "--node-name", "n", "--metrics-bind-address", "9401"])
    assert result.exit_code == 2
    assert result.output.count("--metrics-bind-address") == 1, result.output
    assert "e.g. 0.0.0.0:9401" in result.output and "9443" not in result.output
    result = CliRunner().invoke(main, ["controller", "--metrics-bind-address", "nope"])
    assert result.output.count("--metrics-bind-address") == 1 and "e.g. 0.0.0.0:9402" in result.output


def test_a_busy_port_names_the_option_and_the_address(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        done = subprocess.run(
            [sys.executable, "-m", "dra_hami", "exporter", "--node-name", "n", "--fake-profile", "t4x2",
             "--plugin-dir", str(tmp_path), "--vgpu-dir", str(tmp_path), "--metrics-bind-address", address],
            capture_output=True, text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"} | _pythonpath(),
        )  # fmt: skip
    assert done.returncode == 1
    assert f"--metrics-bind-address {address}: cannot listen" in done.stderr, done.stderr
    assert "another process listens there" in done.stderr and "Traceback" not in done.stderr


def _pythonpath() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME")}


def test_kubelet_plugin_without_cluster_configuration_is_one_actionable_line(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)} | {
        k: v for k, v in _pythonpath().items() if k == "PYTHONPATH"
    }
    done = subprocess.run(
        [sys.executable, "-m", "dra_hami", "kubelet-plugin", "--node-name", "n", "--fake-profile", "t4x2",
         "--plugin-dir", str(tmp_path / "p"), "--registry-dir", str(tmp_path / "r"), "--cdi-dir", str(tmp_path / "c"),
         "--vgpu-dir", str(tmp_path / "v"), "--no-require-libvgpu"],
        capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "no Kubernetes configuration" in lines[0] and "--kubeconfig FILE" in lines[0]


def _declaration(param: click.Parameter) -> tuple:
    """What must agree wherever an option appears: its env var, type, default and whether it is required."""
    assert isinstance(param, click.Option)
    return (param.envvar, repr(param.type), param.default, param.required, param.show_default)


def test_a_shared_option_means_the_same_in_every_component():
    # Declared once in cli_options: the node components read each other's files through these, so a default or
    # env var that drifted in one of them would point the exporter at a directory the plugin does not use.
    components = ["kubelet-plugin", "controller", "webhook", "exporter"]
    declared: dict[str, dict[str, tuple]] = {}
    for name in components:
        for param in main.commands[name].params:
            if isinstance(param, click.Option):
                declared.setdefault(param.opts[0], {})[name] = _declaration(param)
    shared = {opt: seen for opt, seen in declared.items() if len(seen) > 1}
    assert {"--node-name", "--fake-profile", "--vgpu-dir", "--plugin-dir", "--driver-name", "--kubeconfig",
            "--log-level", "--log-format", "--metrics-bind-address"} <= set(shared)  # fmt: skip
    for opt, seen in shared.items():
        if opt == "--metrics-bind-address":  # each component listens on its own default port
            seen = {n: d[:2] + d[3:] for n, d in seen.items()}
        assert len(set(seen.values())) == 1, (opt, seen)


def test_each_environment_variable_sets_one_option_name():
    options: dict[str, set[str]] = {}
    for _, command in all_commands():
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.envvar, str):
                options.setdefault(param.envvar, set()).add(param.opts[0])
    # install-libvgpu --dest is where the plugin's --vgpu-dir will look, so it reads the same variable.
    options["DRA_HAMI_VGPU_DIR"].discard("--dest")
    assert all(len(names) == 1 for names in options.values()), options
