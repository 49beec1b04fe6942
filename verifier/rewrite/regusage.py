"""Callee-saved register usage of a subprog: the one definition shared by verifier and JIT.

The series (patch 08) computed `callee_regs_used` twice: the verifier in `check_subprogs()`
on the program as loaded, the x86 JIT in `detect_reg_usage()` on the rewritten program. The
unwinder trusts the verifier's copy to know which of R6-R9 a prologue pushed, so any
divergence makes it read the wrong stack slots. Here both sides call `detect_reg_usage` on
the final program (verifier.rewrite.fixups does, after every rewrite)."""

from __future__ import annotations

from collections.abc import Sequence

from verifier.isa.insn import BPF_REG_6, BPF_REG_9, Insn


def detect_reg_usage(insns: Sequence[Insn], start: int, end: int) -> tuple[bool, bool, bool, bool]:
    """Which of R6, R7, R8, R9 appear as dst or src register of an insn in [start, end).

    This is exactly what the JIT prologue pushes for the subprog (the JIT additionally
    pushes all four for an exception boundary or the throw trampoline; that is a property
    of the subprog, not of its insns).

    Not registers, hence never counted:
    - the second slot of an ld_imm64 (skipped as a whole);
    - the `src` field of an ld_imm64 and of a call: it holds a pseudo value
      (BPF_PSEUDO_MAP_IDX_VALUE is 6, BPF_PSEUDO_FUNC 4, BPF_PSEUDO_KFUNC_CALL 2).
      The series' verifier copy (patch 08) counted any src in 6..9, so
      `r1 = map_value[...] ll` with src 6 marked R6 as used although nothing pushes it:
      that bug is fixed here."""
    used = [False, False, False, False]
    pc = start
    while pc < end:
        insn = insns[pc]
        if BPF_REG_6 <= insn.dst <= BPF_REG_9:
            used[insn.dst - BPF_REG_6] = True
        pseudo_src = insn.is_ld_imm64() or insn.is_call()
        if not pseudo_src and BPF_REG_6 <= insn.src <= BPF_REG_9:
            used[insn.src - BPF_REG_6] = True
        pc += 2 if insn.is_ld_imm64() else 1
    return (used[0], used[1], used[2], used[3])
