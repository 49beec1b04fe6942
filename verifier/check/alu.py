"""ALU instructions and conditional jumps (`check_alu_op`, `adjust_*_min_max_vals`,
`check_cond_jmp_op`, `is_branch_taken`) on the small scalar model of verifier.check.state:
known constants fold exactly (32-bit ops zero-extend), everything else is unknown;
pointers move by constant offsets only; NULL checks split maybe-NULL pointers."""

from __future__ import annotations

from collections.abc import Callable

from verifier.check.env import Env
from verifier.check.precision import mark_regs_precise
from verifier.check.state import U64_MASK, RegState, VerifierState, mark_ptr_or_null_regs, scalar
from verifier.isa.insn import (
    BPF_ADD,
    BPF_ALU64,
    BPF_AND,
    BPF_ARSH,
    BPF_DIV,
    BPF_END,
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
)
from verifier.regtypes import NOT_INIT, SCALAR_VALUE, base_type, reg_type_str

ALU_OP_TEXT = {
    BPF_ADD: "+=", BPF_SUB: "-=", BPF_MUL: "*=", BPF_DIV: "/=", BPF_OR: "|=", BPF_AND: "&=",
    BPF_LSH: "<<=", BPF_RSH: ">>=", BPF_NEG: "neg", BPF_MOD: "%=", BPF_XOR: "^=", BPF_MOV: "=",
    BPF_ARSH: "s>>=", BPF_END: "endian",
}
U32_MASK = 0xFFFFFFFF


def signed_value(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) & 1 else v


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


def alu_fold(op: int, a: int, b: int, bits: int, signed: bool) -> int:
    """BPF semantics of one ALU op on known values (div by 0 = 0, mod by 0 = dst)."""
    mask = (1 << bits) - 1
    a, b = a & mask, b & mask
    if op == BPF_ADD:
        r = a + b
    elif op == BPF_SUB:
        r = a - b
    elif op == BPF_MUL:
        r = a * b
    elif op in (BPF_DIV, BPF_MOD):
        if b == 0:
            r = 0 if op == BPF_DIV else a
        elif signed:
            sa, sb = signed_value(a, bits), signed_value(b, bits)
            q = abs(sa) // abs(sb) * (1 if (sa < 0) == (sb < 0) else -1)
            r = q if op == BPF_DIV else sa - q * sb
        else:
            r = a // b if op == BPF_DIV else a % b
    elif op == BPF_OR:
        r = a | b
    elif op == BPF_AND:
        r = a & b
    elif op == BPF_XOR:
        r = a ^ b
    elif op == BPF_LSH:
        r = a << (b & (bits - 1))
    elif op == BPF_RSH:
        r = a >> (b & (bits - 1))
    elif op == BPF_ARSH:
        r = signed_value(a, bits) >> (b & (bits - 1))
    else:
        raise ValueError(op)
    return r & mask


