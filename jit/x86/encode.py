"""x86-64 encoder ladder: the register map, REX/ModRM helpers and one tiny `emit_*` per idiom.

Every function returns the exact bytes the Linux x86-64 BPF JIT (arch/x86/net/bpf_jit_comp.c)
emits for the same idiom, so each byte can be explained from
shared/reference/kernel-x86-jit-and-exceptions.md §1.2/§1.7. Registers are named by their
BPF number (R0..R10, BPF_REG_AX = 11) plus four JIT-internal indexes below; nothing here knows
about BPF instructions, only about x86 operands. Compares, jumps, calls and the frame
pieces live in `jit.x86.flow`; div/mod, movsx and byte swaps in `jit.x86.alu`; sign-extending
loads, atomics and lfence in `jit.x86.mem`.
"""

from __future__ import annotations

import struct

from verifier.errors import BpfUnwindError
from verifier.isa.insn import (
    BPF_ADD,
    BPF_AND,
    BPF_ARSH,
    BPF_B,
    BPF_DW,
    BPF_H,
    BPF_LSH,
    BPF_OR,
    BPF_REG_1,
    BPF_REG_2,
    BPF_REG_4,
    BPF_REG_FP,
    BPF_RSH,
    BPF_SUB,
    BPF_W,
    BPF_XOR,
)


class JitError(BpfUnwindError):
    """The JIT cannot translate the program (unsupported insn, missing call target, no
    convergence) or an internal invariant broke; the message names subprog and insn."""


# JIT-internal register indexes, after BPF_REG_AX (11), as in the kernel's reg2hex[].
AUX_REG = 12  # r11: scratch of the shift/div sequences
X86_REG_R9 = 13  # r9: sixth C argument
X86_REG_R12 = 14  # r12: saved by the exception boundary
X86_REG_RSP = 15  # rsp: only for the frame moves of the exception callback prologue

# Hardware register number (0..15) of every index above: R0 rax, R1 rdi, R2 rsi, R3 rdx,
# R4 rcx, R5 r8, R6 rbx, R7 r13, R8 r14, R9 r15, R10 rbp, AX r10, AUX r11, r9, r12, rsp.
_HW = (0, 7, 6, 2, 1, 8, 3, 13, 14, 15, 5, 10, 11, 9, 12, 4)
X86_NAMES = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")

# simple_alu_opcodes[]: the reg-reg opcode of ADD..XOR and the ModRM base of the shift group.
ALU_OPCODE = {BPF_ADD: 0x01, BPF_SUB: 0x29, BPF_AND: 0x21, BPF_OR: 0x09, BPF_XOR: 0x31}
SHIFT_MODRM = {BPF_LSH: 0xE0, BPF_RSH: 0xE8, BPF_ARSH: 0xF8}
# The /x ModRM base and the rax short-form opcode of `op r/m, imm`.
_ALU_IMM_MODRM = {BPF_ADD: 0xC0, BPF_SUB: 0xE8, BPF_AND: 0xE0, BPF_OR: 0xC8, BPF_XOR: 0xF0}
_ALU_IMM_RAX = {BPF_ADD: 0x05, BPF_SUB: 0x2D, BPF_AND: 0x25, BPF_OR: 0x0D, BPF_XOR: 0x35}

# Short-form condition opcodes (`7x rel8`); the near form is `0F (7x + 0x10) rel32`.
X86_JB, X86_JAE, X86_JE, X86_JNE, X86_JBE, X86_JA = 0x72, 0x73, 0x74, 0x75, 0x76, 0x77
X86_JL, X86_JGE, X86_JLE, X86_JG = 0x7C, 0x7D, 0x7E, 0x7F

# x86_nops[n]: the recommended multi-byte NOPs; emit_nops uses chunks of at most 8.
NOPS: tuple[bytes, ...] = (
    b"",
    b"\x90",
    b"\x66\x90",
    b"\x0f\x1f\x00",
    b"\x0f\x1f\x40\x00",
    b"\x0f\x1f\x44\x00\x00",
    b"\x66\x0f\x1f\x44\x00\x00",
    b"\x0f\x1f\x80\x00\x00\x00\x00",
    b"\x0f\x1f\x84\x00\x00\x00\x00\x00",
)
ASM_NOP_MAX = 8
NOP5 = NOPS[5]
NOP3 = NOPS[3]


# ---------------------------------------------------------------- register predicates


