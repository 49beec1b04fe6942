"""The per-operation range rules of the kernel's `adjust_scalar_min_max_vals` (Linux 6.18):
one function per (operation, width) that updates the destination's 32-bit (`*32`) or
64-bit ranges from a source `Bounds`. The tnum part and the dispatch live in
`verifier.check.scalar`; each rule reads the destination as it is before the operation
except where the kernel computes var_off first (MUL, AND, OR, XOR), noted on the rule."""

from __future__ import annotations

from verifier.check.scalar_bounds import (
    S32_MAX,
    S32_MIN,
    S64_MAX,
    S64_MIN,
    Bounds,
    mark_reg32_known,
    mark_reg32_unbounded,
    mark_reg64_unbounded,
    mark_reg_known,
    s32,
    s64,
    update_reg32_bounds,
    update_reg_bounds,
)
from verifier.check.tnum import (
    U32,
    U64,
    tnum_arshift,
    tnum_is_const,
    tnum_lshift,
    tnum_rshift,
    tnum_subreg,
    tnum_subreg_is_const,
)


def _fits(x: int, lo: int, hi: int) -> bool:
    return lo <= x <= hi


# --- ADD / SUB ---------------------------------------------------------------------------


def scalar32_min_max_add(dst: Bounds, src: Bounds) -> None:
    lo, hi = dst.s32_min_value + src.s32_min_value, dst.s32_max_value + src.s32_max_value
    if _fits(lo, S32_MIN, S32_MAX) and _fits(hi, S32_MIN, S32_MAX):
        dst.s32_min_value, dst.s32_max_value = lo, hi
    else:
        dst.s32_min_value, dst.s32_max_value = S32_MIN, S32_MAX
    ulo, uhi = dst.u32_min_value + src.u32_min_value, dst.u32_max_value + src.u32_max_value
    if ulo <= U32 < uhi:  # some but not all sums wrap
        dst.u32_min_value, dst.u32_max_value = 0, U32
    else:
        dst.u32_min_value, dst.u32_max_value = ulo & U32, uhi & U32


def scalar_min_max_add(dst: Bounds, src: Bounds) -> None:
    lo, hi = dst.smin_value + src.smin_value, dst.smax_value + src.smax_value
    if _fits(lo, S64_MIN, S64_MAX) and _fits(hi, S64_MIN, S64_MAX):
        dst.smin_value, dst.smax_value = lo, hi
    else:
        dst.smin_value, dst.smax_value = S64_MIN, S64_MAX
    ulo, uhi = dst.umin_value + src.umin_value, dst.umax_value + src.umax_value
    if ulo <= U64 < uhi:
        dst.umin_value, dst.umax_value = 0, U64
    else:
        dst.umin_value, dst.umax_value = ulo & U64, uhi & U64


def scalar32_min_max_sub(dst: Bounds, src: Bounds) -> None:
    lo, hi = dst.s32_min_value - src.s32_max_value, dst.s32_max_value - src.s32_min_value
    if _fits(lo, S32_MIN, S32_MAX) and _fits(hi, S32_MIN, S32_MAX):
        dst.s32_min_value, dst.s32_max_value = lo, hi
    else:
        dst.s32_min_value, dst.s32_max_value = S32_MIN, S32_MAX
    ulo, uhi = dst.u32_min_value - src.u32_max_value, dst.u32_max_value - src.u32_min_value
    if ulo < 0 <= uhi:  # some but not all differences wrap
        dst.u32_min_value, dst.u32_max_value = 0, U32
    else:
        dst.u32_min_value, dst.u32_max_value = ulo & U32, uhi & U32


def scalar_min_max_sub(dst: Bounds, src: Bounds) -> None:
    lo, hi = dst.smin_value - src.smax_value, dst.smax_value - src.smin_value
    if _fits(lo, S64_MIN, S64_MAX) and _fits(hi, S64_MIN, S64_MAX):
        dst.smin_value, dst.smax_value = lo, hi
    else:
        dst.smin_value, dst.smax_value = S64_MIN, S64_MAX
    ulo, uhi = dst.umin_value - src.umax_value, dst.umax_value - src.umin_value
    if ulo < 0 <= uhi:
        dst.umin_value, dst.umax_value = 0, U64
    else:
        dst.umin_value, dst.umax_value = ulo & U64, uhi & U64


