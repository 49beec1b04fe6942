"""Lowering of BPF_ALU and BPF_ALU64 instructions (the kernel's `do_jit` ALU cases).

Zero extension of 32-bit results needs no extra code: every 32-bit x86 instruction that
writes a register clears its upper half, and the JIT always uses one for the final write
of an ALU32 destination. The only explicit zero extensions are the ones the operation
itself demands (END TO_LE 32 `mov r32, r32`, TO_LE/TO_BE 16 movzx) and the `w = w` moves
the verifier's rewrites insert, which are ordinary ALU32 moves and always emitted: the mod32
guards, and the BPF_ZEXT_REG(R0) mainline puts after every 32-bit cmpxchg because x86 leaves
rax untouched when the compare succeeds (x86's bpf_jit_needs_zext() is false, so there are
no others).

BMI2 is off by policy: shifts by a register use the push/pop rcx form (never shlx/shrx/sarx),
which is what the kernel emits when boot_cpu_has(X86_FEATURE_BMI2) is false. Unicorn's default
CPU model does advertise BMI2 (cpuid leaf 7, ebx bit 8), so a kernel booted on it would pick
the 5-byte VEX forms; the policy is pinned so that image bytes never depend on the CPU model.
Only when compiling for a real kernel whose CPU has BMI2 (`KernelHost.bmi2`, the oracle's
re-JIT) is a shift by a register other than R4 (rcx) the kernel's `shlx/shrx/sarx dst, dst, src`.
"""

from __future__ import annotations

from jit.lower_ctx import LowerCtx
from jit.x86 import alu
from jit.x86 import encode as x86
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
    BPF_REG_4,
    BPF_RSH,
    BPF_SUB,
    BPF_XOR,
    Insn,
)

_SIMPLE = (BPF_ADD, BPF_SUB, BPF_AND, BPF_OR, BPF_XOR)
_SHIFTS = (BPF_LSH, BPF_RSH, BPF_ARSH)
_DIV_MOD = (BPF_DIV, BPF_MOD)
_END_WIDTHS = (16, 32, 64)
# Valid MOVSX source widths (insn.off) per class: ALU32 has no s32 form.
_MOVSX_BITS = {True: (8, 16, 32), False: (8, 16)}


def lower_alu(ctx: LowerCtx, k: int, insn: Insn) -> tuple[bytes, int]:
    """One ALU/ALU64 insn. `off` selects the variants: movsx widths, sdiv/smod (off 1)."""
    is64 = insn.cls == BPF_ALU64
    op, dst, src, imm = insn.op, insn.dst, insn.src, insn.imm
    by_reg = insn.uses_reg_src
    if insn.off != 0:
        return _lower_alu_off(ctx, k, insn, is64), 1
    if op == BPF_MOV:
        if by_reg:
            return x86.emit_mov_reg(is64, dst, src), 1
        return x86.emit_mov_imm32(is64, dst, imm), 1
    if op in _SIMPLE:
        if by_reg:
            return x86.emit_alu(op, is64, dst, src), 1
        return x86.emit_alu_imm(op, is64, dst, imm), 1
    if op == BPF_MUL:
        if by_reg:
            return x86.emit_mul(is64, dst, src), 1
        return x86.emit_mul_imm(is64, dst, imm), 1
    if op in _SHIFTS:
        if by_reg and ctx.bmi2 and src != BPF_REG_4:
            return x86.emit_shiftx(op, is64, dst, src), 1
        if by_reg:
            return x86.emit_shift_reg(op, is64, dst, src), 1
        return x86.emit_shift_imm(op, is64, dst, imm), 1
    if op == BPF_NEG and not by_reg:
        return x86.emit_neg(is64, dst), 1
    if op in _DIV_MOD:
        return alu.emit_div_mod(op == BPF_MOD, is64, False, dst, src if by_reg else None, imm), 1
    if op == BPF_END:
        return _lower_end(ctx, k, insn, is64), 1
    raise ctx.unsupported(k)


def _lower_alu_off(ctx: LowerCtx, k: int, insn: Insn, is64: bool) -> bytes:
    """MOVSX (MOV X with off 8/16/32) and SDIV/SMOD (DIV/MOD with off 1). Everything
    else with a nonzero off (arena casts, percpu moves) is not lowered."""
    op, off = insn.op, insn.off
    if op == BPF_MOV and insn.uses_reg_src and off in _MOVSX_BITS[is64]:
        return alu.emit_movsx_reg(off, is64, insn.dst, insn.src)
    if op in _DIV_MOD and off == 1:
        src = insn.src if insn.uses_reg_src else None
        return alu.emit_div_mod(op == BPF_MOD, is64, True, insn.dst, src, insn.imm)
    raise ctx.unsupported(k)


def _lower_end(ctx: LowerCtx, k: int, insn: Insn, is64: bool) -> bytes:
    """ALU END TO_BE and ALU64 BSWAP byte-swap; ALU END TO_LE only truncates."""
    width = insn.imm
    if width not in _END_WIDTHS:
        raise ctx.unsupported(k)
    if is64:
        if insn.uses_reg_src:
            raise ctx.unsupported(k)  # ALU64 | END | X does not exist
        return alu.emit_bswap(width, insn.dst)
    if insn.uses_reg_src:
        return alu.emit_bswap(width, insn.dst)
    return alu.emit_to_le(width, insn.dst)