def hw(reg: int) -> int:
    """x86 register number (0..15) of a BPF/JIT register index."""
    return _HW[reg]


def reg2hex(reg: int) -> int:
    """Low three bits of the x86 register number: what goes into ModRM/opcode fields."""
    return _HW[reg] & 7


def is_ereg(reg: int) -> bool:
    """r8..r15: needs REX.B (r/m operand) or REX.R (reg operand)."""
    return _HW[reg] >= 8


def is_ereg_8l(reg: int) -> bool:
    """Registers whose low byte needs some REX prefix: the eregs plus dil, sil and bpl."""
    return is_ereg(reg) or reg in (BPF_REG_1, BPF_REG_2, BPF_REG_FP)


def is_axreg(reg: int) -> bool:
    return _HW[reg] == 0


def is_imm8(value: int) -> bool:
    return -128 <= value <= 127


def is_imm8_jmp_offset(value: int) -> bool:
    """Short-jump window: the kernel stops at +123 to avoid a je/jmp size ping-pong."""
    return -128 <= value <= 123


def is_simm32(value: int) -> bool:
    return -(1 << 31) <= value < (1 << 31)


def is_uimm32(value: int) -> bool:
    return 0 <= value < (1 << 32)


# ---------------------------------------------------------------- REX / ModRM / immediates


def add_1mod(byte: int, reg: int) -> int:
    """REX byte with B set when `reg` (the r/m or opcode-embedded operand) is extended."""
    return byte | 1 if is_ereg(reg) else byte


def add_2mod(byte: int, rm: int, reg: int) -> int:
    """REX byte: B for the r/m operand, R for the ModRM reg operand."""
    return add_1mod(byte, rm) | (4 if is_ereg(reg) else 0)


def add_1reg(byte: int, reg: int) -> int:
    return byte + reg2hex(reg)


def add_2reg(byte: int, rm: int, reg: int) -> int:
    """ModRM: `byte` carries mod (C0 direct, 40 disp8, 80 disp32), then r/m and reg."""
    return byte + reg2hex(rm) + (reg2hex(reg) << 3)


def maybe_emit_mod(rm: int, reg: int, is64: bool) -> bytes:
    """REX.W|B|R for 64-bit ops; for 32-bit ops 0x40|B|R only if some operand needs it."""
    if is64:
        return bytes([add_2mod(0x48, rm, reg)])
    if is_ereg(rm) or is_ereg(reg):
        return bytes([add_2mod(0x40, rm, reg)])
    return b""


def maybe_emit_1mod(reg: int, is64: bool) -> bytes:
    if is64:
        return bytes([add_1mod(0x48, reg)])
    return b"\x41" if is_ereg(reg) else b""


def imm8(value: int) -> bytes:
    return struct.pack("<B", value & 0xFF)


def imm16(value: int) -> bytes:
    return struct.pack("<H", value & 0xFFFF)


def imm32(value: int) -> bytes:
    return struct.pack("<I", value & 0xFFFFFFFF)


def imm64(value: int) -> bytes:
    return struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF)


def insn_suffix(ptr: int, val: int, off: int) -> bytes:
    """Memory operand [ptr + off]: always disp8 or disp32, never mod=00, never a SIB."""
    if hw(ptr) & 7 == 4:
        raise JitError(f"bpf_jit: internal error: {X86_NAMES[hw(ptr)]} as a base needs a SIB")
    if is_imm8(off):
        return bytes([add_2reg(0x40, ptr, val)]) + imm8(off)
    return bytes([add_2reg(0x80, ptr, val)]) + imm32(off)


# ---------------------------------------------------------------- moves


def emit_nops(length: int) -> bytes:
    out = bytearray()
    while length > 0:
        chunk = min(length, ASM_NOP_MAX)
        out += NOPS[chunk]
        length -= chunk
    return bytes(out)


def emit_mov_reg(is64: bool, dst: int, src: int) -> bytes:
    """`mov dst, src`: the 64-bit form vanishes when dst == src, the 32-bit form always
    stays because it zero-extends."""
    if is64:
        if dst == src:
            return b""
        return bytes([add_2mod(0x48, dst, src), 0x89, add_2reg(0xC0, dst, src)])
    rex = bytes([add_2mod(0x40, dst, src)]) if is_ereg(dst) or is_ereg(src) else b""
    return rex + bytes([0x89, add_2reg(0xC0, dst, src)])


