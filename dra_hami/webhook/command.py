"""``dra-hami webhook``: the click command (flags of notes' CLI contract) and the process around the server."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click

from dra_hami.cli_options import (
    check_bind_address,
    driver_name_option,
    kubeconfig_option,
    listen_error,
    logging_options,
    metrics_bind_address_option,
    parse_bind_address,
)

log = logging.getLogger(__name__)


@click.command("webhook")
@click.option(
    "--tls-cert-file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="DRA_HAMI_TLS_CERT_FILE",
    help="Serving certificate (PEM); re-read when the file changes.",
)
@click.option(
    "--tls-key-file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="DRA_HAMI_TLS_KEY_FILE",
    help="Its private key (PEM).",
)
@click.option(
    "--client-ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="DRA_HAMI_CLIENT_CA_FILE",
    help="Only callers with a client certificate this CA signed may connect (the API server's admission "
    "client certificate, see docs/security.md); re-read when the file changes. Unset: any caller.",
)
@click.option(
    "--client-common-name",
    "client_names",
    multiple=True,
    envvar="DRA_HAMI_CLIENT_COMMON_NAMES",
    help="With --client-ca-file: the client certificate's CN must be one of these (repeatable). Unset: any CN.",
)
@click.option(
    "--max-concurrent-reviews",
    type=click.IntRange(min=1, max=256),
    default=8,
    show_default=True,
    help="Connections served at once (each may hold a 3 MiB review); up to 64 more wait, others are closed.",
)
@click.option(
    "--request-deadline",
    type=click.FloatRange(min=1, max=60),
    default=10.0,
    show_default=True,
    help="Seconds for the TLS handshake, and from a request's first line to its answer; slower clients are cut off.",
)
@click.option(
    "--bind-address",
    default="0.0.0.0:9443",
    show_default=True,
    envvar="DRA_HAMI_BIND_ADDRESS",
    callback=check_bind_address,
    help="HOST:PORT of the HTTPS server (/mutate-pods, /validate-pods, /validate-claims, /healthz).",
)
@click.option(
    "--policy-mode/--no-policy-mode",
    default=False,
    show_default=True,
    envvar="DRA_HAMI_POLICY_MODE",
    help="Add the scheduling gate <driver>/allocation to pods whose claims use our DeviceClass "
    "(opt out with the label dra-hami.project-hami.io/policy-mode=disabled on namespace or pod).",
)
@click.option(
    "--legacy-translation",
    type=click.Choice(["off", "namespaces", "cluster"]),
    default="namespaces",
    show_default=True,
    envvar="DRA_HAMI_LEGACY_TRANSLATION",
    help="Translate HAMi's nvidia.com/gpu, gpumem, gpumem-percentage, gpucores into claims: only in namespaces "
    "labelled dra-hami.project-hami.io/legacy-translation=enabled, in every namespace, or never.",
)
@click.option(
    "--config-validation/--no-config-validation",
    default=True,
    show_default=True,
    envvar="DRA_HAMI_CONFIG_VALIDATION",
    help="Refuse claims and templates whose VGpuConfig is invalid or overrides a DeviceClass's pinned field.",
)
@click.option(
    "--control-env-refusal/--no-control-env-refusal",
    default=True,
    show_default=True,
    envvar="DRA_HAMI_CONTROL_ENV_REFUSAL",
    help="Refuse pods that set libvgpu's control variables themselves (/validate-pods).",
)
@click.option(
    "--quota/--no-quota",
    default=True,
    show_default=True,
    envvar="DRA_HAMI_QUOTA",
    help="Enforce GpuQuota when claims are created and keep GpuQuota status.used current.",
)
@metrics_bind_address_option("0.0.0.0:9403", "HOST:PORT of the Prometheus /metrics endpoint (plain HTTP)")
@click.option(
    "--quota-resync",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds between full GpuQuota status passes (claim changes are picked up at once by a watch).",
)
@click.option(
    "--template-grace",
    type=click.FloatRange(min=1),
    default=600.0,
    show_default=True,
    help="Seconds an unused legacy ResourceClaimTemplate is kept after its last admission.",
)
@driver_name_option("DRA driver name; also the name of our DeviceClass.")
@kubeconfig_option()
@logging_options
def webhook(tls_cert_file: Path, tls_key_file: Path, client_ca_file: Path | None, client_names: tuple[str, ...],
            max_concurrent_reviews: int, request_deadline: float, bind_address: str, policy_mode: bool,
            legacy_translation: str, config_validation: bool, control_env_refusal: bool, quota: bool,
            metrics_bind_address: str, quota_resync: float, template_grace: float, driver_name: str,
            kubeconfig: str | None, log_format: str, log_level: str) -> None:  # fmt: skip
    """Admission webhook: HAMi legacy translation, VGpuConfig validation, control-variable refusal, GpuQuota, and
    (policy mode) the scheduling gate.

    Also keeps GpuQuota status.used current and deletes legacy ResourceClaimTemplates no pod uses any more."""
    import datetime
    import ssl

    from prometheus_client import start_http_server

    from dra_hami import logs
    from dra_hami.kube.client import RawKubeApi
    from dra_hami.quota.reconciler import QuotaReconciler
    from dra_hami.webhook.admission import Admission, AdmissionOptions
    from dra_hami.webhook.collector import TemplateCollector
    from dra_hami.webhook.kube import KubeWebhookApi
    from dra_hami.webhook.server import ClientAuth, Handler, ServerLimits, WebhookServer

    logs.setup(log_level, log_format)
    try:
        bind = parse_bind_address(bind_address, "--bind-address")
        metrics_bind = parse_bind_address(metrics_bind_address, "--metrics-bind-address")
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    try:
        raw = RawKubeApi.from_config(kubeconfig)
    except Exception as err:  # the client raises its own ConfigException and plain OSError
        raise click.ClickException(f"cannot load the Kubernetes configuration: {err}") from None
    api = KubeWebhookApi(raw)
    options = AdmissionOptions(
        driver_name,
        policy_mode=policy_mode,
        legacy_translation=legacy_translation == "cluster",
        translation=legacy_translation != "off",
        config_validation=config_validation,
        control_env=control_env_refusal,
        quota=quota,
    )
    admission = Admission(api, options)
    handlers: dict[str, Handler] = {
        "/mutate-pods": admission.mutate_pod,
        "/validate-pods": admission.validate_pod,
        "/validate-claims": admission.validate_claim,
    }
    try:
        if client_names and client_ca_file is None:
            raise click.BadParameter("needs --client-ca-file", param_hint="--client-common-name")
        auth = ClientAuth(client_ca_file, frozenset(client_names)) if client_ca_file else None
        limits = ServerLimits(workers=max_concurrent_reviews, request_deadline=request_deadline)
        server = WebhookServer(bind, tls_cert_file, tls_key_file, handlers, limits, auth)
    except (OSError, ssl.SSLError) as err:
        raise click.ClickException(f"cannot serve HTTPS on {bind_address} with {tls_cert_file}: {err}") from None
    try:
        metrics_server, _ = start_http_server(metrics_bind[1], addr=metrics_bind[0])
    except OSError as err:
        raise click.ClickException(str(listen_error("--metrics-bind-address", metrics_bind_address, err))) from None
    logging.getLogger(__name__).info("serving /metrics on %s:%d", *metrics_server.server_address[:2])

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    reconciler = QuotaReconciler(api, driver_name, resync=quota_resync, watch=api)
    collector = TemplateCollector(api, grace=datetime.timedelta(seconds=template_grace))
    if quota:
        threading.Thread(target=reconciler.run, args=(stop,), name="quota-reconciler", daemon=True).start()
    threading.Thread(target=collector.run, args=(stop,), name="template-collector", daemon=True).start()
    server.start()
    log.info("dra-hami webhook on %s:%d (policy mode %s, legacy translation %s, VGpuConfig validation %s, "
             "control-variable refusal %s, GpuQuota %s, client certificates %s)", *bind,
             "on" if policy_mode else "off", legacy_translation, *("on" if f else "off" for f in
             (config_validation, control_env_refusal, quota)),
             f"required ({client_ca_file})" if auth else "NOT checked")  # fmt: skip
    stop.wait()
    server.shutdown()
