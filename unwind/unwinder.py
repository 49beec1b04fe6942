"""bpf_throw's unwinder (series §3.8) against the real emulated stack, and the transfer of
control to the exception callback.

At the bpf_throw stub hook rsp points at the return address into the throw trampoline, so
the first frame is ip = [rsp], sp = rsp + 8, bp = rbp. The stack is read once, then the
frame-pointer chain is walked innermost first (ip' = [bp+8], sp' = bp + 16, bp' = [bp]),
checking its invariants, until the main image (the exception boundary). Per frame:

  (a) hidden image (the trampoline): no cleanup;
  (b) the descriptor whose key is the return offset `ip - image.address`; the verifier
      gives every frame on a throw path one (maybe empty), so a missing one is an error
      (the series WARNs and skips, which also corrupts the saved-register chain);
  (c) stack entries in table order at bp + off, released by unwind.cleanup: MEM_ALLOC
      objects are dropped through the ledger; NULL and NOT_INIT poison entries do nothing;
  (d) R6..R9 entries take their value from saved_reg[i], are released, then zeroed;
  (e) a subprog (trampoline included) collects saved_reg[i] for every register its
      prologue pushed, from sp + offset (the kernel's bpf_frame_spilled_caller_reg_off).

Then the exception callback runs with rdi = cookie, rsi = main sp, rdx = main bp,
rcx = r8 = 0 and no return address: its `leave; ret` returns through main's frame to the
host stub."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Protocol

from jit.image import JitImage, JitProgram
from unwind.cleanup import UnwindError, check_stack_entry, cleanup_entry, reg_entry_needs_cleanup, throw_error
from unwind.ledger import Ledger
from unwind.result import Released, UnwoundFrame
from verifier.program import FrameDesc

MAIN_FRAME_SAVES = 40  # r12, rbx, r13, r14, r15 pushed by the exception boundary
_U64 = struct.Struct("<Q")
_SAVED_REG_NAMES = ("saved R6", "saved R7", "saved R8", "saved R9")

__all__ = ["MAIN_FRAME_SAVES", "UnwindError", "Unwinder", "bpf_throw", "spilled_caller_reg_off"]


class StackMachine(Protocol):
    """What the unwinder needs from jit.machine.Machine."""

    def reg(self, name: str) -> int: ...

    def read_stack(self, sp: int) -> memoryview: ...

    def resume_at(self, address: int, regs: dict[str, int]) -> None: ...


def spilled_caller_reg_off(used: tuple[bool, bool, bool, bool], i: int) -> int:
    """Offset from a frame's sp of the caller's R(6+i) its prologue pushed: walk R9 down to
    R6, adding 8 for every pushed register before reaching R(6+i)."""
    return 8 * sum(1 for j in range(3, i, -1) if used[j])


class _Stack:
    """The live stack [rsp, end) read in one go, addressed by guest address."""

    def __init__(self, view: memoryview, rsp: int, prog: str) -> None:
        self.view = view
        self.lo = rsp
        self.hi = rsp + len(view)
        self.prog = prog

    def u64(self, address: int, what: str | Callable[[], str]) -> int:
        """The word at `address`; `what` names it in the error (a callable: built only then)."""
        if not self.lo <= address <= self.hi - 8:
            name = what if isinstance(what, str) else what()
            raise UnwindError(
                f"prog '{self.prog}': bpf_throw: {name} at {address:#x} is outside the live stack "
                f"[{self.lo:#x}, {self.hi:#x})"
            )
        return _U64.unpack_from(self.view, address - self.lo)[0]


class Unwinder:
    """One bpf_throw: walk, release, collect; `frames` is the trace, innermost first."""

    def __init__(self, jp: JitProgram, ledger: Ledger) -> None:
        self.jp = jp
        self.ledger = ledger
        self.prog = jp.verified.name
        self.frames: list[UnwoundFrame] = []

    def _err(self, msg: str) -> UnwindError:
        return throw_error(self.prog, msg)

    def walk(self, rsp: int, rbp: int, view: memoryview) -> tuple[int, int]:
        """Unwind every BPF frame; return the main frame's (sp, bp)."""
        if rsp % 8:
            raise self._err(f"misaligned stack pointer {rsp:#x}")
        stack = _Stack(view, rsp, self.prog)
        saved_reg = [0, 0, 0, 0]
        ip, sp, bp = stack.u64(rsp, "return address"), rsp + 8, rbp
        main = self.jp.main
        while True:
            image = self.jp.image_at(ip - 1)  # a return address may be just past its image
            if image is None:
                raise self._err(f"return address {ip:#x} (frame {len(self.frames)}) is not in any image")
            if bp % 8 or not sp <= bp <= stack.hi - 16:
                raise self._err(f"bad frame pointer {bp:#x} for sp {sp:#x} in subprog '{image.name}'")
            if image is main and not main.exception_boundary:
                raise self._err(f"main subprog '{main.name}' is not an exception boundary")
            self._frame(image, ip, sp, bp, saved_reg, stack)
            if image is main:
                break
            older_bp = stack.u64(bp, "saved rbp")
            if older_bp <= bp or older_bp % 8:
                raise self._err(
                    f"frame pointer chain broken above subprog '{image.name}': {bp:#x} -> {older_bp:#x}"
                )
            ip, sp, bp = stack.u64(bp + 8, "return address"), bp + 16, older_bp
        if sp != bp - main.stack_depth - MAIN_FRAME_SAVES:
            raise self._err(
                f"main frame sp {sp:#x} != bp {bp:#x} - stack_depth {main.stack_depth} - {MAIN_FRAME_SAVES}"
            )
        return sp, bp

    def _frame(
        self, image: JitImage, ip: int, sp: int, bp: int, saved_reg: list[int], stack: _Stack
    ) -> None:
        ret_offset = ip - image.address
        frame = UnwoundFrame(
            subprog=image.name,
            index=image.index,
            kind=image.kind,
            ip=ip,
            sp=sp,
            bp=bp,
            ret_offset=ret_offset,
            desc_pc=None,
            saved_regs=(saved_reg[0], saved_reg[1], saved_reg[2], saved_reg[3]),
        )
        self.frames.append(frame)
        if not image.hidden:
            # The verifier gives every frame on a throw path a descriptor (maybe empty).
            desc = image.find_desc(ret_offset)
            if desc is None:
                raise self._err(
                    f"no frame descriptor for subprog '{image.name}' at return offset {ret_offset:#x} "
                    f"(insn {image.insn_at(ret_offset - 1)})"
                )
            frame.desc_pc = desc.pc
            self._cleanup(image, desc, bp, saved_reg, stack, frame.released)
        if image is not self.jp.main:
            used = image.callee_regs_used
            for i in range(4):
                if used[i]:
                    saved_reg[i] = stack.u64(sp + spilled_caller_reg_off(used, i), _SAVED_REG_NAMES[i])

    def _cleanup(
        self,
        image: JitImage,
        desc: FrameDesc,
        bp: int,
        saved_reg: list[int],
        stack: _Stack,
        out: list[Released],
    ) -> None:
        site = f"subprog '{image.name}' pc {desc.pc}"
        for e in desc.stack:
            check_stack_entry(self.prog, site, e)
            value = stack.u64(bp + e.off, lambda e=e: f"stack slot fp{e.off:+d} of '{image.name}'")
            out.append(cleanup_entry(self.ledger, self.prog, site, e, "stack", value))
        for i, e in enumerate(desc.regs):
            if reg_entry_needs_cleanup(e):
                out.append(cleanup_entry(self.ledger, self.prog, site, e, "reg", saved_reg[i]))
                saved_reg[i] = 0


def bpf_throw(machine: StackMachine, jp: JitProgram, ledger: Ledger, cookie: int) -> list[UnwoundFrame]:
    """Run at the bpf_throw stub: unwind, release, then continue in the exception callback."""
    cb = jp.exception_cb
    if cb is None:
        raise UnwindError(f"prog '{jp.verified.name}': bpf_throw: program has no exception callback")
    rsp = machine.reg("rsp")
    rbp = machine.reg("rbp")
    unwinder = Unwinder(jp, ledger)
    sp, bp = unwinder.walk(rsp, rbp, machine.read_stack(rsp))
    machine.resume_at(cb.address, {"rdi": cookie, "rsi": sp, "rdx": bp, "rcx": 0, "r8": 0})
    return unwinder.frames
