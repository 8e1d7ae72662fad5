"""``dra-hami simulate``: replay a GPU-sharing trace (Alibaba openb, or our YAML) through the allocator.

The pure core is ``trace`` (files -> records), ``cluster`` (records -> our wire objects), ``protocol`` (the FGD
artifact's replay and metric) and ``report`` (summaries, JSON, table, plot); ``runner`` spreads seeds over
processes. The CLI in ``dra_hami.cli`` only parses options and prints.
"""

from __future__ import annotations

from .protocol import (
    DEFAULT_SEEDS,
    INFLATION,
    POLICIES,
    REPORT_POINTS,
    ProtocolError,
    SeedResult,
    Simulation,
    parse_seeds,
    policy_choice,
    policy_names,
    workload,
)
from .report import PolicySummary, Stat, plot, summarise, svg, to_json, to_table
from .runner import run
from .trace import GPU_MEMORY_MIB, TraceError, TraceNode, TracePod, load_nodes, load_pods

__all__ = [
    "DEFAULT_SEEDS",
    "GPU_MEMORY_MIB",
    "INFLATION",
    "POLICIES",
    "REPORT_POINTS",
    "PolicySummary",
    "ProtocolError",
    "SeedResult",
    "Simulation",
    "Stat",
    "TraceError",
    "TraceNode",
    "TracePod",
    "load_nodes",
    "load_pods",
    "parse_seeds",
    "plot",
    "policy_choice",
    "policy_names",
    "run",
    "summarise",
    "svg",
    "to_json",
    "to_table",
    "workload",
]
