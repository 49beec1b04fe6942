"""ALU instructions (`check_alu_op`, `adjust_reg_min_max_vals`, `adjust_ptr_min_max_vals`,
`check_reg_sane_offset`) on the kernel's scalar domain (verifier.check.scalar*): every
ALU64/ALU32 op, moves and sign-extending moves with the scalar ids of linked registers
(`assign_scalar_id_before_mov`, `BPF_ADD_CONST`), and pointer arithmetic with constant or
variable offsets, as a privileged (CAP_BPF + CAP_PERFMON) program may do it."""

from __future__ import annotations

from verifier.check.env import Env
from verifier.check.precision import mark_regs_precise
from verifier.check.scalar import (
    mark_reg_known,
    reg_bounds_sync,
    scalar_alu,
    scalar_alu_forks,
    scalar_end,
    scalar_mov32,
    scalar_movsx,
    scalar_neg,
)
from verifier.check.scalar_bounds import (
    S32_MAX,
    S32_MIN,
    S64_MAX,
    S64_MIN,
    mark_reg32_known,
    mark_reg32_unbounded,
    s64,
)
from verifier.check.state import (
    BPF_ADD_CONST,
    BPF_ADD_CONST32,
    BPF_ADD_CONST64,
    U64_MASK,
    RegState,
    VerifierState,
    scalar,
)
from verifier.check.tnum import tnum_add, tnum_is_const, tnum_sub
from verifier.isa.insn import (
    BPF_ADD,
    BPF_ALU64,
    BPF_AND,
    BPF_ARSH,
    BPF_DIV,
    BPF_END,
    BPF_LSH,
    BPF_MOD,
    BPF_MOV,
    BPF_MUL,
    BPF_NEG,
    BPF_OR,
    BPF_REG_10,
    BPF_RSH,
    BPF_SUB,
    BPF_TO_BE,
    BPF_XOR,
    Insn,
    sext,
)
from verifier.regtypes import (
    CONST_PTR_TO_MAP,
    NOT_INIT,
    PTR_TO_FLOW_KEYS,
    PTR_TO_PACKET,
    PTR_TO_PACKET_META,
    PTR_TO_STACK,
    SCALAR_VALUE,
    BaseType,
    base_type,
    reg_type_str,
)

ALU_OP_TEXT = {
    BPF_ADD: "+=", BPF_SUB: "-=", BPF_MUL: "*=", BPF_DIV: "/=", BPF_OR: "|=", BPF_AND: "&=",
    BPF_LSH: "<<=", BPF_RSH: ">>=", BPF_NEG: "neg", BPF_MOD: "%=", BPF_XOR: "^=", BPF_MOV: "=",
    BPF_ARSH: "s>>=", BPF_END: "endian",
}
U32_MASK = 0xFFFFFFFF
BPF_MAX_VAR_OFF = 1 << 29
PTR_ARITH_OK = frozenset(int(t) for t in (
    BaseType.PTR_TO_CTX, BaseType.PTR_TO_MAP_VALUE, BaseType.PTR_TO_MAP_KEY, BaseType.PTR_TO_STACK,
    BaseType.PTR_TO_PACKET_META, BaseType.PTR_TO_PACKET, BaseType.PTR_TO_TP_BUFFER, BaseType.PTR_TO_BTF_ID,
    BaseType.PTR_TO_MEM, BaseType.PTR_TO_BUF, BaseType.PTR_TO_FUNC, BaseType.CONST_PTR_TO_DYNPTR,
))  # base types any offset may be added to


def check_reg_read(env: Env, state: VerifierState, regno: int) -> RegState:
    """`check_reg_arg(SRC_OP)`."""
    if regno > BPF_REG_10:
        env.reject(f"R{regno} is invalid")
    reg = state.cur.regs[regno]
    if reg.type == NOT_INIT:
        env.reject(f"R{regno} !read_ok")
    return reg


def check_reg_write(env: Env, regno: int) -> None:
    """`check_reg_arg(DST_OP)`."""
    if regno > BPF_REG_10:
        env.reject(f"R{regno} is invalid")
    if regno == BPF_REG_10:
        env.reject("frame pointer is read only")


def get_reg_width(reg: RegState) -> int:
    """`get_reg_width`: bits needed for the largest unsigned value."""
    return reg.umax_value.bit_length()


