"""Verifier speed: instructions processed per second by our `do_check` (verifier.check.checker.check,
the rewrites not included), on the test corpus and on large generated programs.

Each program is loaded once and checked `--repeats` times; the table gives the program's
length, the instructions the verifier processed (its `processed N insns`, the work done),
the states it stored, the median time of one check and processed insns per second. Corpus
objects are summed per file (`--per-program` lists every program); a rejected program
counts the work done up to its rejection (verdict column: how many were rejected).
Generated programs:
  straight   long straight-line ALU code, no branch: the per-insn cost alone
  branches   independent two-way branches on an unknown value, both arms converging to one
             state: a checkpoint and a pruned path per branch
  loop       a bounded loop the verifier walks to its end (every iteration a new state)
  loop_mem   the same with a spill and a fill of the stack per iteration

    .venv/bin/python benchmarks/verifier_speed.py [--repeats 5] [--scale 1.0] [--log-level 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from verifier.asm.assembler import assemble  # noqa: E402
from verifier.check.checker import check  # noqa: E402
from verifier.check.scalar_bounds import _SYNC_CACHE  # noqa: E402
from verifier.errors import VerifierError  # noqa: E402
from verifier.load.object import load_object  # noqa: E402
from verifier.program import Program  # noqa: E402


def straight(n: int) -> str:
    """n ALU insns over r1-r5, each depending on the one before."""
    body = "".join(f"\tr{1 + i % 4} += {i % 7 + 1}\n\tr5 = r{1 + i % 4}\n\tr5 ^= {i & 0x7FFF}\n"
                   f"\tr{1 + (i + 1) % 4} = r5\n" for i in range(n // 4))  # fmt: skip
    return "main:\n\tr1 = 0\n\tr2 = 0\n\tr3 = 0\n\tr4 = 0\n" + body + "\tr0 = 0\n\texit\n"


def branches(n: int) -> str:
    """n branches on a fresh unknown ctx load; both arms leave the same state."""
    body = "".join(f"\tr2 = *(u32 *)(r1 + 0)\n\tif r2 > {i} goto .La{i}\n\tr2 = 0\n\tgoto .Lb{i}\n"
                   f".La{i}:\n\tr2 = 0\n.Lb{i}:\n" for i in range(n))  # fmt: skip
    return "main:\n" + body + "\tr0 = 0\n\texit\n"


def loop(n: int) -> str:
    return f"main:\n\tr0 = 0\n.Lloop:\n\tr0 += 1\n\tif r0 < {n} goto .Lloop\n\texit\n"


def loop_mem(n: int) -> str:
    return (f"main:\n\tr0 = 0\n\tr6 = 0\n.Lloop:\n\tr6 += r0\n\tr6 &= 0xffff\n\t*(u64 *)(r10 - 8) = r6\n"
            f"\tr7 = *(u64 *)(r10 - 8)\n\tr0 += 1\n\tif r0 < {n} goto .Lloop\n\tr0 = 0\n\texit\n")


def generated(scale: float) -> list[tuple[str, Program]]:
    s = max(scale, 0.01)
    return [(name, assemble(make(max(int(n * s), 4)), name)) for name, make, n in (
        ("straight", straight, 40_000), ("branches", branches, 4_000),
        ("loop", loop, 40_000), ("loop_mem", loop_mem, 20_000),
    )]  # fmt: skip


def corpus() -> list[tuple[str, list[Program]]]:
    objs = sorted((ROOT / "tests/progs").glob("*.o"))
    groups = [(p.name, list(load_object(p).programs.values())) for p in objs]
    asm = [assemble(p.read_text(), str(p)) for p in sorted((ROOT / "tests/asm_corpus").glob("*.s"))]
    return groups + [("asm_corpus/*.s", asm)]


def measure(prog: Program, repeats: int, level: int) -> tuple[float, dict[str, int], bool]:
    """Median seconds of one check, its stats, accepted."""
    times: list[float] = []
    stats: dict[str, int] = {}
    accepted = True
    for _ in range(repeats):
        _SYNC_CACHE.clear()  # each check starts cold, as a single `bpf-unwind verify` does
        t0 = time.perf_counter()
        try:
            stats = check(prog, log_level=level).stats
        except VerifierError as err:
            stats, accepted = getattr(err, "stats", {}), False
        times.append(time.perf_counter() - t0)
    return statistics.median(times), stats, accepted


HEADER = (f"{'program':<40} {'progs':>5} {'rejected':>8} {'insns':>7} {'processed':>10} {'states':>7} "
          f"{'median ms':>10} {'Kinsn/s':>8}")


def row(name: str, runs: list[tuple[Program, float, dict[str, int], bool]]) -> str:
    insns = sum(len(p.insns) for p, *_ in runs)
    processed = sum(s.get("insn_processed", 0) for *_, s, _ in runs)
    states = sum(s.get("total_states", 0) for *_, s, _ in runs)
    secs = sum(t for _, t, _, _ in runs)
    rejected = sum(not ok for *_, ok in runs)
    rate = processed / secs / 1e3 if secs else 0.0
    return (f"{name:<40} {len(runs):>5} {rejected:>8} {insns:>7} {processed:>10} {states:>7} "
            f"{secs * 1e3:>10.2f} {rate:>8.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the generated programs' sizes")
    ap.add_argument("--log-level", type=int, default=0, choices=(0, 1, 2), help="the verifier log's level")
    ap.add_argument("--per-program", action="store_true", help="a row per corpus program")
    args = ap.parse_args(argv)

    def run(p: Program) -> tuple[Program, float, dict[str, int], bool]:
        return (p, *measure(p, args.repeats, args.log_level))

    print(f"medians over {args.repeats} checks at log level {args.log_level}; Kinsn/s = processed insns"
          " / median time (per file: sums)")
    print(HEADER)
    print("-" * len(HEADER))
    total: list[tuple[Program, float, dict[str, int], bool]] = []
    for name, progs in corpus():
        runs = [run(p) for p in progs]
        total += runs
        if args.per_program:
            for r in runs:
                print(row(f"  {r[0].name}"[:40], [r]))
        print(row(name, runs))
    print(row("corpus (all of the above)", total))
    print("-" * len(HEADER))
    for name, prog in generated(args.scale):
        print(row(name, [run(prog)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
