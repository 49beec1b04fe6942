"""Soundness of the scalar domain (verifier/check/scalar*.py), by hypothesis: an abstract
value is built around a few concrete members (their hull, then loosened), and every
transfer function's result must contain the concrete result of every member: ALU64 and
ALU32 ops, NEG, byte swaps, movs, load narrowing, `reg_bounds_sync`; `is_branch_taken`
is never wrong and `reg_set_min_max` keeps each pair on the side it takes. Plus unit cases
of the log text (`scalar_text`) taken from real 6.18 logs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.check.scalar import (
    Scalar,
    coerce_reg_to_size,
    coerce_reg_to_size_sx,
    const_value,
    is_const,
    mark_reg_known,
    mark_reg_unknown,
    reg_bounds_sync,
    scalar_alu,
    scalar_end,
    scalar_mov32,
    scalar_movsx,
    scalar_neg,
)
from verifier.check.scalar_bounds import S32_MAX, S32_MIN, S64_MAX, S64_MIN, s32, s64
from verifier.check.scalar_cmp import is_branch_taken, reg_set_min_max
from verifier.check.scalar_fmt import scalar_text
from verifier.check.tnum import U32, U64, Tnum, tnum_contains, tnum_range, tnum_union
from verifier.isa import insn as I

EDGES = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, S32_MAX, 1 << 31, U32, 1 << 32,
         S64_MAX, 1 << 63, U64]
u64s = st.one_of(st.integers(0, U64), st.integers(0, 300),
                 st.integers(-300, -1).map(lambda x: x & U64),
                 st.tuples(st.sampled_from(EDGES), st.integers(-3, 3)).map(lambda t: (t[0] + t[1]) & U64))


def hull(xs: list[int]) -> Scalar:
    """The tightest abstract value of each view holding every x in `xs`."""
    t = Tnum(xs[0], 0)
    for x in xs[1:]:
        t = tnum_union(t, Tnum(x, 0))
    return Scalar(t, min(map(s64, xs)), max(map(s64, xs)), min(xs), max(xs),
                  min(s32(x) for x in xs), max(s32(x) for x in xs),
                  min(x & U32 for x in xs), max(x & U32 for x in xs))


@st.composite
def abstract(draw: st.DrawFn) -> tuple[Scalar, list[int]]:
    """An abstract value and its seed members; some views loosened to the type's default."""
    xs = draw(st.lists(u64s, min_size=1, max_size=4))
    r = hull(xs)
    loosen = draw(st.sets(st.sampled_from(range(5)), max_size=5))
    if 0 in loosen:
        r.var_off = Tnum(r.var_off.value & ~0xFFFF, r.var_off.mask | 0xFFFF)
    if 1 in loosen:
        r.smin_value, r.smax_value = S64_MIN, S64_MAX
    if 2 in loosen:
        r.umin_value, r.umax_value = 0, U64
    if 3 in loosen:
        r.s32_min_value, r.s32_max_value = S32_MIN, S32_MAX
    if 4 in loosen:
        r.u32_min_value, r.u32_max_value = 0, U32
    if draw(st.booleans()):
        reg_bounds_sync(r)
    return r, xs


def contains(r: Scalar, x: int) -> bool:
    x &= U64
    return (tnum_contains(r.var_off, x) and r.umin_value <= x <= r.umax_value
            and r.smin_value <= s64(x) <= r.smax_value
            and r.u32_min_value <= (x & U32) <= r.u32_max_value
            and r.s32_min_value <= s32(x) <= r.s32_max_value)


def concrete_alu(op: int, a: int, b: int, alu64: bool) -> int:
    bits = 64 if alu64 else 32
    m = (1 << bits) - 1
    a, b = a & m, b & m
    sa = a - (1 << bits) if a >> (bits - 1) else a
    r = {I.BPF_ADD: lambda: a + b, I.BPF_SUB: lambda: a - b, I.BPF_MUL: lambda: a * b,
         I.BPF_DIV: lambda: a // b if b else 0, I.BPF_MOD: lambda: a % b if b else a,
         I.BPF_AND: lambda: a & b, I.BPF_OR: lambda: a | b, I.BPF_XOR: lambda: a ^ b,
         I.BPF_LSH: lambda: a << (b % bits), I.BPF_RSH: lambda: a >> (b % bits),
         I.BPF_ARSH: lambda: sa >> (b % bits)}[op]()
    return r & m


ALU = [I.BPF_ADD, I.BPF_SUB, I.BPF_MUL, I.BPF_DIV, I.BPF_MOD, I.BPF_AND, I.BPF_OR, I.BPF_XOR,
       I.BPF_LSH, I.BPF_RSH, I.BPF_ARSH]
shift_amounts = st.integers(0, 70).map(lambda k: Scalar.const(k))


@given(abstract(), st.one_of(abstract(), shift_amounts.map(lambda s: (s, [const_value(s)]))),
       st.sampled_from(ALU), st.booleans(), st.data())
