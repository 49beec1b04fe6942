"""Property: on generated programs (tests/kernel_programs.py) the live kernel and bpf-unwind
agree: `unwind.cli.oracle.compare` never answers DISAGREE. Both give the same verdict (and,
when both reject, the same error line); when both accept, the same xlated code, the same JIT
bytes and the same return value from BPF_PROG_TEST_RUN, our JIT in Unicorn and our
interpreter.

CI runs a small derandomized set (KERNEL_DIFF_EXAMPLES, default 60, about 20 s);
`KERNEL_DIFF_EXAMPLES=10000 .venv/bin/python -m pytest tests/test_kernel_diff.py -q -x`
runs the large search. Without a usable kernel the test fails in CI (CI set) with the
probe's reason and skips locally."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, event, given, settings

from tests.kernel_programs import kernel_programs
from tests.live_kernel import require_live_kernel
from unwind.cli.oracle import compare, table
from verifier.asm.assembler import assemble

EXAMPLES = int(os.environ.get("KERNEL_DIFF_EXAMPLES", "60"))


def check_program(text: str) -> str:
    """Compare one program; fails on DISAGREE with the table and the program text."""
    c = compare(assemble(text, "<gen>"), None, "<gen>")
    event(f"outcome {c.outcome}")
    event(f"kernel {c.kernel} / ours {c.ours}")
    assert c.outcome != "DISAGREE", f"{table([c])}\n--- program ---\n{text}"
    return c.outcome


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(kernel_programs())
def _property(text: str) -> None:
    check_program(text)


def test_kernel_agrees_on_generated_programs() -> None:
    require_live_kernel()
    _property()
