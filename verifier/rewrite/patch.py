"""Instruction patching with pc adjustment: the mutable working state of the rewrite passes.

The kernel rewrites a verified program in place (`bpf_patch_insn_data`,
`verifier_remove_insns`) and, in the series' patch 06, keeps every frame-descriptor pc valid
across both. This module owns the equivalent for Python:

- `PatchState`: the program being rewritten: slots, per-insn aux data (`InsnAux`: `seen`,
  the loaded pc, the struct an ld_imm64 names), and the subprogs (`WorkSubprog`, each with
  its own `FdTab`, pcs absolute as in the series until the JIT).
- `patch_insn(state, off, new_insns)`: replace one insn by a sequence. Every branch, pseudo
  call and pseudo-func ld_imm64 outside the patch is re-linked to the same target (a target
  equal to `off` lands on the first patched insn, as in the kernel's adjust_jmp_off),
  subprog starts after `off` move, and descriptor pcs after `off` move by the growth. A
  descriptor *at* `off` moves to `off + anchor`; the kernel leaves it at the patch start
  (anchor 0), which is only right when the patched insn stays first.
- `remove_insns(state, off, cnt)`: delete a range. Branches into the range land on the first
  insn after it, subprogs lying entirely inside it are dropped with their fdtab, descriptors
  inside it are deleted and later ones move down. The series' loop read `desc[-1]` after
  deleting descriptor 0; here descriptors are filtered, never deleted while indexed.
- `append_subprog(state, ...)`: add a hidden subprog at the end (`add_hidden_subprog`).

Errors are `VerifierError("verifier internal error: ...")`: a rewrite that breaks an
ld_imm64 pair, overflows a 16-bit jump offset or orphans a live call is a bug, not a
property of the user's program."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from verifier.errors import VerifierError
from verifier.isa.insn import BPF_JA, BPF_JMP32, Insn
from verifier.program import FdTab, FrameDesc

S16_MIN, S16_MAX = -(1 << 15), (1 << 15) - 1
S32_MIN, S32_MAX = -(1 << 31), (1 << 31) - 1
GOTOL_CODE = BPF_JMP32 | BPF_JA


@dataclass
class InsnAux:
    """Per-slot side data that travels with its insn (`bpf_insn_aux_data`)."""

    seen: bool = False
    orig_idx: int | None = None  # pc in the loaded program; None for inserted insns
    type_ref: str | None = None  # struct named by this ld_imm64 (Program.type_refs)


@dataclass
class WorkSubprog:
    """A subprog while rewriting: start moves with patches, end is the next start."""

    name: str
    start: int
    kind: str
    linkage: str = "static"
    stack_depth: int = 0
    hidden: bool = False
    fdtab: FdTab = field(default_factory=FdTab)


@dataclass
class PatchState:
    """The program being rewritten. `subprogs` stay ordered by start."""

    insns: list[Insn]
    aux: list[InsnAux]
    subprogs: list[WorkSubprog]

    @classmethod
    def build(
        cls,
        insns: list[Insn],
        subprogs: list[WorkSubprog],
        seen: set[int] | None = None,
        type_refs: dict[int, str] | None = None,
    ) -> PatchState:
        """Working copy: the second slot of an ld_imm64 is seen when its first slot is, and
        fdtabs are copied so the caller's descriptors are never mutated."""
        seen = seen if seen is not None else set(range(len(insns)))
        type_refs = type_refs or {}
        aux = [InsnAux(pc in seen, pc, type_refs.get(pc)) for pc in range(len(insns))]
        for pc, _ in iter_insns(insns):
            if insns[pc].is_ld_imm64() and pc + 1 < len(aux):
                aux[pc + 1].seen = aux[pc].seen
        subs = [replace(sp, fdtab=copy_fdtab(sp.fdtab)) for sp in subprogs]
        return cls(list(insns), aux, subs)

    def subprog_end(self, idx: int) -> int:
        nxt = idx + 1
        return self.subprogs[nxt].start if nxt < len(self.subprogs) else len(self.insns)

    def subprog_of(self, pc: int) -> int:
        for i in range(len(self.subprogs) - 1, -1, -1):
            if self.subprogs[i].start <= pc:
                return i
        raise VerifierError(f"verifier internal error: pc {pc} is before every subprog")


def copy_fdtab(tab: FdTab) -> FdTab:
    return FdTab([FrameDesc(d.pc, list(d.regs), list(d.stack)) for d in tab.descs])


def iter_insns(insns: list[Insn], start: int = 0, end: int | None = None) -> Iterator[tuple[int, Insn]]:
    """(pc, insn) of every instruction in [start, end), skipping ld_imm64 second slots."""
    end = len(insns) if end is None else end
    pc = start
    while pc < end:
        insn = insns[pc]
        yield pc, insn
        pc += 2 if insn.is_ld_imm64() else 1


def is_second_slot(insns: list[Insn], pc: int) -> bool:
    """Whether slot pc is the second half of an ld_imm64 (scans from 0: slot parity)."""
    for p, _ in iter_insns(insns, 0, pc + 1):
        if p == pc:
            return False
    return True


def branch_target(insn: Insn, pc: int) -> int | None:
    """Absolute slot that a jump, pseudo call or pseudo-func ld_imm64 at pc refers to."""
    if insn.is_jump():
        return pc + insn.jump_offset() + 1
    if insn.is_pseudo_call() or insn.is_pseudo_func():
        return pc + insn.imm + 1
    return None


