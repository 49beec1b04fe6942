"""The scalar value domain's transfer functions (Linux 6.18 semantics): ALU operations
(`scalar_alu` = the kernel's `adjust_scalar_min_max_vals`), NEG, BPF_END byte swaps, 32-bit
and sign-extending moves, and the narrowing of loads (`coerce_reg_to_size[_sx]`).

Every function updates a `Bounds` in place. The bounds themselves, the marks and
`reg_bounds_sync` live in `verifier.check.scalar_bounds` (re-exported here), the per-op
range rules in `verifier.check.scalar_alu`."""

from __future__ import annotations

from verifier.check import scalar_alu as ra
from verifier.check.scalar_bounds import (
    S32_MAX,
    S32_MIN,
    Bounds,
    Scalar,
    const_value,
    copy_bounds,
    is_const,
    is_reg_const,
    mark_reg32_unbounded,
    mark_reg_known,
    mark_reg_unbounded,
    mark_reg_unknown,
    reg_bounds_sync,
    s32,
    s64,
    u32,
    zext_32_to_64,
)
from verifier.check.tnum import (
    TNUM_UNKNOWN,
    U32,
    U64,
    Tnum,
    tnum_add,
    tnum_and,
    tnum_cast,
    tnum_const,
    tnum_is_const,
    tnum_mul,
    tnum_neg,
    tnum_or,
    tnum_range,
    tnum_sub,
    tnum_subreg,
    tnum_subreg_is_const,
    tnum_xor,
)
from verifier.isa.insn import (
    BPF_ADD,
    BPF_ALU64,
    BPF_AND,
    BPF_ARSH,
    BPF_LSH,
    BPF_MUL,
    BPF_OR,
    BPF_RSH,
    BPF_SUB,
    BPF_TO_BE,
    BPF_XOR,
    Insn,
    bswap,
    sext,
)

__all__ = [
    "Bounds", "Scalar", "const_value", "copy_bounds", "is_const", "mark_reg_known",
    "mark_reg_unknown", "reg_bounds_sync", "scalar_alu", "scalar_alu_forks", "scalar_neg", "scalar_end",
    "scalar_mov32", "scalar_movsx", "coerce_reg_to_size", "coerce_reg_to_size_sx",
    "is_safe_to_compute_dst_reg_range",
]

_BOTH_WIDTHS = (BPF_ADD, BPF_SUB, BPF_MUL, BPF_AND, BPF_OR, BPF_XOR)
_SHIFTS = (BPF_LSH, BPF_RSH, BPF_ARSH)


def is_safe_to_compute_dst_reg_range(src: Bounds, op: int, alu64: bool) -> bool:
    """Ops whose result range the kernel computes; shifts only by a constant below the
    width (the constant judged on the view of the operation's width). DIV and MOD: never."""
    if op in _BOTH_WIDTHS:
        return True
    if op not in _SHIFTS:
        return False
    if alu64:
        known = (tnum_is_const(src.var_off) and src.smin_value == src.smax_value
                 and src.umin_value == src.umax_value)
    else:
        known = (tnum_subreg_is_const(src.var_off) and src.s32_min_value == src.s32_max_value
                 and src.u32_min_value == src.u32_max_value)
    return known and src.umax_value < (64 if alu64 else 32)


_TNUM_OPS = {BPF_ADD: tnum_add, BPF_SUB: tnum_sub, BPF_MUL: tnum_mul, BPF_AND: tnum_and,
             BPF_OR: tnum_or, BPF_XOR: tnum_xor}


_RANGE_RULES = {
    BPF_ADD: (ra.scalar32_min_max_add, ra.scalar_min_max_add),
    BPF_SUB: (ra.scalar32_min_max_sub, ra.scalar_min_max_sub),
    BPF_MUL: (ra.scalar32_min_max_mul, ra.scalar_min_max_mul),
    BPF_AND: (ra.scalar32_min_max_and, ra.scalar_min_max_and),
    BPF_OR: (ra.scalar32_min_max_or, ra.scalar_min_max_or),
    BPF_XOR: (ra.scalar32_min_max_xor, ra.scalar_min_max_xor),
    BPF_LSH: (ra.scalar32_min_max_lsh, ra.scalar_min_max_lsh),
    BPF_RSH: (ra.scalar32_min_max_rsh, ra.scalar_min_max_rsh),
    BPF_ARSH: (ra.scalar32_min_max_arsh, ra.scalar_min_max_arsh),
}


