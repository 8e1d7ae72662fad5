"""GpuQuota: per-namespace budgets of GPU memory, cores and GPU count (the CRD in crds/gpuquota.yaml).

``model`` parses the CRD and does the arithmetic, ``usage`` turns claims into usage, ``check`` decides
(pure; the webhook and the allocation controller both call it), ``reconciler`` keeps ``status.used`` current.
"""

from dra_hami.quota.check import QuotaRefusal, check_allocation, check_request
from dra_hami.quota.model import GROUP, KIND, PLURAL, VERSION, GpuQuota, QuotaError, Usage, parse_gpu_quota
from dra_hami.quota.usage import Accounting, claim_usage

__all__ = [
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "Accounting",
    "GpuQuota",
    "QuotaError",
    "QuotaRefusal",
    "Usage",
    "check_allocation",
    "check_request",
    "claim_usage",
    "parse_gpu_quota",
]