def _endian(insn: Insn, v: int) -> int:
    width = insn.imm
    v &= (1 << width) - 1
    swap = insn.cls == BPF_ALU64 or insn.code & BPF_TO_BE  # host is little-endian
    if swap:
        v = int.from_bytes(v.to_bytes(width // 8, "little"), "big")
    return v


def check_alu_op(env: Env, state: VerifierState, insn: Insn) -> None:
    regs = state.cur.regs
    op, is64 = insn.op, insn.cls == BPF_ALU64
    bits = 64 if is64 else 32
    if op not in ALU_OP_TEXT:
        env.reject(f"invalid BPF_ALU opcode {op:x}")
    if op in (BPF_END, BPF_NEG):
        dst = check_reg_read(env, state, insn.dst)
        check_reg_write(env, insn.dst)
        if dst.is_pointer:
            env.reject(f"R{insn.dst} pointer arithmetic with {ALU_OP_TEXT[op]} operator prohibited")
        if dst.value is None:
            regs[insn.dst] = scalar()
        elif op == BPF_NEG:
            regs[insn.dst] = scalar(-dst.value & ((1 << bits) - 1))
        else:
            if insn.imm not in (16, 32, 64):
                env.reject(f"invalid BPF_END imm {insn.imm}")
            regs[insn.dst] = scalar(_endian(insn, dst.value))
        return
    if op == BPF_MOV:
        _check_mov(env, state, insn, bits)
        return
    src = check_reg_read(env, state, insn.src) if insn.uses_reg_src else None  # the kernel reads src first
    dst = check_reg_read(env, state, insn.dst)
    check_reg_write(env, insn.dst)
    if src is None:
        if op in (BPF_DIV, BPF_MOD) and insn.imm == 0:
            env.reject("div by zero")
        if op in (BPF_LSH, BPF_RSH, BPF_ARSH) and not 0 <= insn.imm < bits:
            env.reject(f"invalid shift {insn.imm}")
        src = scalar(insn.imm if is64 else insn.imm & U32_MASK)
    if dst.is_pointer or src.is_pointer:
        if insn.uses_reg_src and SCALAR_VALUE in (dst.type, src.type):
            # the offset's value becomes part of a pointer: it is relied on
            mark_regs_precise(env, state, [insn.src if src.type == SCALAR_VALUE else insn.dst])
        regs[insn.dst] = _ptr_alu(env, insn, dst, src, is64)
        return
    if dst.value is None or src.value is None or not _safe_to_compute(op, src.value, bits):
        regs[insn.dst] = scalar()
        return
    signed = insn.off == 1 and op in (BPF_DIV, BPF_MOD)
    regs[insn.dst] = scalar(alu_fold(op, dst.value, src.value, bits, signed))


def _safe_to_compute(op: int, src: int, bits: int) -> bool:
    """`is_safe_to_compute_dst_reg_range`: the kernel computes a result's value for add,
    sub, mul and the bitwise ops, and for shifts by a constant below the width; div and mod
    (signed or not) and wider shifts give an unknown scalar, so their constants are not
    folded here either (folding them would prune branches the kernel explores, and the
    rewritten code would differ)."""
    if op in (BPF_LSH, BPF_RSH, BPF_ARSH):
        return src < bits
    return op not in (BPF_DIV, BPF_MOD)


def _check_mov(env: Env, state: VerifierState, insn: Insn, bits: int) -> None:
    regs = state.cur.regs
    src = check_reg_read(env, state, insn.src) if insn.uses_reg_src else None  # src before dst, as the kernel
    check_reg_write(env, insn.dst)
    if src is None:
        regs[insn.dst] = scalar(insn.imm if bits == 64 else insn.imm & U32_MASK)
        return
    if insn.off not in (0, 8, 16) + ((32,) if bits == 64 else ()):
        env.reject(f"invalid movsx offset {insn.off}")
    if insn.off:  # movsx
        if src.is_pointer:
            env.reject(f"R{insn.src} sign-extension of pointer prohibited")
        if src.value is None:
            regs[insn.dst] = scalar()
        else:
            regs[insn.dst] = scalar(signed_value(src.value, insn.off) & ((1 << bits) - 1))
        return
    if bits == 64:
        regs[insn.dst] = src.copy()
    elif src.is_pointer:
        regs[insn.dst] = scalar()  # partial copy of a pointer: allowed when privileged
    else:
        regs[insn.dst] = scalar(None if src.value is None else src.value & U32_MASK)


def _ptr_alu(env: Env, insn: Insn, dst: RegState, src: RegState, is64: bool) -> RegState:
    """`adjust_ptr_min_max_vals` restricted to constant offsets."""
    op, d = insn.op, insn.dst
    if not is64:
        env.reject(f"R{d} 32-bit pointer arithmetic prohibited")
    if op in (BPF_AND, BPF_OR, BPF_XOR):
        env.reject(f"R{d} bitwise operator {ALU_OP_TEXT[op]} on pointer prohibited")
    if op not in (BPF_ADD, BPF_SUB):
        env.reject(f"R{d} pointer arithmetic with {ALU_OP_TEXT[op]} operator prohibited")
    if dst.is_pointer and src.is_pointer:
        if op == BPF_SUB and base_type(dst.type) == base_type(src.type):
            return scalar()  # pointer difference: a scalar (privileged)
        env.reject(f"R{d} pointer {ALU_OP_TEXT[op]} pointer prohibited")
    ptr, off = (dst, src) if dst.is_pointer else (src, dst)
    if not dst.is_pointer and op == BPF_SUB:
        env.reject(f"R{d} tried to subtract pointer from scalar")
    if ptr.maybe_null:
        env.reject(f"R{d} pointer arithmetic on {reg_type_str(ptr.type)} prohibited, null-check it first")
    if off.value is None:
        # deviation: the kernel tracks variable offsets; this model supports constants only
        env.reject(f"R{d} variable offset pointer arithmetic is not supported")
    delta = signed_value(off.value, 64)
    res = ptr.copy()
    res.off = ptr.off + (delta if op == BPF_ADD else -delta)
    if abs(res.off) >= 1 << 29:
        env.reject(f"R{d} pointer offset {res.off} is not allowed")
    return res


# Conditional jumps ------------------------------------------------------------------------


def _cmp(op: int, a: int, b: int, bits: int) -> bool:
    sa, sb = signed_value(a, bits), signed_value(b, bits)
    table: dict[int, bool] = {
        BPF_JEQ: a == b, BPF_JNE: a != b, BPF_JGT: a > b, BPF_JGE: a >= b, BPF_JLT: a < b,
        BPF_JLE: a <= b, BPF_JSET: bool(a & b), BPF_JSGT: sa > sb, BPF_JSGE: sa >= sb,
        BPF_JSLT: sa < sb, BPF_JSLE: sa <= sb,
    }
    return table[op]


Refine = Callable[[VerifierState, bool], None]


def _no_refine(state: VerifierState, taken: bool) -> None:
    return None


def check_cond_jmp_op(env: Env, state: VerifierState, insn: Insn) -> tuple[bool, bool, Refine]:
    """Returns (taken possible, fall-through possible, refine(state, taken))."""
    op = insn.op
    if op not in (BPF_JEQ, BPF_JNE, BPF_JGT, BPF_JGE, BPF_JLT, BPF_JLE, BPF_JSET,
                  BPF_JSGT, BPF_JSGE, BPF_JSLT, BPF_JSLE):
        env.reject(f"invalid BPF_JMP/JMP32 opcode {op:x}")
    is32 = insn.cls == BPF_JMP32
    bits = 32 if is32 else 64
    dst = check_reg_read(env, state, insn.dst)
    if insn.uses_reg_src:
        src = check_reg_read(env, state, insn.src)
    else:
        src = scalar(insn.imm & U32_MASK if is32 else insn.imm)
    if dst.type == SCALAR_VALUE and src.type == SCALAR_VALUE:
        if dst.value is not None and src.value is not None:
            taken = _cmp(op, dst.value & ((1 << bits) - 1), src.value & ((1 << bits) - 1), bits)
            return taken, not taken, _no_refine
        return True, True, _scalar_refine(insn, dst, src, is32)
    # A pointer compared with NULL.
    ptr, other = (dst, src) if dst.is_pointer else (src, dst)
    if not is32 and op in (BPF_JEQ, BPF_JNE) and other.is_known_zero:
        if not ptr.maybe_null:
            return op == BPF_JNE, op == BPF_JEQ, _no_refine  # a valid pointer is never NULL
        reg_id = ptr.id

        def refine(st: VerifierState, taken: bool) -> None:
            is_null = taken if op == BPF_JEQ else not taken
            mark_ptr_or_null_regs(st, reg_id, is_null)

        return True, True, refine
    return True, True, _no_refine  # pointer comparisons: allowed when privileged, no refinement


def _scalar_refine(insn: Insn, dst: RegState, src: RegState, is32: bool) -> Refine:
    """`if rX == K`: rX is K on the equal side (64-bit compares only)."""
    if is32 or insn.op not in (BPF_JEQ, BPF_JNE):
        return _no_refine
    if dst.value is None and src.value is not None:
        regno, value = insn.dst, src.value
    elif src.value is None and dst.value is not None and insn.uses_reg_src:
        regno, value = insn.src, dst.value
    else:
        return _no_refine

    def refine(st: VerifierState, taken: bool) -> None:
        if taken == (insn.op == BPF_JEQ):
            st.cur.regs[regno] = scalar(value & U64_MASK)

    return refine
