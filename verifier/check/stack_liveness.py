"""Stack slot liveness: for every insn, the 8-byte slots of its frame that some path from it
reads before overwriting them whole, so that explored states forget dead slots as Linux
6.18 does (its `liveness.c`; ours is a simpler, per-subprog version).

The analysis is exact only where the frame's address never escapes: every access is
`*(size *)(r10 + off)` at a constant offset. If r10 is copied, added to, or stored anywhere,
a pointer into the frame may reach any access (or a callee), so every slot of that subprog
counts as live everywhere (None). Per insn: a load reads the slots it touches; an aligned
8-byte store overwrites its slot; narrower stores change nothing (the other bytes stay what
they were); an atomic op reads its slot. The series' rule, as for registers: a throwing
call describes every slot of every frame in its descriptors, so it reads them all."""

from __future__ import annotations

from verifier.check.cfg import is_throw
from verifier.check.env import Env
from verifier.check.liveness import successors
from verifier.check.state import StackSlot, VerifierState
from verifier.isa.insn import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_B,
    BPF_DW,
    BPF_H,
    BPF_LDX,
    BPF_REG_10,
    BPF_ST,
    BPF_STX,
    BPF_W,
    Insn,
)

ALL_SLOTS = (1 << 64) - 1  # 512 bytes of stack: 64 slots
SIZES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 8}


def _frame_escapes(insns: list[Insn], start: int, end: int) -> bool:
    """Does r10 flow anywhere but the base of a load or store?"""
    for insn in insns[start:end]:
        if insn.cls in (BPF_ALU, BPF_ALU64) and insn.uses_reg_src and insn.src == BPF_REG_10:
            return True
        if insn.cls == BPF_STX and insn.src == BPF_REG_10:
            return True
    return False


def _slots(off: int, size: int) -> int:
    mask = 0
    for addr in range(off, off + size):
        if -512 <= addr < 0:
            mask |= 1 << ((-addr - 1) // 8)
    return mask


def _throwing_call(env: Env, idx: int, insn: Insn) -> bool:
    if is_throw(insn):
        return True
    if insn.is_pseudo_call():
        callee = env.find_subprog(idx + insn.imm + 1)
        return callee is not None and env.subprogs[callee].is_throw_reachable
    return False


def slot_use_def(env: Env, idx: int, series: bool) -> tuple[int, int]:
    """(slots read, slots overwritten) by insns[idx] in its own frame."""
    insn = env.insns[idx]
    cls = insn.cls
    if cls == BPF_LDX and insn.src == BPF_REG_10:
        return _slots(insn.off, SIZES[insn.size]), 0
    if cls in (BPF_ST, BPF_STX) and insn.dst == BPF_REG_10:
        size = SIZES[insn.size]
        if insn.mode == BPF_ATOMIC:
            return _slots(insn.off, size), 0
        if size == 8 and insn.off % 8 == 0:
            return 0, _slots(insn.off, 8)
        return 0, 0
    if series and insn.is_call() and _throwing_call(env, idx, insn):
        return ALL_SLOTS, 0
    return 0, 0


def compute_live_slots(env: Env, series: bool = True) -> list[int | None]:
    """Per insn, the bitmask of live slots (bit spi; fp-8 is spi 0), or None where the
    frame's address escapes (every slot live)."""
    n = len(env.insns)
    live: list[int | None] = [None] * n
    for sub in range(len(env.subprogs)):
        start, end = env.subprogs[sub].start, env.subprog_end(sub)
        if _frame_escapes(env.insns, start, end):
            continue
        pcs: list[int] = []
        i = start
        while i < end:
            pcs.append(i)
            i += 2 if env.insns[i].is_ld_imm64() else 1
        use_def = {pc: slot_use_def(env, pc, series) for pc in pcs}
        succ = {pc: successors(env, pc, end) for pc in pcs}
        masks = dict.fromkeys(pcs, 0)
        changed = True
        while changed:
            changed = False
            for pc in reversed(pcs):
                out = 0
                for s in succ[pc]:
                    out |= masks[s]
                use, defs = use_def[pc]
                new = use | (out & ~defs)
                if new != masks[pc]:
                    masks[pc] = new
                    changed = True
        for pc, mask in masks.items():
            live[pc] = mask
    return live


def clean_dead_slots(state: VerifierState, live_slots: list[int | None], insn_idx: int) -> None:
    """The stack half of `clean_verifier_state`: a dead slot becomes STACK_INVALID."""
    for frameno, frame in enumerate(state.frames):
        ip = insn_idx if frameno == state.curframe else state.frames[frameno + 1].callsite
        mask = live_slots[ip] if ip < len(live_slots) else None
        if mask is None:
            continue
        for spi in range(len(frame.stack)):
            if not mask >> spi & 1:
                frame.stack[spi] = StackSlot()
