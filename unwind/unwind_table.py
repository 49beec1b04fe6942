"""bpf_throw's unwind table: everything the unwinder decides per frame, decided once per
JitProgram instead of once per frame walked.

For every image the table maps absolute return addresses to a `FramePlan`: the descriptor
site (pc, `site` text), the stack entries as (word delta from bp, ...) steps with their
release action and Released fields already computed, the R6..R9 entries that need a
cleanup, and where the frame's prologue saved the caller's R6..R9 (word offsets from sp).
The walk then costs one dict lookup per frame instead of JitProgram.image_at (a linear
scan), JitImage.find_desc (a bisect), per-entry type tests and f-strings.

Keys are exactly the return addresses the slow path (image_at(ip - 1), find_desc) would
accept: every descriptor's `image.address + ret_offset`, and for hidden images (the throw
trampoline) every insn boundary; each key is checked against image_at at build time. Any
other ip goes through `resolve`, which is the slow path itself (hidden images are cached).

A table snapshots the descriptors: a JitProgram and its FrameDescs are treated as
immutable once built (`table_for` caches one table per live JitProgram)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

from jit.image import JitImage, JitProgram
from unwind.kernel.cleanup import reg_entry_needs_cleanup, release_action, stack_entry_supported, type_str
from unwind.result import Released
from verifier.program import FdEntry, FrameDesc

UNSUPPORTED = -1  # a stack step whose entry is not a register spill: an error before reading

# (off, word delta or None if off is not 8-aligned, action, type str, btf name, entry,
#  the Released record of a NULL value: immutable, so shared by every throw)
StackStep = tuple[int, int | None, int, str, str, FdEntry, Released]
# (i, off, action, type str, btf name, entry, NULL record): R(6+i), only entries that need a cleanup
RegStep = tuple[int, int, int, str, str, FdEntry, Released]


def spilled_caller_reg_off(used: tuple[bool, bool, bool, bool], i: int) -> int:
    """Offset from a frame's sp of the caller's R(6+i) its prologue pushed: walk R9 down to
    R6, adding 8 for every pushed register before reaching R(6+i)."""
    return 8 * sum(1 for j in range(3, i, -1) if used[j])


@dataclass(frozen=True, slots=True)
class FramePlan:
    """What unwinding one frame that returns to `image.address + ret_offset` does."""

    image: JitImage
    subprog: str
    index: int
    kind: str
    ret_offset: int
    is_main: bool
    desc_pc: int | None  # None: hidden frame (no cleanup)
    site: str  # "subprog 'NAME' pc N": the ledger's free site and error prefix
    stack: tuple[StackStep, ...]  # in table order
    aligned: bool  # every stack step is supported and 8-aligned (delta not None)
    min_delta: int  # smallest and largest word delta of the stack steps (0, 0 for none)
    max_delta: int
    regs: tuple[RegStep, ...]  # in R6..R9 order
    saves: tuple[tuple[int, int], ...]  # (i, word offset from sp) of the saved caller R(6+i)
    save_words: int  # words above sp the saves need (max offset + 1), 0 for none
    missing: str | None = None  # error text: a BPF frame without a descriptor here


def stack_steps(desc: FrameDesc) -> tuple[StackStep, ...]:
    steps: list[StackStep] = []
    for e in desc.stack:
        action = release_action(e) if stack_entry_supported(e) else UNSUPPORTED
        delta = e.off >> 3 if e.off % 8 == 0 else None
        tstr = type_str(e.type)
        null = Released("stack", e.off, tstr, e.btf_name, 0, None)
        steps.append((e.off, delta, action, tstr, e.btf_name, e, null))
    return tuple(steps)


def reg_steps(desc: FrameDesc) -> tuple[RegStep, ...]:
    steps: list[RegStep] = []
    for i, e in enumerate(desc.regs):
        if e is not None and reg_entry_needs_cleanup(e):
            tstr = type_str(e.type)
            null = Released("reg", e.off, tstr, e.btf_name, 0, None)
            steps.append((i, e.off, release_action(e), tstr, e.btf_name, e, null))
    return tuple(steps)


def make_plan(main: JitImage, image: JitImage, ip: int, desc: FrameDesc | None) -> FramePlan:
    """The plan of a frame of `image` returning to `ip` (desc: None for hidden images)."""
    is_main = image is main
    saves: tuple[tuple[int, int], ...] = ()
    if not is_main:
        used = image.callee_regs_used
        saves = tuple((i, spilled_caller_reg_off(used, i) >> 3) for i in range(4) if used[i])
    stack = () if desc is None else stack_steps(desc)
    deltas = [st[1] for st in stack if st[1] is not None]
    return FramePlan(
        image=image,
        subprog=image.name,
        index=image.index,
        kind=image.kind,
        ret_offset=ip - image.address,
        is_main=is_main,
        desc_pc=None if desc is None else desc.pc,
        site="" if desc is None else f"subprog '{image.name}' pc {desc.pc}",
        stack=stack,
        aligned=all(st[1] is not None and st[2] != UNSUPPORTED for st in stack),
        min_delta=min(deltas, default=0),
        max_delta=max(deltas, default=0),
        regs=() if desc is None else reg_steps(desc),
        saves=saves,
        save_words=max((w + 1 for _, w in saves), default=0),
    )


class UnwindTable:
    """Return address -> FramePlan for every frame a throw of `jp` can walk through. Keeps
    jp's images but not jp itself (`table_for` caches tables until their program dies)."""

    def __init__(self, jp: JitProgram) -> None:
        self.images = jp.images
        self.main = jp.main
        self.plans: dict[int, FramePlan] = {}
        for image in jp.images:
            if image.hidden:
                for off in sorted(set(image.addrs)):
                    self._add(image, image.address + off, None)
            else:
                for off, desc in zip(image.fd_offsets, image.fd_descs, strict=True):
                    self._add(image, image.address + off, desc)

    def image_at(self, address: int) -> JitImage | None:
        """JitProgram.image_at: the first image containing `address`."""
        for image in self.images:
            if image.contains(address):
                return image
        return None

    def _add(self, image: JitImage, ip: int, desc: FrameDesc | None) -> None:
        if self.image_at(ip - 1) is image:  # what the slow path would find for this ip
            self.plans[ip] = make_plan(self.main, image, ip, desc)

    def resolve(self, ip: int) -> FramePlan | None:
        """The slow path for an ip the table has no plan for: None if it is in no image; a
        plan with `missing` set for a BPF frame without a descriptor there."""
        image = self.image_at(ip - 1)  # a return address may be just past its image
        if image is None:
            return None
        desc = None
        if not image.hidden:
            ret_offset = ip - image.address
            desc = image.find_desc(ret_offset)
            if desc is None:
                plan = make_plan(self.main, image, ip, None)
                msg = (
                    f"no frame descriptor for subprog '{image.name}' at return offset {ret_offset:#x} "
                    f"(insn {image.insn_at(ret_offset - 1)})"
                )
                return replace(plan, missing=msg)  # not cached: an error each time
        plan = self.plans[ip] = make_plan(self.main, image, ip, desc)
        return plan


_tables: dict[int, tuple[weakref.ref[JitProgram], UnwindTable]] = {}


def table_for(jp: JitProgram) -> UnwindTable:
    """The unwind table of `jp`, built once per live JitProgram."""
    hit = _tables.get(id(jp))
    if hit is not None and hit[0]() is jp:
        return hit[1]
    table = UnwindTable(jp)
    key = id(jp)
    _tables[key] = (weakref.ref(jp), table)
    weakref.finalize(jp, _tables.pop, key, None)
    return table
