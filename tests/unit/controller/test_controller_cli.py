"""`dra-hami controller` refuses bad options with the option named and the fix."""

from __future__ import annotations

from click.testing import CliRunner

from dra_hami.cli import main


def test_bad_metrics_address_names_the_option() -> None:
    result = CliRunner().invoke(main, ["controller", "--metrics-bind-address", "nope"])
    assert result.exit_code == 2
    assert "--metrics-bind-address" in result.output and "HOST:PORT" in result.output


def test_unknown_policy_is_refused() -> None:
    result = CliRunner().invoke(main, ["controller", "--gpu-policy", "tightest"])
    assert result.exit_code == 2 and "--gpu-policy" in result.output and "fragmentation" in result.output


def test_missing_kubeconfig_is_a_clear_error(tmp_path) -> None:
    missing = tmp_path / "nope.kubeconfig"
    args = ["controller", "--kubeconfig", str(missing), "--metrics-bind-address", "127.0.0.1:0"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert "--kubeconfig" in result.output and "Traceback" not in result.output
