"""``dra-hami webhook`` command line: the contract's flags, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from dra_hami.cli import main


def test_help_lists_the_contract_flags() -> None:
    result = CliRunner().invoke(main, ["webhook", "--help"])
    assert result.exit_code == 0
    for flag in (
        "--tls-cert-file",
        "--tls-key-file",
        "--bind-address",
        "--policy-mode / --no-policy-mode",
        "--legacy-translation [off|namespaces|cluster]",
        "--config-validation / --no-config-validation",
        "--control-env-refusal / --no-control-env-refusal",
        "--quota / --no-quota",
        "--metrics-bind-address",
        "--driver-name",
        "--kubeconfig",
        "--log-level",
        "--log-format",
    ):
        assert flag in result.output, flag
    assert "0.0.0.0:9443" in result.output and "0.0.0.0:9403" in result.output


def test_missing_certificate_and_bad_addresses_are_clear_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    result = runner.invoke(main, ["webhook", "--tls-key-file", str(key)])
    assert result.exit_code == 2 and "Missing option '--tls-cert-file'" in result.output
    result = runner.invoke(main, ["webhook", "--tls-cert-file", str(cert), "--tls-key-file", "nope"])
    assert result.exit_code == 2 and "'--tls-key-file'" in result.output
    assert "File 'nope' does not exist" in result.output
    result = runner.invoke(
        main, ["webhook", "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--bind-address", "9443"]
    )
    assert result.exit_code == 2 and "'--bind-address'" in result.output
    assert "'9443' is not HOST:PORT (e.g. 0.0.0.0:9443)" in result.output
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "current-context: c\n"
    )
    result = runner.invoke(
        main,
        [
            "webhook",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--bind-address",
            "127.0.0.1:0",
            "--kubeconfig",
            str(kubeconfig),
        ],
    )
    assert result.exit_code == 1
    assert "cannot serve HTTPS on 127.0.0.1:0 with" in result.output
