"""Register liveness (`compute_live_registers`, Linux 6.15+): for every instruction, the set
of registers that some path from it reads before writing, computed once per subprog by a
backward data-flow fixpoint over its CFG. `clean_func_state` uses it to forget dead
registers in explored states, so that states differing only in dead values prune.

Per instruction, as the kernel counts uses and definitions: an ALU op reads its source and
(except a move) its destination and defines the destination; loads read the base register;
stores read base and value; a call defines R0-R5 and reads its arguments (a kfunc or a
helper: as many as its prototype has; a bpf2bpf call: R1-R5); exit reads R0.

The series' rule on top: a throwing call (bpf_throw, or a call of a subprog from which a
throw is reachable) also reads R6-R9, because descriptor generation describes what they
hold in every frame; without that, a state holding a reference in a register dead on the
normal path could prune one holding it elsewhere, and the descriptor would miss it. The
rule applies only to programs that can hold references (`program_acquires`)."""

from __future__ import annotations

from collections.abc import Callable

from verifier.check.cfg import is_throw
from verifier.check.env import Env
from verifier.check.state import RegState, VerifierState
from verifier.isa.insn import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_END,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_LD,
    BPF_LDX,
    BPF_MOV,
    BPF_NEG,
    BPF_REG_10,
    BPF_ST,
    BPF_STX,
    Insn,
)
from verifier.protos.helper_ids import HELPERS
from verifier.protos.kfuncs import KF, KFUNCS_BY_ID
from verifier.regtypes import NOT_INIT

CALLER_SAVED_MASK = 0x3F  # R0-R5
ARGS_MASK = 0x3E  # R1-R5
CALLEE_SAVED_MASK = 0x3C0  # R6-R9
FP_MASK = 1 << 10


def _bit(regno: int) -> int:
    return 1 << regno


def insn_use_def(env: Env, idx: int, series: bool = True) -> tuple[int, int]:
    """(registers read, registers written) by insns[idx]; `series`: with the throw rule."""
    insn = env.insns[idx]
    cls, dst, src = insn.cls, _bit(insn.dst), _bit(insn.src)
    if cls in (BPF_ALU, BPF_ALU64):
        if insn.op == BPF_MOV:
            return (src if insn.uses_reg_src else 0), dst
        if insn.op in (BPF_NEG, BPF_END):
            return dst, dst
        return dst | (src if insn.uses_reg_src else 0), dst
    if cls == BPF_LDX:
        return src, dst
    if cls == BPF_ST:
        return dst, 0
    if cls == BPF_STX:
        if insn.mode == BPF_ATOMIC:
            return dst | src | 1, src | 1  # fetch forms write src (cmpxchg: R0)
        return dst | src, 0
    if cls == BPF_LD:
        return 0, dst
    if cls not in (BPF_JMP, BPF_JMP32):
        return 0, 0
    if insn.is_call():
        return _call_uses(env, idx, insn, series), CALLER_SAVED_MASK
    if insn.is_exit():
        return 1, 0
    if insn.op == BPF_JA:
        return 0, 0
    return dst | (src if insn.uses_reg_src else 0), 0


def _call_uses(env: Env, idx: int, insn: Insn, series: bool) -> int:
    uses = ARGS_MASK
    if insn.is_kfunc_call():
        proto = KFUNCS_BY_ID.get(insn.imm)
        if proto is not None:
            uses = ((1 << len(proto.args)) - 1) << 1
    elif insn.is_helper_call() and insn.imm in HELPERS:
        uses = ((1 << HELPERS[insn.imm][1]) - 1) << 1
    if is_throw(insn):
        return uses | CALLEE_SAVED_MASK if series else uses
    if insn.is_pseudo_call():
        callee = env.find_subprog(idx + insn.imm + 1)
        if callee is not None:
            if series and env.subprogs[callee].is_throw_reachable:
                uses |= CALLEE_SAVED_MASK
    return uses


def successors(env: Env, idx: int, end: int) -> tuple[int, ...]:
    """The insns control may reach from insns[idx] inside its subprog."""
    insn = env.insns[idx]
    if insn.is_ld_imm64():
        return (idx + 2,) if idx + 2 < end else ()
    if insn.cls in (BPF_JMP, BPF_JMP32):
        if insn.is_exit():
            return ()  # a throw falls through, as the kernel's CFG has it
        if insn.is_jump():
            target = idx + insn.jump_offset() + 1
            return (target,) if not insn.is_cond_jump() else (idx + 1, target)
    return (idx + 1,) if idx + 1 < end else ()


def backward_fixpoint(env: Env, sub: int, use_def: Callable[[int], tuple[int, int]]) -> dict[int, int]:
    """Per insn of subprog `sub`: the bits live before it, `use | (live after & ~def)`
    iterated over the subprog's CFG until nothing changes."""
    start, end = env.subprogs[sub].start, env.subprog_end(sub)
    pcs: list[int] = []
    i = start
    while i < end:
        pcs.append(i)
        i += 2 if env.insns[i].is_ld_imm64() else 1
    uses_defs = {pc: use_def(pc) for pc in pcs}
    succ = {pc: successors(env, pc, end) for pc in pcs}
    live = dict.fromkeys(pcs, 0)
    changed = True
    while changed:
        changed = False
        for pc in reversed(pcs):
            out = 0
            for s in succ[pc]:
                out |= live[s]
            use, defs = uses_defs[pc]
            new = use | (out & ~defs)
            if new != live[pc]:
                live[pc] = new
                changed = True
    return live


def compute_live_registers(env: Env, series: bool = True) -> list[int]:
    """Bitmask of the registers live before each insn (index = insn index; R10 excluded).
    `series=False` leaves out the throw rule: mainline's answer, for comparing with it."""
    live = [0] * len(env.insns)
    for sub in range(len(env.subprogs)):
        def use_def(pc: int) -> tuple[int, int]:
            use, defs = insn_use_def(env, pc, series)
            return use & ~FP_MASK, defs

        for pc, mask in backward_fixpoint(env, sub, use_def).items():
            live[pc] = mask
    return live


def clean_verifier_state(state: VerifierState, live: list[int], insn_idx: int) -> None:
    """`clean_verifier_state`: every register dead at the state's position becomes NOT_INIT
    (R10 never): at `insn_idx` for the current frame, at the call site for a caller frame."""
    for frameno, frame in enumerate(state.frames):
        ip = state.frame_insn_idx(frameno, insn_idx)
        mask = live[ip]
        regs = frame.regs
        for regno in range(BPF_REG_10):
            if not mask >> regno & 1 and regs[regno].type != NOT_INIT:
                regs[regno] = RegState()


def program_acquires(env: Env) -> bool:
    """Does some insn call a kfunc that acquires a reference? Without one no reference can
    be held, so every descriptor entry is NULL or poison (nothing is ever released) and the
    series' throw rule (a throw reads R6-R9; they are precise there) can be left out, which
    lets states prune exactly as mainline's do."""
    for insn in env.insns:
        if insn.is_kfunc_call():
            proto = KFUNCS_BY_ID.get(insn.imm)
            if proto is None or proto.flags & KF.ACQUIRE:
                return True
    return False
