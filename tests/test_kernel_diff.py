"""Property: on generated programs (tests/kernel_programs.py) the live kernel and bpf-unwind
agree: `unwind.cli.oracle.compare` never answers DISAGREE. Both give the same verdict (and,
when both reject, the same error line); when both accept, the same xlated code, the same JIT
bytes and the same return value from BPF_PROG_TEST_RUN, our JIT in Unicorn and our
interpreter, and our processed-insn count is within a factor of 1.5 of `verified_insns`.

Two grammars are drawn: the base one, and the base one with every feature of
tests/kernel_programs_core.py (value ranges with JMP/JMP32 refinement and dead branches,
variable-offset stack access, tc packet access, loops on bounded counters).
KERNEL_DIFF_FEATURES="ranges,packet" picks another feature set for the second. CI runs a
small derandomized set of each (KERNEL_DIFF_EXAMPLES, default 60);
`KERNEL_DIFF_EXAMPLES=10000 .venv/bin/python -m pytest tests/test_kernel_diff.py -q -x`
runs the large search. Without a usable kernel the test fails in CI (CI set) with the
probe's reason and skips locally."""

from __future__ import annotations

import atexit
import json
import os
from collections import Counter

from hypothesis import HealthCheck, event, given, settings

from tests.kernel_programs import kernel_programs
from tests.kernel_programs_core import FEATURES
from tests.live_kernel import require_live_kernel
from unwind.cli.oracle import compare, table
from verifier.asm.assembler import assemble

EXAMPLES = int(os.environ.get("KERNEL_DIFF_EXAMPLES", "60"))
# our processed insns against the kernel's verified_insns; the large runs set
# KERNEL_DIFF_INSNS_FACTOR=inf to count the outliers (hypothesis statistics) rather than stop
INSNS_FACTOR = float(os.environ.get("KERNEL_DIFF_INSNS_FACTOR", "1.5"))
_chosen = os.environ.get("KERNEL_DIFF_FEATURES", "")
CHOSEN = frozenset(f for f in _chosen.split(",") if f) if _chosen else frozenset(FEATURES)


COUNTS: Counter[str] = Counter()  # outcomes and insn-ratio bands of this run


def _dump_counts() -> None:
    """KERNEL_DIFF_STATS=file: the counts of the run as one JSON line (for large runs)."""
    path = os.environ.get("KERNEL_DIFF_STATS")
    if path and COUNTS:
        with open(path, "a") as fh:
            fh.write(json.dumps(dict(sorted(COUNTS.items()))) + "\n")


atexit.register(_dump_counts)


def check_program(text: str) -> str:
    """Compare one program; fails on DISAGREE with the table and the program text."""
    c = compare(assemble(text, "<gen>"), None, "<gen>")
    event(f"outcome {c.outcome}")
    COUNTS[f"outcome {c.outcome}"] += 1
    event(f"kernel {c.kernel} / ours {c.ours}")
    assert c.outcome != "DISAGREE", f"{table([c])}\n--- program ---\n{text}"
    if c.kernel == c.ours == "accepted" and c.kernel_insns and c.our_insns:
        ratio = c.our_insns / c.kernel_insns
        band = ("exact" if ratio == 1 else "within 10%" if 0.9 <= ratio <= 1.1
                else "within 1.5x" if 1 / 1.5 <= ratio <= 1.5 else "beyond 1.5x")
        event(f"insns ours/kernel {band}")
        COUNTS[f"insns {band}"] += 1
        COUNTS["ratio max x1000"] = max(COUNTS["ratio max x1000"], round(ratio * 1000))
        COUNTS["ratio min x1000"] = min(COUNTS.get("ratio min x1000", 10**9), round(ratio * 1000))
        assert 1 / INSNS_FACTOR <= ratio <= INSNS_FACTOR, (
            f"processed insns: ours {c.our_insns}, kernel {c.kernel_insns}\n--- program ---\n{text}")
    return c.outcome


SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(kernel_programs())
def _base(text: str) -> None:
    check_program(text)


@SETTINGS
@given(kernel_programs(CHOSEN))
def _features(text: str) -> None:
    check_program(text)


def test_kernel_agrees_on_generated_programs() -> None:
    require_live_kernel()
    _base()


def test_kernel_agrees_on_programs_with_ranges_varoff_packets_loops() -> None:
    require_live_kernel()
    _features()
