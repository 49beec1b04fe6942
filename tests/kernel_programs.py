"""The program generator of tests/test_kernel_diff.py: a hypothesis strategy (`kernel_programs`)
that draws a tc program in the subset our verifier models and renders it as text assembly.

The grammar, per function (main, then up to three subprogs f1..fk, each static or `.global`;
f_i only calls f_j with j > i, so there is no recursion):
- straight-line statements: ALU64/ALU32 with immediates and registers (div/mod, signed
  div/mod, shifts, neg, be/le/bswap, movsx), `ll` immediates, ctx reads of `len` (offset 0)
  and `protocol` (offset 16, both u32), copies of the ctx, stack stores of scalars and
  immediates and loads (plain and sign-extending) of 1, 2, 4 and 8 bytes at aligned offsets
  of fp-64..fp-1;
- forward conditional blocks (`if ... goto .Lend`, with or without an else), JMP and JMP32,
  register or immediate operands; bounded loops on a counter in R6-R9 (at most 4 rounds);
- calls of later functions (their arguments set up first: scalars, or the ctx in R1 for a
  function that takes it), and `bpf_throw` with an immediate or register cookie, usually
  under a condition;
- `r0 = ...; exit` at the end.

The generator tracks which registers hold a scalar or the ctx on every path (a block's writes
are forgotten at its end) and which stack slots were written, so that a program without a
flaw is one the kernel accepts. One program in `FLAW_SHARE` gets one deliberate flaw (see
`tests.kernel_flaws.FLAWS`) at a random point, so that rejections and their messages are
compared too.

`kernel_programs(features)` adds statements that need the kernel's value tracking: "ranges"
(tests/kernel_programs_ranges.py), "varoff" and "packet" (tests/kernel_programs_memory.py),
"loops" (tests/kernel_programs_loops.py, and counted loops of up to 16 rounds). With features a
ctx-taking function keeps the ctx in a reserved register and is only called where a ctx is at
hand, flaws go to main (with `FEATURE_FLAWS`), and `labelled_programs` tells what the kernel
must answer. Without features the draws, so the programs, are exactly the base grammar's.

Global subprogs: the kernel learns their arguments from the BTF `unwind.live.asm_btf` writes
(R1..Rn, n the highest argument register read before written, R1 the ctx when dereferenced
first); each global body therefore starts by reading R1..Rn, and flaws never read R1-R5
there (that would change n)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

from tests.kernel_flaws import FEATURE_FLAWS, FLAWS, flaw
from tests.kernel_programs_core import (
    ALU_OPS,
    CTX,
    CTX_OFFS,
    DIVS,
    ENDS,
    FEATURES,
    JMP_OPS,
    SCALAR,
    SHIFTS,
    SIZES,
    STACK,
    SX,
    Func,
    Sig,
    _block,
    _clobber,
    _w,
    may_throw,
)  # fmt: skip
from tests.kernel_programs_loops import st_loop_unknown
from tests.kernel_programs_memory import st_packet, st_varoff
from tests.kernel_programs_ranges import U32, const_rng, st_bounded, st_bounded_alu, st_range_if

FLAW_SHARE = 6  # one program in FLAW_SHARE carries a deliberate flaw


# -- statements ------------------------------------------------------------------------------


def st_mov_imm(f: Func) -> None:
    dst = f.draw(st.sampled_from(f.writable()))
    if f.draw(st.integers(0, 5)) == 0:
        value = f.draw(st.integers(-(1 << 63), (1 << 64) - 1))
        f.emit(f"r{dst} = {value:#x} ll")
    else:
        is32, value = f.draw(st.booleans()), f.imm()
        f.emit(f"{_w(dst, is32)} = {value}")
        value &= 0xFFFF_FFFF if is32 else -1
    f.regs[dst] = SCALAR
    f.fresh[dst] = "const"
    f.bounds[dst] = const_rng(value)


def st_alu(f: Func) -> None:
    dst = f.scalar()
    if dst is None or dst in f.reserved:
        return st_mov_imm(f)
    is32, op = f.draw(st.booleans()), f.draw(st.sampled_from(ALU_OPS))
    src = f.scalar() if f.draw(st.booleans()) else None
    if src is not None:
        f.emit(f"{_w(dst, is32)} {op} {_w(src, is32)}")
    elif op in SHIFTS:
        f.emit(f"{_w(dst, is32)} {op} {f.draw(st.integers(0, 31 if is32 else 63))}")
    else:
        value = f.imm()
        f.emit(f"{_w(dst, is32)} {op} {value or 1 if op in DIVS else value}")


def st_unary(f: Func) -> None:
    dst = f.scalar()
    if dst is None or dst in f.reserved:
        return st_mov_imm(f)
    kind = f.draw(st.sampled_from(("neg", "end", "movsx", "mov")))
    is32 = f.draw(st.booleans())
    if kind == "neg":
        f.emit(f"{_w(dst, is32)} = -{_w(dst, is32)}")
    elif kind == "end":
        end = f.draw(st.sampled_from(ENDS))
        f.emit(f"r{dst} = {end} r{dst}")
    else:
        out = f.draw(st.sampled_from([r for r in f.writable() if r != 10]))
        if kind == "movsx":
            sx = f.draw(st.sampled_from(("s8", "s16") if is32 else ("s8", "s16", "s32")))
            f.emit(f"{_w(out, is32)} = ({sx}){_w(dst, is32)}")
        else:
            f.emit(f"{_w(out, is32)} = {_w(dst, is32)}")
        f.regs[out] = SCALAR


def st_ctx(f: Func) -> None:
    ctxs = f.of(CTX)
    if not ctxs:
        return st_alu(f)
    base = f.draw(st.sampled_from(ctxs))
    dst = f.draw(st.sampled_from(f.writable()))
    if f.draw(st.integers(0, 4)) == 0 and not f.loops:
        f.emit(f"r{dst} = r{base}")
        f.regs[dst] = CTX
        return None
    f.emit(f"r{dst} = *(u32 *)(r{base} + {f.draw(st.sampled_from(CTX_OFFS))})")
    f.regs[dst] = SCALAR
    f.fresh[dst] = "raw"
    f.bounds[dst] = U32


def _slot(f: Func, size: int) -> int:
    return -size * f.draw(st.integers(1, STACK // size))


def st_store(f: Func) -> None:
    size = f.draw(st.sampled_from((1, 2, 4, 8)))
    off = _slot(f, size)
    src = f.scalar() if f.draw(st.integers(0, 3)) else None
    f.emit(f"*({SIZES[size]} *)(r10 - {-off}) = {f.imm() if src is None else f'r{src}'}")
    f.slots.add(off & ~7)


def st_load(f: Func) -> None:
    if not f.slots:
        return st_store(f)
    size = f.draw(st.sampled_from((1, 2, 4, 8)))
    base = f.draw(st.sampled_from(sorted(f.slots)))
    off = base + size * f.draw(st.integers(0, 8 // size - 1))
    sx = size < 8 and f.draw(st.integers(0, 3)) == 0
    dst = f.draw(st.sampled_from(f.writable()))
    f.emit(f"r{dst} = *({SX[size] if sx else SIZES[size]} *)(r10 - {-off})")
    f.regs[dst] = SCALAR
    return None


def _cond(f: Func) -> tuple[str, bool] | None:
    """A condition on a constant, or on an untouched ctx field against an immediate both of
    whose outcomes its u32 range allows (the field is then no longer untouched: ranges);
    and whether it is the latter, which the kernel cannot decide."""
    if f.loops or not f.fresh:
        return None
    a = f.draw(st.sampled_from(sorted(f.fresh)))
    is32 = f.draw(st.booleans())
    raw = f.fresh.pop(a) == "raw"
    if raw:
        rhs = str(f.draw(st.integers(1, (1 << 31) - 1)))
    else:
        f.fresh[a] = "const"
        consts = [r for r, k in f.fresh.items() if k == "const"]
        b = f.draw(st.sampled_from(consts)) if f.draw(st.booleans()) else None
        rhs = _w(b, is32) if b is not None else str(f.imm())
    return f"if {_w(a, is32)} {f.draw(st.sampled_from(JMP_OPS))} {rhs}", raw


def st_if(f: Func, depth: int) -> None:
    drawn = _cond(f)
    if drawn is None:
        return st_mov_imm(f)
    cond, raw = drawn
    end = f.label()
    if f.draw(st.booleans()):
        f.emit(f"{cond} goto {end}")
        threw = [_block(f, depth, doubt=not raw)]
    else:
        other = f.label()
        f.emit(f"{cond} goto {other}")
        threw = [_block(f, depth, doubt=not raw)]
        f.emit(f"goto {end}")
        f.lines.append(f"{other}:")
        threw.append(_block(f, depth, doubt=not raw))
    f.lines.append(f"{end}:")
    # past the block: dead when every way there threw, or may be when the kernel decides
    f.doubt |= all(threw) and len(threw) == 2 or any(threw) and not raw
    return None


def st_loop(f: Func, depth: int) -> None:
    free = [r for r in (6, 7, 8, 9) if r not in f.reserved]
    if not free:
        return st_alu(f)
    ctr = f.draw(st.sampled_from(free))
    top = f.label()
    f.emit(f"r{ctr} = {f.draw(st.integers(1, 16 if 'loops' in f.features else 4))}")
    f.lines.append(f"{top}:")
    f.reserved.add(ctr)
    f.regs[ctr] = SCALAR
    f.loops += 1
    f.bounds = {}  # what holds in round one may not in round two
    _block(f, depth + 1)
    f.bounds = {}
    f.loops -= 1
    f.reserved.discard(ctr)
    f.regs[ctr] = SCALAR
    f.emit(f"r{ctr} -= 1")
    f.emit(f"if r{ctr} s> 0 goto {top}")
    return None


def st_call(f: Func) -> None:
    # with features, a callee taking the ctx is only called with the ctx at hand
    callees = [c for c in f.callees if not (f.features and c.ctx and f.ctx() is None)]
    if not callees or f.loops:
        return st_alu(f)
    return call(f, f.draw(st.sampled_from(callees)))


def call(f: Func, callee: Sig) -> None:
    for r in range(1, callee.nargs + 1):
        if r == 1 and callee.ctx:
            ctx = f.of(CTX)
            if not ctx:  # no ctx left here: pass a scalar, the kernel rejects it
                f.emit(f"r1 = {f.imm()}")
                f.ctx_lost = True
            elif ctx[0] != 1:
                f.emit(f"r1 = r{ctx[0]}")
        else:
            src = f.scalar()
            f.emit(f"r{r} = {f.imm() if src is None or src == r else f'r{src}'}")
        f.regs[r] = CTX if r == 1 and callee.ctx else SCALAR
    f.emit(f"call {callee.name}")
    _clobber(f)
    if not callee.is_global:  # a static callee may throw on every path: what follows may be dead
        f.calls.add(callee.name)
    return None


def st_throw(f: Func) -> None:
    src = f.scalar() if f.draw(st.booleans()) else None
    if src != 1:
        f.emit(f"r1 = {f.imm() if src is None else f'r{src}'}")
    f.emit("call bpf_throw")
    _clobber(f)
    f.doubt = f.thrown = f.throws = True


def statement(f: Func, depth: int) -> None:
    choices = ["alu"] * 6 + ["unary"] * 2 + ["ctx"] * 2 + ["store"] * 2 + ["load"] * 2 + ["mov"]
    choices += ["call"] * 2 if f.callees else []
    choices += ["if"] * 3 + ["loop"] if depth < 2 else []
    # no throw inside a loop: Linux 6.18 refuses it with "verifier bug: scc exit: no visit info
    # for call chain" (docs/deviations.md, "bpf_throw inside a bounded loop")
    choices += ["throw"] if depth > 0 and not f.loops else []
    choices += _feature_choices(f, depth) if f.features else []
    kind = f.draw(st.sampled_from(choices))
    if kind in ("if", "loop"):
        (st_if if kind == "if" else st_loop)(f, depth)
    elif kind in FEATURE_STATEMENTS:
        if not FEATURE_STATEMENTS[kind](f, depth):
            st_alu(f)
    else:
        {"alu": st_alu, "unary": st_unary, "ctx": st_ctx, "store": st_store, "load": st_load,
         "mov": st_mov_imm, "call": st_call, "throw": st_throw}[kind](f)  # fmt: skip


FEATURE_STATEMENTS: dict[str, Callable[[Func, int], bool]] = {
    "bounded": st_bounded, "bounded_alu": st_bounded_alu, "range_if": st_range_if,
    "varoff": st_varoff, "packet": st_packet, "loop_unknown": st_loop_unknown,
}  # fmt: skip


def _feature_choices(f: Func, depth: int) -> list[str]:
    choices = ["bounded"] * 3 + ["bounded_alu"] * 3 + ["range_if"] * 4 if "ranges" in f.features else []
    choices += ["varoff"] * 4 if "varoff" in f.features else []
    choices += ["packet"] * 4 if "packet" in f.features and f.ctx() is not None else []
    choices += ["loop_unknown"] * 2 if "loops" in f.features and depth < 2 else []
    return choices


def body(f: Func, depth: int, count: int) -> None:
    for _ in range(count):
        if depth == 0 and f.must_call and f.draw(st.booleans()):
            call(f, f.must_call.pop())
        # with features, no flaw where the kernel may find the point dead (it would not see it)
        if f.flaw is not None and not (f.features and f.doubt) and f.draw(st.integers(0, 7)) == 0:
            flaw(f, f.flaw)
            f.flaw = None
        statement(f, depth)


# -- programs --------------------------------------------------------------------------------


def function(draw: Callable, sig: Sig, callees: list[Sig], labels: list[int], flaw_kind: str | None,
             must_call: list[Sig], features: frozenset[str] = frozenset()) -> Func:  # fmt: skip
    f = Func(draw, sig, callees, labels, flaw=flaw_kind, must_call=must_call, body=body, features=features)
    f.maybe = {1} if sig.name == "main" else {1, 2, 3, 4, 5}  # a static callee gets R1-R5 as set
    f.lines.append(f"{sig.name}:")
    if sig.ctx:
        f.regs[1] = CTX
        if sig.is_global or draw(st.booleans()):  # a global's first insn dereferences R1
            dst = draw(st.sampled_from((0, 6, 7, 8, 9)))
            f.emit(f"r{dst} = *(u32 *)(r1 + {draw(st.sampled_from(CTX_OFFS))})")
            f.regs[dst] = SCALAR
    for r in range(2 if sig.ctx else 1, sig.nargs + 1):
        f.regs[r] = SCALAR
    if sig.nargs > (1 if sig.ctx else 0):
        dst = draw(st.sampled_from((6, 7, 8, 9)))
        f.emit(f"r{dst} = r{sig.nargs}")  # R1..Rn are read: asm_btf finds n arguments
        f.regs[dst] = SCALAR
    if features and sig.ctx:
        f.keeper = draw(st.sampled_from((6, 7, 8, 9)))
        f.emit(f"r{f.keeper} = r1")
        f.regs[f.keeper] = CTX
        f.reserved.add(f.keeper)
    body(f, 0, draw(st.integers(1, 12)))
    while f.must_call:
        call(f, f.must_call.pop())
    if f.flaw == "r0_uninit" and 0 not in (f.maybe if features else f.regs):
        f.emit("exit")
        f.flaw_state, f.flaw_calls = ("uncertain" if f.doubt else "certain"), set(f.calls)
        return f
    if f.flaw is not None:
        flaw(f, f.flaw)
    src = f.scalar() if draw(st.booleans()) else None
    f.emit(f"r0 = {f.imm() if src is None else f'r{src}'}" if src != 0 else "w0 = w0")
    f.emit("exit")
    if f.flaw == "unreachable":
        f.emit("r0 = 0")
    return f


@st.composite
def labelled_programs(draw: Callable, features: frozenset[str] = frozenset()) -> tuple[str, str]:
    """A program and what the kernel must answer: "accept" (no flaw), "reject" (a flaw the
    kernel surely reaches) or "unknown" (a flaw it may not reach, or one of the shapes it
    accepts). Only with features do flaws avoid those; see the module docstring."""
    if not features <= FEATURES:
        raise ValueError(f"unknown features {sorted(features - FEATURES)}")
    n = draw(st.integers(0, 3))
    sigs = [Sig("main", False, 1, True)]
    for i in range(1, n + 1):
        is_global = draw(st.booleans())
        nargs = draw(st.integers(0, 3))
        sigs.append(Sig(f"f{i}", is_global, nargs, nargs >= 1 and draw(st.booleans())))
    flawed = draw(st.integers(0, FLAW_SHARE - 1)) == 0
    kinds = FLAWS + tuple(k for feature in sorted(features) for k in FEATURE_FLAWS.get(feature, ()))
    kind = draw(st.sampled_from(kinds)) if flawed else None
    where = (0 if features else draw(st.integers(0, n))) if flawed else -1
    # a function no call reaches is refused by the kernel but not by us (docs/deviations.md,
    # "a function no call reaches"): each f_j gets a designated caller f_i, i < j (with
    # features, one that has the ctx when f_j takes it)
    callers = [draw(st.sampled_from([i for i in range(j) if sigs[i].ctx or not (features and sigs[j].ctx)]))
               if features else draw(st.integers(0, j - 1)) for j in range(1, n + 1)]  # fmt: skip
    labels = [0]
    out = [f".global {s.name}" for s in sigs[1:] if s.is_global]
    funcs: dict[str, Func] = {}
    for i, sig in enumerate(sigs):
        must = [sigs[j] for j in range(1, n + 1) if callers[j - 1] == i]
        flaw_kind = kind if i == where else None
        funcs[sig.name] = function(draw, sig, sigs[i + 1 :], labels, flaw_kind, must, features)
        out += funcs[sig.name].lines
        out.append("")
    flawed_func = funcs[sigs[where].name] if flawed else None
    if any(func.ctx_lost for func in funcs.values()):  # never with features
        expect = "unknown"
    elif flawed_func is None or flawed_func.flaw_state is None:
        expect = "accept"
    elif flawed_func.flaw_state == "certain" and not any(may_throw(c, funcs) for c in flawed_func.flaw_calls):
        expect = "reject" if features else "unknown"
    else:
        expect = "unknown"
    return "\n".join(out), expect


def kernel_programs(features: frozenset[str] = frozenset()) -> st.SearchStrategy[str]:
    """Text assembly of one program (see the module docstring)."""
    if not features <= FEATURES:
        raise ValueError(f"unknown features {sorted(features - FEATURES)}")
    return labelled_programs(features).map(lambda labelled: labelled[0])
