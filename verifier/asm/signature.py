"""The signature text assembly implies for a function, which carries no BTF: its arguments are
R1..Rn, n the highest of R1-R5 it may read before writing it (scanning its insns in order),
each a u64 scalar, except R1, the ctx pointer when it is dereferenced before being written.

One rule for both sides: the assembler gives every `.global` function this signature
(`Program.func_protos`, so the checker verifies it as the kernel does a global subprog with
BTF), and `unwind.live.asm_btf` writes the same signature into the BTF it hands the kernel."""

from __future__ import annotations

from verifier.isa.insn import (
    BPF_ALU,
    BPF_ALU64,
    BPF_CALL,
    BPF_EXIT,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_LDX,
    BPF_MOV,
    BPF_ST,
    BPF_STX,
    BPF_X,
    Insn,
)
from verifier.program import FuncProto


def reads_writes(insn: Insn) -> tuple[set[int], set[int], bool]:
    """(registers read, registers written, whether the read of src is a dereference)."""
    cls = insn.code & 0x07
    if cls in (BPF_ALU, BPF_ALU64):
        reads = {insn.src} if insn.code & BPF_X else set()
        if insn.code & 0xF0 != BPF_MOV:
            reads.add(insn.dst)
        return reads, {insn.dst}, False
    if cls == BPF_LDX:
        return {insn.src}, {insn.dst}, True
    if cls in (BPF_STX, BPF_ST):
        return ({insn.dst, insn.src} if cls == BPF_STX else {insn.dst}), set(), False
    if cls in (BPF_JMP, BPF_JMP32):
        op = insn.code & 0xF0
        if op == BPF_CALL:
            return set(), {0, 1, 2, 3, 4, 5}, False
        if op in (BPF_EXIT, BPF_JA):
            return set(), set(), False
        return ({insn.dst, insn.src} if insn.code & BPF_X else {insn.dst}), set(), False
    return set(), ({insn.dst} if insn.code == 0x18 else set()), False


def guess_args(insns: list[Insn], start: int, end: int) -> tuple[int, bool]:
    """(argument count, R1 is the ctx) of the function at insns[start:end]."""
    written: set[int] = set()
    read: set[int] = set()
    r1_deref = False
    for insn in insns[start:end]:
        reads, writes, deref = reads_writes(insn)
        for r in reads - written:
            if 1 <= r <= 5:
                read.add(r)
                r1_deref |= r == 1 and deref and insn.src == 1
        written |= writes
    return (max(read) if read else 0), r1_deref


def implied_proto(insns: list[Insn], start: int, end: int) -> FuncProto:
    """`int NAME(args)`: the signature above as a FuncProto."""
    n, r1_ctx = guess_args(insns, start, end)
    return FuncProto("scalar", tuple("ctx" if k == 1 and r1_ctx else "scalar" for k in range(1, n + 1)))