def retarget(insn: Insn, pc: int, target: int) -> Insn:
    """The same insn placed at pc, referring to `target`."""
    rel = target - pc - 1
    if insn.is_jump() and insn.code != GOTOL_CODE:
        if not S16_MIN <= rel <= S16_MAX:
            raise VerifierError(f"verifier internal error: jump at insn {pc} out of range after patching")
        return insn if rel == insn.off else insn.replace(off=rel)
    if not S32_MIN <= rel <= S32_MAX:
        raise VerifierError(f"verifier internal error: offset at insn {pc} out of range after patching")
    return insn if rel == insn.imm else insn.replace(imm=rel)


def _relink(insns: list[Insn], skip: range, new_pc: Callable[[int], int]) -> list[Insn]:
    """Old insns outside `skip`, each re-linked so it keeps pointing at the same insn."""
    out = list(insns)
    for pc, insn in iter_insns(insns):
        if pc in skip:
            continue
        target = branch_target(insn, pc)
        if target is not None:
            out[pc] = retarget(insn, new_pc(pc), new_pc(target))
    return out


def _check_boundary(state: PatchState, pc: int, what: str) -> None:
    if 0 < pc < len(state.insns) and is_second_slot(state.insns, pc):
        raise VerifierError(f"verifier internal error: {what} splits the ld_imm64 at insn {pc - 1}")


def patch_insn(
    state: PatchState, off: int, new_insns: list[Insn] | tuple[Insn, ...], anchor: int = 0
) -> None:
    """Replace the insn at `off` (both slots of an ld_imm64) by `new_insns`.

    `anchor` is the index in `new_insns` of the insn that plays the replaced insn's role:
    its aux data and any descriptor at `off` go there, and if it is the replaced insn itself
    and branches, it is re-linked to keep its target (the kernel leaves that to callers).
    Other branches inside `new_insns` are taken as given (relative to their own position);
    every branch outside the patch keeps its target."""
    if not new_insns:
        raise VerifierError("verifier internal error: empty patch")
    if not 0 <= anchor < len(new_insns):
        raise VerifierError("verifier internal error: patch anchor outside the patch")
    _check_boundary(state, off, "patch")
    old_len = 2 if state.insns[off].is_ld_imm64() else 1
    delta = len(new_insns) - old_len

    def new_pc(pc: int) -> int:
        if pc < off:
            return pc
        if pc < off + old_len:
            return off  # jumps to the patched insn enter the patch at its start
        return pc + delta

    relinked = _relink(state.insns, range(off, off + old_len), new_pc)
    new_insns = list(new_insns)
    orig_insn = state.insns[off]
    orig_target = branch_target(orig_insn, off)
    if new_insns[anchor] == orig_insn and orig_target is not None:
        new_insns[anchor] = retarget(orig_insn, off + anchor, new_pc(orig_target))
    state.insns = [*relinked[:off], *new_insns, *relinked[off + old_len :]]
    orig = state.aux[off]
    fresh = [InsnAux(seen=orig.seen) for _ in new_insns]
    fresh[anchor] = orig
    state.aux = [*state.aux[:off], *fresh, *state.aux[off + old_len :]]
    for sp in state.subprogs:
        if sp.start > off:
            sp.start += delta
        for desc in sp.fdtab.descs:
            if desc.pc == off:
                desc.pc = off + anchor
            elif desc.pc > off:
                desc.pc += delta


def remove_insns(state: PatchState, off: int, cnt: int) -> None:
    """Delete slots [off, off + cnt) (`verifier_remove_insns`)."""
    if cnt <= 0:
        return
    end = off + cnt
    if off < 0 or end > len(state.insns):
        raise VerifierError(f"verifier internal error: removing [{off}, {end}) outside the program")
    _check_boundary(state, off, "removal")
    _check_boundary(state, end, "removal")
    removed = range(off, end)
    nsub = len(state.subprogs)
    gone = [i for i in range(nsub) if off <= state.subprogs[i].start and state.subprog_end(i) <= end]
    if 0 in gone:
        raise VerifierError("verifier internal error: removing the main program")
    gone_starts = {state.subprogs[i].start for i in gone}
    for pc, insn in iter_insns(state.insns):
        if pc in removed or not (insn.is_pseudo_call() or insn.is_pseudo_func()):
            continue
        if branch_target(insn, pc) in gone_starts:
            raise VerifierError(f"verifier internal error: insn {pc} refers to a removed subprog")

    def new_pc(pc: int) -> int:
        if pc < off:
            return pc
        return off if pc < end else pc - cnt  # into the range: the first insn after it

    relinked = _relink(state.insns, removed, new_pc)
    state.insns = [*relinked[:off], *relinked[end:]]
    del state.aux[off:end]
    # Subprogs removed entirely take their fdtab with them (patch 06).
    state.subprogs = [sp for i, sp in enumerate(state.subprogs) if i not in gone]
    for sp in state.subprogs:
        if off <= sp.start < end:
            sp.start = off  # its front was removed; it now begins after the range
        elif sp.start >= end:
            sp.start -= cnt
        kept = [d for d in sp.fdtab.descs if not off <= d.pc < end]
        for desc in kept:
            if desc.pc >= end:
                desc.pc -= cnt
        sp.fdtab.descs[:] = kept


def append_subprog(
    state: PatchState, name: str, insns: list[Insn], kind: str, hidden: bool = True
) -> int:
    """Append a subprog after the last insn (`add_hidden_subprog`); returns its index.

    No existing insn moves, so no branch or descriptor needs adjusting. No descriptors are
    ever generated for hidden subprogs."""
    start = len(state.insns)
    state.insns.extend(insns)
    state.aux.extend(InsnAux(seen=True) for _ in insns)
    state.subprogs.append(WorkSubprog(name, start, kind, hidden=hidden))
    return len(state.subprogs) - 1
