"""The generator state shared by tests/kernel_programs.py, its feature modules
(tests/kernel_programs_ranges.py, _memory.py, _loops.py) and tests/kernel_flaws.py: the
constants of the grammar, a function's signature (`Sig`), the state of the function being
drawn (`Func`: register kinds, written stack slots, the scalar ranges it knows, which
registers may hold a value, whether the current point may be dead) and the nested block.

What `Func` knows is always a superset of what the kernel knows on every path that reaches
the current point: a range (`Rng`) holds every value the kernel may think possible, a register
missing from `maybe` is uninitialised on every path. Nothing here draws from hypothesis unless
a statement asks, so a program drawn without features is the one drawn before features
existed."""

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
SKB_LEN, SKB_DATA, SKB_DATA_END = 0, 76, 80  # __sk_buff offsets
STACK = 64  # bytes of stack a function uses
IMMS = st.one_of(
    st.integers(-4, 70),
    st.sampled_from([-1, 0x7FFF_FFFF, -0x8000_0000, 0xFFFF, 0x8000, 0x10000, 255, 256]),
    st.integers(-(1 << 31), (1 << 31) - 1),
)
FEATURES = frozenset({"ranges", "varoff", "packet", "loops"})


@dataclass(frozen=True)
class Rng:
    """What a scalar may be: its s64 interval [lo, hi] and the s32 interval [lo32, hi32] of its
    low half; None where nothing is known. Always at least as wide as the kernel's bounds."""

    lo: int | None = None
    hi: int | None = None
    lo32: int | None = None
    hi32: int | None = None


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
    reserved: set[int] = field(default_factory=set)  # loop counters (and the ctx keeper)
    loops: int = 0  # loop nesting: a loop body keeps every register's kind (no calls either)
    lines: list[str] = field(default_factory=list)
    flaw: str | None = None
    must_call: list[Sig] = field(default_factory=list)  # every function is called somewhere
    # registers a condition may test: "const" (an immediate moved in) or "raw" (a ctx field,
    # untouched): the base grammar tracks no ranges (docs/deviations.md, "scalar ranges"), so a
    # condition the kernel could decide from ranges would differ in dead code
    fresh: dict[int, str] = field(default_factory=dict)
    body: Callable[[Func, int, int], None] | None = None  # tests.kernel_programs.body
    features: frozenset[str] = frozenset()
    bounds: dict[int, Rng] = field(default_factory=dict)  # scalar ranges (see `Rng`)
    maybe: set[int] = field(default_factory=set)  # registers some path may have written
    keeper: int | None = None  # a register that holds the ctx all along (features only)
    doubt: bool = False  # the kernel may find the current point dead
    thrown: bool = False  # a bpf_throw since the current block began
    calls: set[str] = field(default_factory=set)  # static callees called so far
    throws: bool = False  # the function contains a bpf_throw
    flaw_state: str | None = None  # "certain" / "uncertain" once the flaw is placed
    flaw_calls: set[str] = field(default_factory=set)  # static calls made before the flaw
    ctx_lost: bool = False  # a callee taking the ctx got a scalar (the kernel refuses that)

    def label(self) -> str:
        self.labels[0] += 1
        return f".L{self.labels[0]}"

    def emit(self, line: str) -> None:
        self.lines.append(f"\t{line}")
        head = line.split(" ", 1)[0]
        if head[:1] in "rw" and head[1:].isdigit():
            self.fresh.pop(int(head[1:]), None)  # any write; st_mov_imm and st_ctx re-add
            self.bounds.pop(int(head[1:]), None)
            self.maybe.add(int(head[1:]))

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

    def ctx(self) -> int | None:
        """A register holding the ctx: the keeper when there is one."""
        ctxs = self.of(CTX)
        return self.keeper if self.keeper is not None else ctxs[0] if ctxs else None


def _w(r: int, is32: bool) -> str:
    return f"{'w' if is32 else 'r'}{r}"


def _clobber(f: Func) -> None:
    for r in range(6):
        f.regs.pop(r, None)
        f.fresh.pop(r, None)
        f.bounds.pop(r, None)
        f.maybe.discard(r)
    f.regs[0] = SCALAR
    f.maybe.add(0)


def may_throw(name: str, funcs: dict[str, Func]) -> bool:
    """Whether a static function may throw: it or a static function it calls contains a throw."""
    return funcs[name].throws or any(may_throw(c, funcs) for c in funcs[name].calls)


def hull(a: Rng, b: Rng) -> Rng:
    """The smallest range holding both."""
    lo = None if a.lo is None or b.lo is None else min(a.lo, b.lo)
    hi = None if a.hi is None or b.hi is None else max(a.hi, b.hi)
    lo32 = None if a.lo32 is None or b.lo32 is None else min(a.lo32, b.lo32)
    hi32 = None if a.hi32 is None or b.hi32 is None else max(a.hi32, b.hi32)
    return Rng(lo, hi, lo32, hi32)


def _block(f: Func, depth: int, doubt: bool = False, bounds: dict[int, Rng] | None = None) -> bool:
    """A nested block: its register and slot facts are forgotten at its end, its ranges
    widened to hold the path that skips it. `doubt`: the kernel may never enter it; `bounds`:
    what the branch into it teaches. Answers whether it threw."""
    regs, slots, fresh, ranges = dict(f.regs), set(f.slots), dict(f.fresh), dict(f.bounds)
    doubted, thrown = f.doubt, f.thrown
    f.doubt, f.thrown = doubted or doubt, False
    f.bounds.update(bounds or {})
    assert f.body is not None
    f.body(f, depth + 1, f.draw(st.integers(1, 4)))
    f.regs = {r: k for r, k in f.regs.items() if regs.get(r) == k}
    f.fresh = {r: k for r, k in f.fresh.items() if fresh.get(r) == k}
    f.bounds = {r: hull(b, ranges[r]) for r, b in f.bounds.items() if r in ranges and f.regs.get(r) == SCALAR}
    f.slots = slots
    threw, f.doubt, f.thrown = f.thrown, doubted, thrown or f.thrown
    return threw


def scrub(f: Func, regs: list[int]) -> None:
    """Forget pointers a snippet left in `regs`; in a loop body, overwrite them with a scalar,
    since the body's next round must find every register of the kind it began with."""
    for r in dict.fromkeys(regs):
        if f.loops:
            f.emit(f"r{r} = 0")
            f.regs[r] = SCALAR
        else:
            f.regs.pop(r, None)
