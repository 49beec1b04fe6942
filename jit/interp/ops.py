"""The reference interpreter's instructions as Python closures: `compile_op` turns one slot
of a final program into `op(regs) -> next_pc` (ALU semantics in jit.interp.alu).

Memory: LDX MEM zero-extends, LDX MEMSX sign-extends; ST stores the imm truncated to the
size; every atomic (add/and/or/xor with and without fetch, xchg, cmpxchg) reads and writes
through the `Core`, 32-bit results are zero-extended and cmpxchg compares the low 32 bits
of r0. Jumps: JMP compares 64-bit values (a K operand is the imm sign-extended), JMP32 the
low 32 bits; gotol (JMP32 JA) keeps its offset in imm. Calls and exit are delegated to the
`Core` (frames and the helper/kfunc stubs live in jit.interp.engine); a negative next pc ends
the run."""

from __future__ import annotations

from collections.abc import Callable

from jit.interp.alu import M32, M64, Core, Op, UnsupportedInsn, alu_op, binop
from verifier.isa.insn import (
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ATOMIC,
    BPF_B,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_DW,
    BPF_EXIT,
    BPF_FETCH,
    BPF_H,
    BPF_JA,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JMP,
    BPF_JMP32,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    BPF_LD,
    BPF_LDX,
    BPF_MEM,
    BPF_MEMSX,
    BPF_OR,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_KFUNC_CALL,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE,
    BPF_ST,
    BPF_STX,
    BPF_W,
    BPF_XCHG,
    BPF_XOR,
    Insn,
    ld_imm64_value,
    sext,
)

SIZE_BYTES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 8}


# ---------------------------------------------------------------- memory


def _ldx(core: Core, insn: Insn, nxt: int) -> Op:
    d, s, off, size = insn.dst, insn.src, insn.off, SIZE_BYTES[insn.size]
    load = core.load
    if insn.mode == BPF_MEMSX:
        bits = size * 8

        def ldxs(r: list[int]) -> int:
            r[d] = sext(load((r[s] + off) & M64, size), bits) & M64
            return nxt

        return ldxs
    if insn.mode != BPF_MEM:
        raise UnsupportedInsn(f"LDX mode {insn.mode:#x}")

    def ldx(r: list[int]) -> int:
        r[d] = load((r[s] + off) & M64, size)
        return nxt

    return ldx


def _st(core: Core, insn: Insn, nxt: int) -> Op:
    if insn.mode != BPF_MEM:
        raise UnsupportedInsn(f"ST mode {insn.mode:#x}")
    d, off, size = insn.dst, insn.off, SIZE_BYTES[insn.size]
    value = insn.imm & ((1 << (8 * size)) - 1)
    store = core.store

    def st(r: list[int]) -> int:
        store((r[d] + off) & M64, size, value)
        return nxt

    return st


def _stx(core: Core, insn: Insn, nxt: int) -> Op:
    d, s, off, size = insn.dst, insn.src, insn.off, SIZE_BYTES[insn.size]
    store = core.store
    if insn.mode == BPF_ATOMIC:
        return _atomic(core, insn, nxt)
    if insn.mode != BPF_MEM:
        raise UnsupportedInsn(f"STX mode {insn.mode:#x}")
    vmask = (1 << (8 * size)) - 1

    def stx(r: list[int]) -> int:
        store((r[d] + off) & M64, size, r[s] & vmask)
        return nxt

    return stx


def _atomic(core: Core, insn: Insn, nxt: int) -> Op:
    d, s, off, imm = insn.dst, insn.src, insn.off, insn.imm
    size = SIZE_BYTES[insn.size]
    if size not in (4, 8):
        raise UnsupportedInsn("atomic of 8 or 16 bits")
    mask = (1 << (8 * size)) - 1
    load, store = core.load, core.store
    if imm == BPF_CMPXCHG:

        def cmpxchg(r: list[int]) -> int:
            addr = (r[d] + off) & M64
            old = load(addr, size)
            if old == r[0] & mask:
                store(addr, size, r[s] & mask)
            r[0] = old
            return nxt

        return cmpxchg
    if imm == BPF_XCHG:

        def xchg(r: list[int]) -> int:
            addr = (r[d] + off) & M64
            old = load(addr, size)
            store(addr, size, r[s] & mask)
            r[s] = old
            return nxt

        return xchg
    base_op = imm & ~BPF_FETCH
    if base_op not in (BPF_ADD, BPF_AND, BPF_OR, BPF_XOR):
        raise UnsupportedInsn(f"atomic op {imm:#x}")
    fn = binop(base_op, False, 8 * size)
    fetch = bool(imm & BPF_FETCH)

    def rmw(r: list[int]) -> int:
        addr = (r[d] + off) & M64
        old = load(addr, size)
        store(addr, size, fn(old, r[s] & mask))
        if fetch:
            r[s] = old
        return nxt

    return rmw


