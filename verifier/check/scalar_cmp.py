"""Conditional jumps on scalars (Linux 6.18): `is_branch_taken` (the kernel's
`is_scalar_branch_taken`: 1 always taken, 0 never, -1 unknown) and `reg_set_min_max`, which
refines both operands on both sides of an undecided jump (`regs_refine_cond_op`, then
`reg_bounds_sync`). For `if rX op imm` the second operand is a known scalar holding the
sign-extended imm; with JMP32 only its low word counts."""

from __future__ import annotations

from verifier.check.scalar_bounds import (
    Bounds,
    is_reg_const,
    mark_reg_unbounded,
    reg_bounds_sync,
    reg_const_value,
    s32,
    s64,
    u32,
)
from verifier.check.tnum import (
    U64,
    Tnum,
    tnum_and,
    tnum_const,
    tnum_intersect,
    tnum_is_const,
    tnum_or,
    tnum_overlap,
    tnum_subreg,
    tnum_with_subreg,
)
from verifier.isa.insn import (
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    BPF_X,
)

JSET_NOT = BPF_JSET | BPF_X  # the kernel's name for "not JSET" (the false side of JSET)

_REVERSE = {BPF_JEQ: BPF_JNE, BPF_JNE: BPF_JEQ, BPF_JSET: JSET_NOT, JSET_NOT: BPF_JSET,
            BPF_JGE: BPF_JLT, BPF_JGT: BPF_JLE, BPF_JLE: BPF_JGT, BPF_JLT: BPF_JGE,
            BPF_JSGE: BPF_JSLT, BPF_JSGT: BPF_JSLE, BPF_JSLE: BPF_JSGT, BPF_JSLT: BPF_JSGE}
_FLIP = {BPF_JGE: BPF_JLE, BPF_JGT: BPF_JLT, BPF_JLE: BPF_JGE, BPF_JLT: BPF_JGT,
         BPF_JSGE: BPF_JSLE, BPF_JSGT: BPF_JSLT, BPF_JSLE: BPF_JSGE, BPF_JSLT: BPF_JSGT}


def rev_opcode(opcode: int) -> int:
    """The condition of the fall-through side."""
    return _REVERSE[opcode]


def flip_opcode(opcode: int) -> int:
    """The same condition with its operands swapped."""
    return _FLIP.get(opcode, opcode)


def _view(r: Bounds, is_jmp32: bool) -> tuple[Tnum, int, int, int, int]:
    if is_jmp32:
        return (tnum_subreg(r.var_off), r.u32_min_value, r.u32_max_value,
                r.s32_min_value, r.s32_max_value)
    return r.var_off, r.umin_value, r.umax_value, r.smin_value, r.smax_value


def _disjoint(r1: Bounds, r2: Bounds, is_jmp32: bool) -> bool:
    """No value can be in both (tnums, ranges, and for 64 bits the 32-bit ranges too)."""
    t1, umin1, umax1, smin1, smax1 = _view(r1, is_jmp32)
    t2, umin2, umax2, smin2, smax2 = _view(r2, is_jmp32)
    if not tnum_overlap(t1, t2):
        return True
    if umin1 > umax2 or umax1 < umin2 or smin1 > smax2 or smax1 < smin2:
        return True
    if not is_jmp32:
        if r1.u32_min_value > r2.u32_max_value or r1.u32_max_value < r2.u32_min_value:
            return True
        if r1.s32_min_value > r2.s32_max_value or r1.s32_max_value < r2.s32_min_value:
            return True
    return False


def _jset_taken(r1: Bounds, r2: Bounds, is_jmp32: bool) -> int:
    if not is_reg_const(r2, is_jmp32):
        r1, r2 = r2, r1
    if not is_reg_const(r2, is_jmp32):
        return -1
    t1 = tnum_subreg(r1.var_off) if is_jmp32 else r1.var_off
    val = reg_const_value(r2, is_jmp32)
    if t1.value & val:  # a bit known to be 1 in r1
        return 1
    if not ((t1.value | t1.mask) & val):
        return 0
    return -1


