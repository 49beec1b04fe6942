"""Conditional jumps (`check_cond_jmp_op`): which sides are possible (`is_branch_taken` on
scalar ranges, NULL checks of pointers, packet pointers against `data_end`), the
refinement of each side (`reg_set_min_max` on both operands, `sync_linked_regs` for
registers linked to them, `mark_ptr_or_null_regs`, `find_good_pkt_pointers` and
`mark_pkt_end`), and the precision a decided branch asks for."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from verifier.check.alu import check_reg_read
from verifier.check.env import Env
from verifier.check.precision import mark_regs_precise
from verifier.check.scalar import reg_bounds_sync, scalar_alu
from verifier.check.scalar_bounds import Scalar, is_reg_const, mark_reg_known, reg_const_value
from verifier.check.scalar_cmp import flip_opcode, is_branch_taken, regs_refine_cond_op, rev_opcode
from verifier.check.state import (
    BPF_ADD_CONST,
    BPF_ADD_CONST32,
    RegState,
    VerifierState,
    mark_ptr_or_null_regs,
    scalar,
)
from verifier.isa.insn import (
    BPF_ADD,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JMP32,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    Insn,
)
from verifier.regtypes import (
    CONST_PTR_TO_MAP,
    MEM_ALLOC,
    PTR_TO_BTF_ID,
    PTR_TO_MAP_VALUE,
    PTR_TO_PACKET,
    PTR_TO_PACKET_END,
    PTR_TO_PACKET_META,
    SCALAR_VALUE,
    base_type,
)

COND_OPS = frozenset({BPF_JEQ, BPF_JNE, BPF_JGT, BPF_JGE, BPF_JLT, BPF_JLE, BPF_JSET, BPF_JSGT,
                      BPF_JSGE, BPF_JSLT, BPF_JSLE})
AT_PKT_END, BEYOND_PKT_END = -1, -2  # `range` of a packet pointer compared against data_end
MAX_PACKET_OFF = 0xFFFF

Refine = Callable[[VerifierState, bool], None]


def reg_not_null(reg: RegState) -> bool:
    """`reg_not_null`: pointer kinds that are never NULL once not maybe-NULL (the ctx, the
    stack and packets are not among them: comparing those with 0 explores both sides)."""
    if reg.maybe_null:
        return False
    base = base_type(reg.type)
    if base == PTR_TO_BTF_ID:
        return bool(reg.type & MEM_ALLOC) and reg.ref_obj_id > 0
    return base in (PTR_TO_MAP_VALUE, CONST_PTR_TO_MAP)


def _is_pkt(reg: RegState) -> bool:
    return base_type(reg.type) in (PTR_TO_PACKET, PTR_TO_PACKET_META, PTR_TO_PACKET_END)


def is_pkt_ptr_branch_taken(dst: RegState, src: RegState, op: int) -> int:
    if base_type(src.type) == PTR_TO_PACKET_END:
        pkt = dst
    elif base_type(dst.type) == PTR_TO_PACKET_END:
        pkt, op = src, flip_opcode(op)
    else:
        return -1
    if pkt.range >= 0:
        return -1
    if op in (BPF_JLE, BPF_JGT) and pkt.range == BEYOND_PKT_END:
        return int(op == BPF_JGT)
    if op in (BPF_JLT, BPF_JGE) and pkt.range in (BEYOND_PKT_END, AT_PKT_END):
        return int(op == BPF_JGE)
    return -1


def branch_taken(dst: RegState, src: RegState, op: int, is32: bool) -> int:
    """`is_branch_taken`: 1 always taken, 0 never, -1 either."""
    if _is_pkt(dst) and _is_pkt(src) and not is32:
        return is_pkt_ptr_branch_taken(dst, src, op)
    if dst.is_pointer or src.is_pointer:
        if not src.type == SCALAR_VALUE or not is_reg_const(src, is32) or reg_const_value(src, is32) != 0:
            return -1
        if not reg_not_null(dst):
            return -1
        return {BPF_JEQ: 0, BPF_JNE: 1}.get(op, -1)
    return is_branch_taken(dst, src, op, is32)


def _linked_scalars(env: Env, state: VerifierState, bases: set[int],
                    live_only: bool) -> Iterator[tuple[int, int, int, RegState]]:
    """(frameno, 0 regno | 1 spi, n, reg) of every scalar whose link id is one of `bases`;
    with `live_only`, registers only where live (`collect_linked_regs`)."""
    for fr, frame in enumerate(state.frames):
        live = (1 << 11) - 1
        if live_only and env.live_regs:
            live = env.live_regs[state.frame_insn_idx(fr, env.insn_idx)]
        regs = [(0, n, r) for n, r in enumerate(frame.regs) if live >> n & 1]
        spills = [(1, spi, slot.spilled_ptr) for spi, slot in enumerate(frame.stack) if slot.is_spill]
        for kind, n, reg in regs + spills:
            if reg.type == SCALAR_VALUE and reg.id and reg.id & ~BPF_ADD_CONST in bases:
                yield fr, kind, n, reg


def sync_linked_regs(env: Env, state: VerifierState, known: RegState) -> None:
    """`sync_linked_regs`: registers sharing `known`'s id take its refined value (plus
    their delta for `id + off` links, added at the width of the add that made the link)."""
    for _, _, _, reg in list(_linked_scalars(env, state, {known.id & ~BPF_ADD_CONST}, live_only=True)):
        if reg is known:
            continue
        reg_id, reg_off = reg.id, reg.off
        same = reg_off == known.off and (reg_id & BPF_ADD_CONST) == (known.id & BPF_ADD_CONST)
        delta = reg_off - known.off
        _copy_into(reg, known)
        if same or (not reg_id & BPF_ADD_CONST and not known.id & BPF_ADD_CONST):
            continue
        reg.id, reg.off = reg_id, reg_off
        fake = Scalar()
        mark_reg_known(fake, delta & ((1 << 64) - 1))
        scalar_alu(reg, fake, BPF_ADD, not reg_id & BPF_ADD_CONST32)


def _copy_into(dst: RegState, src: RegState) -> None:
    for name in RegState.__slots__:  # type: ignore[attr-defined]
        setattr(dst, name, getattr(src, name))


def linked_locations(env: Env, state: VerifierState, ids: list[int]) -> tuple[tuple[int, int, int], ...]:
    """(frameno, 0 regno | 1 spi, n) of every scalar linked to these ids, for the insn's
    history record: precision of one of them is precision of all (`bt_sync_linked_regs`)."""
    bases = {i & ~BPF_ADD_CONST for i in ids if i}
    if not bases:
        return ()
    out = tuple((fr, kind, n) for fr, kind, n, _ in _linked_scalars(env, state, bases, live_only=False))
    return out if len(out) > 1 else ()


def find_good_pkt_pointers(state: VerifierState, dst: RegState, open_right: bool) -> None:
    if dst.off < 0 or (dst.off == 0 and open_right):
        return
    if dst.umax_value > MAX_PACKET_OFF or dst.umax_value + dst.off > MAX_PACKET_OFF:
        return
    new_range = dst.off + (1 if open_right else 0)
    for reg in state.all_regs():
        if reg.type == dst.type and reg.id == dst.id:
            reg.range = max(reg.range, new_range)


def mark_pkt_end(state: VerifierState, regno: int, open_range: bool) -> None:
    reg = state.cur.regs[regno]
    if reg.type == PTR_TO_PACKET:
        reg.range = BEYOND_PKT_END if open_range else AT_PKT_END


def _pkt_refine(insn: Insn, dst: RegState, src: RegState) -> Refine | None:
    """`try_match_pkt_pointers`: the refinement of a packet pointer compared with the end
    of its range (`data_end`, or `data` for a `data_meta` pointer), None if not one."""
    if not insn.uses_reg_src or insn.cls == BPF_JMP32:
        return None
    d, s = base_type(dst.type), base_type(src.type)

    def init_pkt(r: RegState, t: int) -> bool:
        return r.type == t and r.off == 0 and r.var_off == (0, 0)

    fwd = (d == PTR_TO_PACKET and s == PTR_TO_PACKET_END) or (
        d == PTR_TO_PACKET_META and init_pkt(src, PTR_TO_PACKET))
    rev = (d == PTR_TO_PACKET_END and s == PTR_TO_PACKET) or (
        init_pkt(dst, PTR_TO_PACKET) and s == PTR_TO_PACKET_META)
    op = insn.op
    if not (fwd or rev) or op not in (BPF_JGT, BPF_JLT, BPF_JGE, BPF_JLE):
        return None
    # per op and orientation: (side where pointer' is good: True = taken, open range?)
    # and the pointer whose range is settled against the end on the other side
    table = {
        (BPF_JGT, True): (False, False), (BPF_JGT, False): (True, True),
        (BPF_JLT, True): (True, True), (BPF_JLT, False): (False, False),
        (BPF_JGE, True): (False, True), (BPF_JGE, False): (True, False),
        (BPF_JLE, True): (True, False), (BPF_JLE, False): (False, True),
    }
    good_side, open_right = table[(op, fwd)]
    regno = insn.dst if fwd else insn.src

    def refine(st: VerifierState, taken: bool) -> None:
        reg = st.cur.regs[regno]
        if taken == good_side:
            find_good_pkt_pointers(st, reg, open_right)
        else:
            mark_pkt_end(st, regno, not open_right)

    return refine


def check_cond_jmp_op(env: Env, state: VerifierState, insn: Insn) -> tuple[bool, bool, Refine]:
    """Returns (taken possible, fall-through possible, refine(state, taken))."""
    op = insn.op
    if op not in COND_OPS:
        env.reject(f"invalid BPF_JMP/JMP32 opcode {op:x}")
    is32 = insn.cls == BPF_JMP32
    dst = check_reg_read(env, state, insn.dst)
    src = check_reg_read(env, state, insn.src) if insn.uses_reg_src else scalar(insn.imm & ((1 << 64) - 1))
    pred = branch_taken(dst, src, op, is32)
    if pred >= 0:
        used = [insn.dst] + ([insn.src] if insn.uses_reg_src else [])
        mark_regs_precise(env, state, [r for r in used if state.cur.regs[r].type == SCALAR_VALUE])
        return pred == 1, pred == 0, _no_refine
    ids = [r.id for r in (dst, src) if r.type == SCALAR_VALUE]
    linked = linked_locations(env, state, ids)
    if linked:
        idx, fr, _ = state.hist[-1]
        state.hist[-1] = (idx, fr, linked)
    return True, True, _refine(env, insn, dst, src, is32)


def _no_refine(state: VerifierState, taken: bool) -> None:
    return None


def _refine(env: Env, insn: Insn, dst: RegState, src: RegState, is32: bool) -> Refine:
    op, dregno, sregno = insn.op, insn.dst, insn.src
    if dst.type == SCALAR_VALUE and src.type == SCALAR_VALUE:
        fake = None if insn.uses_reg_src else src

        def refine_scalars(st: VerifierState, taken: bool) -> None:
            regs = st.cur.regs
            r1 = regs[dregno]
            r2 = regs[sregno] if fake is None else fake.copy()
            regs_refine_cond_op(r1, r2, op if taken else rev_opcode(op), is32)
            reg_bounds_sync(r1)
            reg_bounds_sync(r2)
            if fake is None and r2.id:
                sync_linked_regs(env, st, r2)
            if r1.id:
                sync_linked_regs(env, st, r1)

        return refine_scalars
    if not is32 and not insn.uses_reg_src and insn.imm == 0 and op in (BPF_JEQ, BPF_JNE) and dst.maybe_null:
        reg_id = dst.id

        def refine_null(st: VerifierState, taken: bool) -> None:
            mark_ptr_or_null_regs(st, reg_id, taken if op == BPF_JEQ else not taken)

        return refine_null
    pkt = _pkt_refine(insn, dst, src)
    return pkt if pkt is not None else _no_refine