def assign_scalar_id_before_mov(env: Env, reg: RegState) -> None:
    """Link a scalar to the copy about to be made: give it an id (a constant needs none);
    a register already linked with a delta cannot be linked again."""
    if reg.type != SCALAR_VALUE:
        return
    if reg.id & BPF_ADD_CONST:
        reg.id, reg.off = 0, 0
    if not reg.id and not tnum_is_const(reg.var_off):
        reg.id = env.new_id()


def check_alu_op(env: Env, state: VerifierState, insn: Insn) -> VerifierState | None:
    """One ALU insn; returns a state to explore from this same insn (`maybe_fork_scalars`)
    or None."""
    regs = state.cur.regs
    op, alu64 = insn.op, insn.cls == BPF_ALU64
    if op not in ALU_OP_TEXT:
        env.reject(f"invalid BPF_ALU opcode {op:x}")
    if op in (BPF_END, BPF_NEG):
        dst = check_reg_read(env, state, insn.dst)
        check_reg_write(env, insn.dst)
        if dst.is_pointer:
            env.reject(f"R{insn.dst} pointer arithmetic with {ALU_OP_TEXT[op]} operator prohibited")
        if op == BPF_END and insn.imm not in (16, 32, 64):
            env.reject(f"invalid BPF_END imm {insn.imm}")
        res = dst.copy()
        res.precise = False
        if not (op == BPF_END and insn.imm == 64 and insn.cls != BPF_ALU64 and not insn.code & BPF_TO_BE):
            res.id, res.off = 0, 0  # only le64 (a no-op) keeps the register's id
        if op == BPF_NEG:
            scalar_neg(res, alu64)
        else:
            scalar_end(res, insn)
        regs[insn.dst] = res
        return
    if op == BPF_MOV:
        check_mov(env, state, insn, alu64)
        return
    src = check_reg_read(env, state, insn.src) if insn.uses_reg_src else None  # the kernel reads src first
    dst = check_reg_read(env, state, insn.dst)
    check_reg_write(env, insn.dst)
    if src is None:
        bits = 64 if alu64 else 32
        if op in (BPF_DIV, BPF_MOD) and insn.imm == 0:
            env.reject("div by zero")
        if op in (BPF_LSH, BPF_RSH, BPF_ARSH) and not 0 <= insn.imm < bits:
            env.reject(f"invalid shift {insn.imm}")
        src = scalar(insn.imm & U64_MASK)  # the kernel's fake register: the imm sign-extended
    if dst.is_pointer or src.is_pointer:
        regs[insn.dst] = _pointer_alu(env, state, insn, dst, src, alu64)
        return
    res = dst.copy()
    res.precise = False
    fork = None
    if scalar_alu_forks(res, src, op, alu64):
        # 6.18 splits `x &= K` / `x |= K` on an x in [-1, 0]: the other path redoes this
        # insn with x = 0, this one goes on with x = -1
        fork = state.copy()
        zero, ones = fork.cur.regs[insn.dst], res
        if alu64:
            mark_reg_known(zero, 0)
            mark_reg_known(ones, U64_MASK)
        else:
            mark_reg32_known(zero, 0)
            mark_reg32_known(ones, U32_MASK)
    wide_before = bool(res.umax_value >> 32)
    scalar_alu(res, src, op, alu64)
    _link_after_alu(res, src, op, alu64, wide_before)
    regs[insn.dst] = res
    return fork


def _link_after_alu(res: RegState, src: RegState, op: int, alu64: bool, wide_before: bool) -> None:
    """`rX += K` / `rX -= K` keeps rX linked to its copies with the delta (`BPF_ADD_CONST`);
    any other op breaks the link, so no refinement of one register reaches the others
    wrongly. A 32-bit add keeps it only for a value that fit in 32 bits before."""
    const = tnum_is_const(src.var_off) if alu64 else not src.var_off.mask & U32_MASK
    if op in (BPF_ADD, BPF_SUB) and res.id and const:
        val = src.var_off.value if alu64 else src.var_off.value & U32_MASK
        off = sext(val, 32)
        broken = (
            (alu64 and not S32_MIN <= s64(val) <= S32_MAX)
            or (not alu64 and (res.id & BPF_ADD_CONST64 or wide_before))
            or (op == BPF_SUB and off == S32_MIN)
            or res.id & BPF_ADD_CONST
        )
        if not broken:
            res.id |= BPF_ADD_CONST64 if alu64 else BPF_ADD_CONST32
            res.off = off if op == BPF_ADD else -off
            return
    res.id, res.off = 0, 0