# --- MUL ---------------------------------------------------------------------------------


def scalar32_min_max_mul(dst: Bounds, src: Bounds) -> None:
    ulo, uhi = dst.u32_min_value * src.u32_min_value, dst.u32_max_value * src.u32_max_value
    if uhi > U32 or ulo > U32:
        dst.u32_min_value, dst.u32_max_value = 0, U32
    else:
        dst.u32_min_value, dst.u32_max_value = ulo, uhi
    prods = [a * b for a in (dst.s32_min_value, dst.s32_max_value)
             for b in (src.s32_min_value, src.s32_max_value)]
    if all(_fits(p, S32_MIN, S32_MAX) for p in prods):
        dst.s32_min_value, dst.s32_max_value = min(prods), max(prods)
    else:
        dst.s32_min_value, dst.s32_max_value = S32_MIN, S32_MAX


def scalar_min_max_mul(dst: Bounds, src: Bounds) -> None:
    ulo, uhi = dst.umin_value * src.umin_value, dst.umax_value * src.umax_value
    if uhi > U64 or ulo > U64:
        dst.umin_value, dst.umax_value = 0, U64
    else:
        dst.umin_value, dst.umax_value = ulo, uhi
    prods = [a * b for a in (dst.smin_value, dst.smax_value)
             for b in (src.smin_value, src.smax_value)]
    if all(_fits(p, S64_MIN, S64_MAX) for p in prods):
        dst.smin_value, dst.smax_value = min(prods), max(prods)
    else:
        dst.smin_value, dst.smax_value = S64_MIN, S64_MAX


# --- AND / OR / XOR (dst.var_off already holds the result's tnum) -------------------------


def _s32_from_u32(dst: Bounds) -> None:
    if s32(dst.u32_min_value) <= s32(dst.u32_max_value):
        dst.s32_min_value, dst.s32_max_value = s32(dst.u32_min_value), s32(dst.u32_max_value)
    else:
        dst.s32_min_value, dst.s32_max_value = S32_MIN, S32_MAX


def _s64_from_u64(dst: Bounds) -> None:
    if s64(dst.umin_value) <= s64(dst.umax_value):
        dst.smin_value, dst.smax_value = s64(dst.umin_value), s64(dst.umax_value)
    else:
        dst.smin_value, dst.smax_value = S64_MIN, S64_MAX


def _both_const32(dst: Bounds, src: Bounds) -> bool:
    return tnum_subreg_is_const(dst.var_off) and tnum_subreg_is_const(src.var_off)


def _both_const64(dst: Bounds, src: Bounds) -> bool:
    return tnum_is_const(dst.var_off) and tnum_is_const(src.var_off)


def scalar32_min_max_and(dst: Bounds, src: Bounds) -> None:
    t = tnum_subreg(dst.var_off)
    if _both_const32(dst, src):
        mark_reg32_known(dst, t.value)
        return
    dst.u32_min_value = t.value
    dst.u32_max_value = min(dst.u32_max_value, src.u32_max_value)
    _s32_from_u32(dst)


def scalar_min_max_and(dst: Bounds, src: Bounds) -> None:
    if _both_const64(dst, src):
        mark_reg_known(dst, dst.var_off.value)
        return
    dst.umin_value = dst.var_off.value
    dst.umax_value = min(dst.umax_value, src.umax_value)
    _s64_from_u64(dst)
    update_reg_bounds(dst)


def scalar32_min_max_or(dst: Bounds, src: Bounds) -> None:
    t = tnum_subreg(dst.var_off)
    if _both_const32(dst, src):
        mark_reg32_known(dst, t.value)
        return
    dst.u32_min_value = max(dst.u32_min_value, src.u32_min_value)
    dst.u32_max_value = t.value | t.mask
    _s32_from_u32(dst)


def scalar_min_max_or(dst: Bounds, src: Bounds) -> None:
    if _both_const64(dst, src):
        mark_reg_known(dst, dst.var_off.value)
        return
    dst.umin_value = max(dst.umin_value, src.umin_value)
    dst.umax_value = dst.var_off.value | dst.var_off.mask
    _s64_from_u64(dst)
    update_reg_bounds(dst)