def _ld(core: Core, insn: Insn, second: Insn | None, nxt: int) -> Op:
    if not insn.is_ld_imm64() or second is None:
        raise UnsupportedInsn("legacy packet load (BPF_LD ABS/IND)")
    if insn.src == BPF_PSEUDO_MAP_FD:
        value = core.map_address(insn.imm)
    elif insn.src == BPF_PSEUDO_MAP_VALUE:  # a global variable: its map's value + offset
        value = core.map_address(insn.imm) + (second.imm & M32)
    elif insn.src == 0:
        value = ld_imm64_value(insn, second)
    else:
        raise UnsupportedInsn(f"ld_imm64 with src={insn.src} (code or kernel address)")
    d = insn.dst

    def lddw(r: list[int]) -> int:
        r[d] = value
        return nxt

    return lddw


# ---------------------------------------------------------------- jumps


def _cond(op: int, bits: int) -> Callable[[int, int], bool]:
    def s(v: int) -> int:
        return sext(v, bits)

    table: dict[int, Callable[[int, int], bool]] = {
        BPF_JEQ: lambda a, b: a == b,
        BPF_JNE: lambda a, b: a != b,
        BPF_JGT: lambda a, b: a > b,
        BPF_JGE: lambda a, b: a >= b,
        BPF_JLT: lambda a, b: a < b,
        BPF_JLE: lambda a, b: a <= b,
        BPF_JSET: lambda a, b: bool(a & b),
        BPF_JSGT: lambda a, b: s(a) > s(b),
        BPF_JSGE: lambda a, b: s(a) >= s(b),
        BPF_JSLT: lambda a, b: s(a) < s(b),
        BPF_JSLE: lambda a, b: s(a) <= s(b),
    }
    if op not in table:
        raise UnsupportedInsn(f"jump op {op:#x}")
    return table[op]


def _jmp(core: Core, insn: Insn, pc: int) -> Op:
    nxt = pc + 1
    op = insn.op
    if op == BPF_EXIT:
        return core.exit
    if op == BPF_CALL:
        return _call(core, insn, pc)
    target = pc + 1 + insn.jump_offset()
    if op == BPF_JA:
        return lambda r: target
    is64 = insn.cls == BPF_JMP
    mask = M64 if is64 else M32
    d, s = insn.dst, insn.src
    if op == BPF_JNE and insn.uses_reg_src and is64:
        return lambda r: target if r[d] != r[s] else nxt
    if op == BPF_JNE and is64:
        k = insn.imm & M64
        return lambda r: target if r[d] != k else nxt
    cond = _cond(op, 64 if is64 else 32)
    if insn.uses_reg_src:
        return lambda r: target if cond(r[d] & mask, r[s] & mask) else nxt
    b = insn.imm & mask
    return lambda r: target if cond(r[d] & mask, b) else nxt


def _call(core: Core, insn: Insn, pc: int) -> Op:
    if insn.uses_reg_src:
        raise UnsupportedInsn("callx (indirect call)")
    imm = insn.imm
    if insn.src == BPF_PSEUDO_CALL:
        target = pc + 1 + imm
        call_local = core.call_local
        return lambda r: call_local(r, pc, target)
    if insn.src == BPF_PSEUDO_KFUNC_CALL:
        call_kfunc = core.call_kfunc
        return lambda r: call_kfunc(r, pc, imm)
    call_helper = core.call_helper
    return lambda r: call_helper(r, pc, imm)


# ---------------------------------------------------------------- whole program


def compile_op(core: Core, insns: list[Insn], pc: int) -> Op:
    insn = insns[pc]
    cls = insn.cls
    if insn.dst > 11 or insn.src > 11:
        raise UnsupportedInsn(f"register r{max(insn.dst, insn.src)}")
    if cls in (BPF_ALU, BPF_ALU64):
        return alu_op(insn, pc + 1)
    if cls == BPF_LDX:
        return _ldx(core, insn, pc + 1)
    if cls == BPF_ST:
        return _st(core, insn, pc + 1)
    if cls == BPF_STX:
        return _stx(core, insn, pc + 1)
    if cls == BPF_LD:
        second = insns[pc + 1] if pc + 1 < len(insns) else None
        return _ld(core, insn, second, pc + 2)
    if cls in (BPF_JMP, BPF_JMP32):
        if cls == BPF_JMP32 and insn.op in (BPF_CALL, BPF_EXIT):
            raise UnsupportedInsn("call/exit in the JMP32 class")
        return _jmp(core, insn, pc)
    raise UnsupportedInsn(f"class {cls:#x}")

