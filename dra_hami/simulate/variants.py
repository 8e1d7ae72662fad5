"""Trace variants built from another trace (pure): GPU-model-constrained workloads like the artifact's gpuspec ones.

The FGD artifact's ``gpuspecXX`` traces are the default workload with a share of its pods restricted to specific
GPU models (the ``gpu_spec`` column); those files are not public. ``constrain_models`` builds a workload of that
family from any trace, so the policies can be compared with the artifact's published gpuspec figures.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from .trace import TraceNode, TracePod


def constrain_models(
    pods: Sequence[TracePod], nodes: Sequence[TraceNode], share: float, seed: int = 0, by_capacity: bool = True
) -> list[TracePod]:
    """``share`` (0..1) of the GPU pods, drawn with ``random.Random(seed)``, accept one GPU model only.

    The model is drawn among those with a node that could host the pod on its own (enough GPUs and CPU), so no
    pod is made unplaceable by its constraint. ``by_capacity``: with probability proportional to the cluster's
    GPUs of that model (constrained demand follows capacity); otherwise every such model is equally likely,
    which piles demand onto the scarce models (a much harder workload). Pods that already carry a ``gpu_spec``,
    CPU-only pods and the other GPU pods are unchanged; the order of the pods is kept.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share {share!r}: must be between 0 and 1")
    rng = random.Random(seed)
    gpus_of: dict[str, int] = {}
    for node in nodes:
        if node.gpus:
            gpus_of[node.model] = gpus_of.get(node.model, 0) + node.gpus
    candidates = [i for i, pod in enumerate(pods) if pod.num_gpu and not pod.gpu_spec]
    chosen = set(rng.sample(candidates, round(share * len(candidates))))
    out = list(pods)
    for i in sorted(chosen):
        pod = pods[i]
        hosts = sorted({n.model for n in nodes if n.gpus >= pod.num_gpu and n.cpu_milli >= pod.cpu_milli and n.model})
        if not hosts:
            continue  # fits no node anyway: a constraint would change nothing
        model = rng.choices(hosts, weights=[gpus_of[m] if by_capacity else 1 for m in hosts])[0]
        out[i] = dataclasses.replace(pod, gpu_spec=(model,))
    return out
