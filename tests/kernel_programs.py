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
`FLAWS`) at a random point, so that rejections and their messages are compared too.

Global subprogs: the kernel learns their arguments from the BTF `unwind.live.asm_btf` writes
(R1..Rn, n the highest argument register read before written, R1 the ctx when dereferenced
first); each global body therefore starts by reading R1..Rn, and flaws never read R1-R5
there (that would change n)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import strategies as st

SCALAR, CTX = "s", "c"
ALU_OPS = ("+=", "-=", "*=", "/=", "%=", "s/=", "s%=", "|=", "&=", "^=", "<<=", ">>=", "s>>=")
SHIFTS = ("<<=", ">>=", "s>>=")
DIVS = ("/=", "%=", "s/=", "s%=")
JMP_OPS = ("==", "!=", ">", ">=", "<", "<=", "s>", "s>=", "s<", "s<=", "&")
ENDS = ("be16", "be32", "be64", "le16", "le32", "le64", "bswap16", "bswap32", "bswap64")
SIZES = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}
SX = {1: "s8", 2: "s16", 4: "s32"}
CTX_OFFS = (0, 16)  # __sk_buff.len, __sk_buff.protocol
STACK = 64  # bytes of stack a function uses
FLAW_SHARE = 6  # one program in FLAW_SHARE carries a deliberate flaw
# made by tests/kernel_flaws.py (r0_uninit: by `function`); not drawn, see docs/deviations.md
# "errors in CFG order": "unreachable" (an insn after the last exit) and "infinite_loop"
FLAWS = (
    "uninit_read", "stack_oob", "stack_misaligned", "div_zero", "bad_shift", "ctx_bad_access",
    "ctx_arith", "write_fp", "r0_uninit", "global_bad_arg",
)  # fmt: skip
IMMS = st.one_of(
    st.integers(-4, 70),
    st.sampled_from([-1, 0x7FFF_FFFF, -0x8000_0000, 0xFFFF, 0x8000, 0x10000, 255, 256]),
    st.integers(-(1 << 31), (1 << 31) - 1),
)


@dataclass
class Sig:
    """A function's calling contract: R1..Rn are arguments, R1 the ctx when `ctx`."""

    name: str
    is_global: bool
    nargs: int
    ctx: bool


@dataclass
class Func:
    draw: Callable
    sig: Sig
    callees: list[Sig]
    labels: list[int]  # the file's label counter (shared)
    regs: dict[int, str] = field(default_factory=dict)
    slots: set[int] = field(default_factory=set)  # fp offsets of written 8-byte slots
    reserved: set[int] = field(default_factory=set)  # loop counters
    loops: int = 0  # loop nesting: a loop body keeps every register's kind (no calls either)
    lines: list[str] = field(default_factory=list)
    flaw: str | None = None
    must_call: list[Sig] = field(default_factory=list)  # every function is called somewhere
    # registers a condition may test: "const" (an immediate moved in) or "raw" (a ctx field,
    # untouched): we track no ranges (docs/deviations.md, "scalar ranges"), so a condition
    # the kernel could decide from ranges would differ in dead code
    fresh: dict[int, str] = field(default_factory=dict)

    def label(self) -> str:
        self.labels[0] += 1
        return f".L{self.labels[0]}"

    def emit(self, line: str) -> None:
        self.lines.append(f"\t{line}")
        head = line.split(" ", 1)[0]
        if head[:1] in "rw" and head[1:].isdigit():
            self.fresh.pop(int(head[1:]), None)  # any write; st_mov_imm and st_ctx re-add

    def of(self, kind: str) -> list[int]:
        return [r for r, k in sorted(self.regs.items()) if k == kind]

    def writable(self) -> list[int]:
        keep = self.reserved | ({r for r, k in self.regs.items() if k == CTX} if self.loops else set())
        return [r for r in range(10) if r not in keep]

    def scalar(self) -> int | None:
        regs = self.of(SCALAR)
        return self.draw(st.sampled_from(regs)) if regs else None

    def imm(self) -> int:
        return self.draw(IMMS)


