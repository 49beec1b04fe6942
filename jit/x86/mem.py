"""x86-64 encoders for the memory idioms beyond `jit.x86.encode`: sign-extending loads, the atomic
read-modify-write instructions and the cmpxchg loop of the fetching and/or/xor, and the
speculation barrier.

Same conventions as `jit.x86.encode` (registers by BPF index; BPF_REG_AX is r10 and AUX_REG r11,
both free scratch registers inside one BPF instruction), bytes exactly as the kernel's x86
JIT emits them (shared/reference/kernel-x86-jit-and-exceptions.md §1.7).
"""

from __future__ import annotations

from jit.x86.encode import (
    ALU_OPCODE,
    AUX_REG,
    X86_JNE,
    JitError,
    add_2mod,
    add_2reg,
    emit_ldx,
    emit_mov_reg,
    imm8,
    insn_suffix,
    is_imm8,
    maybe_emit_mod,
)
from verifier.isa.insn import (
    BPF_ADD,
    BPF_AND,
    BPF_B,
    BPF_CMPXCHG,
    BPF_DW,
    BPF_FETCH,
    BPF_H,
    BPF_OR,
    BPF_REG_0,
    BPF_REG_AX,
    BPF_XCHG,
    BPF_XOR,
)

# ---------------------------------------------------------------- sign-extending loads


def emit_ldsx(size: int, dst: int, src: int, off: int) -> bytes:
    """`dst = *(s8/s16/s32 *)(src + off)`: movsx r64 (0F BE / 0F BF) or movsxd (63),
    always with REX.W."""
    rex = add_2mod(0x48, src, dst)
    if size == BPF_B:
        head = bytes([rex, 0x0F, 0xBE])
    elif size == BPF_H:
        head = bytes([rex, 0x0F, 0xBF])
    else:
        head = bytes([rex, 0x63])
    return head + insn_suffix(src, dst, off)


# ---------------------------------------------------------------- atomics

# The opcode of each single-instruction atomic; the plain ALU ops reuse simple_alu_opcodes.
_RMW_OPCODE: dict[int, bytes] = {
    BPF_ADD: bytes([ALU_OPCODE[BPF_ADD]]),  # lock add [m], r
    BPF_AND: bytes([ALU_OPCODE[BPF_AND]]),  # lock and [m], r
    BPF_OR: bytes([ALU_OPCODE[BPF_OR]]),  # lock or [m], r
    BPF_XOR: bytes([ALU_OPCODE[BPF_XOR]]),  # lock xor [m], r
    BPF_ADD | BPF_FETCH: b"\x0f\xc1",  # lock xadd [m], r
    BPF_XCHG: b"\x87",  # (lock) xchg [m], r: the prefix is redundant but emitted
    BPF_CMPXCHG: b"\x0f\xb1",  # lock cmpxchg [m], r (compares with and loads into rax)
}
FETCH_LOOP_OPS = (BPF_AND | BPF_FETCH, BPF_OR | BPF_FETCH, BPF_XOR | BPF_FETCH)


def emit_atomic_rmw(op: int, size: int, dst: int, src: int, off: int) -> bytes:
    """`F0` lock, REX (W for DW), opcode, then the memory operand [dst + off] with src in
    the ModRM reg field."""
    opcode = _RMW_OPCODE.get(op)
    if opcode is None:
        raise JitError(f"bpf_jit: unknown atomic opcode {op:02x}")
    return b"\xf0" + maybe_emit_mod(dst, src, size == BPF_DW) + opcode + insn_suffix(dst, src, off)


def emit_atomic_fetch_loop(op: int, size: int, dst: int, src: int, off: int) -> bytes:
    """`src = atomic_fetch_{and,or,xor}((size *)(dst + off), src)`, which x86 has no single
    instruction for: a cmpxchg loop.

    rax is the cmpxchg accumulator, so R0 is parked in BPF_REG_AX (r10) for the duration
    and r10 stands in for R0 wherever R0 is an operand. Loop: load the old value into rax,
    compute `r11 = rax op src`, `lock cmpxchg [dst + off], r11`, and retry with `jne` while
    another writer won the race. Finally `src = old` (zero-extended for W) and rax = R0.
    """
    is64 = size == BPF_DW
    real_src = BPF_REG_AX if src == BPF_REG_0 else src
    real_dst = BPF_REG_AX if dst == BPF_REG_0 else dst
    save = emit_mov_reg(True, BPF_REG_AX, BPF_REG_0)
    loop = bytearray(emit_ldx(size, BPF_REG_0, real_dst, off))
    loop += emit_mov_reg(is64, AUX_REG, BPF_REG_0)
    loop += maybe_emit_mod(AUX_REG, real_src, is64)
    loop += bytes([ALU_OPCODE[op & ~BPF_FETCH], add_2reg(0xC0, AUX_REG, real_src)])
    loop += emit_atomic_rmw(BPF_CMPXCHG, size, real_dst, AUX_REG, off)
    back = -len(loop) - 2  # from the end of the 2-byte jne back to the load
    if not is_imm8(back):
        raise JitError(f"bpf_jit: internal error: cmpxchg loop of {len(loop)} bytes")
    loop += bytes([X86_JNE]) + imm8(back)
    restore = emit_mov_reg(is64, real_src, BPF_REG_0) + emit_mov_reg(True, BPF_REG_0, BPF_REG_AX)
    return save + bytes(loop) + restore


def emit_atomic(op: int, size: int, dst: int, src: int, off: int) -> bytes:
    """Any BPF_ATOMIC op of W or DW size."""
    if op in FETCH_LOOP_OPS:
        return emit_atomic_fetch_loop(op, size, dst, src, off)
    return emit_atomic_rmw(op, size, dst, src, off)


# ---------------------------------------------------------------- barriers


def emit_lfence() -> bytes:
    """`lfence` (0F AE E8): BPF_ST | BPF_NOSPEC, the verifier's Spectre v4 barrier."""
    return b"\x0f\xae\xe8"
