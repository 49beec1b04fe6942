"""Precision tracking (`mark_chain_precision`, `backtrack_insn`, `propagate_precision`).

A scalar is *precise* in an explored state when some path continuing from that state relied
on its value: a branch decided by its range, a pointer offset, a constant argument, or (the
series' rule) a register or spilled scalar a throw describes in a frame descriptor (a known
zero there is a NULL entry, anything else poison). Pruning (verifier.check.prune) compares
precise scalars by range and lets an imprecise one cover any scalar.

When a value is relied on, the instructions of the current path are walked backwards
(`VerifierState.hist`, one record per processed insn: its index, its frame and, for a
spill or fill, the stack slot, for a jump the scalars linked to its operands), and each
register or slot the value came from is marked precise in every checkpoint of the path,
as `backtrack_insn` does: a move passes the need to its source, an ALU op adds its
source, a fill passes it to the slot, a spill to the stored register, a call boundary
moves R1-R5 (entry) or R0 (exit) between frames. Where the walk meets something it does
not follow, every scalar of every checkpoint of the path becomes precise (the kernel's
`mark_all_scalars_precise` fallback): always sound, only weaker."""

from __future__ import annotations

from collections.abc import Iterable

from verifier.check.env import Env
from verifier.check.state import Checkpoint, HistRecord, VerifierState
from verifier.isa.insn import (
    BPF_ALU,
    BPF_ALU64,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_LD,
    BPF_LDX,
    BPF_MOV,
    BPF_ST,
    BPF_STX,
    MAX_CALL_FRAMES,
)
from verifier.regtypes import SCALAR_VALUE

CALLEE_SAVED = (6, 7, 8, 9)


class GiveUp(Exception):
    """The walk met something it does not follow: fall back to all-precise."""


class Backtrack:
    """`struct backtrack_state`: registers and stack slots (spi) still to explain, per frame."""

    __slots__ = ("regs", "slots")

    def __init__(self) -> None:
        self.regs: list[set[int]] = [set() for _ in range(MAX_CALL_FRAMES)]
        self.slots: list[set[int]] = [set() for _ in range(MAX_CALL_FRAMES)]

    def empty(self) -> bool:
        return not any(self.regs) and not any(self.slots)


# Backtracking kinds of insns, decoded once per program (`Env.bt_kinds`).
K_MOV_REG, K_MOV_IMM, K_ALU_REG, K_ALU_IMM, K_LDX, K_ST, K_STX, K_LD, K_CALL_STATIC, K_CALL, \
    K_NOP, K_COND_REG, K_COND_IMM, K_OTHER = range(14)


def bt_kinds(env: Env) -> list[tuple[int, int, int]]:
    """(kind, dst, src) of every insn, for `backtrack_insn`."""
    out = []
    for idx, insn in enumerate(env.insns):
        cls = insn.cls
        if cls in (BPF_ALU, BPF_ALU64):
            if insn.op == BPF_MOV:
                kind = K_MOV_REG if insn.uses_reg_src else K_MOV_IMM
            else:
                kind = K_ALU_REG if insn.uses_reg_src else K_ALU_IMM
        elif cls == BPF_LDX:
            kind = K_LDX
        elif cls in (BPF_ST, BPF_STX):
            kind = K_ST if cls == BPF_ST else K_STX
        elif cls == BPF_LD:
            kind = K_LD
        elif cls not in (BPF_JMP, BPF_JMP32):
            kind = K_OTHER
        elif insn.is_call():
            callee = env.find_subprog(idx + insn.imm + 1) if insn.is_pseudo_call() else None
            kind = K_CALL_STATIC if callee is not None and not env.is_global(callee) else K_CALL
        elif insn.is_exit() or insn.op == BPF_JA:
            kind = K_NOP
        else:
            kind = K_COND_REG if insn.uses_reg_src else K_COND_IMM
        out.append((kind, insn.dst, insn.src))
    return out


def backtrack_insn(env: Env, rec: HistRecord, bt: Backtrack) -> None:
    """Turn the needs after insn `rec` into the needs before it (frame `rec[1]`)."""
    idx, fr, extra = rec
    kind, dst, src = env.bt_kinds[idx]
    regs = bt.regs[fr]
    if kind <= K_ALU_IMM:  # ALU: a move passes the need on, an op adds its source
        if dst in regs:
            if kind <= K_MOV_IMM:
                regs.discard(dst)
            if kind == K_MOV_REG or kind == K_ALU_REG:
                regs.add(src)
        return
    if kind == K_LDX:
        if dst in regs:
            regs.discard(dst)
            if extra is not None:  # a fill: the need moves to the slot
                bt.slots[extra[0]].add(extra[1])
        return
    if kind == K_ST or kind == K_STX:
        if extra is not None and extra[1] in bt.slots[extra[0]]:
            bt.slots[extra[0]].discard(extra[1])
            if kind == K_STX:
                regs.add(src)
        return
    if kind == K_LD:
        regs.discard(dst)
        return
    if kind == K_CALL:
        for regno in range(6):
            regs.discard(regno)  # R0 is the callee's result, R1-R5 are scratched
        return
    if kind == K_CALL_STATIC or kind == K_NOP:
        return  # a static call: the frame change is handled by the walk
    if kind == K_OTHER:
        raise GiveUp
    if kind == K_COND_REG and (dst in regs or src in regs):
        regs.add(dst)
        regs.add(src)
    if extra:  # scalars linked at this jump share their refinement: all or none precise
        if any(n in (bt.regs if k == 0 else bt.slots)[fr2] for fr2, k, n in extra):
            for fr2, k, n in extra:
                (bt.regs if k == 0 else bt.slots)[fr2].add(n)


