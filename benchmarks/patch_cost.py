"""Load cost of programs the rewrite passes patch many times: N register divisions.

Every `rD /= rS` gets the kernel's div-by-zero guard (one insn becomes four), so a
program of N divisions takes N patches. The table gives, per N, the median and range of
the wall time of load + verify + rewrite (`pipeline.verify`) over `--repeats` runs, and
the rewrite's own deterministic work counters (`finalize` stats: relink passes and insns
relinked).

    .venv/bin/python benchmarks/patch_cost.py [--sizes 1000 2000 8000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from unwind.cli import pipeline  # noqa: E402


def divisions(n: int) -> str:
    """`r0 = 7; r1 = 3`, then n times `r0 /= r1`, then exit (text assembly)."""
    body = "\n".join("    r0 /= r1" for _ in range(n))
    return f"main:\n    r0 = 7\n    r1 = 3\n{body}\n    exit\n"


def measure(n: int, repeats: int) -> tuple[list[float], dict[str, int]]:
    text = divisions(n)
    times: list[float] = []
    stats: dict[str, int] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        vp = pipeline.verify(pipeline.load_text(text, f"div{n}.s"), log_level=0)
        times.append(time.perf_counter() - t0)
        stats = vp.stats
    return times, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 8000])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"{'divisions':>9}  {'median s':>9}  {'min..max s':>15}  {'relinks':>7}  {'relinked':>8}")
    for n in args.sizes:
        times, stats = measure(n, args.repeats)
        rng = f"{min(times):.3f}..{max(times):.3f}"
        print(f"{n:>9}  {statistics.median(times):>9.3f}  {rng:>15}  {stats.get('relink_passes', '-'):>7}"
              f"  {stats.get('insns_relinked', '-'):>8}")


if __name__ == "__main__":
    main()
