"""The scalar register's bounds as the kernel keeps them (Linux 6.18 `bpf_reg_state`): a tnum
`var_off` plus signed/unsigned 64-bit and 32-bit ranges, and the functions that keep the
five views consistent: `reg_bounds_sync` (the kernel's `__update_reg_bounds`, two rounds of
`__reg_deduce_bounds` and `__reg_bound_offset`), the "mark" helpers and `zext_32_to_64`.

Functions work on any object with the `Bounds` fields (the verifier's register state and
the concrete `Scalar` below). Signed fields hold signed Python ints, unsigned ones
non-negative ints; `s64`/`s32`/... convert a C value to each view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from verifier.check.tnum import (
    TNUM_UNKNOWN,
    U32,
    U64,
    Tnum,
    tnum_clear_subreg,
    tnum_const,
    tnum_const_subreg,
    tnum_contains,
    tnum_intersect,
    tnum_is_const,
    tnum_or,
    tnum_range,
    tnum_step,
    tnum_subreg,
    tnum_subreg_is_const,
)
from verifier.isa.insn import s32, s64

S64_MIN = -(1 << 63)
S64_MAX = (1 << 63) - 1
S32_MIN = -(1 << 31)
S32_MAX = (1 << 31) - 1


def u64(x: int) -> int:
    return x & U64


def u32(x: int) -> int:
    return x & U32


class Bounds(Protocol):
    var_off: Tnum
    smin_value: int
    smax_value: int
    umin_value: int
    umax_value: int
    s32_min_value: int
    s32_max_value: int
    u32_min_value: int
    u32_max_value: int


@dataclass(slots=True)
class Scalar:
    """A scalar's abstract value; the default is the unknown scalar."""

    var_off: Tnum = TNUM_UNKNOWN
    smin_value: int = S64_MIN
    smax_value: int = S64_MAX
    umin_value: int = 0
    umax_value: int = U64
    s32_min_value: int = S32_MIN
    s32_max_value: int = S32_MAX
    u32_min_value: int = 0
    u32_max_value: int = U32

    def copy(self) -> Scalar:
        return Scalar(self.var_off, self.smin_value, self.smax_value, self.umin_value,
                      self.umax_value, self.s32_min_value, self.s32_max_value,
                      self.u32_min_value, self.u32_max_value)

    @classmethod
    def const(cls, value: int) -> Scalar:
        r = cls()
        mark_reg_known(r, value)
        return r


def copy_bounds(dst: Bounds, src: Bounds) -> None:
    """Copy the nine scalar fields of `src` into `dst`."""
    dst.var_off = src.var_off
    dst.smin_value, dst.smax_value = src.smin_value, src.smax_value
    dst.umin_value, dst.umax_value = src.umin_value, src.umax_value
    dst.s32_min_value, dst.s32_max_value = src.s32_min_value, src.s32_max_value
    dst.u32_min_value, dst.u32_max_value = src.u32_min_value, src.u32_max_value


# --- marks --------------------------------------------------------------------------------


def mark_reg64_unbounded(r: Bounds) -> None:
    r.smin_value, r.smax_value = S64_MIN, S64_MAX
    r.umin_value, r.umax_value = 0, U64


def mark_reg32_unbounded(r: Bounds) -> None:
    r.s32_min_value, r.s32_max_value = S32_MIN, S32_MAX
    r.u32_min_value, r.u32_max_value = 0, U32


def mark_reg_unbounded(r: Bounds) -> None:
    mark_reg64_unbounded(r)
    mark_reg32_unbounded(r)


def mark_reg_unknown(r: Bounds) -> None:
    r.var_off = TNUM_UNKNOWN
    mark_reg_unbounded(r)


def mark_reg_known(r: Bounds, value: int) -> None:
    """The kernel's `___mark_reg_known`: every view is the one value (taken as a u64)."""
    v = u64(value)
    r.var_off = tnum_const(v)
    r.smin_value = r.smax_value = s64(v)
    r.umin_value = r.umax_value = v
    r.s32_min_value = r.s32_max_value = s32(v)
    r.u32_min_value = r.u32_max_value = u32(v)


def mark_reg32_known(r: Bounds, value: int) -> None:
    """The low word is the constant; the 64-bit views are left alone."""
    r.var_off = tnum_const_subreg(r.var_off, value)
    r.s32_min_value = r.s32_max_value = s32(value)
    r.u32_min_value = r.u32_max_value = u32(value)


def is_const(r: Bounds) -> bool:
    return tnum_is_const(r.var_off)


def const_value(r: Bounds) -> int:
    """The u64 value of a constant scalar."""
    if not is_const(r):
        raise ValueError("not a constant scalar")
    return r.var_off.value


