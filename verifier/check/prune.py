"""State comparison for pruning (`states_equal`, `regsafe`, `stacksafe`, `refsafe`, the id
map of `check_ids`): may a state reaching a prune point be dropped because an explored
state there covers it? Scalars are compared the kernel's way: an imprecise scalar of the
explored state covers any scalar; a precise one only values within its range."""

from __future__ import annotations

from verifier.check.state import (
    BPF_ADD_CONST,
    BPF_REG_SIZE,
    STACK_INVALID,
    STACK_MISC,
    STACK_SPILL,
    FuncState,
    RegState,
    StackSlot,
    VerifierState,
    scalar,
)
from verifier.check.tnum import tnum_in
from verifier.regtypes import (
    NOT_INIT,
    PTR_TO_MAP_VALUE,
    PTR_TO_MEM,
    PTR_TO_PACKET,
    PTR_TO_PACKET_META,
    SCALAR_VALUE,
    base_type,
)


class _IdMap:
    """`check_ids`: ids of the old state must map one-to-one onto ids of the current one."""

    def __init__(self) -> None:
        self.fwd: dict[int, int] = {}
        self.back: dict[int, int] = {}
        self.tmp = 0

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

    def check_scalar(self, old: int, cur: int) -> bool:
        """`check_scalar_ids`: an unlinked scalar gets a fresh id of its own, so two scalars
        linked in the old state must be linked in the current one, not the converse."""
        if not old:
            self.tmp -= 1
            old = self.tmp
        if not cur:
            self.tmp -= 1
            cur = self.tmp
        return self.check(old, cur)


def range_within(old: RegState, cur: RegState) -> bool:
    return (old.umin_value <= cur.umin_value and old.umax_value >= cur.umax_value
            and old.smin_value <= cur.smin_value and old.smax_value >= cur.smax_value
            and old.u32_min_value <= cur.u32_min_value and old.u32_max_value >= cur.u32_max_value
            and old.s32_min_value <= cur.s32_min_value and old.s32_max_value >= cur.s32_max_value)


def regs_exact(old: RegState, cur: RegState, idmap: _IdMap) -> bool:
    """Equal but for the ids, which must map consistently."""
    same = (old.type == cur.type and old.off == cur.off and old.var_off == cur.var_off
            and old.btf_id == cur.btf_id and old.frameno == cur.frameno and old.range == cur.range
            and old.map is cur.map
            and range_within(old, cur) and range_within(cur, old))
    return same and idmap.check(old.id, cur.id) and idmap.check(old.ref_obj_id, cur.ref_obj_id)


def regsafe(old: RegState, cur: RegState, idmap: _IdMap, exact: bool) -> bool:
    """Does `old` (explored) cover `cur`? Exact mode requires equality up to id renaming."""
    if exact:
        return regs_exact(old, cur, idmap)
    if old.type == NOT_INIT:
        return True  # the explored path never relied on this register
    if old.type != cur.type:
        return False
    base = base_type(old.type)
    if old.type == SCALAR_VALUE:
        if not old.precise:
            return True  # nothing relied on the value
        if (old.id & BPF_ADD_CONST) != (cur.id & BPF_ADD_CONST):
            return False
        if old.id & BPF_ADD_CONST and old.off != cur.off:
            return False
        ids_ok = idmap.check_scalar(old.id, cur.id)
        return ids_ok and range_within(old, cur) and tnum_in(old.var_off, cur.var_off)
    if base in (PTR_TO_MAP_VALUE, PTR_TO_MEM):
        same = old.off == cur.off and old.btf_id == cur.btf_id and old.map is cur.map
        return (same and range_within(old, cur) and tnum_in(old.var_off, cur.var_off)
                and idmap.check(old.id, cur.id) and idmap.check(old.ref_obj_id, cur.ref_obj_id))
    if base in (PTR_TO_PACKET, PTR_TO_PACKET_META):
        if old.range < 0 or cur.range < 0:
            if old.range != cur.range:
                return False
        elif old.range > cur.range:
            return False
        if old.off != cur.off or not idmap.check(old.id, cur.id):
            return False
        return range_within(old, cur) and tnum_in(old.var_off, cur.var_off)
    return regs_exact(old, cur, idmap)


def _scalar_for_slot(slot: StackSlot) -> RegState | None:
    """`scalar_reg_for_stack`: a slot read as one scalar (an 8-byte scalar spill, or all
    MISC/INVALID, which reads as an unknown scalar), else None."""
    if all(t == STACK_SPILL for t in slot.slot_type) and slot.spilled_ptr.type == SCALAR_VALUE:
        return slot.spilled_ptr
    if all(t in (STACK_MISC, STACK_INVALID) for t in slot.slot_type):
        return _UNBOUND
    return None


_UNBOUND = scalar()


def _slot_safe(old: StackSlot | None, cur: StackSlot | None, idmap: _IdMap, exact: bool) -> bool:
    o = old or StackSlot()
    c = cur or StackSlot()
    if exact:
        if o.slot_type != c.slot_type:
            return False
        return not o.is_spill or regs_exact(o.spilled_ptr, c.spilled_ptr, idmap)
    if all(t == STACK_INVALID for t in o.slot_type):
        return True
    if any(t == STACK_SPILL for t in o.slot_type) or any(t == STACK_SPILL for t in c.slot_type):
        ro, rc = _scalar_for_slot(o), _scalar_for_slot(c)
        if ro is not None and rc is not None and not (ro is _UNBOUND and rc.is_pointer):
            return regsafe(ro, rc, idmap, exact)
    for i in range(BPF_REG_SIZE):
        ot, ct = o.slot_type[i], c.slot_type[i]
        if ot == STACK_INVALID:
            continue
        if ot == STACK_MISC and not (ct == STACK_SPILL and c.spilled_ptr.is_pointer):
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