def emit_mov_imm32(sign_propagate: bool, dst: int, imm: int) -> bytes:
    """Load a 32-bit immediate: sign-extending `mov r64, simm32` for negative 64-bit values,
    `xor r32, r32` for zero, else the zero-extending `mov r32, imm32`."""
    imm &= 0xFFFFFFFF
    if sign_propagate and imm & 0x80000000:
        return bytes([add_1mod(0x48, dst), 0xC7, add_1reg(0xC0, dst)]) + imm32(imm)
    if imm == 0:
        rex = bytes([add_2mod(0x40, dst, dst)]) if is_ereg(dst) else b""
        return rex + bytes([0x31, add_2reg(0xC0, dst, dst)])
    rex = bytes([add_1mod(0x40, dst)]) if is_ereg(dst) else b""
    return rex + bytes([add_1reg(0xB8, dst)]) + imm32(imm)


def emit_mov_imm64(dst: int, value: int) -> bytes:
    """ld_imm64: u32 -> `mov r32`, s32 -> sign-extending mov, anything else -> movabs."""
    value &= 0xFFFFFFFFFFFFFFFF
    if is_uimm32(value):
        return emit_mov_imm32(False, dst, value)
    signed = value - (1 << 64) if value >> 63 else value
    if is_simm32(signed):
        return emit_mov_imm32(True, dst, value)
    return bytes([add_1mod(0x48, dst), add_1reg(0xB8, dst)]) + imm64(value)


# ---------------------------------------------------------------- ALU


def emit_alu(op: int, is64: bool, dst: int, src: int) -> bytes:
    """ADD/SUB/AND/OR/XOR reg, reg (`op r/m, reg`, the MR forms)."""
    return maybe_emit_mod(dst, src, is64) + bytes([ALU_OPCODE[op], add_2reg(0xC0, dst, src)])


def emit_alu_imm(op: int, is64: bool, dst: int, imm: int) -> bytes:
    """ADD/SUB/AND/OR/XOR with an immediate: `83 /x ib`, the rax short form, or `81 /x id`."""
    rex = maybe_emit_1mod(dst, is64)
    if is_imm8(imm):
        return rex + bytes([0x83, add_1reg(_ALU_IMM_MODRM[op], dst)]) + imm8(imm)
    if is_axreg(dst):
        return rex + bytes([_ALU_IMM_RAX[op]]) + imm32(imm)
    return rex + bytes([0x81, add_1reg(_ALU_IMM_MODRM[op], dst)]) + imm32(imm)


def emit_mul(is64: bool, dst: int, src: int) -> bytes:
    """`imul dst, src` (0F AF, the reg operand is the destination)."""
    return maybe_emit_mod(src, dst, is64) + bytes([0x0F, 0xAF, add_2reg(0xC0, src, dst)])


def emit_mul_imm(is64: bool, dst: int, imm: int) -> bytes:
    """`imul dst, dst, imm8/imm32`."""
    rex = maybe_emit_mod(dst, dst, is64)
    if is_imm8(imm):
        return rex + bytes([0x6B, add_2reg(0xC0, dst, dst)]) + imm8(imm)
    return rex + bytes([0x69, add_2reg(0xC0, dst, dst)]) + imm32(imm)


def emit_neg(is64: bool, dst: int) -> bytes:
    return maybe_emit_1mod(dst, is64) + bytes([0xF7, add_1reg(0xD8, dst)])


def emit_shift_imm(op: int, is64: bool, dst: int, imm: int) -> bytes:
    """`shl/shr/sar dst, imm`: `D1 /x` for a count of 1, else `C1 /x ib`."""
    rex = maybe_emit_1mod(dst, is64)
    if imm == 1:
        return rex + bytes([0xD1, add_1reg(SHIFT_MODRM[op], dst)])
    return rex + bytes([0xC1, add_1reg(SHIFT_MODRM[op], dst)]) + imm8(imm)


def emit_shift_cl(op: int, is64: bool, dst: int) -> bytes:
    """`shl/shr/sar dst, cl`."""
    return maybe_emit_1mod(dst, is64) + bytes([0xD3, add_1reg(SHIFT_MODRM[op], dst)])