def is_reg_const(r: Bounds, subreg32: bool) -> bool:
    return tnum_subreg_is_const(r.var_off) if subreg32 else tnum_is_const(r.var_off)


def reg_const_value(r: Bounds, subreg32: bool) -> int:
    return u32(r.var_off.value) if subreg32 else r.var_off.value


# --- learning bounds from var_off ---------------------------------------------------------


def update_reg32_bounds(r: Bounds) -> None:
    t = tnum_subreg(r.var_off)
    r.s32_min_value = max(r.s32_min_value, s32(t.value | (t.mask & 0x80000000)))
    r.s32_max_value = min(r.s32_max_value, s32(t.value | (t.mask & 0x7FFFFFFF)))
    r.u32_min_value = max(r.u32_min_value, t.value)
    r.u32_max_value = min(r.u32_max_value, t.value | t.mask)


def update_reg64_bounds(r: Bounds) -> None:
    t = r.var_off
    r.smin_value = max(r.smin_value, s64(t.value | (t.mask & (1 << 63))))
    r.smax_value = min(r.smax_value, s64(t.value | (t.mask & S64_MAX)))
    r.umin_value = max(r.umin_value, t.value)
    r.umax_value = min(r.umax_value, t.value | t.mask)
    reg64_single_value(r)


def reg64_single_value(r: Bounds) -> None:
    """When the u64 range and var_off have one member in common, the scalar is that
    constant: umin (the next member is past umax), var_off's largest member, or the one
    member strictly between umin and umax."""
    t = r.var_off
    if not t.mask:  # a constant tnum: the same three cases, without the search
        if t.value >= r.umin_value:
            mark_reg_known(r, t.value)
        return
    tmax = t.value | t.mask
    nxt = tnum_step(t, r.umin_value)
    umin_in = tnum_contains(t, r.umin_value)
    if umin_in and nxt > r.umax_value:
        mark_reg_known(r, r.umin_value)
    elif not umin_in and nxt == tmax:
        mark_reg_known(r, tmax)
    elif not umin_in and nxt <= r.umax_value and tnum_step(t, nxt) > r.umax_value:
        mark_reg_known(r, nxt)


def update_reg_bounds(r: Bounds) -> None:
    update_reg32_bounds(r)
    update_reg64_bounds(r)


# --- deducing bounds from each other ------------------------------------------------------


def _tighten_s32(r: Bounds, lo: int, hi: int) -> None:
    r.s32_min_value = max(r.s32_min_value, lo)
    r.s32_max_value = min(r.s32_max_value, hi)


def _tighten_u32(r: Bounds, lo: int, hi: int) -> None:
    r.u32_min_value = max(r.u32_min_value, lo)
    r.u32_max_value = min(r.u32_max_value, hi)


def reg32_deduce_bounds(r: Bounds) -> None:
    """32-bit ranges from the 64-bit ones (when the upper words allow it), then u32 <-> s32."""
    umin, umax, smin, smax = r.umin_value, r.umax_value, r.smin_value, r.smax_value
    if umin >> 32 == umax >> 32:
        _tighten_u32(r, u32(umin), u32(umax))
        if s32(umin) <= s32(umax):
            _tighten_s32(r, s32(umin), s32(umax))
    if smin >> 32 == smax >> 32:
        if u32(smin) <= u32(smax):
            _tighten_u32(r, u32(smin), u32(smax))
        if s32(smin) <= s32(smax):
            _tighten_s32(r, s32(smin), s32(smax))
    # upper words are two consecutive numbers and the low words cross zero as s32
    if u32((umin >> 32) + 1) == u32(umax >> 32) and s32(umin) < 0 <= s32(umax):
        _tighten_s32(r, s32(umin), s32(umax))
    if u32((smin >> 32) + 1) == u32(smax >> 32) and s32(smin) < 0 <= s32(smax):
        _tighten_s32(r, s32(smin), s32(smax))
    if s32(r.u32_min_value) <= s32(r.u32_max_value):
        _tighten_s32(r, s32(r.u32_min_value), s32(r.u32_max_value))
    if u32(r.s32_min_value) <= u32(r.s32_max_value):
        _tighten_u32(r, u32(r.s32_min_value), u32(r.s32_max_value))
    elif r.u32_max_value < u32(r.s32_min_value):  # u32 range meets only the s32 range's low end
        r.s32_min_value = s32(r.u32_min_value)
        r.u32_max_value = min(r.u32_max_value, u32(r.s32_max_value))
    elif u32(r.s32_max_value) < r.u32_min_value:  # ... only its high end
        r.s32_max_value = s32(r.u32_max_value)
        r.u32_min_value = max(r.u32_min_value, u32(r.s32_min_value))