def check_mov(env: Env, state: VerifierState, insn: Insn, alu64: bool) -> None:
    """BPF_MOV: `rD = rS` (copies and links scalars), `rD = (sN)rS`, `wD = wS`, immediates."""
    regs = state.cur.regs
    src = check_reg_read(env, state, insn.src) if insn.uses_reg_src else None  # src before dst, as the kernel
    check_reg_write(env, insn.dst)
    if src is None:
        res = scalar(insn.imm & (U64_MASK if alu64 else U32_MASK))
        res.frameno = regs[insn.dst].frameno  # `__mark_reg_known` leaves frameno as it was
        regs[insn.dst] = res
        return
    if insn.off not in (0, 8, 16) + ((32,) if alu64 else ()):
        env.reject(f"invalid movsx offset {insn.off}")
    if insn.off:
        if src.is_pointer:
            env.reject(f"R{insn.src} sign-extension of pointer prohibited")
        no_sext = src.umax_value < 1 << (insn.off - 1)
        if no_sext:
            assign_scalar_id_before_mov(env, src)
        res = src.copy()
        if not no_sext:
            res.id, res.off = 0, 0
        res.precise = False
        scalar_movsx(res, src, insn.off, alu64)
        regs[insn.dst] = res
        return
    if alu64:
        assign_scalar_id_before_mov(env, src)
        regs[insn.dst] = src.copy()
        regs[insn.dst].precise = False
        return
    if src.is_pointer:
        regs[insn.dst] = scalar()  # a partial copy of a pointer: allowed when privileged
        return
    fits = get_reg_width(src) <= 32
    if fits:
        assign_scalar_id_before_mov(env, src)
    res = src.copy()
    res.precise = False
    if not fits:
        res.id, res.off = 0, 0
    scalar_mov32(res, src)
    regs[insn.dst] = res


# Pointer arithmetic ------------------------------------------------------------------------


def _pointer_alu(env: Env, state: VerifierState, insn: Insn, dst: RegState, src: RegState,
                 alu64: bool) -> RegState:
    """`adjust_reg_min_max_vals` when a pointer is involved."""
    op, d = insn.op, insn.dst
    if dst.is_pointer and src.is_pointer:
        if op == BPF_SUB:
            return scalar()  # pointer - pointer: an unknown scalar (privileged)
        env.reject(f"R{d} pointer {ALU_OP_TEXT[op]} pointer prohibited")
    if insn.uses_reg_src:
        # the offset's value becomes part of a pointer: it is relied on
        mark_regs_precise(env, state, [insn.src if src.type == SCALAR_VALUE else insn.dst])
    if dst.is_pointer:
        return adjust_ptr_min_max_vals(env, insn, dst, src, alu64, dst_is_ptr=True)
    return adjust_ptr_min_max_vals(env, insn, src, dst, alu64, dst_is_ptr=False)


def check_reg_sane_offset(env: Env, reg: RegState, ptr_type: int) -> None:
    val = s64(reg.var_off.value)
    if -BPF_MAX_VAR_OFF < reg.smin_value < BPF_MAX_VAR_OFF and -BPF_MAX_VAR_OFF < reg.off < BPF_MAX_VAR_OFF \
            and (reg.var_off.mask or -BPF_MAX_VAR_OFF < val < BPF_MAX_VAR_OFF):
        return  # the common case, without building the message text
    name = reg_type_str(ptr_type)
    if tnum_is_const(reg.var_off) and (val >= BPF_MAX_VAR_OFF or val <= -BPF_MAX_VAR_OFF):
        env.reject(f"math between {name} pointer and {val} is not allowed")
    if reg.off >= BPF_MAX_VAR_OFF or reg.off <= -BPF_MAX_VAR_OFF:
        env.reject(f"{name} pointer offset {reg.off} is not allowed")
    if reg.smin_value == S64_MIN:
        env.reject(f"math between {name} pointer and register with unbounded min value is not allowed")
    if reg.smin_value >= BPF_MAX_VAR_OFF or reg.smin_value <= -BPF_MAX_VAR_OFF:
        env.reject(f"value {reg.smin_value} makes {name} pointer be out of bounds")


def _add_overflows(a: int, b: int) -> bool:
    return not S64_MIN <= a + b <= S64_MAX


