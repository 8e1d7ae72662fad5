"""The two admission endpoints, wiring the pure decisions to the API.

/mutate-pods (pods, CREATE): HAMi legacy translation (namespace label or cluster flag), then the policy-mode
gate. /validate-pods (pods, CREATE): the refusal of libvgpu's control variables, on the pod as every mutating
webhook left it. /validate-claims (ResourceClaim and ResourceClaimTemplate, CREATE): VGpuConfig validation,
then GpuQuota. Each feature has its own switch in ``AdmissionOptions``: all but the gate run without policy
mode (the chart's default install).

GpuQuota at admission works like Kubernetes' ResourceQuota: the webhook charges the quota by writing
``status.used`` with the resourceVersion it read (optimistic concurrency), so two claims admitted at once by
two threads or two replicas cannot both take the last slice; a conflict re-reads and re-decides. ``used`` is
the larger, per dimension, of the recorded status (which holds charges of claims still being created) and a
fresh count of the namespace's claims (which already reflects deletions). The reconciler
(``dra_hami.quota.reconciler``) then rewrites status from the claims alone; a claim that was charged but
never created (refused by a later webhook) is released by it.
"""

from __future__ import annotations

import copy
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dra_hami.kube import objects as k8s
from dra_hami.kube.client import ApiError
from dra_hami.quota.check import check_request
from dra_hami.quota.classes import our_classes
from dra_hami.quota.model import QuotaError, Usage, parse_gpu_quota
from dra_hami.quota.usage import Accounting, namespace_usage, spec_usage
from dra_hami.webhook import gate as gating
from dra_hami.webhook import labels as L
from dra_hami.webhook.kube import WebhookApi
from dra_hami.webhook.legacy import LegacyError, parse_legacy_pod
from dra_hami.webhook.pod_env import control_env_message, control_env_problems
from dra_hami.webhook.review import Response
from dra_hami.webhook.translate import TemplatePlan, published_gpus, translate
from dra_hami.webhook.validate import (
    claim_spec_of,
    config_message,
    config_problems,
    pinned_problems,
    uses_driver_config,
)

log = logging.getLogger(__name__)

QUOTA_ATTEMPTS = 5
TOUCH_AFTER = datetime.timedelta(minutes=5)  # half the collector's grace: a used template is never collected


@dataclass(frozen=True)
class AdmissionOptions:
    driver: str
    policy_mode: bool = False  # the scheduling gate for the allocation controller
    legacy_translation: bool = False  # cluster-wide; otherwise per namespace label
    translation: bool = True  # off: HAMi resources are never translated, whatever the namespace label says
    config_validation: bool = True  # VGpuConfig of claims and templates, and the DeviceClasses' pinned fields
    control_env: bool = True  # refuse pods that set libvgpu's control variables
    quota: bool = True  # GpuQuota at claim admission
    lookup_retries: int = 3  # a template created just before its pod: look again this often...
    lookup_delay: float = 0.3  # ...this far apart (the whole review must stay well inside timeoutSeconds)

    @property
    def classes(self) -> frozenset[str]:
        return frozenset({self.driver})


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


