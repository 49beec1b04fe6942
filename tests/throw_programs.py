"""The program grammar of tests/test_throw_properties.py (its docstring describes it): the
`Spec` of a call chain with its objects, borrows, flaws and throw, and the hypothesis
strategy `specs` that draws one (tests/throw_render.py turns it into text assembly)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hypothesis import strategies as st

from jit.layout import HEAP_BASE
from unwind.runner import default_ctx

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
