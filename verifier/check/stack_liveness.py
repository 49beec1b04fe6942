"""Stack slot liveness: for every insn, the 8-byte slots of its frame that some path from it
reads before overwriting them whole, so that explored states forget dead slots as Linux
6.18 does (`liveness.c`: computed from the accesses verification has seen, not guessed
from the text).

do_check records, per insn, the slots of the accessing frame each stack load touched (a
variable-offset load: every slot of its range) and the slot an aligned 8-byte store at a
constant offset overwrote (kept only while every visit agrees). Liveness is the backward
fixpoint over the subprog's CFG with those uses and kills. It is consulted only to clean a
checkpoint whose every path has been explored: by then every insn reachable from it has
been verified (or was pruned into a state whose continuation was), so its accesses are
recorded. A frame whose slots another frame touched (a stack pointer passed to a callee)
keeps every slot live. The series' rule, as for registers: a throwing call describes every
slot of every frame in its descriptors, so it reads them all."""

from __future__ import annotations

from verifier.check.cfg import is_throw
from verifier.check.env import Env
from verifier.check.liveness import backward_fixpoint
from verifier.check.state import StackSlot, VerifierState
from verifier.isa.insn import Insn

ALL_SLOTS = (1 << 64) - 1  # 512 bytes of stack: 64 slots


def slot_mask(min_off: int, max_off: int) -> int:
    """The slots holding the fp-relative bytes [min_off, max_off)."""
    mask = 0
    for spi in range(max(0, (-max_off) // 8), min(64, (-min_off - 1) // 8 + 1)):
        mask |= 1 << spi
    return mask


def note_slot_access(env: Env, state: VerifierState, frameno: int, read: int, kill: int) -> None:
    """Record a stack access of insn `env.insn_idx` into frame `frameno`."""
    idx = env.insn_idx
    if frameno != state.curframe:
        env.stack_foreign.add(state.frames[frameno].subprogno)
        return
    old_read = env.slot_reads.get(idx, 0)
    if read | old_read != old_read:
        env.slot_reads[idx] = read | old_read
        env.slot_version += 1
    old_kill = env.slot_kills.get(idx)
    if old_kill is None:
        env.slot_kills[idx] = kill
        env.slot_version += 1
    elif old_kill != kill and old_kill:
        env.slot_kills[idx] = 0  # visits disagree: it overwrites nothing for sure
        env.slot_version += 1


def _throwing_call(env: Env, idx: int, insn: Insn) -> bool:
    if is_throw(insn):
        return True
    if insn.is_pseudo_call():
        callee = env.find_subprog(idx + insn.imm + 1)
        return callee is not None and env.subprogs[callee].is_throw_reachable
    return False


def _solve(env: Env, sub: int) -> dict[int, int]:
    def use_def(pc: int) -> tuple[int, int]:
        insn = env.insns[pc]
        if env.may_hold_refs and insn.is_call() and _throwing_call(env, pc, insn):
            return ALL_SLOTS, 0
        return env.slot_reads.get(pc, 0), env.slot_kills.get(pc, 0)

    return backward_fixpoint(env, sub, use_def)


def live_slots(env: Env, sub: int) -> dict[int, int] | None:
    """Live slots per insn of subprog `sub` (None: all live), recomputed when verification
    has recorded something new."""
    if sub in env.stack_foreign:
        return None
    cached = env.slot_live_cache.get(sub)
    if cached is None or cached[0] != env.slot_version:
        cached = (env.slot_version, _solve(env, sub))
        env.slot_live_cache[sub] = cached
    return cached[1]


def clean_dead_slots(env: Env, state: VerifierState, insn_idx: int) -> None:
    """The stack half of `clean_verifier_state`: a dead slot becomes STACK_INVALID."""
    for frameno, frame in enumerate(state.frames):
        ip = state.frame_insn_idx(frameno, insn_idx)
        masks = live_slots(env, frame.subprogno)
        if masks is None or ip not in masks:
            continue
        mask = masks[ip]
        for spi in range(len(frame.stack)):
            if not mask >> spi & 1:
                frame.stack[spi] = StackSlot()