def scalar_alu_forks(dst: Bounds, src: Bounds, op: int, alu64: bool) -> bool:
    """Does 6.18 split the path before `dst &= const` / `dst |= const` on a dst in [-1, 0]
    (s64, or s32 for ALU32)? Then the caller pushes a copy of the state, at this same
    instruction, with dst = 0, and goes on with dst = -1 (the `x s>> 63; x &= K` idiom)."""
    if op not in (BPF_AND, BPF_OR) or not is_reg_const(src, not alu64):
        return False
    if alu64:
        return dst.smin_value == -1 and dst.smax_value == 0
    return dst.s32_min_value == -1 and dst.s32_max_value == 0


def _const_bounds(r: Bounds) -> bool:
    """Every view of a constant tnum agrees with it (a dead branch can leave them apart)."""
    v = r.var_off.value
    return (r.umin_value == r.umax_value == v and r.smin_value == r.smax_value == s64(v)
            and r.u32_min_value == r.u32_max_value == v & U32
            and r.s32_min_value == r.s32_max_value == s32(v))


def _fold(op: int, a: int, b: int, bits: int) -> int:
    """The constant result of a safe op (shifts by less than the width) at that width."""
    mask = (1 << bits) - 1
    a, b = a & mask, b & mask
    if op == BPF_ADD:
        r = a + b
    elif op == BPF_SUB:
        r = a - b
    elif op == BPF_MUL:
        r = a * b
    elif op == BPF_AND:
        r = a & b
    elif op == BPF_OR:
        r = a | b
    elif op == BPF_XOR:
        r = a ^ b
    elif op == BPF_LSH:
        r = a << b
    elif op == BPF_RSH:
        r = a >> b
    else:  # BPF_ARSH
        r = (a - (1 << bits) if a >> (bits - 1) else a) >> b
    return r & mask


def scalar_alu(dst: Bounds, src: Bounds, op: int, alu64: bool) -> None:
    """`dst = dst op src` on scalars. An immediate operand is passed as a known scalar
    holding the sign-extended imm. A 32-bit op computes the 32-bit ranges, then the
    result is zero-extended and synced."""
    if not is_safe_to_compute_dst_reg_range(src, op, alu64):
        mark_reg_unknown(dst)
        return
    if not dst.var_off.mask and not src.var_off.mask and _const_bounds(dst) and _const_bounds(src):
        mark_reg_known(dst, _fold(op, dst.var_off.value, src.var_off.value, 64 if alu64 else 32))
        return
    rule32, rule64 = _RANGE_RULES[op]
    if op in _TNUM_OPS:  # the result's tnum first: AND/OR/XOR read it, the others ignore it
        dst.var_off = _TNUM_OPS[op](dst.var_off, src.var_off)
        rule32(dst, src)
        rule64(dst, src)
    elif alu64:
        rule64(dst, src)
    else:
        rule32(dst, src)
    if not alu64:
        zext_32_to_64(dst)
    reg_bounds_sync(dst)


def scalar_neg(dst: Bounds, alu64: bool) -> None:
    """`dst = -dst`, computed as `0 - dst`."""
    old = Scalar()
    copy_bounds(old, dst)
    mark_reg_known(dst, 0)
    ra.scalar32_min_max_sub(dst, old)
    ra.scalar_min_max_sub(dst, old)
    dst.var_off = tnum_neg(old.var_off)
    if not alu64:
        zext_32_to_64(dst)
    reg_bounds_sync(dst)


