"""Tristate numbers ("tnums"), the kernel's bit-level abstraction of a u64.

A `Tnum(value, mask)` stands for every u64 `x` with `x & ~mask == value`: bits set in `mask`
are unknown, the others equal the bit of `value` (which never has a `mask` bit set). Each
operation here over-approximates the concrete operation on every pair of members, with the
kernel's (Linux 6.18, kernel/bpf/tnum.c) precision, so that bounds derived from them print
the same as the kernel's. All values are u64 Python ints; callers mask their inputs."""

from __future__ import annotations

from typing import NamedTuple

from verifier.isa.insn import sext

U64 = (1 << 64) - 1
U32 = (1 << 32) - 1


class Tnum(NamedTuple):
    value: int
    mask: int

    def __str__(self) -> str:
        return tnum_str(self)


TNUM_UNKNOWN = Tnum(0, U64)


def tnum_str(a: Tnum) -> str:
    """The kernel's `tnum_strn` text: `(0x0; 0xff)`."""
    return f"({a.value:#x}; {a.mask:#x})"


def tnum_const(value: int) -> Tnum:
    return Tnum(value & U64, 0)


def tnum_range(lo: int, hi: int) -> Tnum:
    """The smallest tnum of the form `prefix, then all-unknown low bits` holding [lo, hi]."""
    lo &= U64
    hi &= U64
    bits = (lo ^ hi).bit_length()
    if bits > 63:
        return TNUM_UNKNOWN
    delta = (1 << bits) - 1
    return Tnum(lo & ~delta, delta)


def tnum_lshift(a: Tnum, shift: int) -> Tnum:
    return Tnum((a.value << shift) & U64, (a.mask << shift) & U64)


def tnum_rshift(a: Tnum, shift: int) -> Tnum:
    return Tnum(a.value >> shift, a.mask >> shift)


def tnum_arshift(a: Tnum, shift: int, insn_bitness: int) -> Tnum:
    """Arithmetic shift; with `insn_bitness` 32 the low word is shifted as an s32 and the
    result is a zero-extended u32 (the kernel uses it on a subreg)."""
    if insn_bitness == 32:
        return Tnum((sext(a.value, 32) >> shift) & U32, (sext(a.mask, 32) >> shift) & U32)
    return Tnum((sext(a.value, 64) >> shift) & U64, (sext(a.mask, 64) >> shift) & U64)


def tnum_add(a: Tnum, b: Tnum) -> Tnum:
    sm = (a.mask + b.mask) & U64
    sv = (a.value + b.value) & U64
    sigma = (sm + sv) & U64
    mu = (sigma ^ sv) | a.mask | b.mask
    return Tnum(sv & ~mu & U64, mu)


def tnum_sub(a: Tnum, b: Tnum) -> Tnum:
    dv = (a.value - b.value) & U64
    alpha = (dv + a.mask) & U64
    beta = (dv - b.mask) & U64
    mu = (alpha ^ beta) | a.mask | b.mask
    return Tnum(dv & ~mu & U64, mu)


def tnum_neg(a: Tnum) -> Tnum:
    return tnum_sub(Tnum(0, 0), a)


def tnum_and(a: Tnum, b: Tnum) -> Tnum:
    alpha = a.value | a.mask
    beta = b.value | b.mask
    v = a.value & b.value
    return Tnum(v, alpha & beta & ~v & U64)


def tnum_or(a: Tnum, b: Tnum) -> Tnum:
    v = a.value | b.value
    return Tnum(v, (a.mask | b.mask) & ~v & U64)


def tnum_xor(a: Tnum, b: Tnum) -> Tnum:
    v = a.value ^ b.value
    mu = a.mask | b.mask
    return Tnum(v & ~mu & U64, mu)


def tnum_union(a: Tnum, b: Tnum) -> Tnum:
    """Every member of `a` or of `b` (bits that agree and are known in both stay known)."""
    v = a.value & b.value
    mu = (a.value ^ b.value) | a.mask | b.mask
    return Tnum(v & ~mu & U64, mu)


def tnum_mul(a: Tnum, b: Tnum) -> Tnum:
    """Shift-and-add over the bits of `a`: a known 1 adds `b`, an unknown bit adds `b` or
    nothing (the union of both accumulators)."""
    acc = Tnum(0, 0)
    while a.value or a.mask:
        if a.value & 1:
            acc = tnum_add(acc, b)
        elif a.mask & 1:
            acc = tnum_union(acc, tnum_add(acc, b))
        a = tnum_rshift(a, 1)
        b = tnum_lshift(b, 1)
    return acc


def tnum_intersect(a: Tnum, b: Tnum) -> Tnum:
    """The bits known in either (the members of both, when they have common members)."""
    v = a.value | b.value
    mu = a.mask & b.mask
    return Tnum(v & ~mu & U64, mu)


def tnum_overlap(a: Tnum, b: Tnum) -> bool:
    """False when no u64 is a member of both: some bit known in both differs."""
    return not ((a.value ^ b.value) & ~(a.mask | b.mask) & U64)


def tnum_cast(a: Tnum, size_bytes: int) -> Tnum:
    m = (1 << (size_bytes * 8)) - 1
    return Tnum(a.value & m, a.mask & m)


def tnum_is_const(a: Tnum) -> bool:
    return a.mask == 0


def tnum_is_unknown(a: Tnum) -> bool:
    return a.mask == U64


def tnum_is_aligned(a: Tnum, size: int) -> bool:
    if not size:
        return True
    return not ((a.value | a.mask) & (size - 1))


def tnum_in(a: Tnum, b: Tnum) -> bool:
    """Is every member of `b` a member of `a`?"""
    if b.mask & ~a.mask:
        return False
    return a.value == b.value & ~a.mask


def tnum_contains(a: Tnum, x: int) -> bool:
    """Is the u64 `x` a member of `a`?"""
    return (x & U64 & ~a.mask) == a.value


def tnum_step(a: Tnum, z: int) -> int:
    """The smallest member of `a` greater than `z`; NO_MEMBER (above every u64) if none."""
    c = z + 1
    while c <= U64:
        diff = (c ^ a.value) & ~a.mask & U64  # known bits where c is wrong
        if not diff:
            return c
        h = diff.bit_length() - 1
        low = (1 << (h + 1)) - 1
        if a.value >> h & 1:  # c has a 0 where a needs a 1: raise that bit, lowest tail
            return (c & ~low) | (a.value & low)
        c = ((c >> (h + 1)) + 1) << (h + 1)  # c has a 1 where a needs a 0: carry above it
    return NO_MEMBER


NO_MEMBER = U64 + 1


def tnum_subreg(a: Tnum) -> Tnum:
    return tnum_cast(a, 4)


def tnum_subreg_is_const(a: Tnum) -> bool:
    return not (a.mask & U32)


def tnum_clear_subreg(a: Tnum) -> Tnum:
    return tnum_lshift(tnum_rshift(a, 32), 32)


def tnum_with_subreg(reg: Tnum, subreg: Tnum) -> Tnum:
    return tnum_or(tnum_clear_subreg(reg), tnum_subreg(subreg))


def tnum_const_subreg(a: Tnum, value: int) -> Tnum:
    return tnum_with_subreg(a, tnum_const(value))
