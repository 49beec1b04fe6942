"""The adversarial grammar of tests/test_soundness.py: programs whose purpose is to make the
unwinder free the wrong thing. Unlike tests/throw_programs.py it predicts nothing about a
program; the verifier decides, and whatever it accepts must run clean (the property).

A `Prog` is a call graph of frames (main first); each frame, top to bottom:
- keeps R1 (the ctx in main, whatever its caller passed elsewhere) in the carrier slot
  fp-8, and in main a scalar `ctx->len` too, from which every branch condition is read;
- "priors": what some locations (R6-R9, fp-16..fp-64, rarely a deep slot) hold before any
  object exists: never written, zero (immediate or spilled), a junk scalar, a heap address
  look-alike, the ctx, a stack pointer, a 32-bit partial write, or a stale object pointer
  (allocated, spilled, dropped); a prior is sometimes written on one path only;
- objects: allocated (a NULL result throws), parked in a location, sometimes a copy or a
  derived copy (+8) in a second one; parked on both paths ("plain"), in one of two
  locations ("split", both sometimes zeroed first) or on one path only, the other path
  dropping it at once ("maybe"); some dropped early, their location then zeroed or stale;
- calls to later frames (a DAG: a frame may be called from several callers, twice from
  one), rarely to itself or an earlier frame (recursion), with R1 of every kind: the
  carrier, the ctx, a stack pointer, an object, a constant, nothing; a static callee
  sometimes borrows an object in R2 and parks it in its own frame too;
- throws: before or after its calls, always or when the carried len is at most K;
- an epilogue dropping each object through its location, NULL-checked, then `r0 = 0`."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hypothesis import strategies as st

from jit.layout import HEAP_BASE
from unwind.runner import default_ctx

REGS = (6, 7, 8, 9)
SLOTS = tuple(-8 * n for n in range(2, 9))  # fp-8 is the carrier
DEEP_SLOTS = (-200, -256, -504)
STRUCTS = {"A": 8, "B": 16, "C": 24}
PRIOR_KINDS = ("zero_imm", "zero_reg", "junk", "heap", "ctx", "stackptr", "partial", "stale")
ARG_KINDS = ("carrier", "carrier", "ctx", "stack", "obj", "const", "none")


@dataclass
class Prior:
    loc: int
    kind: str
    value: int = 0  # junk/heap constant
    cond_k: int | None = None  # written only when the carried value > cond_k


@dataclass
class Obj:
    struct: str
    loc: int
    mode: str  # "plain" | "split" | "maybe"
    alt: int | None = None  # split: the other path's location
    zero_first: bool = True  # split: both locations zeroed before the branch
    k: int = 0  # split/maybe: threshold on the carried value
    copy: int | None = None  # a second location holding a copy
    copy_derived: bool = False  # ... obj + 8
    drop_early: bool = False
    zero_after_drop: bool = True


@dataclass
class Call:
    callee: int
    arg: str
    borrow: int | None = None  # index of this frame's object passed in R2


@dataclass
class Frame:
    name: str
    is_global: bool
    priors: list[Prior]
    objs: list[Obj]
    calls: list[Call]
    borrow_locs: list[int] = field(default_factory=list)  # where a borrowed R2 is parked
    throw: str = "never"  # "never" | "always" | "le"
    throw_k: int = 0
    throw_after_calls: bool = True


@dataclass
class Prog:
    frames: list[Frame]
    pkt_len: int

    def ctx(self) -> bytes:
        buf = bytearray(default_ctx())
        struct.pack_into("<I", buf, 0, self.pkt_len)
        return bytes(buf)


# -- rendering --------------------------------------------------------------------------------


class _Out:
    def __init__(self, name: str) -> None:
        self.lines: list[str] = []
        self.name = name
        self.n = 0

    def label(self) -> str:
        self.n += 1
        return f".L{self.name}_{self.n}"

    def __call__(self, *lines: str) -> None:
        self.lines.extend(lines)


def store(loc: int, src: int) -> str:
    return f"r{loc} = r{src}" if loc > 0 else f"*(u64 *)(r10 - {-loc}) = r{src}"


def load(dst: int, loc: int) -> str:
    return f"r{dst} = r{loc}" if loc > 0 else f"r{dst} = *(u64 *)(r10 - {-loc})"


def _carried(o: _Out, k: int, skip: str) -> None:
    """Jump to `skip` unless the carried value is at most k."""
    o("r2 = *(u64 *)(r10 - 8)", f"if r2 > {k} goto {skip}")


def _alloc(o: _Out, struct_name: str) -> None:
    ok = o.label()
    o(f"r1 = {struct_name} ll", "r2 = 0", "call bpf_obj_new_impl", f"if r0 != 0 goto {ok}",
      "r1 = 0xdead", "call bpf_throw", f"{ok}:")


def _prior(o: _Out, p: Prior, frame: int) -> None:
    loc, tmp = p.loc, (p.loc if p.loc > 0 else 2)
    skip = o.label() if p.cond_k is not None else None
    if skip is not None:
        _carried(o, p.cond_k or 0, skip)
    if p.kind == "zero_imm":
        o(f"r{loc} = 0" if loc > 0 else f"*(u64 *)(r10 - {-loc}) = 0")
    elif p.kind in ("zero_reg", "junk", "heap"):
        value = {"zero_reg": 0, "junk": p.value, "heap": HEAP_BASE + 8 * p.value}[p.kind]
        o(f"r{tmp} = {value:#x} ll" if value > 0x7FFFFFFF else f"r{tmp} = {value:#x}")
        if loc < 0:
            o(store(loc, tmp))
    elif p.kind == "ctx":
        o(load(tmp, -8) if frame else "r2 = r1")  # main's R1 is still the ctx here
        if loc < 0 or tmp != loc:
            o(store(loc, tmp if loc > 0 else 2) if loc < 0 else f"r{loc} = r{tmp}")
    elif p.kind == "stackptr":
        o(f"r{tmp} = r10", f"r{tmp} += -16")
        if loc < 0:
            o(store(loc, tmp))
    elif p.kind == "partial":
        o("r2 = 7", f"*(u32 *)(r10 - {-loc}) = r2" if loc < 0 else f"w{loc} = 7")
    elif p.kind == "stale":
        _alloc(o, "A")
        o(store(loc, 0), "r1 = r0", "call bpf_obj_drop_impl")
    if skip is not None:
        o(f"{skip}:")


def _drop_from(o: _Out, loc: int) -> None:
    skip = o.label()
    o(load(1, loc), f"if r1 == 0 goto {skip}", "call bpf_obj_drop_impl", f"{skip}:")


def _obj(o: _Out, ob: Obj) -> None:
    if ob.mode == "split" and ob.zero_first and ob.alt is not None:
        for loc in (ob.loc, ob.alt):
            o(f"r{loc} = 0" if loc > 0 else f"*(u64 *)(r10 - {-loc}) = 0")
    _alloc(o, ob.struct)
    if ob.mode == "plain":
        o(store(ob.loc, 0))
    else:
        other, join = o.label(), o.label()
        _carried(o, ob.k, other)
        o(store(ob.loc, 0), f"goto {join}", f"{other}:")
        if ob.mode == "split" and ob.alt is not None:
            o(store(ob.alt, 0))
        else:
            o("r1 = r0", "call bpf_obj_drop_impl")
        o(f"{join}:")
    if ob.copy is not None:
        src = ob.loc
        o(load(3, src))
        if ob.copy_derived:
            o("r3 += 8")
        o(store(ob.copy, 3))


def _epilogue_drops(o: _Out, f: Frame, early: bool) -> None:
    for ob in f.objs:
        if ob.drop_early != early:
            continue
        _drop_from(o, ob.loc)
        if ob.mode == "split" and ob.alt is not None:
            _drop_from(o, ob.alt)
        if early and ob.zero_after_drop:
            o(f"r{ob.loc} = 0" if ob.loc > 0 else f"*(u64 *)(r10 - {-ob.loc}) = 0")


def _throw(o: _Out, f: Frame, cookie: int) -> None:
    if f.throw == "never":
        return
    skip = o.label()
    if f.throw == "le":
        _carried(o, f.throw_k, skip)
    o(f"r1 = {cookie:#x}", "call bpf_throw", f"{skip}:")


def _call(o: _Out, prog: Prog, f: Frame, c: Call) -> None:
    if c.arg == "carrier":
        o("r1 = *(u64 *)(r10 - 8)")
    elif c.arg == "ctx":
        homes = [p.loc for p in f.priors if p.kind == "ctx" and p.cond_k is None]
        o(load(1, homes[0]) if homes else "r1 = *(u64 *)(r10 - 8)")
    elif c.arg == "stack":
        o("r1 = r10", "r1 += -24")
    elif c.arg == "obj" and f.objs:
        o(load(1, f.objs[0].loc))
    elif c.arg == "const":
        o("r1 = 0x3039")
    if c.borrow is not None and c.borrow < len(f.objs):
        o(load(2, f.objs[c.borrow].loc))
    o(f"call {prog.frames[c.callee].name}")


def render_frame(prog: Prog, i: int) -> list[str]:
    f = prog.frames[i]
    o = _Out(f.name)
    o(f"{f.name}:")
    if i == 0:
        o("r2 = *(u32 *)(r1 + 0)", "*(u64 *)(r10 - 8) = r2")
    else:
        o("*(u64 *)(r10 - 8) = r1")
        for loc in f.borrow_locs:
            o(store(loc, 2))
    for p in f.priors:
        _prior(o, p, i)
    for ob in f.objs:
        _obj(o, ob)
    cookie = 0x100 + i
    if not f.throw_after_calls:
        _throw(o, f, cookie)
    _epilogue_drops(o, f, early=True)
    for c in f.calls:
        _call(o, prog, f, c)
    if f.throw_after_calls:
        _throw(o, f, cookie)
    _epilogue_drops(o, f, early=False)
    o("r0 = 0", "exit")
    return [line if line.endswith(":") else "\t" + line for line in o.lines]


def render(prog: Prog) -> str:
    head = [f".struct {name} {size}" for name, size in STRUCTS.items()]
    head += [f".global {f.name}" for f in prog.frames if f.is_global]
    body: list[str] = []
    for i in range(len(prog.frames)):
        body += render_frame(prog, i)
    return "\n".join(head + body) + "\n"


# -- the strategy -----------------------------------------------------------------------------


@st.composite
def frames_strategy(draw: st.DrawFn, i: int, n: int) -> Frame:
    locs = list(draw(st.permutations(REGS + SLOTS)))
    if draw(st.integers(0, 9)) == 0:
        locs.insert(0, draw(st.sampled_from(DEEP_SLOTS)))
    priors = []
    for _ in range(draw(st.integers(0, 3))):
        loc = locs.pop()
        kind = draw(st.sampled_from(PRIOR_KINDS))
        if kind == "partial" and loc > 0:
            kind = "junk"
        cond = draw(st.integers(0, 150)) if draw(st.integers(0, 3)) == 0 else None
        priors.append(Prior(loc, kind, draw(st.integers(0, 4)), cond))
    # objects reuse prior locations often: that is where stale and mixed contents meet them
    reuse = [p.loc for p in priors]
    objs = []
    for _ in range(draw(st.integers(0, 3))):
        pool = reuse if reuse and draw(st.integers(0, 2)) else reuse + locs
        if not pool:
            break
        loc = draw(st.sampled_from(pool))
        for lst in (reuse, locs):
            if loc in lst:
                lst.remove(loc)
        mode = draw(st.sampled_from(["plain", "split", "maybe", "maybe"]))
        alt = locs.pop() if mode == "split" and locs else None
        ob = Obj(draw(st.sampled_from(sorted(STRUCTS))), loc, mode if alt is not None or mode != "split"
                 else "plain", alt, draw(st.integers(0, 5)) != 0, draw(st.integers(0, 150)))
        if locs and draw(st.integers(0, 3)) == 0:
            ob.copy = locs.pop()
            ob.copy_derived = ob.struct != "A" and draw(st.booleans())
        if draw(st.integers(0, 4)) == 0:
            ob.drop_early, ob.zero_after_drop = True, draw(st.booleans())
        objs.append(ob)
    calls = []
    later = list(range(i + 1, n))
    for _ in range(draw(st.integers(0, 3)) if later else 0):
        calls.append(Call(draw(st.sampled_from(later)), draw(st.sampled_from(ARG_KINDS)),
                          draw(st.integers(0, 2)) if draw(st.integers(0, 3)) == 0 else None))
    if draw(st.integers(0, 30)) == 0:  # recursion: itself or a caller
        calls.append(Call(draw(st.integers(0, i)), draw(st.sampled_from(ARG_KINDS))))
    borrow_locs = [locs.pop()] if i and locs and draw(st.integers(0, 3)) == 0 else []
    throw = draw(st.sampled_from(["never", "always", "always", "le", "le"]))
    return Frame("main" if i == 0 else f"f{i}", i > 0 and draw(st.booleans()), priors, objs, calls,
                 borrow_locs, throw, draw(st.integers(0, 150)), draw(st.booleans()))


@st.composite
def progs(draw: st.DrawFn) -> Prog:
    n = draw(st.integers(1, 5)) if draw(st.integers(0, 9)) else draw(st.integers(6, 11))
    frames = [draw(frames_strategy(i, n)) for i in range(n)]
    if n > 1 and not any(c.callee == 1 for c in frames[0].calls):
        frames[0].calls.insert(0, Call(1, "carrier"))
    return Prog(frames, draw(st.sampled_from([0, 1, 60, 74, 100, 149, 200])))
