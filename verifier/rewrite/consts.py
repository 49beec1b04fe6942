"""Known register constants at chosen insns of the program being rewritten.

The kernel's fixups read what do_check learnt about an insn from its aux data (for
`bpf_obj_new_impl`, the struct its R1 named: `obj_new_size`, `kptr_struct_meta`). Our
checker hands over no such record, so `constants_at(insns, start, end, pcs)` recomputes
the one fact the rewrite needs: a forward constant propagation over the subprog's
control-flow graph, each register either one known constant (with the struct name an
`r1 = NAME ll` gave it) or unknown. Moves of an immediate, of an ld_imm64 value and of a
register carry constants; every other write, and every call (R0-R5), makes a register
unknown; paths join to unknown unless they agree. The lattice has two levels, so each
insn's state changes at most 2 x 11 times: the work is linear in the subprog's size."""

from __future__ import annotations

from verifier.isa.insn import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CMPXCHG,
    BPF_FETCH,
    BPF_LD,
    BPF_LDX,
    BPF_MOV,
    BPF_STX,
    Insn,
    ld_imm64_value,
)

Known = tuple[int, str | None]  # (value, struct named by the ld_imm64 that loaded it)
RegState = tuple[Known | None, ...]  # None: not a known constant
UNKNOWN: RegState = (None,) * 11


def _transfer(insns: list[Insn], pc: int, regs: RegState, type_refs: dict[int, str]) -> RegState:
    insn = insns[pc]
    out = list(regs)
    if insn.is_call():
        for r in range(6):
            out[r] = None
    elif insn.is_ld_imm64():
        known = (ld_imm64_value(insn, insns[pc + 1]), type_refs.get(pc)) if insn.src == 0 else None
        out[insn.dst] = known
    elif insn.cls in (BPF_ALU, BPF_ALU64):
        if insn.op == BPF_MOV and insn.off == 0 and insn.uses_reg_src:
            src = regs[insn.src]
            out[insn.dst] = src if insn.cls == BPF_ALU64 or src is None else (src[0] & 0xFFFFFFFF, None)
        elif insn.op == BPF_MOV and insn.off == 0:
            out[insn.dst] = (insn.imm if insn.cls == BPF_ALU64 else insn.imm & 0xFFFFFFFF, None)
        else:
            out[insn.dst] = None
    elif insn.cls == BPF_LDX:
        out[insn.dst] = None
    elif insn.cls == BPF_STX and insn.mode == BPF_ATOMIC:
        if insn.imm == BPF_CMPXCHG:
            out[0] = None
        elif insn.imm & BPF_FETCH:
            out[insn.src] = None
    elif insn.cls == BPF_LD:  # legacy packet loads: R0 written, R1-R5 clobbered
        for r in range(6):
            out[r] = None
    return tuple(out)


def _successors(insns: list[Insn], pc: int, start: int, end: int) -> list[int]:
    insn = insns[pc]
    if insn.is_exit():
        return []
    nxt = pc + (2 if insn.is_ld_imm64() else 1)
    if insn.is_jump():
        target = pc + insn.jump_offset() + 1
        succ = [target] if not insn.is_cond_jump() else [nxt, target]
    else:
        succ = [nxt]
    return [s for s in succ if start <= s < end]


def _join(a: RegState, b: RegState) -> RegState:
    return tuple(x if x == y else None for x, y in zip(a, b, strict=True))


def constants_at(
    insns: list[Insn], start: int, end: int, type_refs: dict[int, str] | None = None
) -> dict[int, RegState]:
    """The register state on entry to every insn of [start, end) reachable from start
    (an unreached insn has no entry). Arguments on entry to the subprog are unknown."""
    type_refs = type_refs or {}
    states: dict[int, RegState] = {start: UNKNOWN}
    work = [start]
    while work:
        pc = work.pop()
        out = _transfer(insns, pc, states[pc], type_refs)
        for succ in _successors(insns, pc, start, end):
            old = states.get(succ)
            new = out if old is None else _join(old, out)
            if new != old:
                states[succ] = new
                work.append(succ)
    return states
