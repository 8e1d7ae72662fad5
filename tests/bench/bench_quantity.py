#!/usr/bin/env python3
"""Cost of parsing one quantity, ordinary and hostile (issue 18 item 8).

    python tests/bench/bench_quantity.py [--old-timeout 300]

Times dra_hami.quantity.to_int on ordinary values and its refusal of hostile ones (best of 5 runs of
timeit), and, for comparison, what the parser it replaced (the kubernetes client's parse_quantity plus the
integer conversion the components did) spent on ``1e1000000`` (in a subprocess, cut off at --old-timeout s).
Not a test: pytest does not collect this directory (tests/bench/conftest.py).
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dra_hami.quantity import QuantityError, to_int

VALUES = ["4Gi", "1500Mi", "30", "9223372036854775807", "1e1000000", "10e999999", "9" * 99 + "e99", "1" * 200]
OLD = "from kubernetes.utils import parse_quantity as p; int(p('1e1000000').to_integral_value())"


def per_call_us(value: str) -> float:
    def once() -> None:
        with contextlib.suppress(QuantityError):
            to_int(value, "capacity.requests[memory]")

    number = 2000
    return min(timeit.repeat(once, number=number, repeat=5)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-timeout", type=float, default=300.0)
    args = parser.parse_args()
    print("| value | result | µs per call |\n|---|---|---|")
    for value in VALUES:
        try:
            result = str(to_int(value, "v"))
        except QuantityError:
            result = "refused"
        shown = value if len(value) <= 24 else value[:21] + "..."
        print(f"| `{shown}` | {result[:24]} | {per_call_us(value):.1f} |")
    started = timeit.default_timer()
    try:
        subprocess.run([sys.executable, "-c", OLD], check=True, timeout=args.old_timeout)
        print(f"\nold parser, 1e1000000: {timeit.default_timer() - started:.1f} s")
    except subprocess.TimeoutExpired:
        print(f"\nold parser, 1e1000000: still running after {args.old_timeout:.0f} s")


if __name__ == "__main__":
    main()