def _cross_frames(bt: Backtrack, earlier: int, later: int) -> None:
    """Between two consecutive records in different frames."""
    if earlier == later - 1:  # `earlier` is the call insn; `later` the callee's first insn
        callee = bt.regs[later]
        for regno in range(1, 6):
            if regno in callee:
                bt.regs[earlier].add(regno)
        callee.clear()
        bt.slots[later].clear()
    elif earlier == later + 1:  # `earlier` is the callee's exit; `later` is after the call
        if 0 in bt.regs[later]:
            bt.regs[later].discard(0)
            bt.regs[earlier].add(0)
    else:
        raise GiveUp


def _mark_in_checkpoint(st: VerifierState, bt: Backtrack) -> None:
    """At a checkpoint: mark what is still needed, drop what needs no more walking (not a
    scalar, or already precise: its history was walked when it was marked)."""
    for fr in range(MAX_CALL_FRAMES):
        regs, slots = bt.regs[fr], bt.slots[fr]
        if not regs and not slots:
            continue
        if fr >= len(st.frames):
            raise GiveUp
        frame = st.frames[fr]
        for regno in list(regs):
            reg = frame.regs[regno]
            if reg.type != SCALAR_VALUE or reg.precise:
                regs.discard(regno)
            else:
                reg.precise = True
        for spi in list(slots):
            if spi >= len(frame.stack) or not frame.stack[spi].is_spill:
                slots.discard(spi)
                continue
            reg = frame.stack[spi].spilled_ptr
            if reg.type != SCALAR_VALUE or reg.precise:
                slots.discard(spi)
            else:
                reg.precise = True


def mark_all_scalars_precise(state: VerifierState) -> None:
    """`mark_all_scalars_precise`: every scalar of every checkpoint this path descends from."""
    cp = state.parent
    while isinstance(cp, Checkpoint):
        for frame in cp.state.frames:
            for reg in frame.regs:
                if reg.type == SCALAR_VALUE:
                    reg.precise = True
            for slot in frame.stack:
                if slot.is_spill and slot.spilled_ptr.type == SCALAR_VALUE:
                    slot.spilled_ptr.precise = True
        cp = cp.parent


def _walk(env: Env, state: VerifierState, bt: Backtrack) -> None:
    st, later = state, state.curframe
    kinds = env.bt_kinds
    while True:
        for rec in reversed(st.hist):
            fr = rec[1]
            if fr != later:
                _cross_frames(bt, fr, later)
                later = fr
            kind, dst, _ = kinds[rec[0]]
            if kind <= K_LDX:
                if dst not in bt.regs[fr]:
                    continue  # an ALU op or load whose result nothing needs: nothing to do
            elif kind == K_NOP or kind == K_CALL_STATIC or (kind in (K_ST, K_STX, K_COND_IMM) and not rec[2]):
                continue  # no register or slot passes through it
            backtrack_insn(env, rec, bt)
        if bt.empty():
            return
        cp = st.parent
        if not isinstance(cp, Checkpoint):
            return  # the entry state: arguments and the ctx, nothing to mark
        if later != cp.state.curframe:
            _cross_frames(bt, cp.state.curframe, later)
            later = cp.state.curframe
        _mark_in_checkpoint(cp.state, bt)
        if bt.empty():
            return
        st = cp.state


def mark_chain_precision(env: Env, state: VerifierState, bt: Backtrack) -> None:
    """Mark precise, in the checkpoints of `state`'s path, what the needs in `bt` (about
    the current state) come from. The current state itself is not marked."""
    env.precision_walks += 1
    if env.log.level >= 2:
        first = state.hist[0][0] if state.hist else env.insn_idx
        env.log.verbose(f"mark_precise: frame{state.curframe}: last_idx {env.insn_idx} "
                        f"first_idx {first} subseq_idx -1 ")
    try:
        _walk(env, state, bt)
    except GiveUp:
        mark_all_scalars_precise(state)


def mark_regs_precise(env: Env, state: VerifierState, regnos: Iterable[int]) -> None:
    """A value of these current-frame scalars is relied on from here."""
    bt = Backtrack()
    frame = state.cur
    for regno in regnos:
        if frame.regs[regno].type == SCALAR_VALUE:
            bt.regs[state.curframe].add(regno)
    if not bt.empty():
        mark_chain_precision(env, state, bt)


def mark_throw_precise(env: Env, state: VerifierState) -> None:
    """The series' rule: descriptor generation reads R6-R9 and every spilled scalar of
    every frame (a known zero is NULL, another scalar poison), so they are relied on (in a
    program that can hold references: without one, no entry ever releases anything)."""
    if not env.may_hold_refs:
        return
    bt = Backtrack()
    for fr, frame in enumerate(state.frames):
        for regno in CALLEE_SAVED:
            if frame.regs[regno].type == SCALAR_VALUE:
                bt.regs[fr].add(regno)
        for spi, slot in enumerate(frame.stack):
            if slot.is_spill and slot.spilled_ptr.type == SCALAR_VALUE:
                bt.slots[fr].add(spi)
    if not bt.empty():
        mark_chain_precision(env, state, bt)


def propagate_precision(env: Env, old: VerifierState, state: VerifierState) -> None:
    """`propagate_precision`: `state` was pruned because `old` covers it, so what the paths
    from `old` relied on is relied on by `state`'s path too."""
    bt = Backtrack()
    for fr, frame in enumerate(old.frames):
        for regno, reg in enumerate(frame.regs):
            if reg.type == SCALAR_VALUE and reg.precise:
                bt.regs[fr].add(regno)
        for spi, slot in enumerate(frame.stack):
            if slot.is_spill and slot.spilled_ptr.type == SCALAR_VALUE and slot.spilled_ptr.precise:
                bt.slots[fr].add(spi)
    if not bt.empty():
        mark_chain_precision(env, state, bt)
