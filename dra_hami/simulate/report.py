"""Summaries over seeds, and their outputs: a text table, JSON, and an allocation-vs-arrival plot (SVG or PNG)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from dra_hami.allocator import PolicyChoice

from .protocol import REPORT_POINTS, SeedResult


@dataclass(frozen=True, slots=True)
class Stat:
    mean: float
    sd: float  # sample standard deviation over seeds (0 with one seed)

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


@dataclass(frozen=True, slots=True)
class PolicySummary:
    name: str
    choice: PolicyChoice
    seeds: tuple[int, ...]
    at: dict[int, Stat]  # arrived % -> allocation % over seeds
    decision_ms_p50: float
    decision_ms_p99: float
    decision_ms_max: float
    decision_wall_ms_p99: float
    pods: int  # offered per seed, mean
    skipped: float  # per seed, mean
    wall_s: float  # summed over seeds (wall time of the replays)
    cpu_s: float  # summed over seeds (CPU time of the replays)
    curve: tuple[tuple[int, float], ...]  # arrived % bin -> mean allocation % over seeds


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarise(name: str, choice: PolicyChoice, results: Sequence[SeedResult]) -> PolicySummary:
    times = sorted(t for r in results for t in r.decision_s)
    bins: dict[int, list[float]] = {}
    for r in results:
        for b, value in r.curve():
            bins.setdefault(b, []).append(value)
    return PolicySummary(
        name=name,
        choice=choice,
        seeds=tuple(r.seed for r in results),
        at={p: Stat.of([r.allocation_at(p) for r in results]) for p in REPORT_POINTS},
        decision_ms_p50=1000 * percentile(times, 50),
        decision_ms_p99=1000 * percentile(times, 99),
        decision_ms_max=1000 * (times[-1] if times else 0.0),
        decision_wall_ms_p99=1000 * percentile(sorted(t for r in results for t in r.decision_wall_s), 99),
        pods=round(statistics.fmean(len(r.arrived) for r in results)),
        skipped=statistics.fmean(r.skipped for r in results),
        wall_s=sum(r.wall_s for r in results),
        cpu_s=sum(r.cpu_s for r in results),
        curve=tuple((b, statistics.fmean(v)) for b, v in sorted(bins.items())),
    )


def to_json(summaries: Sequence[PolicySummary], trace: dict[str, Any] | None = None) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    for s in summaries:
        entry: dict[str, Any] = {
            f"allocation_at_{p}": {"mean": round(s.at[p].mean, 4), "sd": round(s.at[p].sd, 4)} for p in REPORT_POINTS
        }
        entry.update(
            {
                "decision_ms_p99": round(s.decision_ms_p99, 3),
                "decision_ms_p50": round(s.decision_ms_p50, 3),
                "decision_ms_max": round(s.decision_ms_max, 3),
                "decision_wall_ms_p99": round(s.decision_wall_ms_p99, 3),
                "node_policy": s.choice.node,
                "gpu_policy": s.choice.gpu,
                "seeds": list(s.seeds),
                "pods_per_seed": s.pods,
                "skipped_per_seed": round(s.skipped, 1),
                "replay_s": round(s.wall_s, 2),
                "replay_cpu_s": round(s.cpu_s, 2),
            }
        )
        policies[s.name] = entry
    out: dict[str, Any] = {"policies": policies}
    if trace:
        out["trace"] = trace
    return out


def to_table(summaries: Sequence[PolicySummary]) -> str:
    head = ["policy", "node/gpu", *(f"alloc@{p}% (mean±sd)" for p in REPORT_POINTS)]
    head += ["decision p50 ms", "p99 ms", "skipped/seed", "seeds"]
    rows = [head]
    for s in summaries:
        seeds = f"{len(s.seeds)} ({s.seeds[0]}..{s.seeds[-1]})" if len(s.seeds) > 1 else str(s.seeds[0])
        rows.append(
            [
                s.name,
                f"{s.choice.node}/{s.choice.gpu}",
                *(f"{s.at[p].mean:.2f} ± {s.at[p].sd:.2f}" for p in REPORT_POINTS),
                f"{s.decision_ms_p50:.2f}",
                f"{s.decision_ms_p99:.2f}",
                f"{s.skipped:.0f}",
                seeds,
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------- plots

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(summaries: Sequence[PolicySummary], path: Path, title: str = "") -> None:
    """Allocation % against arrived % per policy, with the y = x line (everything placed). SVG or PNG."""
    suffix = path.suffix.lower()
    if suffix == ".svg":
        path.write_text(svg(summaries, title), encoding="utf-8")
    elif suffix == ".png":
        _png(summaries, path, title)
    else:
        raise ValueError(f"{path}: plot format must be .svg or .png")


# Widest advance of a 12px sans-serif glyph we print (digits, lower case, '/', '%'), rounded up: legend text is
# sized with it, as an SVG file cannot measure its own text.
LEGEND_CHAR_PX = 7.5


def legend_label(summary: PolicySummary) -> str:
    return f"{summary.name} {summary.at[100].mean:.2f}%"


def svg(summaries: Sequence[PolicySummary], title: str = "", width: int = 720, height: int = 480) -> str:
    """A dependency-free SVG line chart. The legend column is as wide as its longest label (``width`` grows to
    keep a 490px plot area), so names like binpack/fragmentation are never clipped."""
    longest = max((len(legend_label(s)) for s in summaries), default=0)
    left, top, bottom = 60, 40, 50
    right = max(170, 36 + int(LEGEND_CHAR_PX * longest + 0.5) + 10)
    width = max(width, left + 490 + right)
    x_max, y_min, y_max = 130.0, 0.0, 100.0
    pw, ph = width - left - right, height - top - bottom

    def x(v: float) -> float:
        return left + pw * min(v, x_max) / x_max

    def y(v: float) -> float:
        return top + ph * (1 - (v - y_min) / (y_max - y_min))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left + pw / 2}" y="20" text-anchor="middle" font-size="14">'
        f"{escape(title or 'GPU allocation vs arrived workload')}</text>",
    ]
    for tick in range(0, 131, 10):
        out.append(f'<line x1="{x(tick):.1f}" y1="{top}" x2="{x(tick):.1f}" y2="{top + ph}" stroke="#eee"/>')
        out.append(f'<text x="{x(tick):.1f}" y="{top + ph + 16}" text-anchor="middle">{tick}</text>')
    for tick in range(0, 101, 10):
        out.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{left + pw}" y2="{y(tick):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>')
    out.append(
        f'<line x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(100):.1f}" y2="{y(100):.1f}" '
        f'stroke="#999" stroke-dasharray="4 4"/>'
    )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 12}" text-anchor="middle">arrived GPU workload (% of capacity)</text>'
    )
    out.append(
        f'<text transform="translate(16 {top + ph / 2}) rotate(-90)" text-anchor="middle">'
        f"GPU allocation (% of capacity)</text>"
    )
    for i, s in enumerate(summaries):
        colour = _COLOURS[i % len(_COLOURS)]
        points = " ".join(f"{x(b):.1f},{y(v):.1f}" for b, v in s.curve if b <= x_max)
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        ly = top + 14 + 18 * i
        out.append(
            f'<line x1="{left + pw + 10}" y1="{ly}" x2="{left + pw + 30}" y2="{ly}" stroke="{colour}" '
            f'stroke-width="2"/>'
        )
        label = legend_label(s)
        out.append(f'<text x="{left + pw + 36}" y="{ly + 4}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _png(summaries: Sequence[PolicySummary], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    ax.plot([0, 100], [0, 100], linestyle="--", color="#999", linewidth=1)
    for s in summaries:
        ax.plot([b for b, _ in s.curve], [v for _, v in s.curve], label=f"{s.name} {s.at[100].mean:.2f}%")
    ax.set_xlim(0, 130)
    ax.set_ylim(0, 100)
    ax.set_xlabel("arrived GPU workload (% of capacity)")
    ax.set_ylabel("GPU allocation (% of capacity)")
    ax.set_title(title or "GPU allocation vs arrived workload")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=100)
    plt.close(fig)