def is_branch_taken(r1: Bounds, r2: Bounds, opcode: int, is_jmp32: bool) -> int:
    """Is `if r1 <opcode> r2` taken for every member (1), for none (0), or unknown (-1)?
    Like 6.18, a register compared with itself gets no special case."""
    t1, umin1, umax1, smin1, smax1 = _view(r1, is_jmp32)
    t2, umin2, umax2, smin2, smax2 = _view(r2, is_jmp32)
    if opcode in (BPF_JEQ, BPF_JNE):
        eq = opcode == BPF_JEQ
        if tnum_is_const(t1) and tnum_is_const(t2):
            return int((t1.value == t2.value) == eq)
        if _disjoint(r1, r2, is_jmp32):
            return int(not eq)
        return -1
    if opcode == BPF_JSET:
        return _jset_taken(r1, r2, is_jmp32)
    table = {
        BPF_JGT: (umin1 > umax2, umax1 <= umin2),
        BPF_JSGT: (smin1 > smax2, smax1 <= smin2),
        BPF_JLT: (umax1 < umin2, umin1 >= umax2),
        BPF_JSLT: (smax1 < smin2, smin1 >= smax2),
        BPF_JGE: (umin1 >= umax2, umax1 < umin2),
        BPF_JSGE: (smin1 >= smax2, smax1 < smin2),
        BPF_JLE: (umax1 <= umin2, umin1 > umax2),
        BPF_JSLE: (smax1 <= smin2, smin1 > smax2),
    }
    always, never = table[opcode]
    if always:
        return 1
    return 0 if never else -1


# --- refining ------------------------------------------------------------------------------


def _refine_eq(r1: Bounds, r2: Bounds, is_jmp32: bool) -> None:
    if is_jmp32:
        r1.u32_min_value = r2.u32_min_value = max(r1.u32_min_value, r2.u32_min_value)
        r1.u32_max_value = r2.u32_max_value = min(r1.u32_max_value, r2.u32_max_value)
        r1.s32_min_value = r2.s32_min_value = max(r1.s32_min_value, r2.s32_min_value)
        r1.s32_max_value = r2.s32_max_value = min(r1.s32_max_value, r2.s32_max_value)
        t = tnum_intersect(tnum_subreg(r1.var_off), tnum_subreg(r2.var_off))
        r1.var_off = tnum_with_subreg(r1.var_off, t)
        r2.var_off = tnum_with_subreg(r2.var_off, t)
    else:
        r1.umin_value = r2.umin_value = max(r1.umin_value, r2.umin_value)
        r1.umax_value = r2.umax_value = min(r1.umax_value, r2.umax_value)
        r1.smin_value = r2.smin_value = max(r1.smin_value, r2.smin_value)
        r1.smax_value = r2.smax_value = min(r1.smax_value, r2.smax_value)
        r1.var_off = r2.var_off = tnum_intersect(r1.var_off, r2.var_off)


def _refine_ne(r1: Bounds, r2: Bounds, is_jmp32: bool) -> None:
    """Only a constant at an end of the other's range helps: that end moves inward."""
    if not is_reg_const(r2, is_jmp32):
        r1, r2 = r2, r1
    if not is_reg_const(r2, is_jmp32):
        return
    val = reg_const_value(r2, is_jmp32)
    if is_jmp32:
        if r1.u32_min_value == u32(val):
            r1.u32_min_value = u32(r1.u32_min_value + 1)
        if r1.u32_max_value == u32(val):
            r1.u32_max_value = u32(r1.u32_max_value - 1)
        if r1.s32_min_value == s32(val):
            r1.s32_min_value = s32(r1.s32_min_value + 1)
        if r1.s32_max_value == s32(val):
            r1.s32_max_value = s32(r1.s32_max_value - 1)
    else:
        if r1.umin_value == val:
            r1.umin_value = (r1.umin_value + 1) & U64
        if r1.umax_value == val:
            r1.umax_value = (r1.umax_value - 1) & U64
        if r1.smin_value == s64(val):
            r1.smin_value = s64(r1.smin_value + 1)
        if r1.smax_value == s64(val):
            r1.smax_value = s64(r1.smax_value - 1)


