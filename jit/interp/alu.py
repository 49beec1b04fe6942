"""ALU semantics of the reference interpreter (RFC 9669, ISA v4) and the types its ops share.

Registers hold unsigned 64-bit values. ALU64 wraps modulo 2**64; ALU32 works on the low 32
bits of both operands and zero-extends the result. A K operand is the imm sign-extended to
64 bits (ALU64) or taken as u32 (ALU32). Shift counts are masked to 63 / 31; division by
zero gives 0 and modulo by zero leaves dst unchanged (ALU32: its low half, zero-extended);
sdiv/smod truncate toward zero (INT_MIN s/ -1 = INT_MIN, INT_MIN s% -1 = 0); movsx
(MOV X with off 8/16/32); END: to-le truncates, to-be and ALU64 bswap swap the low bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

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
    BPF_RSH,
    BPF_SUB,
    BPF_TO_BE,
    BPF_XOR,
    Insn,
    bswap,
    sext,
)

M64 = (1 << 64) - 1
M32 = (1 << 32) - 1

Op = Callable[[list[int]], int]


class Core(Protocol):
    """What the ops need from the interpreter that runs them."""

    def load(self, addr: int, size: int) -> int: ...

    def store(self, addr: int, size: int, value: int) -> None: ...

    def call_local(self, regs: list[int], pc: int, target: int) -> int: ...

    def exit(self, regs: list[int]) -> int: ...

    def call_helper(self, regs: list[int], pc: int, helper_id: int) -> int: ...

    def call_kfunc(self, regs: list[int], pc: int, btf_id: int) -> int: ...

    def map_address(self, index: int) -> int: ...


class UnsupportedInsn(Exception):
    """An insn the interpreter does not execute (message names what it is)."""


# ---------------------------------------------------------------- ALU


def _sdiv(bits: int) -> Callable[[int, int], int]:
    mask = (1 << bits) - 1

    def f(a: int, b: int) -> int:
        if not b:
            return 0
        sa, sb = sext(a, bits), sext(b, bits)
        q = abs(sa) // abs(sb)
        return (-q if (sa < 0) != (sb < 0) else q) & mask

    return f


def _smod(bits: int) -> Callable[[int, int], int]:
    mask = (1 << bits) - 1

    def f(a: int, b: int) -> int:
        if not b:
            return a
        sa, sb = sext(a, bits), sext(b, bits)
        r = abs(sa) % abs(sb)
        return (-r if sa < 0 else r) & mask

    return f


def binop(op: int, signed: bool, bits: int) -> Callable[[int, int], int]:
    """f(dst, src) for operands already reduced to `bits`; the result is reduced too."""
    mask = (1 << bits) - 1
    sh = bits - 1
    table: dict[int, Callable[[int, int], int]] = {
        BPF_ADD: lambda a, b: (a + b) & mask,
        BPF_SUB: lambda a, b: (a - b) & mask,
        BPF_MUL: lambda a, b: (a * b) & mask,
        BPF_OR: lambda a, b: a | b,
        BPF_AND: lambda a, b: a & b,
        BPF_XOR: lambda a, b: a ^ b,
        BPF_LSH: lambda a, b: (a << (b & sh)) & mask,
        BPF_RSH: lambda a, b: a >> (b & sh),
        BPF_ARSH: lambda a, b: (sext(a, bits) >> (b & sh)) & mask,
        BPF_MOV: lambda a, b: b,
    }
    if op == BPF_DIV:
        return _sdiv(bits) if signed else (lambda a, b: a // b if b else 0)
    if op == BPF_MOD:
        return _smod(bits) if signed else (lambda a, b: a % b if b else a)
    return table[op]


def alu_op(insn: Insn, nxt: int) -> Op:
    is64 = insn.cls == BPF_ALU64
    bits = 64 if is64 else 32
    mask = M64 if is64 else M32
    op, d, s, off = insn.op, insn.dst, insn.src, insn.off
    if op == BPF_NEG:

        def neg(r: list[int]) -> int:
            r[d] = -r[d] & mask
            return nxt

        return neg
    if op == BPF_END:
        width = insn.imm
        if is64 or insn.code & BPF_TO_BE:

            def swap(r: list[int]) -> int:
                r[d] = bswap(r[d], width)
                return nxt

            return swap
        wmask = (1 << width) - 1

        def to_le(r: list[int]) -> int:
            r[d] &= wmask
            return nxt

        return to_le
    if op == BPF_MOV and insn.uses_reg_src and off in (8, 16, 32):
        if is64:

            def movsx64(r: list[int]) -> int:
                r[d] = sext(r[s], off) & M64
                return nxt

            return movsx64

        def movsx32(r: list[int]) -> int:
            r[d] = sext(r[s], off) & M32
            return nxt

        return movsx32
    if op not in (BPF_DIV, BPF_MOD) and off != 0:
        raise UnsupportedInsn(f"ALU insn with off={off}")
    fn = binop(op, off == 1, bits)
    if insn.uses_reg_src:
        if op == BPF_MOV:

            def mov_x(r: list[int]) -> int:
                r[d] = r[s] & mask
                return nxt

            return mov_x
        if op == BPF_ADD and is64:

            def add64_x(r: list[int]) -> int:
                r[d] = (r[d] + r[s]) & M64
                return nxt

            return add64_x

        def alu_x(r: list[int]) -> int:
            r[d] = fn(r[d] & mask, r[s] & mask)
            return nxt

        return alu_x
    b = insn.imm & mask  # ALU64: sign-extended imm; ALU32: the u32
    if op == BPF_MOV:

        def mov_k(r: list[int]) -> int:
            r[d] = b
            return nxt

        return mov_k
    if op == BPF_ADD and is64:

        def add64_k(r: list[int]) -> int:
            r[d] = (r[d] + b) & M64
            return nxt

        return add64_k

    def alu_k(r: list[int]) -> int:
        r[d] = fn(r[d] & mask, b)
        return nxt

    return alu_k
