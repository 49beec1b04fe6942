"""Generative property test of the project's central claim: every program the verifier
accepts releases every object exactly once, whether it throws or returns, and the two
engines (the JIT in Unicorn, `Pipeline.run`, and the reference interpreter, `run_interp`)
agree on everything observable.

Hypothesis draws a `Spec` from a small grammar and `render` turns it into text assembly:

- a call chain main -> f1 -> ... -> fk (k in 0..6), each callee static or `.global`, a frame
  sometimes calling the next one twice (before and after its early drops); main sometimes
  has a custom `.exception_callback` (cookie + c, the same through R6 and its own stack,
  or a constant c);
- an optional value passed down the chain in R1 and kept by every frame in a "carrier"
  location (R6-R9 or a stack slot): `ctx->len` read in main (a scalar), or the ctx
  pointer itself (globals get only scalars and the ctx, never object pointers);
- per frame 0..4 objects of 8, 16 or 24 bytes (`bpf_obj_new_impl`, NULL-checked with a
  C-style `goto` to the cleanup chain), each parked in one or two locations among R6-R9
  and fp-8*n (n 1..8), a location sometimes holding a derived pointer (obj + 8, objects of
  16 bytes or more); an object is sometimes dropped before the call/throw (its locations
  then nulled, or left stale), sometimes parked in one of two locations depending on the
  carried value ("split", the other one zeroed first), two objects sometimes trade their
  locations depending on it ("swap"); a static callee sometimes receives one of its
  caller's objects in R2 and keeps it too ("borrow": one object, several frames); unused
  locations sometimes hold scalars, some equal to heap addresses ("junk");
- deliberate flaws, drawn for one program in five: an object never parked ("lost"), a split
  whose other location is not zeroed, a swap of two different struct types;
- the innermost frame (or, sometimes, a frame above it, once its calls returned) throws a
  cookie always, never, or when the carried `ctx->len` is at most a threshold; the normal
  path then drops what each frame still holds, through the cleanup chain (NULL-checked
  drops of nulled, split objects) or an epilogue of its own when stale copies are left.

Properties:
1. a program without a deliberate flaw is accepted; one with flaws is rejected with one of
   the messages those flaws legitimately cause (any other rejection, or any exception
   other than VerifierError, fails);
2. on both engines: no leak, no double free, every object released exactly once, by
   `bpf_obj_drop` or by the unwinder; threw / cookie / return value as the spec predicts;
   the objects released by unwind are exactly the ones the spec says are live at the throw,
   frame by frame;
3. the engines agree on return value, throw, cookie, per-frame released ids and the ledger.

CI runs a fixed, derandomized set of examples; THROW_PROPERTY_EXAMPLES=2000 runs a deeper
search."""

from __future__ import annotations

import os
import re
import struct
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from jit.layout import HEAP_BASE
from unwind.cli import pipeline
from unwind.interp_kernel import run_interp
from unwind.result import RunResult
from unwind.runner import default_ctx
from verifier.errors import VerifierError

