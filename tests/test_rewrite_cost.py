"""Issue 14, class 8: the rewrite passes cost linear work in the program's size.

Each pass (dead code, nops, misc fixups) collects its edits and relinks the program once
(`verifier.rewrite.patch.apply_edits`); `finalize` reports the relink passes and the insns
they visited in its stats. The counters are deterministic, so the bound is asserted
without a clock: a program of n register divisions (n div-by-zero guards) costs one relink
of n + 3 insns, not n relinks."""

import pytest

from unwind.cli import pipeline
from unwind.interp_kernel import run_interp


def divisions(n: int, op: str = "/=") -> str:
    body = "\n".join(f"    r0 {op} r1" for _ in range(n))
    return f"main:\n    r0 = 7\n    r1 = 3\n{body}\n    exit\n"


@pytest.mark.parametrize("n", [10, 100, 1000, 4000])
def test_n_register_divisions_take_one_relink_of_the_program(n):
    vp = pipeline.verify(pipeline.load_text(divisions(n), "div.s"), log_level=0)
    assert vp.stats["insns_patched"] == n
    assert vp.stats["relink_passes"] == 1
    assert vp.stats["insns_relinked"] == n + 3
    assert len(vp.insns) == 4 * n + 3


def test_relink_work_grows_linearly_with_patches_dead_code_and_nops():
    def work(n: int) -> tuple[int, int]:
        dead = "\n".join("    r2 = 1" for _ in range(n))
        text = (f"main:\n    r0 = 0\n    r1 = 3\n    if r0 == 0 goto .Llive\n{dead}\n.Llive:\n"
                + "\n".join("    r0 %= r1\n    goto +0" for _ in range(n)) + "\n    exit\n")
        vp = pipeline.verify(pipeline.load_text(text, "mix.s"), log_level=0)
        assert vp.stats["dead_insns_removed"] == n and vp.stats["insns_patched"] == n
        return vp.stats["relink_passes"], vp.stats["insns_relinked"]

    passes_small, work_small = work(200)
    passes_big, work_big = work(800)
    assert passes_small == passes_big == 3  # dead code, nops, fixups: one relink each
    assert work_big <= 4 * work_small + 16  # 4x the program, 4x the work


def test_divisions_still_compute_after_the_batched_guards():
    vp = pipeline.verify(pipeline.load_text(divisions(3), "div.s"), log_level=0)
    assert run_interp(vp).retval == 0  # 7 / 3 / 3 / 3
    vp = pipeline.verify(pipeline.load_text(divisions(2, "%="), "mod.s"), log_level=0)
    assert run_interp(vp).retval == 1
