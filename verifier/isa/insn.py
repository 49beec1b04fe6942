"""The BPF instruction as a value: opcode constants, `Insn`, raw (de)serialisation, builders.

Owns the vocabulary every other module speaks: one `Insn` is one 8-byte slot, `ld_imm64`
is two slots, and every pc in the project is a slot index, exactly as in the kernel.
Validation of reserved fields lives in `verifier.isa.decode`; this module never rejects input.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Instruction classes (low 3 bits of the opcode).
BPF_LD = 0x00
BPF_LDX = 0x01
BPF_ST = 0x02
BPF_STX = 0x03
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_JMP32 = 0x06
BPF_ALU64 = 0x07

# Load/store sizes (bits 3-4) and modes (bits 5-7).
BPF_W = 0x00
BPF_H = 0x08
BPF_B = 0x10
BPF_DW = 0x18
BPF_IMM = 0x00
BPF_ABS = 0x20
BPF_IND = 0x40
BPF_MEM = 0x60
BPF_MEMSX = 0x80
BPF_ATOMIC = 0xC0

# Source operand (bit 3) for ALU/JMP.
BPF_K = 0x00
BPF_X = 0x08
BPF_TO_LE = 0x00
BPF_TO_BE = 0x08

# ALU operations (bits 4-7).
BPF_ADD = 0x00
BPF_SUB = 0x10
BPF_MUL = 0x20
BPF_DIV = 0x30
BPF_OR = 0x40
BPF_AND = 0x50
BPF_LSH = 0x60
BPF_RSH = 0x70
BPF_NEG = 0x80
BPF_MOD = 0x90
BPF_XOR = 0xA0
BPF_MOV = 0xB0
BPF_ARSH = 0xC0
BPF_END = 0xD0

# Jump operations (bits 4-7).
BPF_JA = 0x00
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JSET = 0x40
BPF_JNE = 0x50
BPF_JSGT = 0x60
BPF_JSGE = 0x70
BPF_CALL = 0x80
BPF_EXIT = 0x90
BPF_JLT = 0xA0
BPF_JLE = 0xB0
BPF_JSLT = 0xC0
BPF_JSLE = 0xD0

# Atomic operations (imm field of BPF_STX|BPF_ATOMIC).
BPF_FETCH = 0x01
BPF_XCHG = 0xE0 | BPF_FETCH
BPF_CMPXCHG = 0xF0 | BPF_FETCH

# Pseudo src_reg values.
BPF_PSEUDO_CALL = 1  # call: bpf2bpf, imm = relative target
BPF_PSEUDO_KFUNC_CALL = 2  # call: kfunc, imm = BTF id
BPF_PSEUDO_MAP_FD = 1  # ld_imm64 src values
BPF_PSEUDO_MAP_VALUE = 2
BPF_PSEUDO_BTF_ID = 3
BPF_PSEUDO_FUNC = 4
BPF_PSEUDO_MAP_IDX = 5
BPF_PSEUDO_MAP_IDX_VALUE = 6

# Registers.
BPF_REG_0, BPF_REG_1, BPF_REG_2, BPF_REG_3, BPF_REG_4, BPF_REG_5 = range(6)
BPF_REG_6, BPF_REG_7, BPF_REG_8, BPF_REG_9, BPF_REG_10 = range(6, 11)
BPF_REG_FP = BPF_REG_10
BPF_REG_AX = 11  # verifier scratch register (kernel MAX_BPF_REG), JIT maps it to r10
MAX_BPF_REG = 11
CALLEE_SAVED_REGS = (BPF_REG_6, BPF_REG_7, BPF_REG_8, BPF_REG_9)

LD_IMM64_CODE = BPF_LD | BPF_DW | BPF_IMM  # 0x18
INSN_SIZE = 8
MAX_BPF_STACK = 512
MAX_CALL_FRAMES = 8

_SLOT = struct.Struct("<BBhi")


@dataclass(frozen=True, slots=True)
class Insn:
    """One 8-byte instruction slot (`struct bpf_insn`)."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    @property
    def cls(self) -> int:
        return self.code & 0x07

    @property
    def op(self) -> int:
        """ALU/JMP operation bits (bits 4-7)."""
        return self.code & 0xF0

    @property
    def size(self) -> int:
        return self.code & 0x18

    @property
    def mode(self) -> int:
        return self.code & 0xE0

    @property
    def uses_reg_src(self) -> bool:
        return bool(self.code & BPF_X)

    def is_ld_imm64(self) -> bool:
        return self.code == LD_IMM64_CODE

    def is_call(self) -> bool:
        return self.code == (BPF_JMP | BPF_CALL)

    def is_exit(self) -> bool:
        return self.code == (BPF_JMP | BPF_EXIT)

    def is_pseudo_call(self) -> bool:
        return self.is_call() and self.src == BPF_PSEUDO_CALL

    def is_kfunc_call(self) -> bool:
        return self.is_call() and self.src == BPF_PSEUDO_KFUNC_CALL

    def is_helper_call(self) -> bool:
        return self.is_call() and self.src == 0

    def is_pseudo_func(self) -> bool:
        return self.is_ld_imm64() and self.src == BPF_PSEUDO_FUNC

    def is_jump(self) -> bool:
        """Conditional jump or JA (not call/exit)."""
        return self.cls in (BPF_JMP, BPF_JMP32) and self.op not in (BPF_CALL, BPF_EXIT)

    def is_cond_jump(self) -> bool:
        return self.is_jump() and self.op != BPF_JA

    def jump_offset(self) -> int:
        """Relative slot offset of a jump: `gotol` (JMP32|JA) keeps it in imm."""
        if self.code == (BPF_JMP32 | BPF_JA):
            return self.imm
        return self.off

    def to_bytes(self) -> bytes:
        return _SLOT.pack(self.code, (self.src << 4) | (self.dst & 0x0F), self.off, self.imm)

    def replace(self, **changes: int) -> Insn:
        fields = {"code": self.code, "dst": self.dst, "src": self.src, "off": self.off, "imm": self.imm}
        fields.update(changes)
        return Insn(**fields)