def emit_shift_reg(op: int, is64: bool, dst: int, src: int) -> bytes:
    """Shift by a register without BMI2: the count must be in cl, so rcx (R4) is saved on
    the stack around the shift, or parked in r11 when R4 itself is the destination."""
    if src == BPF_REG_4:
        return emit_shift_cl(op, is64, dst)
    out = bytearray()
    shifted = dst
    if dst == BPF_REG_4:
        out += emit_mov_reg(True, AUX_REG, dst)
        shifted = AUX_REG
    else:
        out += emit_push(BPF_REG_4)
    out += emit_mov_reg(True, BPF_REG_4, src)
    out += emit_shift_cl(op, is64, shifted)
    if dst == BPF_REG_4:
        out += emit_mov_reg(True, dst, AUX_REG)
    else:
        out += emit_pop(BPF_REG_4)
    return bytes(out)


# The VEX `pp` field of shlx (66), sarx (F3) and shrx (F2).
_SHIFTX_PP = {BPF_LSH: 1, BPF_ARSH: 2, BPF_RSH: 3}


def emit_shiftx(op: int, is64: bool, dst: int, src: int) -> bytes:
    """BMI2 `shlx/sarx/shrx dst, dst, src`: a three-byte VEX prefix (map 0F38, W = 64-bit,
    vvvv = the count register, inverted), opcode F7, ModRM with dst as both reg and rm."""
    d, c = hw(dst), hw(src)
    ext = 0x80 if d < 8 else 0  # inverted REX.R; REX.X is always inverted-clear
    byte1 = ext | 0x40 | (0x20 if d < 8 else 0) | 0x02
    byte2 = (0x80 if is64 else 0) | ((~c & 0xF) << 3) | _SHIFTX_PP[op]
    return bytes([0xC4, byte1, byte2, 0xF7, 0xC0 | (d & 7) << 3 | (d & 7)])


def emit_push(reg: int) -> bytes:
    return (b"\x41" if is_ereg(reg) else b"") + bytes([add_1reg(0x50, reg)])


def emit_pop(reg: int) -> bytes:
    return (b"\x41" if is_ereg(reg) else b"") + bytes([add_1reg(0x58, reg)])


# ---------------------------------------------------------------- loads and stores


def emit_ldx(size: int, dst: int, src: int, off: int) -> bytes:
    """`dst = *(size *)(src + off)`: movzx for B/H (always REX.W), mov r32 for W."""
    if size == BPF_B:
        head = bytes([add_2mod(0x48, src, dst), 0x0F, 0xB6])
    elif size == BPF_H:
        head = bytes([add_2mod(0x48, src, dst), 0x0F, 0xB7])
    elif size == BPF_W:
        head = maybe_emit_mod(src, dst, False) + b"\x8b"
    else:
        head = bytes([add_2mod(0x48, src, dst), 0x8B])
    return head + insn_suffix(src, dst, off)


def emit_stx(size: int, dst: int, src: int, off: int) -> bytes:
    """`*(size *)(dst + off) = src`; a byte store from dil/sil/bpl needs a bare REX."""
    if size == BPF_B:
        need_rex = is_ereg(dst) or is_ereg_8l(src)
        head = (bytes([add_2mod(0x40, dst, src)]) if need_rex else b"") + b"\x88"
    elif size == BPF_H:
        head = b"\x66" + maybe_emit_mod(dst, src, False) + b"\x89"
    elif size == BPF_W:
        head = maybe_emit_mod(dst, src, False) + b"\x89"
    else:
        head = bytes([add_2mod(0x48, dst, src), 0x89])
    return head + insn_suffix(dst, src, off)


_ST_IMM_BYTES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 4}


def emit_st_imm(size: int, dst: int, off: int, imm: int) -> bytes:
    """`*(size *)(dst + off) = imm`: C6/C7 /0 with a 1, 2 or 4 byte immediate (DW sign-extends)."""
    if size == BPF_B:
        head = maybe_emit_1mod(dst, False) + b"\xc6"
    elif size == BPF_H:
        head = b"\x66" + maybe_emit_1mod(dst, False) + b"\xc7"
    elif size == BPF_W:
        head = maybe_emit_1mod(dst, False) + b"\xc7"
    else:
        head = bytes([add_1mod(0x48, dst), 0xC7])
    if is_imm8(off):
        modrm = bytes([add_1reg(0x40, dst)]) + imm8(off)
    else:
        modrm = bytes([add_1reg(0x80, dst)]) + imm32(off)
    width = _ST_IMM_BYTES[size]
    return head + modrm + (imm & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