def reg64_deduce_bounds(r: Bounds) -> None:
    """s64 <-> u64; an s64 range crossing the sign boundary still helps when the u64 range
    meets only one of its two ends."""
    if s64(r.umin_value) <= s64(r.umax_value):
        r.smin_value = max(r.smin_value, s64(r.umin_value))
        r.smax_value = min(r.smax_value, s64(r.umax_value))
    if u64(r.smin_value) <= u64(r.smax_value):
        r.umin_value = max(r.umin_value, u64(r.smin_value))
        r.umax_value = min(r.umax_value, u64(r.smax_value))
    elif r.umax_value < u64(r.smin_value):
        r.smin_value = s64(r.umin_value)
        r.umax_value = min(r.umax_value, u64(r.smax_value))
    elif u64(r.smax_value) < r.umin_value:
        r.smax_value = s64(r.umax_value)
        r.umin_value = max(r.umin_value, u64(r.smin_value))


def reg_deduce_mixed_bounds(r: Bounds) -> None:
    """64-bit ranges from the 32-bit ones: the u32 range replaces the low words of the
    64-bit ends, and a non-negative s32 range inside [S32_MIN, S32_MAX] is the s64 range."""
    hi = U64 ^ U32
    r.umin_value = max(r.umin_value, (r.umin_value & hi) | r.u32_min_value)
    r.umax_value = min(r.umax_value, (r.umax_value & hi) | r.u32_max_value)
    r.smin_value = max(r.smin_value, s64((r.smin_value & hi) | r.u32_min_value))
    r.smax_value = min(r.smax_value, s64((r.smax_value & hi) | r.u32_max_value))
    if r.s32_min_value >= 0 and r.smin_value >= S32_MIN and r.smax_value <= S32_MAX:
        r.smin_value = r.umin_value = r.s32_min_value
        r.smax_value = r.umax_value = r.s32_max_value
        r.var_off = tnum_intersect(r.var_off, tnum_range(r.smin_value, r.smax_value))


def reg_deduce_bounds(r: Bounds) -> None:
    reg32_deduce_bounds(r)
    reg64_deduce_bounds(r)
    reg_deduce_mixed_bounds(r)


def reg_bound_offset(r: Bounds) -> None:
    """var_off learns from the u64 range, its low word from the u32 range."""
    var64 = tnum_intersect(r.var_off, tnum_range(r.umin_value, r.umax_value))
    var32 = tnum_intersect(tnum_subreg(var64), tnum_range(r.u32_min_value, r.u32_max_value))
    r.var_off = tnum_or(tnum_clear_subreg(var64), var32)


_SYNC_CACHE: dict[tuple, tuple] = {}  # the nine fields before a sync -> after it
_SYNC_CACHE_MAX = 1 << 16


def _fields(r: Bounds) -> tuple:
    return (r.var_off, r.smin_value, r.smax_value, r.umin_value, r.umax_value,
            r.s32_min_value, r.s32_max_value, r.u32_min_value, r.u32_max_value)


def reg_bounds_sync(r: Bounds) -> None:
    """`reg_bounds_sync`. A pure function of the nine fields, so its results are memoized
    (verification meets the same values again and again: loops, sibling paths)."""
    key = _fields(r)
    hit = _SYNC_CACHE.get(key)
    if hit is None:
        _reg_bounds_sync(r)
        if len(_SYNC_CACHE) >= _SYNC_CACHE_MAX:
            _SYNC_CACHE.clear()
        _SYNC_CACHE[key] = _fields(r)
        return
    (r.var_off, r.smin_value, r.smax_value, r.umin_value, r.umax_value,
     r.s32_min_value, r.s32_max_value, r.u32_min_value, r.u32_max_value) = hit


def _reg_bounds_sync(r: Bounds) -> None:
    t = r.var_off
    if not t.mask and r.umin_value == r.umax_value == t.value and r.smin_value == r.smax_value \
            and r.u32_min_value == r.u32_max_value and r.s32_min_value == r.s32_max_value \
            and r.smin_value == s64(t.value) and r.u32_min_value == t.value & U32 \
            and r.s32_min_value == s32(t.value):
        return  # a constant whose views agree: every rule below leaves it as it is
    update_reg_bounds(r)
    reg_deduce_bounds(r)
    reg_deduce_bounds(r)
    reg_bound_offset(r)
    update_reg_bounds(r)


def zext_32_to_64(r: Bounds) -> None:
    """A 32-bit result zero-extended: the 64-bit views become the u32 ones (s64 only when
    the s32 range is non-negative)."""
    r.var_off = tnum_subreg(r.var_off)
    r.umin_value, r.umax_value = r.u32_min_value, r.u32_max_value
    if r.s32_min_value >= 0 and r.s32_max_value >= 0:
        r.smin_value, r.smax_value = r.s32_min_value, r.s32_max_value
    else:
        r.smin_value, r.smax_value = 0, U32