def unpack_slot(data: bytes | memoryview, offset: int = 0) -> Insn:
    """Split 8 bytes into fields without any validation."""
    code, regs, off, imm = _SLOT.unpack_from(data, offset)
    return Insn(code, regs & 0x0F, regs >> 4, off, imm)


def insns_to_bytes(insns: list[Insn] | tuple[Insn, ...]) -> bytes:
    return b"".join(i.to_bytes() for i in insns)


def ld_imm64_value(first: Insn, second: Insn) -> int:
    """The 64-bit immediate of an ld_imm64 pair (unsigned)."""
    return ((second.imm & 0xFFFFFFFF) << 32) | (first.imm & 0xFFFFFFFF)


def slot_count(insn: Insn) -> int:
    return 2 if insn.is_ld_imm64() else 1


def s32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def s64(value: int) -> int:
    value &= 0xFFFFFFFFFFFFFFFF
    return value - (1 << 64) if value & (1 << 63) else value


def sext(value: int, bits: int) -> int:
    """The low `bits` of value as a signed integer."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def bswap(value: int, bits: int) -> int:
    """The low `bits` of value with their bytes reversed."""
    return int.from_bytes((value & ((1 << bits) - 1)).to_bytes(bits // 8, "little"), "big")


# Builders, named after the kernel's instruction macros, for rewrites and tests.
def mov64_imm(dst: int, imm: int) -> Insn:
    return Insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)


def mov64_reg(dst: int, src: int) -> Insn:
    return Insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)


def mov32_reg(dst: int, src: int) -> Insn:
    return Insn(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)


def mov32_imm(dst: int, imm: int) -> Insn:
    return Insn(BPF_ALU | BPF_MOV | BPF_K, dst, 0, 0, imm)


def alu64_imm(op: int, dst: int, imm: int) -> Insn:
    return Insn(BPF_ALU64 | op | BPF_K, dst, 0, 0, imm)


def alu64_reg(op: int, dst: int, src: int) -> Insn:
    return Insn(BPF_ALU64 | op | BPF_X, dst, src, 0, 0)


def ld_imm64(dst: int, value: int, src: int = 0) -> tuple[Insn, Insn]:
    value &= 0xFFFFFFFFFFFFFFFF
    return (
        Insn(LD_IMM64_CODE, dst, src, 0, s32(value)),
        Insn(0, 0, 0, 0, s32(value >> 32)),
    )


def ldx_mem(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_LDX | BPF_MEM | size, dst, src, off, 0)


def stx_mem(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_STX | BPF_MEM | size, dst, src, off, 0)


def st_mem(size: int, dst: int, off: int, imm: int) -> Insn:
    return Insn(BPF_ST | BPF_MEM | size, dst, 0, off, imm)


def jmp_imm(op: int, dst: int, imm: int, off: int) -> Insn:
    return Insn(BPF_JMP | op | BPF_K, dst, 0, off, imm)


def jmp_reg(op: int, dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_JMP | op | BPF_X, dst, src, off, 0)


def ja(off: int) -> Insn:
    return Insn(BPF_JMP | BPF_JA, 0, 0, off, 0)


def call_helper(helper_id: int) -> Insn:
    return Insn(BPF_JMP | BPF_CALL, 0, 0, 0, helper_id)


def call_kfunc(btf_id: int) -> Insn:
    return Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, btf_id)


def call_pseudo(rel: int) -> Insn:
    """bpf2bpf call; the target is pc + rel + 1."""
    return Insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, rel)


def exit_insn() -> Insn:
    return Insn(BPF_JMP | BPF_EXIT)