def _refine_jset(r1: Bounds, r2: Bounds, is_jmp32: bool, taken: bool) -> None:
    """Taken with a single-bit constant: that bit is 1. Not taken: the constant's bits
    are 0 (the ranges are forgotten first and relearned from the tnum)."""
    if not is_reg_const(r2, is_jmp32):
        r1, r2 = r2, r1
    if not is_reg_const(r2, is_jmp32):
        return
    val = reg_const_value(r2, is_jmp32)
    if taken:
        if not val or val & (val - 1):
            return
        bits = tnum_const(val)
        join = tnum_or
    else:
        mark_reg_unbounded(r1)
        bits = tnum_const(~val & U64)
        join = tnum_and
    if is_jmp32:
        r1.var_off = tnum_with_subreg(r1.var_off, join(tnum_subreg(r1.var_off), bits))
    else:
        r1.var_off = join(r1.var_off, bits)


def _refine_le_lt(r1: Bounds, r2: Bounds, opcode: int, is_jmp32: bool) -> None:
    """r1 <= r2 (or <), unsigned or signed: r1's max and r2's min move."""
    strict = 1 if opcode in (BPF_JLT, BPF_JSLT) else 0
    signed = opcode in (BPF_JSLE, BPF_JSLT)
    if is_jmp32:
        lo_n, hi_n = ("s32_min_value", "s32_max_value") if signed else ("u32_min_value", "u32_max_value")
        wrap = s32 if signed else u32
    else:
        lo_n, hi_n = ("smin_value", "smax_value") if signed else ("umin_value", "umax_value")
        wrap = s64 if signed else (lambda x: x & U64)
    setattr(r1, hi_n, min(getattr(r1, hi_n), wrap(getattr(r2, hi_n) - strict)))
    setattr(r2, lo_n, max(wrap(getattr(r1, lo_n) + strict), getattr(r2, lo_n)))


def regs_refine_cond_op(r1: Bounds, r2: Bounds, opcode: int, is_jmp32: bool) -> None:
    """Assume `r1 <opcode> r2` holds; narrow both (bounds may be left unsynced)."""
    if opcode in (BPF_JGE, BPF_JGT, BPF_JSGE, BPF_JSGT):
        opcode = flip_opcode(opcode)
        r1, r2 = r2, r1
    if opcode == BPF_JEQ:
        _refine_eq(r1, r2, is_jmp32)
    elif opcode == BPF_JNE:
        _refine_ne(r1, r2, is_jmp32)
    elif opcode in (BPF_JSET, JSET_NOT):
        _refine_jset(r1, r2, is_jmp32, opcode == BPF_JSET)
    else:
        _refine_le_lt(r1, r2, opcode, is_jmp32)


def reg_set_min_max(true1: Bounds, true2: Bounds, false1: Bounds, false2: Bounds,
                    opcode: int, is_jmp32: bool) -> None:
    """Refine the taken side's copies (`true1`, `true2`) and the fall-through side's
    (`false1`, `false2`) of the two operands of an undecided jump. Like 6.18, a register
    compared with itself (`true1 is true2`) is refined as if it were two: `if r2 < r2`
    leaves r2 in [umin + 1, umax - 1] on the (impossible) taken side."""
    regs_refine_cond_op(false1, false2, rev_opcode(opcode), is_jmp32)
    reg_bounds_sync(false1)
    reg_bounds_sync(false2)
    regs_refine_cond_op(true1, true2, opcode, is_jmp32)
    reg_bounds_sync(true1)
    reg_bounds_sync(true2)
