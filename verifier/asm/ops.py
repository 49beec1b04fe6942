"""The operator and size tables of the syntax `llvm-objdump -d` prints for BPF: compound
assignments, jump conditions, atomic operations, access sizes and movsx widths. Shared by the
one-line grammar (`verifier.asm.line`) and the disassembler (`verifier.asm.disasm`), so the
two directions cannot drift apart."""

from __future__ import annotations

from verifier.isa.insn import (
    BPF_ADD,
    BPF_AND,
    BPF_ARSH,
    BPF_B,
    BPF_DIV,
    BPF_DW,
    BPF_H,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    BPF_LSH,
    BPF_MOD,
    BPF_MUL,
    BPF_OR,
    BPF_RSH,
    BPF_SUB,
    BPF_W,
    BPF_XOR,
)

ALU_OPS: dict[str, tuple[int, int]] = {  # compound assignment -> (op, off)
    "+=": (BPF_ADD, 0), "-=": (BPF_SUB, 0), "*=": (BPF_MUL, 0), "/=": (BPF_DIV, 0),
    "s/=": (BPF_DIV, 1), "|=": (BPF_OR, 0), "&=": (BPF_AND, 0), "<<=": (BPF_LSH, 0),
    ">>=": (BPF_RSH, 0), "%=": (BPF_MOD, 0), "s%=": (BPF_MOD, 1), "^=": (BPF_XOR, 0),
    "s>>=": (BPF_ARSH, 0),
}  # fmt: skip
JMP_OPS: dict[str, int] = {
    "==": BPF_JEQ, "!=": BPF_JNE, ">": BPF_JGT, ">=": BPF_JGE, "<": BPF_JLT, "<=": BPF_JLE,
    "s>": BPF_JSGT, "s>=": BPF_JSGE, "s<": BPF_JSLT, "s<=": BPF_JSLE, "&": BPF_JSET,
}  # fmt: skip
LOCK_OPS: dict[str, int] = {"+=": BPF_ADD, "&=": BPF_AND, "|=": BPF_OR, "^=": BPF_XOR}
FETCH_OPS: dict[str, int] = {"add": BPF_ADD, "and": BPF_AND, "or": BPF_OR, "xor": BPF_XOR}
SIZES: dict[str, int] = {"u8": BPF_B, "u16": BPF_H, "u32": BPF_W, "u64": BPF_DW}
SX_SIZES: dict[str, int] = {"s8": BPF_B, "s16": BPF_H, "s32": BPF_W}
MOVSX_OFF: dict[str, int] = {"s8": 8, "s16": 16, "s32": 32}
