"""Options every long-running ``dra-hami`` command shares, defined once so their names, env vars and defaults agree."""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from dra_hami import wire
from dra_hami.quantity import QuantityError, to_int

DEFAULT_PLUGINS_ROOT = Path("/var/lib/kubelet/plugins")

Decorator = Callable[[Any], Any]


def _shared(*decls: str, **declared: Any) -> Callable[..., Decorator]:
    """An option several commands take: its name, type, env var and default are declared here once; each command
    says in its help what the value means to it (and may override a setting, e.g. make it required)."""

    def option(help: str, **overrides: Any) -> Decorator:
        return click.option(*decls, **{**declared, "help": help, **overrides})

    return option


class Quantity(click.ParamType):
    """Bytes as an integer or a Kubernetes quantity (512Mi, 1Gi); the error names the option."""

    name = "quantity"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return to_int(value, f"--{(param.name or '').replace('_', '-')}" if param else "value")
        except QuantityError as err:
            self.fail(f"{err} (use bytes or a Kubernetes quantity such as 512Mi or 1Gi)", param, ctx)


driver_name_option = _shared(
    "--driver-name", default=wire.DEFAULT_DRIVER_NAME, envvar="DRA_HAMI_DRIVER_NAME", show_default=True
)
_kubeconfig = _shared("--kubeconfig", type=click.Path(dir_okay=False), envvar="DRA_HAMI_KUBECONFIG")


def kubeconfig_option(help: str = "Kubeconfig file; in-cluster configuration when omitted.") -> Decorator:
    return _kubeconfig(help)


# The node components (kubelet plugin, exporter) must agree on these: the exporter reads what the plugin writes.
node_name_option = _shared("--node-name", required=True, envvar="DRA_HAMI_NODE_NAME")
fake_profile_option = _shared("--fake-profile", envvar="DRA_HAMI_FAKE_PROFILE")
vgpu_dir_option = _shared(
    "--vgpu-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/usr/local/vgpu"),
    envvar="DRA_HAMI_VGPU_DIR",
    show_default=True,
)
plugin_dir_option = _shared(
    "--plugin-dir", type=click.Path(file_okay=False, path_type=Path), envvar="DRA_HAMI_PLUGIN_DIR"
)
PLUGIN_DIR_DEFAULT_HELP = "[default: /var/lib/kubelet/plugins/<driver>]"


def plugin_dir(value: Path | None, driver_name: str) -> Path:
    """--plugin-dir as given, else the kubelet's directory for this driver (its default depends on --driver-name)."""
    return value or DEFAULT_PLUGINS_ROOT / driver_name


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


def metrics_bind_address_option(default: str, help: str) -> Decorator:
    """--metrics-bind-address: each component has its own default port; HELP is followed by what port 0 means."""
    return click.option(
        "--metrics-bind-address",
        default=default,
        envvar="DRA_HAMI_METRICS_BIND_ADDRESS",
        show_default=True,
        callback=check_bind_address,
        help=f"{help}; {PORT_ZERO_HELP}.",
    )


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