def _w(r: int, is32: bool) -> str:
    return f"{'w' if is32 else 'r'}{r}"


# -- statements ------------------------------------------------------------------------------


def st_mov_imm(f: Func) -> None:
    dst = f.draw(st.sampled_from(f.writable()))
    if f.draw(st.integers(0, 5)) == 0:
        f.emit(f"r{dst} = {f.draw(st.integers(-(1 << 63), (1 << 64) - 1)):#x} ll")
    else:
        f.emit(f"{_w(dst, f.draw(st.booleans()))} = {f.imm()}")
    f.regs[dst] = SCALAR
    f.fresh[dst] = "const"


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


def _cond(f: Func) -> str | None:
    """A condition on a constant, or on an untouched ctx field against an immediate both of
    whose outcomes its u32 range allows (the field is then no longer untouched: ranges)."""
    if f.loops or not f.fresh:
        return None
    a = f.draw(st.sampled_from(sorted(f.fresh)))
    is32 = f.draw(st.booleans())
    if f.fresh.pop(a) == "raw":
        rhs = str(f.draw(st.integers(1, (1 << 31) - 1)))
    else:
        f.fresh[a] = "const"
        consts = [r for r, k in f.fresh.items() if k == "const"]
        b = f.draw(st.sampled_from(consts)) if f.draw(st.booleans()) else None
        rhs = _w(b, is32) if b is not None else str(f.imm())
    return f"if {_w(a, is32)} {f.draw(st.sampled_from(JMP_OPS))} {rhs}"


def _block(f: Func, depth: int) -> None:
    """A nested block: its register and slot facts are forgotten at its end."""
    regs, slots, fresh = dict(f.regs), set(f.slots), dict(f.fresh)
    body(f, depth + 1, f.draw(st.integers(1, 4)))
    f.regs = {r: k for r, k in f.regs.items() if regs.get(r) == k}
    f.fresh = {r: k for r, k in f.fresh.items() if fresh.get(r) == k}
    f.slots = slots


def st_if(f: Func, depth: int) -> None:
    cond = _cond(f)
    if cond is None:
        return st_mov_imm(f)
    end = f.label()
    if f.draw(st.booleans()):
        f.emit(f"{cond} goto {end}")
        _block(f, depth)
    else:
        other = f.label()
        f.emit(f"{cond} goto {other}")
        _block(f, depth)
        f.emit(f"goto {end}")
        f.lines.append(f"{other}:")
        _block(f, depth)
    f.lines.append(f"{end}:")
    return None


def st_loop(f: Func, depth: int) -> None:
    free = [r for r in (6, 7, 8, 9) if r not in f.reserved]
    if not free:
        return st_alu(f)
    ctr = f.draw(st.sampled_from(free))
    top = f.label()
    f.emit(f"r{ctr} = {f.draw(st.integers(1, 4))}")
    f.lines.append(f"{top}:")
    f.reserved.add(ctr)
    f.regs[ctr] = SCALAR
    f.loops += 1
    _block(f, depth + 1)
    f.loops -= 1
    f.reserved.discard(ctr)
    f.regs[ctr] = SCALAR
    f.emit(f"r{ctr} -= 1")
    f.emit(f"if r{ctr} s> 0 goto {top}")
    return None


def st_call(f: Func) -> None:
    if not f.callees or f.loops:
        return st_alu(f)
    return call(f, f.draw(st.sampled_from(f.callees)))


def call(f: Func, callee: Sig) -> None:
    for r in range(1, callee.nargs + 1):
        if r == 1 and callee.ctx:
            ctx = f.of(CTX)
            if not ctx:  # no ctx left here: pass a scalar, the kernel rejects it
                f.emit(f"r1 = {f.imm()}")
            elif ctx[0] != 1:
                f.emit(f"r1 = r{ctx[0]}")
        else:
            src = f.scalar()
            f.emit(f"r{r} = {f.imm() if src is None or src == r else f'r{src}'}")
        f.regs[r] = CTX if r == 1 and callee.ctx else SCALAR
    f.emit(f"call {callee.name}")
    _clobber(f)
    return None


