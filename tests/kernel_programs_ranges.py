"""Feature "ranges" of tests/kernel_programs.py: statements that build bounded scalars and
branches on them, and the small range model (`Rng`, from tests/kernel_programs_core.py) that
says what the kernel surely knows about them.

- `st_bounded`: a new bounded scalar: a mask (`&=`, 64 or 32 bits) or a shift (`>>=`,
  `s>>=`) of an unknown, a u8/u16 stack load, a ctx field, a sign extension (movsx);
- `st_bounded_alu`: arithmetic on a bounded scalar with a constant or another bounded scalar
  (`+= -= *= &= |= ^= <<= >>= s>>=`, neg, 64 and 32 bits, no division), copies, movsx, and
  a spill and fill through an 8-byte stack slot;
- `st_range_if`: a conditional jump (JMP or JMP32, immediate or register, signed or unsigned)
  on a bounded scalar. When the model decides it, the side the kernel never takes holds a
  statement the kernel would refuse (a read of a register no path wrote, a store past the
  frame, ...); otherwise the two sides are blocks that learn what the branch says.

The model is deliberately coarse: an interval per view, only for operations whose result
the kernel bounds at least as tightly. A decision the model makes is then one the kernel
makes too; the kernel may decide more (tnums), which only makes more code dead."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.kernel_programs_core import IMMS, SCALAR, SKB_LEN, Func, Rng, _block, _w

S64, S32 = 1 << 63, 1 << 31
U32 = Rng(0, (1 << 32) - 1)
MASKS = (0xFF, 0x3F, 0x38, 0xF0, 0xF, 7, 3, 1, 0x3FF, 0xFFFF, 0x7FFF_FFFF)
BOUNDED_OPS = ("+=", "-=", "*=", "&=", "|=", "^=", "<<=", ">>=", "s>>=", "mov", "movsx", "neg", "spill")
UNSIGNED, SIGNED = (">", ">=", "<", "<="), ("s>", "s>=", "s<", "s<=")
NEGATE = {"==": "!=", "!=": "==", ">": "<=", ">=": "<", "<": ">=", "<=": ">",
          "s>": "s<=", "s>=": "s<", "s<": "s>=", "s<=": "s>"}  # fmt: skip


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def rng(lo: int, hi: int) -> Rng:
    """A 64-bit interval; its low half is the same interval when it fits in s32."""
    if -S32 <= lo <= hi < S32:
        return Rng(lo, hi, lo, hi)
    return Rng(lo, hi)


def const_rng(value: int) -> Rng:
    v = _signed(value, 64)
    return Rng(v, v, _signed(v, 32), _signed(v, 32))


def _view(r: Rng | None, is32: bool) -> tuple[int, int] | None:
    if r is None:
        return None
    lo, hi = (r.lo32, r.hi32) if is32 else (r.lo, r.hi)
    return None if lo is None or hi is None else (lo, hi)


def _unsigned(iv: tuple[int, int], bits: int) -> tuple[int, int] | None:
    lo, hi = iv
    if lo >= 0:
        return iv
    return (lo + (1 << bits), hi + (1 << bits)) if hi < 0 else None


def decide(op: str, a: tuple[int, int], b: tuple[int, int], bits: int) -> bool | None:
    """Whether `a op b` holds for all (True) or no (False) values of the intervals; None when
    the intervals do not tell."""
    if op == "&":
        ua, ub = _unsigned(a, bits), _unsigned(b, bits)
        if ua is None or ub is None or ub[0] != ub[1]:
            return None
        if ua[0] == ua[1]:
            return bool(ua[0] & ub[0])
        return False if ua[0] >= 0 and not ub[0] & ((1 << ua[1].bit_length()) - 1) else None
    if op in UNSIGNED:
        ua, ub = _unsigned(a, bits), _unsigned(b, bits)
        if ua is None or ub is None:
            return None
        a, b, op = ua, ub, "s" + op
    (alo, ahi), (blo, bhi) = a, b
    if op in ("==", "!="):
        verdict = True if alo == ahi == blo == bhi else False if ahi < blo or bhi < alo else None
        return verdict if verdict is None or op == "==" else not verdict
    always, never = {"s>": (alo > bhi, ahi <= blo), "s>=": (alo >= bhi, ahi < blo),
                     "s<": (ahi < blo, alo >= bhi), "s<=": (ahi <= blo, alo > bhi)}[op]  # fmt: skip
    return True if always else False if never else None


def refine(r: Rng | None, op: str, c: int, holds: bool, is32: bool) -> Rng | None:
    """What `r op c` (or its negation) teaches about r: the tested view narrowed, the other
    kept (the kernel may learn more)."""
    op = op if holds else NEGATE.get(op, op)
    bits = 32 if is32 else 64
    iv = _view(r, is32)
    if op in UNSIGNED:
        u = _unsigned(iv, bits) if iv is not None else (0, (1 << bits) - 1)
        if u is None:
            return r
        cu = c & ((1 << bits) - 1)
        lo, hi = {">": (max(u[0], cu + 1), u[1]), ">=": (max(u[0], cu), u[1]),
                  "<": (u[0], min(u[1], cu - 1)), "<=": (u[0], min(u[1], cu))}[op]  # fmt: skip
        if lo > hi or (lo < 1 << (bits - 1) <= hi):
            return r
        lo, hi = (lo, hi) if hi < 1 << (bits - 1) else (lo - (1 << bits), hi - (1 << bits))
    elif op in SIGNED or op == "==":
        s = iv if iv is not None else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        cs = _signed(c, bits)
        lo, hi = {"s>": (max(s[0], cs + 1), s[1]), "s>=": (max(s[0], cs), s[1]), "==": (cs, cs),
                  "s<": (s[0], min(s[1], cs - 1)), "s<=": (s[0], min(s[1], cs))}[op]  # fmt: skip
        if lo > hi:
            return r
    else:
        return r
    base = r if r is not None else Rng()
    if is32:
        return Rng(base.lo, base.hi, lo, hi)
    new = rng(lo, hi)
    return new if new.lo32 is not None or base.lo32 is None else Rng(lo, hi, base.lo32, base.hi32)


def alu(op: str, a: Rng, b: Rng, is32: bool) -> Rng | None:
    """The range of `a op b` (b a constant for the shifts), or None when the model has none."""
    bits = 32 if is32 else 64
    av, bv = _view(a, is32), _view(b, is32)
    if av is None or bv is None:
        return U32 if is32 else None
    (alo, ahi), (blo, bhi) = av, bv
    nonneg = alo >= 0 and blo >= 0
    top = (1 << max(ahi.bit_length(), bhi.bit_length())) - 1 if nonneg else 0
    shift = blo if blo == bhi and 0 <= blo < bits else None  # shifts take constants
    out: tuple[int, int] | None = None
    if op in ("+=", "-="):
        out = (alo + blo, ahi + bhi) if op == "+=" else (alo - bhi, ahi - blo)
    elif op == "*=" and nonneg and ahi <= 0xFFFF and bhi <= 0xFFFF:
        out = (alo * blo, ahi * bhi)
    elif op == "&=" and (nonneg or blo >= 0 and not is32):
        out = (0, min(ahi, bhi) if nonneg else bhi)
    elif op in ("|=", "^=") and nonneg:
        out = (max(alo, blo) if op == "|=" else 0, top)
    # the kernel keeps a left shift's bounds while umax <= 2^(bits - 1 - k)
    elif op == "<<=" and shift is not None and alo >= 0 and ahi << shift <= 1 << (31 if is32 else 40):
        out = (alo << shift, ahi << shift)
    elif op in (">>=", "s>>=") and shift is not None and (alo >= 0 or op == "s>>=" and not is32):
        out = (alo >> shift, ahi >> shift)
    if is32:
        return rng(*out) if out is not None and 0 <= out[0] and out[1] < 1 << 32 else U32
    return rng(*out) if out is not None and -S64 <= out[0] and out[1] < S64 else None


# -- statements ------------------------------------------------------------------------------


def _dst(f: Func) -> int:
    return f.draw(st.sampled_from([r for r in f.writable() if r != 10]))


def unknown(f: Func, dst: int) -> bool:
    """Put a scalar into dst that the model knows nothing about: a copy of a scalar, or a ctx
    field (the kernel knows only its u32 range); False when neither is at hand."""
    src = f.scalar()
    ctx = f.ctx()
    if ctx is not None and (src is None or f.draw(st.booleans())):
        f.emit(f"r{dst} = *(u32 *)(r{ctx} + {SKB_LEN})")
    elif src is None:
        return False
    elif src != dst:
        f.emit(f"r{dst} = r{src}")
    f.regs[dst] = SCALAR
    return True


def st_bounded(f: Func, depth: int) -> bool:
    dst = _dst(f)
    kind = f.draw(st.sampled_from(("mask", "mask32", "shift", "shift32", "arsh", "sx", "sx32", "small")))
    if kind == "small":
        if not f.slots:
            return False
        size = f.draw(st.sampled_from((1, 2)))
        off = f.draw(st.sampled_from(sorted(f.slots))) + size * f.draw(st.integers(0, 8 // size - 1))
        f.emit(f"r{dst} = *({'u8' if size == 1 else 'u16'} *)(r10 - {-off})")
        f.regs[dst], f.bounds[dst] = SCALAR, rng(0, (1 << (8 * size)) - 1)
        return True
    if not unknown(f, dst):
        return False
    if kind in ("mask", "mask32"):
        mask = f.draw(st.sampled_from(MASKS))
        f.emit(f"{_w(dst, kind == 'mask32')} &= {mask:#x}")
        f.bounds[dst] = rng(0, mask)
    elif kind == "shift":
        k = f.draw(st.integers(32, 63))
        f.emit(f"r{dst} >>= {k}")
        f.bounds[dst] = rng(0, (1 << (64 - k)) - 1)
    elif kind == "shift32":
        k = f.draw(st.integers(1, 31))
        f.emit(f"w{dst} >>= {k}")
        f.bounds[dst] = rng(0, (1 << (32 - k)) - 1)
    elif kind == "arsh":
        k = f.draw(st.integers(33, 63))
        f.emit(f"r{dst} s>>= {k}")
        f.bounds[dst] = rng(-(1 << (63 - k)), (1 << (63 - k)) - 1)
    else:
        bits = f.draw(st.sampled_from((8, 16) if kind == "sx32" else (8, 16, 32)))
        f.emit(f"{_w(dst, kind == 'sx32')} = (s{bits}){_w(dst, kind == 'sx32')}")
        half = 1 << (bits - 1)
        f.bounds[dst] = Rng(0, (1 << 32) - 1, -half, half - 1) if kind == "sx32" else rng(-half, half - 1)
    return True


def _bounded(f: Func) -> list[int]:
    return [r for r in sorted(f.bounds) if f.regs.get(r) == SCALAR and r not in f.reserved]


def st_bounded_alu(f: Func, depth: int) -> bool:
    regs = _bounded(f)
    if not regs:
        return st_bounded(f, depth)
    a = f.draw(st.sampled_from(regs))
    is32 = f.draw(st.booleans())
    op = f.draw(st.sampled_from(BOUNDED_OPS))
    if op == "spill":  # the kernel keeps a spilled scalar's bounds in its 8-byte slot
        dst, off, spilled = _dst(f), 8 * f.draw(st.integers(1, 8)), f.bounds[a]
        f.emit(f"*(u64 *)(r10 - {off}) = r{a}")
        f.emit(f"r{dst} = *(u64 *)(r10 - {off})")
        f.slots.add(-off)
        f.regs[dst], f.bounds[dst] = SCALAR, spilled
        return True
    if op == "neg":
        view = _view(f.bounds[a], is32)
        f.emit(f"{_w(a, is32)} = -{_w(a, is32)}")
        if view is not None and -view[0] < (S32 if is32 else S64):
            lo, hi = -view[1], -view[0]
            f.bounds[a] = rng(lo, hi) if lo >= 0 or not is32 else Rng(0, (1 << 32) - 1, lo, hi)
        elif is32:
            f.bounds[a] = U32
        return True
    if op in ("mov", "movsx"):
        dst = _dst(f)
        bits = f.draw(st.sampled_from((8, 16) if is32 else (8, 16, 32))) if op == "movsx" else 0
        f.emit(f"{_w(dst, is32)} = {f'(s{bits})' if bits else ''}{_w(a, is32)}")
        half = 1 << (bits - 1) if bits else 0
        view = _view(f.bounds.get(a), is32) if not bits else (-half, half - 1)
        new = rng(*view) if view is not None and (view[0] >= 0 or not is32) else None
        f.regs[dst] = SCALAR
        if new is not None or is32:
            f.bounds[dst] = new if new is not None else Rng(0, (1 << 32) - 1, *(view or (None, None)))
        return True
    others = [r for r in regs if r != a and op not in ("<<=", ">>=", "s>>=")]
    if others and f.draw(st.booleans()):
        b = f.draw(st.sampled_from(others))
        rhs, brng = _w(b, is32), f.bounds[b]
    else:
        value = f.draw(st.integers(0, 12 if op in ("<<=", ">>=", "s>>=") else 16 if op == "*=" else 300))
        rhs, brng = str(value), const_rng(value)
    new = alu(op, f.bounds[a], brng, is32)
    f.emit(f"{_w(a, is32)} {op} {rhs}")
    if new is not None:
        f.bounds[a] = new
    return True


def _operand(f: Func, a: int, is32: bool) -> tuple[str, tuple[int, int] | None, int | None]:
    """The right side of a comparison: often an endpoint of a's range (so the branch is often
    decided), else any immediate, or a register with a range; its text, range and constant."""
    view = _view(f.bounds.get(a), is32)
    regs = [r for r in _bounded(f) if r != a and _view(f.bounds[r], is32) is not None]
    if regs and f.draw(st.integers(0, 3)) == 0:
        b = f.draw(st.sampled_from(regs))
        iv = _view(f.bounds[b], is32)
        return _w(b, is32), iv, iv[0] if iv is not None and iv[0] == iv[1] else None
    near = [v + d for v in view for d in (-1, 0, 1)] if view is not None else []
    value = f.draw(st.sampled_from(near)) if near and f.draw(st.integers(0, 3)) else f.draw(IMMS)
    value = _signed(value, 32)  # an immediate is s32 (sign-extended in JMP)
    return str(value), (value, value), value


def _dead(f: Func) -> str:
    """A statement the kernel refuses wherever it sees one."""
    args = range(1, 6) if f.sig.is_global else ()  # read, they would become arguments (asm_btf)
    pool = [r for r in range(10) if r not in f.maybe and r not in args]
    kinds = ["oob", "shift", "fp"] + (["uninit"] * 3 if pool else [])
    kind = f.draw(st.sampled_from(kinds))
    if kind == "uninit":
        return f"r{_dst(f)} = r{f.draw(st.sampled_from(pool))}"
    if kind == "oob":
        return f"*(u64 *)(r10 + {f.draw(st.sampled_from((0, 8)))}) = 0"
    shifted = f.draw(st.sampled_from([r for r in f.writable() if r != 10 and r not in args]))
    return "r10 = 0" if kind == "fp" else f"w{shifted} <<= 32"


def tested(f: Func) -> None:
    """A branch on registers refines them and every copy the kernel links to them: no ctx
    field is untouched any more (see `Func.fresh`)."""
    f.fresh = {r: k for r, k in f.fresh.items() if k != "raw"}


def st_range_if(f: Func, depth: int) -> bool:
    regs = f.of(SCALAR)
    if not regs:
        return False
    bounded = _bounded(f)
    a = f.draw(st.sampled_from(bounded if bounded and f.draw(st.integers(0, 4)) else regs))
    is32 = f.draw(st.booleans())
    op = f.draw(st.sampled_from(("==", "!=", ">", ">=", "<", "<=", "s>", "s>=", "s<", "s<=", "&")))
    rhs, b, const = _operand(f, a, is32)
    av = _view(f.bounds.get(a), is32)
    verdict = decide(op, av, b, 32 if is32 else 64) if av is not None and b is not None else None
    cond = f"if {_w(a, is32)} {op} {rhs}"
    tested(f)
    if verdict is not None:
        live, dead = f.label(), f.label()
        if verdict:  # the jump is always taken: the fall-through is dead
            f.emit(f"{cond} goto {live}")
            f.emit(_dead(f))
        else:
            f.emit(f"{cond} goto {dead}")
            f.emit(f"goto {live}")
            f.lines.append(f"{dead}:")
            f.emit(_dead(f))
        f.lines.append(f"{live}:")
        return True
    if depth >= 2 or f.loops:
        return False
    taken = {a: refine(f.bounds.get(a), op, const, True, is32)} if const is not None else {}
    fall = {a: refine(f.bounds.get(a), op, const, False, is32)} if const is not None else {}
    end = f.label()
    if f.draw(st.booleans()):
        f.emit(f"{cond} goto {end}")
        threw = [_block(f, depth, True, {r: v for r, v in fall.items() if v is not None})]
    else:
        other = f.label()
        f.emit(f"{cond} goto {other}")
        threw = [_block(f, depth, True, {r: v for r, v in fall.items() if v is not None})]
        f.emit(f"goto {end}")
        f.lines.append(f"{other}:")
        threw.append(_block(f, depth, True, {r: v for r, v in taken.items() if v is not None}))
    f.lines.append(f"{end}:")
    f.doubt |= any(threw)
    return True