class Admission:
    def __init__(
        self,
        api: WebhookApi,
        options: AdmissionOptions,
        clock: Callable[[], datetime.datetime] = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api, self.options, self.clock, self.sleep = api, options, clock, sleep

    # ------------------------------------------------------------------------------------------ pods

    def mutate_pod(self, request: dict[str, Any]) -> Response:
        if request.get("operation") != "CREATE" or (request.get("kind") or {}).get("kind") != "Pod":
            return Response.allow()
        pod = request.get("object") or {}
        if not (self.options.translation or self.options.policy_mode):
            return Response.allow()
        namespace = request.get("namespace") or k8s.namespace(pod) or "default"
        dry_run = bool(request.get("dryRun"))
        warnings: list[str] = []
        try:
            ns_labels = self.api.namespace_labels(namespace)
        except ApiError as err:
            ns_labels = {}
            warnings.append(f"dra-hami webhook: could not read namespace {namespace}: {err.message}")
        new = copy.deepcopy(pod)
        plans: tuple[TemplatePlan, ...] = ()

        legacy_on = self.options.translation and (
            self.options.legacy_translation or ns_labels.get(L.LEGACY_LABEL) == L.LEGACY_ENABLED
        )
        if legacy_on:
            try:
                legacy = parse_legacy_pod(pod)
                if legacy is not None:
                    gpus = published_gpus(self.api.list_slices(), self.options.driver)
                    result = translate(pod, legacy, gpus, self.options.driver, namespace, rfc3339(self.clock()))
                    new, plans = result.pod, result.templates
                    warnings.extend(result.warnings)
            except LegacyError as err:
                return Response.deny(f"dra-hami: HAMi resources of this pod cannot be translated: {err}", 400)
            except ApiError as err:
                return Response.deny(f"dra-hami: could not list ResourceSlices to translate HAMi resources: "
                                     f"{err.message}; retry", 503)  # fmt: skip
            if plans and not dry_run:
                failure = self._ensure_templates(plans)
                if failure:
                    return Response.deny(failure, 503)

        if self.options.policy_mode:
            decision = self._gate(new, ns_labels, namespace, plans)
            warnings.extend(decision.warnings)
            if decision.gate:
                gating.gated(new, self.options.driver)
            log.debug("pod %s/%s: gate %s (%s)", namespace, _pod_name(pod), decision.gate, decision.reason)
        return Response.mutate(pod, new, warnings)

    def validate_pod(self, request: dict[str, Any]) -> Response:
        """A validating webhook sees the pod after every mutating one, so a variable another mutator added
        is refused too."""
        if request.get("operation") != "CREATE" or (request.get("kind") or {}).get("kind") != "Pod":
            return Response.allow()
        pod = request.get("object") or {}
        problems = control_env_problems(pod) if self.options.control_env else []
        return Response.deny(control_env_message(pod, problems), 403) if problems else Response.allow()

    def _ensure_templates(self, plans: tuple[TemplatePlan, ...]) -> str:
        now = self.clock()
        for plan in plans:
            ns = plan.template["metadata"]["namespace"]
            try:
                self.api.create_template(plan.template)
                log.info("created ResourceClaimTemplate %s/%s for HAMi resources", ns, plan.name)
                continue
            except ApiError as err:
                if err.status != 409:
                    return f"dra-hami: could not create ResourceClaimTemplate {ns}/{plan.name}: {err.message}; retry"
            try:  # it exists (same name = same content): keep the collector away from it
                current = self.api.get_template(ns, plan.name) or {}
                used = parse_rfc3339(k8s.annotations(current).get(L.LAST_USED_ANNOTATION))
                if used is None or now - used > TOUCH_AFTER:
                    self.api.touch_template(ns, plan.name, rfc3339(now))
            except ApiError as err:
                return f"dra-hami: could not refresh ResourceClaimTemplate {ns}/{plan.name}: {err.message}; retry"
        return ""

    def _gate(
        self, pod: dict[str, Any], ns_labels: dict[str, str], namespace: str, plans: tuple[TemplatePlan, ...]
    ) -> gating.GateDecision:
        if gating.opted_out(pod, ns_labels) or gating.has_gate(pod, self.options.driver):
            return gating.decide(pod, ns_labels, [], self.options.classes, self.options.driver)
        planned = {p.pod_claim: p.template["spec"]["spec"] for p in plans}
        sources = []
        for pod_claim, kind, name in gating.claim_sources(pod):
            if pod_claim in planned:
                sources.append(gating.ClaimSource(pod_claim, kind, name, planned[pod_claim]))
            else:
                sources.append(self._resolve(namespace, pod_claim, kind, name))
        return gating.decide(pod, ns_labels, sources, self.options.classes, self.options.driver)

    def _resolve(self, namespace: str, pod_claim: str, kind: str, name: str) -> gating.ClaimSource:
        get = self.api.get_template if kind == "ResourceClaimTemplate" else self.api.get_claim
        for attempt in range(self.options.lookup_retries):
            try:
                obj = get(namespace, name)
            except ApiError as err:
                return gating.ClaimSource(pod_claim, kind, name, None, f"could not be read ({err.message})")
            if obj is not None:
                spec, _ = claim_spec_of(kind, obj)
                return gating.ClaimSource(pod_claim, kind, name, spec)
            if attempt + 1 < self.options.lookup_retries:
                self.sleep(self.options.lookup_delay)
        return gating.ClaimSource(pod_claim, kind, name, None, gating.NOT_FOUND)

    # ---------------------------------------------------------------------------------------- claims

    def validate_claim(self, request: dict[str, Any]) -> Response:
        kind = (request.get("kind") or {}).get("kind")
        if request.get("operation") != "CREATE" or kind not in ("ResourceClaim", "ResourceClaimTemplate"):
            return Response.allow()
        obj = request.get("object") or {}
        problems = config_problems(kind, obj, self.options.driver) if self.options.config_validation else []
        if problems:
            return Response.deny(config_message(kind, obj, problems), 400)
        namespace = request.get("namespace") or k8s.namespace(obj) or "default"
        try:
            if self.options.config_validation and uses_driver_config(kind, obj, self.options.driver):
                classes = {k8s.name(c): c for c in self.api.list_device_classes()}
                pinned = pinned_problems(kind, obj, self.options.driver, classes)
                if pinned:
                    return Response.deny(config_message(kind, obj, pinned).replace("invalid VGpuConfig",
                                         "VGpuConfig overrides admin-pinned DeviceClass config"), 403)  # fmt: skip
            if not self.options.quota:
                return Response.allow()
            return self._quota(kind, obj, namespace, bool(request.get("dryRun")))
        except QuotaError as err:  # a GpuQuota we cannot read: fail closed, saying which object to fix
            return Response.deny(f"dra-hami: {err}; fix the GpuQuota before creating claims in {namespace}", 403)
        except ApiError as err:
            return Response.deny(
                f"dra-hami: could not check GpuQuota in namespace {namespace}: {err.message}; retry", 503
            )

    def _quota(self, kind: str, obj: dict[str, Any], namespace: str, dry_run: bool) -> Response:
        quotas_raw = self.api.list_quotas(namespace)
        if not quotas_raw:
            return Response.allow()
        slices = self.api.list_slices()
        # Every DeviceClass that can hand out our GPUs counts, not only the one named after the driver.
        classes = our_classes(self.options.driver, self.api.list_device_classes(), slices)
        acct = Accounting.from_slices(self.options.driver, slices, classes)
        spec, _ = claim_spec_of(kind, obj)
        meta = k8s.meta(obj)
        subject = f"{kind} {namespace}/{meta.get('name') or meta.get('generateName', '') + '<generated>'}"
        try:
            requested = spec_usage(dict(spec), acct, subject)
        except QuotaError as err:
            return Response.deny(str(err), 400)
        if requested.empty:
            return Response.allow()
        if kind == "ResourceClaimTemplate":
            # Templates hold nothing; refuse only one whose every claim would be refused.
            quotas = [parse_gpu_quota(q) for q in quotas_raw]
            refusal = check_request(quotas, Usage(), requested, f"every claim of {subject}")
            return Response.deny(refusal.message) if refusal else Response.allow()
        for _ in range(QUOTA_ATTEMPTS):
            listed = namespace_usage(self.api.list_claims(namespace), acct)
            quotas = [parse_gpu_quota(q) for q in quotas_raw]
            used = {q.name: listed.max(q.used) if q.used else listed for q in quotas}
            refusal = check_request(quotas, used, requested, subject)
            if refusal is not None:
                log.info("refused: %s", refusal.message)
                return Response.deny(refusal.message)
            if dry_run:
                return Response.allow()
            try:
                for raw, quota in zip(quotas_raw, quotas, strict=True):
                    charged = copy.deepcopy(raw)
                    status = charged.setdefault("status", {})
                    status["used"] = (used[quota.name] + requested).to_status()
                    status["chargedAt"] = rfc3339(self.clock())  # the reconciler holds this charge a moment
                    self.api.replace_quota_status(charged)
                return Response.allow()
            except ApiError as err:
                if not err.conflict:
                    raise
            quotas_raw = self.api.list_quotas(namespace)  # someone charged meanwhile: decide again
            if not quotas_raw:
                return Response.allow()
        return Response.deny(
            f"dra-hami: GpuQuota in namespace {namespace} is being updated by many claims at once; retry", 503
        )


def _pod_name(pod: dict[str, Any]) -> str:
    meta = k8s.meta(pod)
    return meta.get("name") or (meta.get("generateName", "") + "<generated>")
