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
- `apply_edits(state, edits)`: both of the above for a whole batch at once. The kernel
  relinks the whole program for every patch, which makes a pass quadratic (a program of
  n divisions by a register: n guards, n relinks of n insns); here a pass collects its
  edits and relinks once, through an old -> new pc map built in one scan. `patch_insn` and
  `remove_insns` are one-edit batches. `PatchState` counts the relink passes and the insns
  they visited, so tests can hold the cost linear without a clock.

Errors are `VerifierError("verifier internal error: ...")`: a rewrite that breaks an
ld_imm64 pair, overflows a 16-bit jump offset or orphans a live call is a bug, not a
property of the user's program."""

from __future__ import annotations

from collections.abc import Iterator
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
    relink_passes: int = 0  # apply_edits calls: each visits every insn once
    insns_relinked: int = 0  # insns those passes visited

    def apply(self, edits: list[Edit]) -> None:
        apply_edits(self, edits)

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


@dataclass(frozen=True)
class Edit:
    """One change of a batch: slots [off, off + old_len) become `new` (empty: removed).

    `anchor` is the index in `new` of the insn that plays the replaced insn's role."""

    off: int
    old_len: int
    new: tuple[Insn, ...] = ()
    anchor: int = 0

    @property
    def end(self) -> int:
        return self.off + self.old_len


def _second_slots(insns: list[Insn]) -> set[int]:
    """Every slot that is the second half of an ld_imm64 (one scan)."""
    return {pc + 1 for pc, insn in iter_insns(insns) if insn.is_ld_imm64()}


def _validate(state: PatchState, edits: list[Edit]) -> None:
    n = len(state.insns)
    second = _second_slots(state.insns)
    prev_end = 0
    for e in edits:
        if e.old_len <= 0 or e.off < prev_end or e.end > n:
            raise VerifierError(f"verifier internal error: edit [{e.off}, {e.end}) overlaps another or "
                                "lies outside the program")
        if e.new and not 0 <= e.anchor < len(e.new):
            raise VerifierError("verifier internal error: patch anchor outside the patch")
        for pc in (e.off, e.end):
            if pc in second:
                what = "patch" if e.new else "removal"
                raise VerifierError(f"verifier internal error: {what} splits the ld_imm64 at insn {pc - 1}")
        prev_end = e.end


def apply_edits(state: PatchState, edits: list[Edit]) -> None:
    """Apply a batch of non-overlapping edits at once, relinking every branch, subprog start
    and descriptor pc in one pass over the program (the cost is linear in its size, however
    many edits the batch holds).

    Pcs map as each edit applied alone would map them: a pc inside an edit goes to where
    the edit now begins (into a patch: its first insn; into a removed range: the first
    insn after it), any other pc moves by the growth of the edits before it. Subprogs whose
    every slot is removed go with their fdtab; a surviving call or pseudo-func reference to
    one is an internal error. Descriptors inside a removed range are deleted; one on a
    patched insn moves to the patch's anchor."""
    if not edits:
        return
    edits = sorted(edits, key=lambda e: e.off)
    _validate(state, edits)
    old, n = state.insns, len(state.insns)
    pc_map = [0] * n
    edit_at: list[Edit | None] = [None] * n
    removed = [False] * n
    delta, i = 0, 0
    for e in edits:
        for pc in range(i, e.off):
            pc_map[pc] = pc + delta
        new_off = e.off + delta
        for pc in range(e.off, e.end):
            pc_map[pc] = new_off
            edit_at[pc] = e
            removed[pc] = not e.new
        delta += len(e.new) - e.old_len
        i = e.end
    for pc in range(i, n):
        pc_map[pc] = pc + delta
    total = delta

    def new_pc(pc: int) -> int:
        if pc < 0:
            return pc
        return pc_map[pc] if pc < n else pc + total

    nsub = len(state.subprogs)
    gone = {i for i in range(nsub)
            if state.subprog_end(i) > state.subprogs[i].start
            and all(removed[state.subprogs[i].start : state.subprog_end(i)])}  # fmt: skip
    if 0 in gone:
        raise VerifierError("verifier internal error: removing the main program")
    gone_starts = {state.subprogs[i].start for i in gone}

    insns: list[Insn] = []
    aux: list[InsnAux] = []
    pc = 0
    while pc < n:
        insn, e = old[pc], edit_at[pc]
        if e is not None:
            if e.new:
                patch = list(e.new)
                target = branch_target(insn, pc)
                if patch[e.anchor] == insn and target is not None:
                    patch[e.anchor] = retarget(insn, pc_map[pc] + e.anchor, new_pc(target))
                fresh = [InsnAux(seen=state.aux[pc].seen) for _ in patch]
                fresh[e.anchor] = state.aux[pc]
                insns.extend(patch)
                aux.extend(fresh)
            pc = e.end
            continue
        width = 2 if insn.is_ld_imm64() else 1
        target = branch_target(insn, pc)
        if target is not None:
            if (insn.is_pseudo_call() or insn.is_pseudo_func()) and target in gone_starts:
                raise VerifierError(f"verifier internal error: insn {pc} refers to a removed subprog")
            insn = retarget(insn, pc_map[pc], new_pc(target))
        insns.append(insn)
        insns.extend(old[pc + 1 : pc + width])
        aux.extend(state.aux[pc : pc + width])
        pc += width
    state.relink_passes += 1
    state.insns_relinked += n

    subprogs = [sp for i, sp in enumerate(state.subprogs) if i not in gone]
    for sp in subprogs:
        sp.start = new_pc(sp.start)
        kept = []
        for desc in sp.fdtab.descs:
            e = edit_at[desc.pc] if 0 <= desc.pc < n else None
            if e is not None and not e.new:
                continue
            desc.pc = pc_map[e.off] + e.anchor if e is not None else new_pc(desc.pc)
            kept.append(desc)
        sp.fdtab.descs[:] = kept
    state.insns, state.aux, state.subprogs = insns, aux, subprogs


def patch_insn(
    state: PatchState, off: int, new_insns: list[Insn] | tuple[Insn, ...], anchor: int = 0
) -> None:
    """Replace the insn at `off` (both slots of an ld_imm64) by `new_insns`.

    `anchor` is the index in `new_insns` of the insn that plays the replaced insn's role:
    its aux data and any descriptor at `off` go there, and if it is the replaced insn itself
    and branches, it is re-linked to keep its target (the kernel leaves that to callers).
    Other branches inside `new_insns` are taken as given (relative to their own position);
    every branch outside the patch keeps its target. Several patches are one `apply_edits`."""
    state.apply([patch_edit(state, off, new_insns, anchor)])


def patch_edit(
    state: PatchState, off: int, new_insns: list[Insn] | tuple[Insn, ...], anchor: int = 0
) -> Edit:
    """The `Edit` replacing the insn at `off` (both slots of an ld_imm64) by `new_insns`."""
    if not new_insns:
        raise VerifierError("verifier internal error: empty patch")
    if not 0 <= off < len(state.insns):
        raise VerifierError(f"verifier internal error: patch at insn {off} outside the program")
    old_len = 2 if state.insns[off].is_ld_imm64() else 1
    return Edit(off, old_len, tuple(new_insns), anchor)


def remove_insns(state: PatchState, off: int, cnt: int) -> None:
    """Delete slots [off, off + cnt) (`verifier_remove_insns`); see `apply_edits`."""
    if cnt <= 0:
        return
    if off < 0 or off + cnt > len(state.insns):
        raise VerifierError(f"verifier internal error: removing [{off}, {off + cnt}) outside the program")
    state.apply([Edit(off, cnt)])


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