def adjust_ptr_min_max_vals(env: Env, insn: Insn, ptr: RegState, off: RegState, alu64: bool,
                            dst_is_ptr: bool) -> RegState:
    """`ptr op off` for a scalar `off`; the result (a pointer, or an unknown scalar)."""
    op, d = insn.op, insn.dst
    known = tnum_is_const(off.var_off)
    smin, smax, umin, umax = off.smin_value, off.smax_value, off.umin_value, off.umax_value
    if (known and (smin != smax or umin != umax)) or smin > smax or umin > umax:
        return scalar()  # bounds from a dead branch: taint the result
    if not alu64:
        if op == BPF_SUB:
            return scalar()
        env.reject(f"R{d} 32-bit pointer arithmetic prohibited")
    if ptr.maybe_null:
        env.reject(f"R{d} pointer arithmetic on {reg_type_str(ptr.type)} prohibited, null-check it first")
    base = base_type(ptr.type)
    ok = base in PTR_ARITH_OK or (base == PTR_TO_FLOW_KEYS and known) or (
        base == CONST_PTR_TO_MAP and known and smin == 0 and op == BPF_ADD)
    if not ok:
        env.reject(f"R{d} pointer arithmetic on {reg_type_str(ptr.type)} prohibited")
    check_reg_sane_offset(env, off, ptr.type)
    check_reg_sane_offset(env, ptr, ptr.type)
    res = ptr.copy()
    if not dst_is_ptr:
        # `scalar += pointer`: the kernel fills the scalar register with the pointer's type,
        # id, offsets and bounds but not its frameno, which stays the scalar's (usually 0:
        # a stack pointer made so in a subprog is taken to point into main's stack)
        res.frameno = off.frameno
    mark_reg32_unbounded(res)
    if op == BPF_ADD:
        if known and S32_MIN <= ptr.off + smin <= S32_MAX:
            res.off = ptr.off + smin
        else:
            _add_variable(env, res, ptr, off)
    elif op == BPF_SUB:
        if not dst_is_ptr:
            env.reject(f"R{d} tried to subtract pointer from scalar")
        if base == PTR_TO_STACK:
            env.reject(f"R{d} subtraction from stack pointer prohibited")
        if known and S32_MIN <= ptr.off - smin <= S32_MAX:
            res.off = ptr.off - smin
        else:
            _sub_variable(env, res, ptr, off)
    elif op in (BPF_AND, BPF_OR, BPF_XOR):
        env.reject(f"R{d} bitwise operator {ALU_OP_TEXT[op]} on pointer prohibited")
    else:
        env.reject(f"R{d} pointer arithmetic with {ALU_OP_TEXT[op]} operator prohibited")
    check_reg_sane_offset(env, res, ptr.type)
    reg_bounds_sync(res)
    return res


def _add_variable(env: Env, res: RegState, ptr: RegState, off: RegState) -> None:
    if _add_overflows(ptr.smin_value, off.smin_value) or _add_overflows(ptr.smax_value, off.smax_value):
        res.smin_value, res.smax_value = S64_MIN, S64_MAX
    else:
        res.smin_value, res.smax_value = ptr.smin_value + off.smin_value, ptr.smax_value + off.smax_value
    if ptr.umin_value + off.umin_value > U64_MASK or ptr.umax_value + off.umax_value > U64_MASK:
        res.umin_value, res.umax_value = 0, U64_MASK
    else:
        res.umin_value, res.umax_value = ptr.umin_value + off.umin_value, ptr.umax_value + off.umax_value
    res.var_off = tnum_add(ptr.var_off, off.var_off)
    if base_type(ptr.type) in (PTR_TO_PACKET, PTR_TO_PACKET_META):
        res.id, res.range = env.new_id(), 0  # a new base: no range checked yet


def _sub_variable(env: Env, res: RegState, ptr: RegState, off: RegState) -> None:
    if _add_overflows(ptr.smin_value, -off.smax_value) or _add_overflows(ptr.smax_value, -off.smin_value):
        res.smin_value, res.smax_value = S64_MIN, S64_MAX
    else:
        res.smin_value, res.smax_value = ptr.smin_value - off.smax_value, ptr.smax_value - off.smin_value
    if ptr.umin_value < off.umax_value:
        res.umin_value, res.umax_value = 0, U64_MASK
    else:
        res.umin_value, res.umax_value = ptr.umin_value - off.umax_value, ptr.umax_value - off.umin_value
    res.var_off = tnum_sub(ptr.var_off, off.var_off)
    if base_type(ptr.type) in (PTR_TO_PACKET, PTR_TO_PACKET_META):
        res.id = env.new_id()
        if off.smin_value < 0:
            res.range = 0