def scalar32_min_max_xor(dst: Bounds, src: Bounds) -> None:
    t = tnum_subreg(dst.var_off)
    if _both_const32(dst, src):
        mark_reg32_known(dst, t.value)
        return
    dst.u32_min_value = t.value
    dst.u32_max_value = t.value | t.mask
    _s32_from_u32(dst)


def scalar_min_max_xor(dst: Bounds, src: Bounds) -> None:
    if _both_const64(dst, src):
        mark_reg_known(dst, dst.var_off.value)
        return
    dst.umin_value = dst.var_off.value
    dst.umax_value = dst.var_off.value | dst.var_off.mask
    _s64_from_u64(dst)
    update_reg_bounds(dst)


# --- shifts (the source is a constant below the width; these also set var_off) ------------


def _lsh32_ranges(dst: Bounds, umin: int, umax: int) -> None:
    dst.s32_min_value, dst.s32_max_value = S32_MIN, S32_MAX
    if umax > 31 or dst.u32_max_value > 1 << (31 - umax):  # the top bit may shift out
        dst.u32_min_value, dst.u32_max_value = 0, U32
    else:
        dst.u32_min_value = (dst.u32_min_value << umin) & U32
        dst.u32_max_value = (dst.u32_max_value << umax) & U32


def _lsh64_ranges(dst: Bounds, umin: int, umax: int) -> None:
    by32 = umin == 32 and umax == 32
    dst.smax_value = dst.s32_max_value << 32 if by32 and dst.s32_max_value >= 0 else S64_MAX
    dst.smin_value = dst.s32_min_value << 32 if by32 and dst.s32_min_value >= 0 else S64_MIN
    if dst.umax_value > 1 << (63 - umax):
        dst.umin_value, dst.umax_value = 0, U64
    else:
        dst.umin_value = (dst.umin_value << umin) & U64
        dst.umax_value = (dst.umax_value << umax) & U64


def scalar32_min_max_lsh(dst: Bounds, src: Bounds) -> None:
    sub = tnum_subreg(dst.var_off)
    _lsh32_ranges(dst, src.u32_min_value, src.u32_max_value)
    dst.var_off = tnum_subreg(tnum_lshift(sub, src.u32_min_value))
    mark_reg64_unbounded(dst)
    update_reg32_bounds(dst)


def scalar_min_max_lsh(dst: Bounds, src: Bounds) -> None:
    _lsh64_ranges(dst, src.umin_value, src.umax_value)  # reads the unshifted s32 bounds
    _lsh32_ranges(dst, src.umin_value, src.umax_value)
    dst.var_off = tnum_lshift(dst.var_off, src.umin_value)
    update_reg_bounds(dst)


def scalar32_min_max_rsh(dst: Bounds, src: Bounds) -> None:
    sub = tnum_subreg(dst.var_off)
    dst.s32_min_value, dst.s32_max_value = S32_MIN, S32_MAX
    dst.var_off = tnum_rshift(sub, src.u32_min_value)
    dst.u32_min_value >>= src.u32_max_value
    dst.u32_max_value >>= src.u32_min_value
    mark_reg64_unbounded(dst)
    update_reg32_bounds(dst)


def scalar_min_max_rsh(dst: Bounds, src: Bounds) -> None:
    dst.smin_value, dst.smax_value = S64_MIN, S64_MAX
    dst.var_off = tnum_rshift(dst.var_off, src.umin_value)
    dst.umin_value >>= src.umax_value
    dst.umax_value >>= src.umin_value
    mark_reg32_unbounded(dst)
    update_reg_bounds(dst)


def scalar32_min_max_arsh(dst: Bounds, src: Bounds) -> None:
    shift = src.u32_min_value
    dst.s32_min_value >>= shift
    dst.s32_max_value >>= shift
    dst.var_off = tnum_arshift(tnum_subreg(dst.var_off), shift, 32)
    dst.u32_min_value, dst.u32_max_value = 0, U32
    mark_reg64_unbounded(dst)
    update_reg32_bounds(dst)


def scalar_min_max_arsh(dst: Bounds, src: Bounds) -> None:
    shift = src.umin_value
    dst.smin_value >>= shift
    dst.smax_value >>= shift
    dst.var_off = tnum_arshift(dst.var_off, shift, 64)
    dst.umin_value, dst.umax_value = 0, U64
    mark_reg32_unbounded(dst)
    update_reg_bounds(dst)
