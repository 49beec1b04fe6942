"""bpf_throw's unwinder (series §3.8) against the real emulated stack, and the transfer of
control to the exception callback.

At the bpf_throw stub hook rsp points at the return address into the throw trampoline, so
the first frame is ip = [rsp], sp = rsp + 8, bp = rbp. The stack is read once and indexed
as 64-bit words, then the frame-pointer chain is walked innermost first (ip' = [bp+8],
sp' = bp + 16, bp' = [bp]), checking its invariants, until the main image (the exception
boundary). What each frame does is looked up by its return address in the program's
unwind table (unwind.unwind_table: decided once per JitProgram). Per frame:

  (a) hidden image (the trampoline): no cleanup;
  (b) the descriptor whose key is the return offset `ip - image.address`; the verifier
      gives every frame on a throw path one (maybe empty), so a missing one is an error
      (the series WARNs and skips, which also corrupts the saved-register chain);
  (c) stack entries in table order at bp + off, released as unwind.kernel.cleanup says: MEM_ALLOC
      objects are dropped through the ledger; NULL and NOT_INIT poison entries do nothing;
  (d) R6..R9 entries take their value from saved_reg[i], are released, then zeroed;
  (e) a subprog (trampoline included) collects saved_reg[i] for every register its
      prologue pushed, from sp + offset (the kernel's bpf_frame_spilled_caller_reg_off).

Then the exception callback runs with rdi = cookie, rsi = main sp, rdx = main bp,
rcx = r8 = 0 and no return address: its `leave; ret` returns through main's frame to the
host stub."""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import Protocol

from jit.image import JitProgram
from unwind.kernel.cleanup import (
    NO_DESTRUCTOR,
    UnwindError,
    no_destructor_error,
    throw_error,
    unsupported_entry_error,
)
from unwind.kernel.ledger import FREED_BY_UNWIND, Ledger
from unwind.result import Released, UnwoundFrame
from unwind.unwind_table import FramePlan, UnwindTable, spilled_caller_reg_off, table_for

MAIN_FRAME_SAVES = 40  # r12, rbx, r13, r14, r15 pushed by the exception boundary
_U64 = struct.Struct("<Q")
_SAVED_REG_NAMES = ("saved R6", "saved R7", "saved R8", "saved R9")
_LITTLE = sys.byteorder == "little"
_new_tuple = tuple.__new__  # Released(...) through its NamedTuple __new__ costs twice as much

__all__ = ["MAIN_FRAME_SAVES", "UnwindError", "Unwinder", "bpf_throw", "spilled_caller_reg_off"]


class StackMachine(Protocol):
    """What the unwinder needs from jit.machine.Machine."""

    def reg(self, name: str) -> int: ...

    def read_stack(self, sp: int) -> memoryview: ...

    def resume_at(self, address: int, regs: dict[str, int]) -> None: ...


def _words(view: memoryview) -> Sequence[int]:
    """The whole little-endian words of `view` (a stack read, which starts 8-aligned)."""
    whole = view[: len(view) & ~7]
    return whole.cast("Q") if _LITTLE else struct.unpack(f"<{len(whole) >> 3}Q", whole)


