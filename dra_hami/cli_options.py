"""Options every long-running ``dra-hami`` command shares, defined once so their names, env vars and defaults agree."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dra_hami import wire

DEFAULT_PLUGINS_ROOT = Path("/var/lib/kubelet/plugins")


def driver_name_option(help: str) -> Callable[[Any], Any]:
    return click.option(
        "--driver-name", default=wire.DEFAULT_DRIVER_NAME, envvar="DRIVER_NAME", show_default=True, help=help
    )


def kubeconfig_option(help: str = "Kubeconfig file; in-cluster configuration when omitted.") -> Callable[[Any], Any]:
    return click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG", help=help)


def logging_options(func: Any) -> Any:
    func = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        envvar="LOG_FORMAT",
        show_default=True,
        help="Log lines as plain text or as JSON objects.",
    )(func)
    return click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"]),
        default="info",
        envvar="LOG_LEVEL",
        show_default=True,
        help="Least severe log level written to stderr.",
    )(func)


def parse_bind_address(address: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``; an empty host means every interface) of a listening option, or ValueError."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{option}: {address!r} is not HOST:PORT (e.g. 0.0.0.0:9443)")
    return host.strip("[]") or "0.0.0.0", int(port)


def check_bind_address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Click callback: refuses a listening address that is not HOST:PORT, naming the option."""
    try:
        parse_bind_address(value, f"--{param.name.replace('_', '-')}" if param.name else "address")
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    return value
