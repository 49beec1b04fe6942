"""Tnums (verifier/check/tnum.py): every operation contains the concrete result of every
pair of members (hypothesis), plus unit cases with the kernel's known answers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from verifier.check.tnum import (
    NO_MEMBER,
    TNUM_UNKNOWN,
    U32,
    U64,
    Tnum,
    tnum_add,
    tnum_and,
    tnum_arshift,
    tnum_cast,
    tnum_clear_subreg,
    tnum_const,
    tnum_const_subreg,
    tnum_contains,
    tnum_in,
    tnum_intersect,
    tnum_is_aligned,
    tnum_is_const,
    tnum_lshift,
    tnum_mul,
    tnum_neg,
    tnum_or,
    tnum_overlap,
    tnum_range,
    tnum_rshift,
    tnum_step,
    tnum_str,
    tnum_sub,
    tnum_subreg,
    tnum_union,
    tnum_with_subreg,
    tnum_xor,
)

u64s = st.one_of(st.integers(0, U64), st.integers(0, 600), st.integers(-600, -1).map(lambda x: x & U64),
                 st.sampled_from([1 << 31, 1 << 32, 1 << 63, U32, U64 >> 1]))


@st.composite
def tnum_member(draw: st.DrawFn) -> tuple[Tnum, int]:
    """A tnum and one of its members."""
    mask = draw(st.one_of(u64s, st.sampled_from([0, 0xFF, U32, U64, 0xFF00, U64 ^ U32])))
    value = draw(u64s) & ~mask
    x = value | (draw(u64s) & mask)
    return Tnum(value, mask), x


def _s(x: int, bits: int) -> int:
    x &= (1 << bits) - 1
    return x - (1 << bits) if x >> (bits - 1) else x


BINARY = [
    (tnum_add, lambda a, b: (a + b) & U64),
    (tnum_sub, lambda a, b: (a - b) & U64),
    (tnum_mul, lambda a, b: (a * b) & U64),
    (tnum_and, lambda a, b: a & b),
    (tnum_or, lambda a, b: a | b),
    (tnum_xor, lambda a, b: a ^ b),
]


@given(tnum_member(), tnum_member(), st.sampled_from(BINARY))
def test_binary_ops_contain_the_concrete_result(ta, tb, op):
    (a, x), (b, y) = ta, tb
    fn, concrete = op
    assert tnum_contains(fn(a, b), concrete(x, y))


@given(tnum_member(), st.integers(0, 63))
def test_shifts_and_neg_contain_the_concrete_result(ta, k):
    a, x = ta
    assert tnum_contains(tnum_lshift(a, k), (x << k) & U64)
    assert tnum_contains(tnum_rshift(a, k), x >> k)
    assert tnum_contains(tnum_arshift(a, k, 64), (_s(x, 64) >> k) & U64)
    assert tnum_contains(tnum_arshift(tnum_subreg(a), k % 32, 32), (_s(x, 32) >> (k % 32)) & U32)
    assert tnum_contains(tnum_neg(a), -x & U64)


@given(tnum_member(), tnum_member())
def test_union_and_intersection(ta, tb):
    (a, x), (b, y) = ta, tb
    u = tnum_union(a, b)
    assert tnum_contains(u, x) and tnum_contains(u, y)
    assert tnum_in(u, a) and tnum_in(u, b)
    if tnum_contains(b, x):
        assert tnum_overlap(a, b)
        assert tnum_contains(tnum_intersect(a, b), x)
    if not tnum_overlap(a, b):
        assert not tnum_contains(b, x)


@given(tnum_member(), tnum_member())
def test_tnum_in_means_every_member(ta, tb):
    (a, _), (b, y) = ta, tb
    if tnum_in(a, b):
        assert tnum_contains(a, y)
    assert tnum_in(a, tnum_const(a.value | (y & a.mask)))


@given(u64s, u64s, u64s)
def test_range_contains_its_interval(lo, hi, x):
    lo, hi = min(lo, hi), max(lo, hi)
    if lo <= x <= hi:
        assert tnum_contains(tnum_range(lo, hi), x)
    assert tnum_contains(tnum_range(lo, hi), lo) and tnum_contains(tnum_range(lo, hi), hi)


@given(tnum_member(), tnum_member(), st.sampled_from([1, 2, 4, 8]))
def test_subreg_and_cast(ta, tb, size):
    (a, x), (b, y) = ta, tb
    assert tnum_contains(tnum_cast(a, size), x & ((1 << (8 * size)) - 1))
    assert tnum_contains(tnum_subreg(a), x & U32)
    assert tnum_contains(tnum_clear_subreg(a), x & ~U32 & U64)
    assert tnum_contains(tnum_with_subreg(a, b), (x & ~U32 & U64) | (y & U32))
    assert tnum_contains(tnum_const_subreg(a, y), (x & ~U32 & U64) | (y & U32))
    if tnum_is_aligned(a, size):
        assert x % size == 0


def test_unit_cases():
    assert tnum_str(Tnum(0, 0xFF)) == "(0x0; 0xff)"
    assert str(Tnum(0xFFFFFF00, 0xFF)) == "(0xffffff00; 0xff)"
    assert TNUM_UNKNOWN == Tnum(0, U64)
    assert tnum_range(0, 255) == Tnum(0, 0xFF)
    assert tnum_range(768, 0xFFFF) == Tnum(0, 0xFFFF)
    assert tnum_range(5, 5) == tnum_const(5)
    assert tnum_range(0, U64) == TNUM_UNKNOWN
    assert tnum_add(Tnum(0, 0xFF), tnum_const(5)) == Tnum(0, 0x1FF)
    assert tnum_and(TNUM_UNKNOWN, tnum_const(0xFF)) == Tnum(0, 0xFF)
    assert tnum_or(Tnum(0, U32), tnum_const(3)) == Tnum(3, 0xFFFFFFFC)
    assert tnum_lshift(Tnum(0, U32), 8) == Tnum(0, 0xFFFFFFFF00)
    assert tnum_neg(Tnum(0, U32)) == TNUM_UNKNOWN
    assert tnum_mul(tnum_const(6), tnum_const(7)) == tnum_const(42)
    assert tnum_mul(Tnum(0, 1), tnum_const(4)) == Tnum(0, 4)
    assert tnum_arshift(tnum_const(0x80000000), 4, 32) == tnum_const(0xF8000000)
    assert tnum_arshift(tnum_const(1 << 63), 63, 64) == tnum_const(U64)
    assert tnum_is_const(tnum_const(7)) and not tnum_is_const(Tnum(0, 1))
    assert tnum_in(Tnum(0, 0xFF), tnum_const(0x12)) and not tnum_in(tnum_const(0x12), Tnum(0, 0xFF))
    assert tnum_is_aligned(Tnum(0x10, 0xF0), 8) and not tnum_is_aligned(Tnum(0, 0x4), 8)
    assert tnum_with_subreg(Tnum(1 << 32, 0), tnum_const(5)) == tnum_const((1 << 32) | 5)
    assert not tnum_overlap(tnum_const(1), Tnum(0, 0xFE))


@given(st.integers(0, 0xFF), st.integers(0, 0xFF), st.integers(0, 0x1FF))
def test_step_is_the_next_member(value, mask, z):
    t = Tnum(value & ~mask, mask)
    members = [x for x in range(0x100) if tnum_contains(t, x)]
    later = [x for x in members if x > z]
    assert tnum_step(t, z) == (later[0] if later else NO_MEMBER)


def test_step_at_the_top():
    assert tnum_step(TNUM_UNKNOWN, U64) == NO_MEMBER
    assert tnum_step(Tnum(0, 1 << 32), 1) == 1 << 32
    assert tnum_step(Tnum(4, 9), 5) == 12