EXAMPLES = int(os.environ.get("THROW_PROPERTY_EXAMPLES", "150"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

U64 = (1 << 64) - 1
SIZES = (8, 16, 24)
REGS = (6, 7, 8, 9)
SLOTS = tuple(-8 * n for n in range(1, 9))
LOCATIONS = REGS + SLOTS  # > 0: a register R6-R9, < 0: an fp-relative stack slot
JUNK = (1, 0xFFFF_FFFF, HEAP_BASE, HEAP_BASE + 8, HEAP_BASE + 16)  # the first objects' addresses

# Legitimate rejections, keyed by the deliberate flaw that causes them.
LOST_REASONS = (r"Unreleased reference id=\d+ alloc_insn=\d+",)
UNZEROED_SPLIT_REASONS = (
    r"frame_desc: merge: failed to merge old and new frame desc entry",
    r"R[6-9] !read_ok",
    # privileged: an uninitialised stack slot reads as an unknown scalar, then dropped
    r"arg#0 expected pointer to allocated object",
)

SWAP_TYPES_REASONS = (r"frame_desc: merge: failed to merge old and new frame desc entry",)

# -- the grammar -----------------------------------------------------------------------------


@dataclass
class Obj:
    size: int
    # where the object is parked: (location, derived) pairs; a split object uses `alt` too
    locs: list[tuple[int, bool]]
    alt: list[tuple[int, bool]] = field(default_factory=list)  # split: the other path's
    zero_other: bool = True  # split: both locations zeroed before the branch
    split_k: int = 0  # split: path `locs` when the carried value > split_k
    drop_early: bool = False
    null_after: bool = True  # after an early drop, NULL its locations
    lost: bool = False  # flaw: allocated, never parked
    # swap: this object and its partner (allocated before it), each in one base location,
    # trade locations when the carried value > swap_k
    swap_k: int | None = None
    partner: Obj | None = field(default=None, repr=False)


@dataclass
class Borrow:
    """A static callee gets a caller's object in R2 (as the caller holds it, maybe derived)
    and keeps it in its own locations without dropping it: one object, several frames."""

    origin: Obj
    src: int  # the caller's location passed in R2
    derived: bool
    locs: list[int]  # the callee's locations


@dataclass
class Frame:
    name: str
    is_global: bool
    objs: list[Obj]
    carrier: int | None  # where the carried value is kept (None: nothing carried)
    stack_zero_imm: bool  # zero stack slots with `*(u64 *)(r10 - n) = 0` (else via r1)
    borrow: Borrow | None = None
    # scalars in otherwise unused locations: (location, value, 32-bit store); a value may
    # equal a heap address, the unwinder must still leave it alone (a poison entry)
    junk: list[tuple[int, int, bool]] = field(default_factory=list)
    twice: bool = False  # call the next frame before the early drops and again after them


@dataclass
class Spec:
    frames: list[Frame]
    carry: str  # "none" | "len" | "ctx"
    mode: str  # "always" | "never" | "cond"
    threshold: int  # cond: throws when ctx->len <= threshold
    ctx_len: int
    cookie: int
    # ("plus", c): cookie + c; ("busy", c): the same through R6 and a stack slot of the
    # callback's own; ("const", c): c; None: the default callback (the cookie)
    callback: tuple[str, int] | None
    main_ret: int
    thrower: int = -1  # the frame that throws (after its calls return); -1: the innermost

    @property
    def throw_frame(self) -> int:
        return self.thrower % len(self.frames)

    @property
    def flaws(self) -> list[str]:
        out = []
        objs = [o for f in self.frames for o in f.objs]
        if any(o.lost for o in objs):
            out.append("lost")
        if any(o.alt and not o.zero_other for o in objs):
            out.append("unzeroed_split")
        if self.mode != "never" and any(
            o.partner is not None and o.size != o.partner.size
            for f in self.frames[: self.throw_frame + 1] for o in f.objs
        ):
            out.append("swap_types")  # one location, two struct types at one throw
        return out

    @property
    def reasons(self) -> tuple[str, ...]:
        table = {"lost": LOST_REASONS, "unzeroed_split": UNZEROED_SPLIT_REASONS,
                 "swap_types": SWAP_TYPES_REASONS}
        return tuple(r for flaw in self.flaws for r in table[flaw])

    @property
    def throws(self) -> bool:
        return self.mode == "always" or (self.mode == "cond" and self.ctx_len <= self.threshold)

    def expected_retval(self) -> int:
        if not self.throws:
            return self.main_ret
        if self.callback is None:
            return self.cookie
        kind, c = self.callback
        return c if kind == "const" else (self.cookie + c) & U64

    def ids_by_frame(self) -> list[list[int]]:
        """Ledger ids (allocation order: main's objects first, then f1's...) per frame."""
        out, nxt = [], 1
        for f in self.frames:
            out.append(list(range(nxt, nxt + len(f.objs))))
            nxt += len(f.objs)
        return out

    def live_at_throw(self) -> dict[str, list[int]]:
        """Frame name -> ids of the objects the unwinder releases in that frame: those it
        holds at the throw, an object held by several frames in the innermost of them."""
        ids = {id(o): i for f, fids in zip(self.frames, self.ids_by_frame(), strict=True)
               for i, o in zip(fids, f.objs, strict=True)}
        # frames below the thrower have returned; a frame above it that calls twice is in
        # its first call, before its early drops
        on_stack = self.frames[: self.throw_frame + 1]
        holder = {id(o): f.name for k, f in enumerate(on_stack) for o in f.objs
                  if not o.lost and not (o.drop_early and not (f.twice and k < self.throw_frame))}
        for f in on_stack:  # outermost first: the innermost borrower wins
            if f.borrow is not None:
                holder[id(f.borrow.origin)] = f.name
        out: dict[str, list[int]] = {f.name: [] for f in on_stack}
        for key, name in holder.items():
            out[name].append(ids[key])
        return {name: sorted(v) for name, v in out.items()}

    def allocated(self) -> int:
        """Objects allocated in the run: a frame that calls twice runs the frames below
        it twice if the first call returns."""

        def run(i: int) -> tuple[int, bool]:  # (allocations, threw) of one call of frame i
            f = self.frames[i]
            total = len(f.objs)
            for _ in range((2 if f.twice else 1) if i + 1 < len(self.frames) else 0):
                n, threw = run(i + 1)
                total += n
                if threw:
                    return total, True
            return total, i == self.throw_frame and self.throws

        return run(0)[0]

    def ctx(self) -> bytes:
        buf = bytearray(default_ctx())
        struct.pack_into("<I", buf, 0, self.ctx_len)
        return bytes(buf)


@st.composite
def objs_strategy(draw: st.DrawFn, pool: list[int], carried: bool, budget: list[int]) -> list[Obj]:
    """0..4 well-formed objects of one frame, locations taken from `pool`. Splits and swaps
    double the verifier's paths below them: `budget[0]` of them are left in the program (the
    verifier's states differ by reference ids, so nothing prunes them: 4 per frame over 7
    frames would reach the complexity limit)."""
    objs: list[Obj] = []
    for _ in range(draw(st.integers(0, 4))):
        size = draw(st.sampled_from(SIZES))
        kind = draw(st.sampled_from(["one", "one", "two", "split", "swap"] if carried
                                    else ["one", "one", "two"]))
        if kind in ("split", "swap"):
            if budget[0] == 0:
                kind = "two"
            budget[0] -= kind != "two"
        nlocs = 2 if kind in ("two", "split", "swap") else 1
        if len(pool) < nlocs:
            break
        locs = [(pool.pop(), size >= 16 and draw(st.booleans())) for _ in range(nlocs)]
        if kind == "split":
            objs.append(Obj(size, locs[:1], alt=locs[1:], split_k=draw(st.integers(0, 150))))
            continue
        if kind == "swap":
            first = Obj(size, [(locs[0][0], False)])
            objs += [first, Obj(size, [(locs[1][0], False)], swap_k=draw(st.integers(0, 150)), partner=first)]
            continue
        obj = Obj(size, locs)
        if draw(st.integers(0, 3)) == 0:
            obj.drop_early = True
            obj.null_after = draw(st.booleans())
        objs.append(obj)
    return objs


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    depth = draw(st.integers(0, 6))
    carry = draw(st.sampled_from(["none", "len", "ctx"]))
    mode = draw(st.sampled_from(["always", "never", "cond"] if carry != "none" else ["always", "never"]))
    frames: list[Frame] = []
    budget = [3]
    for i in range(depth + 1):
        pool = list(draw(st.permutations(LOCATIONS)))
        carrier = pool.pop() if carry != "none" else None
        is_global = i > 0 and draw(st.booleans())
        borrow = None
        if i > 0 and not is_global and draw(st.booleans()):
            caller = frames[-1]
            swapping = {id(x) for o in caller.objs if o.partner is not None for x in (o, o.partner)}
            held = [(o, loc, d) for o in caller.objs if not (o.alt or o.drop_early or id(o) in swapping)
                    for loc, d in o.locs]
            if caller.borrow is not None:
                b = caller.borrow
                held += [(b.origin, loc, b.derived) for loc in b.locs]
            if held:
                origin, src, derived = draw(st.sampled_from(held))
                locs = [pool.pop() for _ in range(draw(st.integers(1, 2)))]
                borrow = Borrow(origin, src, derived, locs)
        frames.append(Frame(
            name="main" if i == 0 else f"f{i}",
            is_global=is_global,
            objs=draw(objs_strategy(pool, carry != "none", budget)),
            carrier=carrier,
            stack_zero_imm=draw(st.booleans()),
            borrow=borrow,
            junk=[(pool.pop(), draw(st.sampled_from(JUNK)), draw(st.booleans()))
                  for _ in range(min(len(pool), draw(st.integers(0, 2))))],
            twice=i < depth and draw(st.integers(0, 4)) == 0,
        ))
    # one deliberate flaw in about one program in six
    flaw = draw(st.sampled_from([None] * 12 + ["lost", "unzeroed_split", "swap_types"]))
    if flaw == "lost":
        frame = draw(st.sampled_from(frames))
        at = draw(st.integers(0, len(frame.objs)))
        frame.objs.insert(at, Obj(draw(st.sampled_from(SIZES)), [], lost=True))
    elif flaw == "unzeroed_split":
        splits = [o for f in frames for o in f.objs if o.alt]
        if splits:
            draw(st.sampled_from(splits)).zero_other = False
    elif flaw == "swap_types":
        swaps = [o for f in frames for o in f.objs if o.partner is not None]
        if swaps:
            o = draw(st.sampled_from(swaps))
            o.size = draw(st.sampled_from([s for s in SIZES if s != o.size]))
    callback = draw(st.one_of(
        st.none(),
        st.tuples(st.sampled_from(["plus", "busy", "const"]), st.integers(0, 1000)),
    ))
    return Spec(
        frames=frames,
        carry=carry,
        mode=mode,
        threshold=draw(st.integers(0, 150)),
        ctx_len=draw(st.integers(0, 150)),
        cookie=draw(st.integers(0, 0x7FFFFFFF)),
        callback=callback,
        main_ret=draw(st.integers(0, 1000)),
        thrower=draw(st.sampled_from([-1, -1, -1, draw(st.integers(0, depth))])),
    )


# -- rendering --------------------------------------------------------------------------------


def store(loc: int, src: int) -> str:
    return f"r{loc} = r{src}" if loc > 0 else f"*(u64 *)(r10 - {-loc}) = r{src}"


def load(dst: int, loc: int) -> str:
    return f"r{dst} = r{loc}" if loc > 0 else f"r{dst} = *(u64 *)(r10 - {-loc})"


def zero(loc: int, imm: bool) -> list[str]:
    if loc > 0:
        return [f"r{loc} = 0"]
    if imm:
        return [f"*(u64 *)(r10 - {-loc}) = 0"]
    return ["r1 = 0", store(loc, 1)]


def park(locs: list[tuple[int, bool]]) -> list[str]:
    """R0 (the object) into each location; derived ones get obj + 8."""
    out = [store(loc, 0) for loc, derived in locs if not derived]
    for loc, derived in locs:
        if derived:
            tmp = loc if loc > 0 else 1
            out += [f"r{tmp} = r0", f"r{tmp} += 8"] + ([] if loc > 0 else [store(loc, 1)])
    return out


def drop_from(loc: int, derived: bool, null_checked: bool, label: str) -> list[str]:
    out = [load(1, loc)]
    if null_checked:
        out.append(f"if r1 == 0 goto {label}")
    if derived:
        out.append("r1 += -8")
    out.append("call bpf_obj_drop_impl")
    if null_checked:
        out.append(f"{label}:")
    return out


def drop_source(obj: Obj) -> tuple[int, bool]:
    """The location a plain drop reads: a base pointer if there is one."""
    return min(obj.locs, key=lambda ld: ld[1])


def carried_value(spec: Spec, frame: Frame) -> list[str]:
    """R1 = ctx->len, from this frame's carrier."""
    assert frame.carrier is not None
    out = [load(1, frame.carrier)]
    if spec.carry == "ctx":
        out.append("r1 = *(u32 *)(r1 + 0)")
    return out


def render_frame(spec: Spec, i: int) -> list[str]:
    frame = spec.frames[i]
    imm = frame.stack_zero_imm
    lines = [f"{frame.name}:"]
    body: list[str] = []
    if frame.carrier is not None:
        if i == 0 and spec.carry == "len":
            body.append("r1 = *(u32 *)(r1 + 0)")
        body.append(store(frame.carrier, 1))
    if frame.borrow is not None:
        body += [store(loc, 2) for loc in frame.borrow.locs]
    for loc, value, narrow in frame.junk:
        if loc > 0:
            body.append(f"r{loc} = {value} ll")
        else:
            body += [f"r1 = {value} ll", store(loc, 1).replace("u64", "u32") if narrow else store(loc, 1)]
    n = len(frame.objs)
    for j, obj in enumerate(frame.objs):
        body += [f"r1 = obj{obj.size} ll", "r2 = 0", "call bpf_obj_new_impl", f"if r0 == 0 goto .Lf{j}"]
        if obj.lost:
            continue
        if obj.alt:
            if obj.zero_other:
                for loc, _ in obj.locs + obj.alt:
                    body += zero(loc, imm)
            body += carried_value(spec, frame)
            body += [f"if r1 > {obj.split_k} goto .Lalt{j}"] + park(obj.locs) + [f"goto .Ljoin{j}"]
            body += [f".Lalt{j}:"] + park(obj.alt) + [f".Ljoin{j}:"]
        elif obj.partner is not None:
            (a, _), (b, _) = obj.partner.locs[0], obj.locs[0]
            body += carried_value(spec, frame)
            body += [f"if r1 > {obj.swap_k} goto .Lswap{j}", store(b, 0), f"goto .Lswapped{j}"]
            body += [f".Lswap{j}:", load(1, a), store(b, 1), store(a, 0), f".Lswapped{j}:"]
        else:
            body += park(obj.locs)

    def call_next() -> list[str]:
        out = carried_value(spec, frame)[:1] if frame.carrier is not None else ["r1 = 0"]
        callee = spec.frames[i + 1]
        # R2: the borrowed object, else a scalar (a pointer left there is no global's arg)
        out.append(load(2, callee.borrow.src) if callee.borrow is not None else "r2 = 0")
        return out + [f"call {callee.name}"]

    if frame.twice:
        body += call_next()
    stale = False
    for obj in frame.objs:
        if obj.drop_early:
            loc, derived = drop_source(obj)
            body += drop_from(loc, derived, False, "")
            if obj.null_after:
                for loc, _ in obj.locs:
                    body += zero(loc, imm)
            else:
                stale = True
    if i + 1 < len(spec.frames):
        body += call_next()
    if i != spec.throw_frame:
        pass
    elif spec.mode == "always":
        body += [f"r1 = {spec.cookie}", "call bpf_throw"]
    elif spec.mode == "cond":
        body += carried_value(spec, frame)
        body += [f"if r1 > {spec.threshold} goto .Lnothrow", f"r1 = {spec.cookie}", "call bpf_throw",
                 ".Lnothrow:"]
    ret = spec.main_ret if i == 0 else 0

    def drop_obj(j: int, obj: Obj, normal_path_too: bool) -> list[str]:
        if obj.lost:
            return []
        if obj.alt:
            return [s for k, (loc, d) in enumerate(obj.locs + obj.alt)
                    for s in drop_from(loc, d, True, f".Ls{j}_{k}")]
        loc, derived = drop_source(obj)
        return drop_from(loc, derived, normal_path_too and obj.drop_early, f".Ln{j}")

    if stale:
        # the normal path has an epilogue of its own: stale copies must not be dropped
        for j in reversed(range(n)):
            obj = frame.objs[j]
            if not obj.drop_early:
                body += [s.replace(".Ls", ".Les") for s in drop_obj(j, obj, False)]
        body.append("goto .Lf0")
        for j in reversed(range(n)):
            body.append(f".Lf{j + 1}:")
            body += drop_obj(j, frame.objs[j], False)
    else:
        for j in reversed(range(n)):
            body.append(f".Lf{j + 1}:")
            body += drop_obj(j, frame.objs[j], True)
    body += [".Lf0:", f"r0 = {ret}", "exit"]
    # labels at column 0, insns indented
    lines += [s if s.endswith(":") else f"\t{s}" for s in body]
    return lines


def render(spec: Spec) -> str:
    head = [f".struct obj{s} {s}" for s in SIZES]
    head += [f".global {f.name}" for f in spec.frames if f.is_global]
    if spec.callback is not None:
        head += [".global cb", ".exception_callback cb"]
    lines = head + [""]
    for i in range(len(spec.frames)):
        lines += render_frame(spec, i) + [""]
    if spec.callback is not None:
        kind, c = spec.callback
        body = {
            "plus": ["r0 = r1", f"r0 += {c}"],
            "busy": [store(-8 * (c % 64 + 1), 1), f"r6 = {c}", load(0, -8 * (c % 64 + 1)), "r0 += r6"],
            "const": [f"r0 = {c}"],
        }[kind]
        lines += ["cb:"] + [f"\t{x}" for x in body + ["exit"]]
    return "\n".join(lines) + "\n"


# -- the properties ---------------------------------------------------------------------------


def released_ids(result: RunResult) -> dict[str, list[int]]:
    return {f.subprog: sorted(r.resource_id for r in f.released if r.resource_id is not None)
            for f in result.frames}


def fates(result: RunResult) -> list[tuple]:
    return [(o.id, o.address, o.size, o.type_name, o.alloc_pc, o.freed_by) for o in result.ledger.objects]


def check_run(spec: Spec, result: RunResult, engine: str) -> None:
    where = f"[{engine}]"
    ledger = result.ledger
    summary = ledger.summary()
    assert summary["allocated"] == spec.allocated(), where
    assert summary["leaked"] == 0 and not ledger.leaked(), (where, ledger.leaked())
    assert summary["double_freed"] == 0 and not ledger.double_freed, (where, ledger.double_free_records)
    assert all(o.freed_by in ("bpf_obj_drop", "unwind") for o in ledger.objects), where
    assert result.threw == spec.throws, where
    assert result.cookie == (spec.cookie if spec.throws else None), where
    assert result.retval & U64 == spec.expected_retval(), (where, result.retval, spec.expected_retval())
    by_unwind = sorted(o.id for o in ledger.objects if o.freed_by == "unwind")
    live = spec.live_at_throw()
    if spec.throws:
        assert summary["released_by_unwind"] == sum(len(v) for v in live.values()), where
        got = released_ids(result)
        for name, ids in live.items():
            assert got.get(name, []) == ids, (where, name, got)
        assert sorted(i for ids in got.values() for i in ids) == by_unwind, where
        assert [f.subprog for f in result.frames if not f.subprog.startswith("__")] == [
            f.name for f in reversed(spec.frames[: spec.throw_frame + 1])], where
    else:
        assert by_unwind == [] and result.frames == [], where


def check_spec(spec: Spec) -> None:
    text = render(spec)
    try:
        built = pipeline.build_text(text, "generated.s")
    except VerifierError as err:
        reasons = spec.reasons
        assert reasons, f"a program without flaws was rejected: {err}\n{text}"
        assert any(re.fullmatch(r, str(err)) for r in reasons), (
            f"rejected for {str(err)!r}, not one of {reasons} ({spec.flaws})\n{text}")
        event(f"rejected: {re.sub(r'[0-9]+', 'N', str(err))}")
        return
    assert not spec.flaws, f"accepted a program with flaws {spec.flaws}\n{text}"
    objs = sum(len(f.objs) for f in spec.frames)
    event(f"accepted: {'throws' if spec.throws else 'returns'}, depth {len(spec.frames) - 1}, "
          f"{'some' if objs else 'no'} objects")
    for what in ("borrow", "twice"):
        if any(getattr(f, what) for f in spec.frames):
            event(f"accepted with {what}")
    if any(o.partner is not None for f in spec.frames for o in f.objs):
        event("accepted with swap")
    ctx = spec.ctx()
    jit = built.run(ctx)
    interp = run_interp(built.verified, ctx=ctx)
    for result, engine in ((jit, "jit"), (interp, "interp")):
        check_run(spec, result, engine)
    assert (interp.retval, interp.threw, interp.cookie) == (jit.retval, jit.threw, jit.cookie)
    assert [(f.subprog, f.index, f.kind, f.desc_pc) for f in interp.frames] == [
        (f.subprog, f.index, f.kind, f.desc_pc) for f in jit.frames]
    assert [(f.subprog, Counter(f.released)) for f in interp.frames] == [
        (f.subprog, Counter(f.released)) for f in jit.frames]
    assert interp.ledger.summary() == jit.ledger.summary()
    assert fates(interp) == fates(jit)
    assert interp.ledger.double_freed == jit.ledger.double_freed


@SETTINGS
@given(specs())
def test_accepted_programs_release_every_object_exactly_once(spec: Spec) -> None:
    check_spec(spec)