class Unwinder:
    """One bpf_throw: walk, release, collect; `frames` is the trace, innermost first."""

    def __init__(self, jp: JitProgram, ledger: Ledger, table: UnwindTable | None = None) -> None:
        self.jp = jp
        self.ledger = ledger
        self.prog = jp.verified.name
        self.table = table_for(jp) if table is None else table
        self.frames: list[UnwoundFrame] = []

    def _err(self, msg: str) -> UnwindError:
        return throw_error(self.prog, msg)

    def _outside(self, what: str, address: int, lo: int, hi: int) -> UnwindError:
        return self._err(f"{what} at {address:#x} is outside the live stack [{lo:#x}, {hi:#x})")

    def walk(self, rsp: int, rbp: int, view: memoryview) -> tuple[int, int]:
        """Unwind every BPF frame; return the main frame's (sp, bp)."""
        if rsp % 8:
            raise self._err(f"misaligned stack pointer {rsp:#x}")
        lo, hi = rsp, rsp + len(view)
        words = _words(view)
        nwords = len(words)
        if not nwords:
            raise self._outside("return address", rsp, lo, hi)
        plans, frames, main, free = self.table.plans, self.frames, self.jp.main, self.ledger.free
        saved = [0, 0, 0, 0]
        ip, sp, bp = words[0], rsp + 8, rbp
        top = hi - 16
        while True:
            plan = plans.get(ip)
            if plan is None:
                plan = self.table.resolve(ip)
                if plan is None:
                    raise self._err(f"return address {ip:#x} (frame {len(frames)}) is not in any image")
            if bp % 8 or not sp <= bp <= top:
                raise self._err(f"bad frame pointer {bp:#x} for sp {sp:#x} in subprog '{plan.subprog}'")
            if plan.is_main and not main.exception_boundary:
                raise self._err(f"main subprog '{main.name}' is not an exception boundary")
            released: list[Released] = []
            frames.append(
                UnwoundFrame(  # positional: ~2x cheaper than keywords
                    plan.subprog, plan.index, plan.kind, ip, sp, bp, plan.ret_offset, plan.desc_pc,
                    released, (saved[0], saved[1], saved[2], saved[3]),
                )
            )
            if plan.missing is not None:
                raise self._err(plan.missing)
            if plan.stack:
                k = (bp - lo) >> 3
                if plan.aligned and k + plan.min_delta >= 0 and k + plan.max_delta < nwords:
                    site = plan.site  # every slot is in the stack: no per-slot checks
                    for off, delta, action, tstr, btf_name, e, null in plan.stack:
                        value = words[k + delta]
                        if not value:
                            released.append(null)
                            continue
                        rid = None
                        if action:
                            if action == NO_DESTRUCTOR:
                                raise no_destructor_error(self.prog, site, e)
                            obj = free(value - e.ptr_off, FREED_BY_UNWIND, site)
                            if obj is not None:
                                rid = obj.id
                        released.append(_new_tuple(Released, ("stack", off, tstr, btf_name, value, rid)))
                else:
                    self._release_stack(plan, bp, words, view, lo, hi, released)
            if plan.regs:
                site = plan.site
                for i, off, action, tstr, btf_name, e, null in plan.regs:
                    value = saved[i]
                    if not value:
                        released.append(null)
                        continue
                    if action == NO_DESTRUCTOR:
                        raise no_destructor_error(self.prog, site, e)
                    obj = free(value - e.ptr_off, FREED_BY_UNWIND, site)
                    rid = None if obj is None else obj.id
                    released.append(_new_tuple(Released, ("reg", off, tstr, btf_name, value, rid)))
                    saved[i] = 0
            if plan.is_main:
                break
            if plan.saves:
                k = (sp - lo) >> 3
                if k + plan.save_words > nwords:
                    for i, w in plan.saves:
                        if k + w >= nwords:
                            raise self._outside(_SAVED_REG_NAMES[i], sp + 8 * w, lo, hi)
                for i, w in plan.saves:
                    saved[i] = words[k + w]
            k = (bp - lo) >> 3  # bp <= hi - 16: saved rbp and return address are in the stack
            older_bp = words[k]
            if older_bp <= bp or older_bp % 8:
                raise self._err(
                    f"frame pointer chain broken above subprog '{plan.subprog}': {bp:#x} -> {older_bp:#x}"
                )
            ip, sp, bp = words[k + 1], bp + 16, older_bp
        if sp != bp - main.stack_depth - MAIN_FRAME_SAVES:
            raise self._err(
                f"main frame sp {sp:#x} != bp {bp:#x} - stack_depth {main.stack_depth} - {MAIN_FRAME_SAVES}"
            )
        return sp, bp

    def _release_stack(
        self,
        plan: FramePlan,
        bp: int,
        words: Sequence[int],
        view: memoryview,
        lo: int,
        hi: int,
        out: list[Released],
    ) -> None:
        """The stack entries one by one: unsupported ones, slots outside the stack and
        slots that are not 8-aligned (the fast path in `walk` handles none of these)."""
        site = plan.site
        k, nwords = (bp - lo) >> 3, len(words)
        for off, delta, action, tstr, btf_name, e, null in plan.stack:
            if action < 0:
                raise unsupported_entry_error(self.prog, site, e)
            if delta is not None and 0 <= k + delta < nwords:
                value = words[k + delta]
            elif delta is None and lo <= bp + off <= hi - 8:
                value = _U64.unpack_from(view, bp + off - lo)[0]
            else:
                raise self._outside(f"stack slot fp{off:+d} of '{plan.subprog}'", bp + off, lo, hi)
            if not value:
                out.append(null)
                continue
            rid = None
            if action:
                if action == NO_DESTRUCTOR:
                    raise no_destructor_error(self.prog, site, e)
                obj = self.ledger.free(value - e.ptr_off, FREED_BY_UNWIND, site)
                rid = None if obj is None else obj.id
            out.append(_new_tuple(Released, ("stack", off, tstr, btf_name, value, rid)))


def bpf_throw(
    machine: StackMachine, jp: JitProgram, ledger: Ledger, cookie: int, table: UnwindTable | None = None
) -> list[UnwoundFrame]:
    """Run at the bpf_throw stub: unwind, release, then continue in the exception callback.
    `table`: jp's unwind table (default: unwind.unwind_table.table_for(jp))."""
    cb = jp.exception_cb
    if cb is None:
        raise UnwindError(f"prog '{jp.verified.name}': bpf_throw: program has no exception callback")
    rsp = machine.reg("rsp")
    rbp = machine.reg("rbp")
    unwinder = Unwinder(jp, ledger, table)
    sp, bp = unwinder.walk(rsp, rbp, machine.read_stack(rsp))
    machine.resume_at(cb.address, {"rdi": cookie, "rsi": sp, "rdx": bp, "rcx": 0, "r8": 0})
    return unwinder.frames
