"""What unwinding costs as frames and resources grow.

Generates a chain main -> f1 -> ... -> f{depth} of static subprogs; every frame holds
`per_frame` objects (one in R6, the rest on its stack) and the innermost frame either
throws (unwinding and releasing everything) or returns normally (dropping everything
itself). Both variants run in the same process; the report gives medians over repeats and
the throw/return ratio per point, plus the unwinder's own time (the bpf_throw hook: stack
walk, descriptor lookups, releases) measured inside the run.

    .venv/bin/python benchmarks/unwind_cost.py [--repeats 21] [--depths 1,2,4,7] [--per-frame 1,4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from unwind.cli import pipeline  # noqa: E402


def _slot(k: int) -> str:
    """Where object k of a frame lives: R6 for the first, stack slots for the rest."""
    return "r6" if k == 0 else f"*(u64 *)(r10 - {8 * k})"


def _frame_body(name: str, per_frame: int, callee: str | None, throws: bool) -> list[str]:
    """One frame in the C `goto cleanup` shape: .Lfree{k} drops objects k-1..0."""
    lines = [f"{name}:"]
    for k in range(per_frame):
        lines += ["\tr1 = obj ll", "\tr2 = 0", "\tcall bpf_obj_new_impl", f"\tif r0 == 0 goto .Lfree{k}"]
        lines.append(f"\t{_slot(k)} = r0")
    if callee is not None:
        lines.append(f"\tcall {callee}")
    elif throws:
        lines += ["\tr1 = 7", "\tcall bpf_throw"]
    for k in range(per_frame, 0, -1):
        lines += [f".Lfree{k}:", f"\tr1 = {_slot(k - 1)}", "\tcall bpf_obj_drop_impl"]
    lines += [".Lfree0:", "\tr0 = 0", "\texit"]
    return lines


def chain_program(depth: int, per_frame: int, throws: bool) -> str:
    """main -> f1 -> ... -> f{depth}; `per_frame` objects held in every frame."""
    names = ["main"] + [f"f{i}" for i in range(1, depth + 1)]
    text = [".struct obj 16", ""]
    for i, name in enumerate(names):
        callee = names[i + 1] if i + 1 < len(names) else None
        text += _frame_body(name, per_frame, callee, throws)
        text.append("")
    return "\n".join(text)


def measure(depth: int, per_frame: int, throws: bool, repeats: int) -> tuple[float, float, int]:
    """Median whole-run time and median unwinder time (us), and objects released by unwind."""
    built = pipeline.build_text(chain_program(depth, per_frame, throws), f"chain{depth}", log_level=0)
    built.run()  # warm: machine setup and translation of every block happen once
    runs, unwinds = [], []
    released = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = built.run()
        runs.append(time.perf_counter() - t0)
        unwinds.append(result.counters["unwind_us"])
        released = result.released_count
    return statistics.median(runs) * 1e6, statistics.median(unwinds), released


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--depths", default="1,2,4,7", help="callee chain lengths (main + 7 = the 8-frame limit)")
    ap.add_argument("--per-frame", default="1,4")
    args = ap.parse_args()
    depths = [int(x) for x in args.depths.split(",")]
    per_frames = [int(x) for x in args.per_frame.split(",")]
    print(
        f"{'frames':>6} {'objs/frame':>10} {'released':>8} {'return us':>10} {'throw us':>9}"
        f" {'ratio':>6} {'unwind us':>10} {'us/frame':>9}"
    )
    for per_frame in per_frames:
        for depth in depths:
            ret_us, _, _ = measure(depth, per_frame, throws=False, repeats=args.repeats)
            thr_us, unwind_us, released = measure(depth, per_frame, throws=True, repeats=args.repeats)
            frames = depth + 2  # the chain plus the throw trampoline
            print(
                f"{depth + 1:>6} {per_frame:>10} {released:>8} {ret_us:>10.1f} {thr_us:>9.1f}"
                f" {thr_us / ret_us:>6.2f} {unwind_us:>10.1f} {unwind_us / frames:>9.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