def _clobber(f: Func) -> None:
    for r in range(6):
        f.regs.pop(r, None)
        f.fresh.pop(r, None)
    f.regs[0] = SCALAR


def st_throw(f: Func) -> None:
    src = f.scalar() if f.draw(st.booleans()) else None
    if src != 1:
        f.emit(f"r1 = {f.imm() if src is None else f'r{src}'}")
    f.emit("call bpf_throw")
    _clobber(f)


def statement(f: Func, depth: int) -> None:
    choices = ["alu"] * 6 + ["unary"] * 2 + ["ctx"] * 2 + ["store"] * 2 + ["load"] * 2 + ["mov"]
    choices += ["call"] * 2 if f.callees else []
    choices += ["if"] * 3 + ["loop"] if depth < 2 else []
    # no throw inside a loop: Linux 6.18 refuses it with "verifier bug: scc exit: no visit info
    # for call chain" (docs/deviations.md, "bpf_throw inside a bounded loop")
    choices += ["throw"] if depth > 0 and not f.loops else []
    kind = f.draw(st.sampled_from(choices))
    if kind in ("if", "loop"):
        (st_if if kind == "if" else st_loop)(f, depth)
    else:
        {"alu": st_alu, "unary": st_unary, "ctx": st_ctx, "store": st_store, "load": st_load,
         "mov": st_mov_imm, "call": st_call, "throw": st_throw}[kind](f)  # fmt: skip


def body(f: Func, depth: int, count: int) -> None:
    for _ in range(count):
        if depth == 0 and f.must_call and f.draw(st.booleans()):
            call(f, f.must_call.pop())
        if f.flaw is not None and f.draw(st.integers(0, 7)) == 0:
            from tests.kernel_flaws import flaw  # the flaws build on this module

            flaw(f, f.flaw)
            f.flaw = None
        statement(f, depth)


# -- programs --------------------------------------------------------------------------------


def function(draw: Callable, sig: Sig, callees: list[Sig], labels: list[int], flaw_kind: str | None,
             must_call: list[Sig]) -> list[str]:  # fmt: skip
    f = Func(draw, sig, callees, labels, flaw=flaw_kind, must_call=must_call)
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
    body(f, 0, draw(st.integers(1, 12)))
    while f.must_call:
        call(f, f.must_call.pop())
    if f.flaw == "r0_uninit" and 0 not in f.regs:
        f.emit("exit")
        return f.lines
    if f.flaw is not None:
        from tests.kernel_flaws import flaw

        flaw(f, f.flaw)
    src = f.scalar() if draw(st.booleans()) else None
    f.emit(f"r0 = {f.imm() if src is None else f'r{src}'}" if src != 0 else "w0 = w0")
    f.emit("exit")
    if f.flaw == "unreachable":
        f.emit("r0 = 0")
    return f.lines


@st.composite
def kernel_programs(draw: Callable) -> str:
    """Text assembly of one program (see the module docstring)."""
    n = draw(st.integers(0, 3))
    sigs = [Sig("main", False, 1, True)]
    for i in range(1, n + 1):
        is_global = draw(st.booleans())
        nargs = draw(st.integers(0, 3))
        sigs.append(Sig(f"f{i}", is_global, nargs, nargs >= 1 and draw(st.booleans())))
    flawed = draw(st.integers(0, FLAW_SHARE - 1)) == 0
    kind = draw(st.sampled_from(FLAWS)) if flawed else None
    where = draw(st.integers(0, n)) if flawed else -1
    # a function no call reaches is refused by the kernel but not by us (docs/deviations.md,
    # "a function no call reaches"): each f_j gets a designated caller f_i, i < j
    callers = [draw(st.integers(0, j - 1)) for j in range(1, n + 1)]
    labels = [0]
    out = [f".global {s.name}" for s in sigs[1:] if s.is_global]
    for i, sig in enumerate(sigs):
        must = [sigs[j] for j in range(1, n + 1) if callers[j - 1] == i]
        out += function(draw, sig, sigs[i + 1 :], labels, kind if i == where else None, must)
        out.append("")
    return "\n".join(out)
