"""State comparison for pruning (`states_equal`, `regsafe`, `stacksafe`, `refsafe`, the id
map of `check_ids`): may a state reaching a prune point be dropped because an explored
state there covers it? Scalars are compared the kernel's way: an imprecise scalar of the
explored state covers any scalar; a precise one only values within its range."""

from __future__ import annotations

from verifier.check.state import (
    BPF_REG_SIZE,
    STACK_INVALID,
    STACK_MISC,
    STACK_SPILL,
    FuncState,
    RegState,
    StackSlot,
    VerifierState,
)
from verifier.regtypes import NOT_INIT, SCALAR_VALUE


class _IdMap:
    """`check_ids`: ids of the old state must map one-to-one onto ids of the current one."""

    def __init__(self) -> None:
        self.fwd: dict[int, int] = {}
        self.back: dict[int, int] = {}

    def check(self, old: int, cur: int) -> bool:
        if old == 0 or cur == 0:
            return old == cur
        if old in self.fwd:
            return self.fwd[old] == cur
        if cur in self.back:
            return False
        self.fwd[old] = cur
        self.back[cur] = old
        return True


def regsafe(old: RegState, cur: RegState, idmap: _IdMap, exact: bool) -> bool:
    """Does `old` (explored) cover `cur`? Exact mode requires equality up to id renaming."""
    if old.type == NOT_INIT and not exact:
        return True  # the explored path never relied on this register
    if old.type != cur.type:
        return False
    if old.type == NOT_INIT:
        return True
    if old.type == SCALAR_VALUE:
        if not exact and (not old.precise or old.value is None):
            return True  # imprecise: nothing relied on the value; unknown: any value
        return old.value == cur.value
    if old.off != cur.off or old.btf_id != cur.btf_id or old.frameno != cur.frameno or old.map is not cur.map:
        return False
    return idmap.check(old.id, cur.id) and idmap.check(old.ref_obj_id, cur.ref_obj_id)


def _slot_safe(old: StackSlot | None, cur: StackSlot | None, idmap: _IdMap, exact: bool) -> bool:
    o = old or StackSlot()
    c = cur or StackSlot()
    for i in range(BPF_REG_SIZE):
        ot, ct = o.slot_type[i], c.slot_type[i]
        if not exact and ot == STACK_INVALID:
            continue
        if not exact and ot == STACK_MISC and not (ct == STACK_SPILL and c.spilled_ptr.is_pointer):
            # privileged (allow_uninit_stack): MISC covers any non-pointer content. The
            # kernel lets it cover spilled pointers too; we don't (a filled pointer can fail
            # where the explored path had a scalar).
            continue
        if ot != ct:
            return False
    if o.is_spill:
        return regsafe(o.spilled_ptr, c.spilled_ptr, idmap, exact)
    return True


def _func_safe(old: FuncState, cur: FuncState, idmap: _IdMap, exact: bool) -> bool:
    if old.callsite != cur.callsite or old.subprogno != cur.subprogno:
        return False
    for o, c in zip(old.regs, cur.regs, strict=True):
        if not regsafe(o, c, idmap, exact):
            return False
    n = max(len(old.stack), len(cur.stack))
    for spi in range(n):
        o = old.stack[spi] if spi < len(old.stack) else None
        c = cur.stack[spi] if spi < len(cur.stack) else None
        if not _slot_safe(o, c, idmap, exact):
            return False
    return True


def states_equal(old: VerifierState, cur: VerifierState, exact: bool = False) -> bool:
    """`states_equal`: may the current state be pruned because `old` was explored?"""
    if cur.global_subprog_call_exception:
        # PATCH 02: the exception branch re-enters the call insn where an equivalent state
        # was just explored; it must never be pruned (nor seen as an infinite loop).
        return False
    if old.global_subprog_call_exception:
        return False  # never stored (see checker), kept as a second line of defence
    if len(old.frames) != len(cur.frames) or len(old.refs) != len(cur.refs):
        return False
    idmap = _IdMap()
    for o, c in zip(old.frames, cur.frames, strict=True):
        if not _func_safe(o, c, idmap, exact):
            return False
    # refsafe: the same references, ids consistently renamed.
    return all(idmap.check(o.id, c.id) for o, c in zip(old.refs, cur.refs, strict=True))
