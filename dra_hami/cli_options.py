"""Options every long-running ``dra-hami`` command shares, defined once so their names, env vars and defaults agree."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dra_hami import wire

DEFAULT_PLUGINS_ROOT = Path("/var/lib/kubelet/plugins")


def driver_name_option(help: str) -> Callable[[Any], Any]:
    return click.option(
        "--driver-name", default=wire.DEFAULT_DRIVER_NAME, envvar="DRA_HAMI_DRIVER_NAME", show_default=True, help=help
    )


def kubeconfig_option(help: str = "Kubeconfig file; in-cluster configuration when omitted.") -> Callable[[Any], Any]:
    return click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="DRA_HAMI_KUBECONFIG", help=help)


def logging_options(func: Any) -> Any:
    func = click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        envvar="DRA_HAMI_LOG_FORMAT",
        show_default=True,
        help="Log lines as plain text or as JSON objects.",
    )(func)
    return click.option(
        "--log-level",
        type=click.Choice(["debug", "info", "warning", "error"]),
        default="info",
        envvar="DRA_HAMI_LOG_LEVEL",
        show_default=True,
        help="Least severe log level written to stderr.",
    )(func)


# What port 0 means on every listening option of every command: a free port the OS picks, logged at start.
PORT_ZERO_HELP = "port 0: a free port, logged at start"


def parse_bind_address(address: str, option: str, example: str = "127.0.0.1:8080") -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``; an empty host means every interface) of a listening option, or ValueError."""
    host, port = _split(address, example)
    if port is None:
        raise ValueError(f"{option}: {host}")
    return host, port


def _split(address: str, example: str) -> tuple[str, int | None]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return f"{address!r} is not HOST:PORT (e.g. {example})", None
    return host.strip("[]") or "0.0.0.0", int(port)


def check_bind_address(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Click callback: refuses a listening address that is not HOST:PORT. Click names the option; the example is
    the option's own default, so it shows this command's port."""
    example = param.default if isinstance(param.default, str) and _split(param.default, "")[1] is not None else ""
    problem, port = _split(value, example or "127.0.0.1:8080")
    if port is None:
        raise click.BadParameter(problem)
    return value


class ListenError(OSError):
    """A listening socket that could not be opened; the message names the option and the address."""

    def __str__(self) -> str:
        return str(self.args[-1])


def listen_error(option: str, address: str, err: OSError) -> ListenError:
    why = err.strerror or str(err)
    if err.errno == errno.EADDRINUSE:
        why += ": another process listens there; stop it or pick another port"
    elif err.errno == errno.EADDRNOTAVAIL:
        why += ": no interface of this host has that address"
    return ListenError(err.errno, f"{option} {address}: cannot listen ({why})")