def test_alu_is_sound(da, db, op, alu64, data):
    (a, xs), (b, ys) = da, db
    for r in (a, b):
        assert all(contains(r, x) for x in (xs if r is a else ys))
    res = a.copy()
    scalar_alu(res, b, op, alu64)
    x, y = data.draw(st.sampled_from(xs)), data.draw(st.sampled_from(ys))
    assert contains(res, concrete_alu(op, x, y, alu64)), (a, b, x, y, res)


@given(abstract(), st.booleans(), st.data())
def test_unary_ops_are_sound(da, alu64, data):
    a, xs = da
    x = data.draw(st.sampled_from(xs))
    r = a.copy()
    scalar_neg(r, alu64)
    assert contains(r, -x & (U64 if alu64 else U32))
    r = a.copy()
    reg_bounds_sync(r)
    assert contains(r, x)
    r = Scalar()
    scalar_mov32(r, a)
    assert contains(r, x & U32)


def _swap(x: int, nbytes: int) -> int:
    return int.from_bytes((x & ((1 << 8 * nbytes) - 1)).to_bytes(nbytes, "little"), "big")


@given(abstract(), st.sampled_from(["le", "be", "bswap"]), st.sampled_from([16, 32, 64]), st.data())
def test_byte_swaps_are_sound(da, kind, width, data):
    a, xs = da
    x = data.draw(st.sampled_from(xs))
    code = {"le": I.BPF_ALU | I.BPF_TO_LE, "be": I.BPF_ALU | I.BPF_TO_BE,
            "bswap": I.BPF_ALU64 | I.BPF_TO_LE}[kind] | I.BPF_END
    r = a.copy()
    scalar_end(r, I.Insn(code, 2, imm=width))
    want = x & ((1 << width) - 1) if kind == "le" else _swap(x, width // 8)
    assert contains(r, want)


def _sext(x: int, bits: int) -> int:
    x &= (1 << bits) - 1
    return x - (1 << bits) if x >> (bits - 1) else x


@given(abstract(), st.sampled_from([1, 2, 4]), st.booleans(), st.data())
def test_narrowing_and_sign_extension_are_sound(da, size, alu64, data):
    a, xs = da
    x = data.draw(st.sampled_from(xs))
    r = a.copy()
    coerce_reg_to_size(r, size)
    assert contains(r, x & ((1 << 8 * size) - 1))
    r = a.copy()
    coerce_reg_to_size_sx(r, size)
    assert contains(r, _sext(x, 8 * size) & U64)
    bits = 8 * size
    if alu64 or bits < 32:
        r = Scalar()
        scalar_movsx(r, a, bits, alu64)
        assert contains(r, _sext(x, bits) & (U64 if alu64 else U32))


JMP = [I.BPF_JEQ, I.BPF_JNE, I.BPF_JGT, I.BPF_JGE, I.BPF_JLT, I.BPF_JLE, I.BPF_JSET,
       I.BPF_JSGT, I.BPF_JSGE, I.BPF_JSLT, I.BPF_JSLE]


def cond(op: int, a: int, b: int, is_jmp32: bool) -> bool:
    bits = 32 if is_jmp32 else 64
    a, b = a & ((1 << bits) - 1), b & ((1 << bits) - 1)
    sa, sb = _sext(a, bits), _sext(b, bits)
    return {I.BPF_JEQ: a == b, I.BPF_JNE: a != b, I.BPF_JGT: a > b, I.BPF_JGE: a >= b,
            I.BPF_JLT: a < b, I.BPF_JLE: a <= b, I.BPF_JSET: bool(a & b), I.BPF_JSGT: sa > sb,
            I.BPF_JSGE: sa >= sb, I.BPF_JSLT: sa < sb, I.BPF_JSLE: sa <= sb}[op]


@given(abstract(), abstract(), st.sampled_from(JMP), st.booleans(), st.data())
def test_branches_are_sound(da, db, op, is_jmp32, data):
    (a, xs), (b, ys) = da, db
    x, y = data.draw(st.sampled_from(xs)), data.draw(st.sampled_from(ys))
    taken = cond(op, x, y, is_jmp32)
    pred = is_branch_taken(a, b, op, is_jmp32)
    assert pred == -1 or pred == int(taken)
    t1, t2, f1, f2 = a.copy(), b.copy(), a.copy(), b.copy()
    reg_set_min_max(t1, t2, f1, f2, op, is_jmp32)
    if taken:
        assert contains(t1, x) and contains(t2, y)
    else:
        assert contains(f1, x) and contains(f2, y)


@given(abstract(), st.sampled_from(JMP), st.booleans(), st.data())
def test_a_register_compared_with_itself(da, op, is_jmp32, data):
    a, xs = da
    x = data.draw(st.sampled_from(xs))
    pred = is_branch_taken(a, a, op, is_jmp32)
    taken = cond(op, x, x, is_jmp32)
    assert pred == -1 or pred == int(taken)
    t, f = a.copy(), a.copy()
    reg_set_min_max(t, t, f, f, op, is_jmp32)
    assert contains(t if taken else f, x)


# --- unit cases ---------------------------------------------------------------------------


def _load(size: int) -> Scalar:
    r = Scalar()
    mark_reg_unknown(r)
    coerce_reg_to_size(r, size)
    return r


def test_text_of_kernel_log_values():
    assert scalar_text(_load(4)) == "scalar(smin=0,smax=umax=0xffffffff,var_off=(0x0; 0xffffffff))"
    assert scalar_text(_load(1), id=1) == (
        "scalar(id=1,smin=smin32=0,smax=umax=smax32=umax32=255,var_off=(0x0; 0xff))")
    assert scalar_text(Scalar()) == "scalar()"
    assert scalar_text(Scalar.const(U64)) == "-1"
    assert scalar_text(Scalar.const(U32)) == "0xffffffff"
    assert scalar_text(Scalar.const(32767)) == "32767"
    assert scalar_text(Scalar.const(32768)) == "0x8000"
    assert scalar_text(Scalar.const(-32768 & U64)) == "-32768"
    assert scalar_text(Scalar.const(-32769 & U64)) == "0xffffffffffff7fff"
    assert scalar_text(Scalar.const(0), precise=True) == "P0"
    r = _load(1)
    scalar_alu(r, Scalar.const(5), I.BPF_ADD, True)
    assert scalar_text(r, id=1, add_const=5) == (
        "scalar(id=1+5,smin=umin=smin32=umin32=5,smax=umax=smax32=umax32=260,var_off=(0x0; 0x1ff))")
    r = _load(1)
    scalar_alu(r, Scalar.const(-600 & U64), I.BPF_ADD, False)
    assert scalar_text(r) == ("scalar(smin=umin=umin32=0xfffffda8,smax=umax=umax32=0xfffffea7,"
                              "smin32=-600,smax32=-345,var_off=(0xfffffc00; 0x3ff))")
    r = _load(4)
    scalar_neg(r, True)
    assert scalar_text(r) == "scalar(smin=0xffffffff00000001,smax=0)"
    r = _load(2)
    coerce_reg_to_size_sx(r, 1)
    assert scalar_text(r) == "scalar(smin=smin32=-128,smax=smax32=127)"


def test_known_and_unknown():
    r = Scalar()
    mark_reg_known(r, 0x1234)
    assert is_const(r) and const_value(r) == 0x1234
    assert r.var_off == Tnum(0x1234, 0) and r.s32_min_value == 0x1234
    mark_reg_unknown(r)
    assert not is_const(r) and r == Scalar()
    assert r.copy() == r and r.copy() is not r


def test_jump_refinement_matches_the_kernel_example():
    # 6.18: `if r3 > 0x64` on a u8 load: 0..100 falls through, 101..255 jumps
    t1, f1 = _load(1), _load(1)
    reg_set_min_max(t1, Scalar.const(100), f1, Scalar.const(100), I.BPF_JGT, False)
    assert scalar_text(f1) == "scalar(smin=smin32=0,smax=umax=smax32=umax32=100,var_off=(0x0; 0x7f))"
    assert scalar_text(t1) == (
        "scalar(smin=umin=smin32=umin32=101,smax=umax=smax32=umax32=255,var_off=(0x0; 0xff))")
    assert is_branch_taken(_load(1), Scalar.const(255), I.BPF_JGT, False) == 0
    assert is_branch_taken(_load(1), Scalar.const(256), I.BPF_JLT, True) == 1
    assert tnum_range(0, 100) == Tnum(0, 0x7F)


# The constant fast paths give what the general rules give -------------------------------------

_FAST_OPS = [I.BPF_ADD, I.BPF_SUB, I.BPF_MUL, I.BPF_AND, I.BPF_OR, I.BPF_XOR,
             I.BPF_LSH, I.BPF_RSH, I.BPF_ARSH]


U64_INTS = st.integers(0, (1 << 64) - 1)


@settings(max_examples=400, deadline=None)
@given(U64_INTS, U64_INTS, st.sampled_from(_FAST_OPS), st.booleans())
def test_constant_fast_path_equals_the_general_rules(a: int, b: int, op: int, alu64: bool) -> None:
    import verifier.check.scalar as sc

    if op in (I.BPF_LSH, I.BPF_RSH, I.BPF_ARSH):
        b %= 64 if alu64 else 32
    fast, slow = Scalar.const(a), Scalar.const(a)
    sc.scalar_alu(fast, Scalar.const(b), op, alu64)
    original = sc._const_bounds
    sc._const_bounds = lambda r: False  # force the general rules
    try:
        sc.scalar_alu(slow, Scalar.const(b), op, alu64)
    finally:
        sc._const_bounds = original
    assert fast == slow