def scalar_end(dst: Bounds, insn: Insn) -> None:
    """BPF_END on a little-endian machine: ALU64 `bswapN` and `beN` swap the tnum's bytes
    (forgetting the ranges), `leN` does not; 16 and 32 then truncate like a load."""
    width = insn.imm
    if insn.cls == BPF_ALU64 or insn.code & BPF_TO_BE:
        nbytes = width // 8
        dst.var_off = Tnum(bswap(dst.var_off.value, 8 * nbytes), bswap(dst.var_off.mask, 8 * nbytes))
        mark_reg_unbounded(dst)
    if width in (16, 32):
        coerce_reg_to_size(dst, width // 8)
    reg_bounds_sync(dst)


def scalar_mov32(dst: Bounds, src: Bounds) -> None:
    """`wD = wS`: the low word of `src`, zero-extended."""
    copy_bounds(dst, src)
    zext_32_to_64(dst)
    reg_bounds_sync(dst)


def scalar_movsx(dst: Bounds, src: Bounds, bits: int, alu64: bool) -> None:
    """`rD = (sN)rS` (alu64) or `wD = (sN)wS` (bits 8/16/32; the 32-bit form 8/16)."""
    copy_bounds(dst, src)
    if alu64:
        coerce_reg_to_size_sx(dst, bits // 8)
        return
    coerce_subreg_to_size_sx(dst, bits // 8)
    zext_32_to_64(dst)
    reg_bounds_sync(dst)


def coerce_reg_to_size(r: Bounds, size: int) -> None:
    """Keep the low `size` bytes, zero-extended (an LDX of `size` bytes)."""
    r.var_off = tnum_cast(r.var_off, size)
    mask = (1 << (size * 8)) - 1
    if r.umin_value & ~mask == r.umax_value & ~mask:
        r.umin_value &= mask
        r.umax_value &= mask
    else:
        r.umin_value, r.umax_value = 0, mask
    r.smin_value, r.smax_value = r.umin_value, r.umax_value
    if size < 4:
        mark_reg32_unbounded(r)
    reg_bounds_sync(r)


_SEXT_LIMITS = {1: (-(1 << 7), (1 << 7) - 1), 2: (-(1 << 15), (1 << 15) - 1), 4: (S32_MIN, S32_MAX)}


def coerce_reg_to_size_sx(r: Bounds, size: int) -> None:
    """Keep the low `size` bytes, sign-extended to 64 bits (LDSX, `rD = (sN)rS`)."""
    bits = size * 8
    if tnum_is_const(r.var_off):
        mark_reg_known(r, sext(r.var_off.value, bits))
        return
    if u64_top(r.smax_value, bits) == u64_top(r.smin_value, bits):
        a, b = sext(r.smax_value, bits), sext(r.smin_value, bits)
        lo, hi = min(a, b), max(a, b)
        if (lo >= 0) == (hi >= 0):
            r.smin_value = r.s32_min_value = lo
            r.smax_value = r.s32_max_value = hi
            r.umin_value, r.umax_value = lo & U64, hi & U64
            r.u32_min_value, r.u32_max_value = u32(lo), u32(hi)
            r.var_off = tnum_range(lo, hi)
            return
    lo, hi = _SEXT_LIMITS[size]
    r.smin_value = r.s32_min_value = lo
    r.smax_value = r.s32_max_value = hi
    r.umin_value, r.umax_value = 0, U64
    r.u32_min_value, r.u32_max_value = 0, U32
    r.var_off = TNUM_UNKNOWN


def u64_top(x: int, bits: int) -> int:
    """The bits of `x` (as a u64) above the low `bits`."""
    return (x & U64) >> bits


def coerce_subreg_to_size_sx(r: Bounds, size: int) -> None:
    """The low word becomes its low `size` bytes sign-extended to 32 bits; the 64-bit views
    are left for the caller's zero extension."""
    bits = size * 8
    if tnum_is_const(r.var_off):
        v = sext(r.var_off.value, bits)
        r.var_off = tnum_const(v)
        r.s32_min_value = r.s32_max_value = s32(v)
        r.u32_min_value = r.u32_max_value = u32(v)
        return
    if u32(r.s32_max_value) >> bits == u32(r.s32_min_value) >> bits:
        a, b = sext(r.s32_max_value, bits), sext(r.s32_min_value, bits)
        lo, hi = min(a, b), max(a, b)
        if (lo >= 0) == (hi >= 0):
            r.s32_min_value, r.s32_max_value = lo, hi
            r.u32_min_value, r.u32_max_value = u32(lo), u32(hi)
            r.var_off = tnum_subreg(tnum_range(lo, hi))
            return
    r.s32_min_value, r.s32_max_value = _SEXT_LIMITS[size]
    r.u32_min_value, r.u32_max_value = 0, U32
    r.var_off = tnum_subreg(TNUM_UNKNOWN)

