"""Programs tests/test_soundness.py found, kept as regressions (data first: the program as
the generator drew it, reduced, then what must happen)."""

from __future__ import annotations

from unwind.cli import pipeline
from unwind.interp_kernel import run_interp

# Dead-code removal deleted f1 (called only from main's dead tail) while the uncalled f3,
# separated from it by the live global g and removed later, still called it: "verifier
# internal error: insn 9 refers to a removed subprog". All dead insns now go in one batch.
DEAD_CALL_ACROSS_A_LIVE_GLOBAL = """.global g
main:
	r1 = 1
	call bpf_throw
	call f1
	r0 = 0
	exit
f1:
	r0 = 0
	exit
g:
	r0 = 0
	exit
f3:
	call f1
	r0 = 0
	exit
"""


def test_dead_call_into_a_dead_subprog_across_a_live_global():
    built = pipeline.build_text(DEAD_CALL_ACROSS_A_LIVE_GLOBAL, "dead.s", log_level=0)
    # g is never called, so (as in the kernel) never verified, and dead code like f1 and f3
    assert [sp.name for sp in built.verified.subprogs if not sp.hidden] == ["main"]
    for result in (built.run(), run_interp(built.verified)):
        assert result.threw and result.retval == 1
