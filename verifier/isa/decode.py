"""Raw bytes <-> instruction slots, with the reserved-field checks of RFC 9669 / the kernel.

Owns `decode` (bytes -> validated `Insn` list) and `encode` (the inverse). The accepted set
is the BPF ISA up to v4: ALU/ALU64 including sdiv/smod, movsx and bswap, ld_imm64 with
src 0..6, legacy packet loads, LDX MEM/MEMSX, ST/STX MEM, STX ATOMIC W/DW, JMP/JMP32,
gotol, helper/bpf2bpf/kfunc calls and exit. Every rejected slot raises one `DecodeError`
line of the form `name: insn PC (0xCODE): what is wrong`. Semantic checks (jump ranges,
division by a constant zero, writes to r10, ...) belong to the verifier, not here."""

from __future__ import annotations

from verifier.errors import DecodeError
from verifier.isa.insn import (
    BPF_ABS,
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_DIV,
    BPF_DW,
    BPF_END,
    BPF_EXIT,
    BPF_FETCH,
    BPF_IMM,
    BPF_IND,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_LD,
    BPF_LDX,
    BPF_MEM,
    BPF_MEMSX,
    BPF_MOD,
    BPF_MOV,
    BPF_NEG,
    BPF_OR,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_KFUNC_CALL,
    BPF_PSEUDO_MAP_IDX_VALUE,
    BPF_ST,
    BPF_STX,
    BPF_W,
    BPF_X,
    BPF_XCHG,
    BPF_XOR,
    INSN_SIZE,
    LD_IMM64_CODE,
    Insn,
    insns_to_bytes,
    unpack_slot,
)

MAX_REG = 10
ATOMIC_IMMS = frozenset(
    {op | fetch for op in (BPF_ADD, BPF_OR, BPF_AND, BPF_XOR) for fetch in (0, BPF_FETCH)}
    | {BPF_XCHG, BPF_CMPXCHG}
)
_VALID_ALU_OPS = frozenset(range(0x00, 0xE0, 0x10))  # ADD .. END
_VALID_JMP_OPS = frozenset(range(0x00, 0xE0, 0x10))  # JA .. JSLE


class _Bad(Exception):
    """One problem with one slot; `decode` adds the program name, pc and opcode."""


def _zero(insn: Insn, *fields: str) -> None:
    for f in fields:
        value = getattr(insn, f)
        if value != 0:
            raise _Bad(f"{f} must be 0 (is {value})")


def _regs(insn: Insn, *fields: str) -> None:
    for f in fields:
        value = getattr(insn, f)
        if value > MAX_REG:
            raise _Bad(f"{f} register r{value} is invalid (r0-r{MAX_REG})")


def _check_alu(insn: Insn) -> None:
    op, is64, is_x = insn.op, insn.cls == BPF_ALU64, bool(insn.code & BPF_X)
    if op not in _VALID_ALU_OPS:
        raise _Bad("unknown ALU operation")
    if op == BPF_NEG:
        if is_x:
            raise _Bad("neg takes no source operand (BPF_X set)")
        _zero(insn, "src", "off", "imm")
    elif op == BPF_END:
        if is64 and is_x:
            raise _Bad("ALU64 byte swap must use BPF_TO_LE (source bit set)")
        _zero(insn, "src", "off")
        if insn.imm not in (16, 32, 64):
            raise _Bad(f"imm must be 16, 32 or 64 for a byte swap (is {insn.imm})")
    elif op == BPF_MOV and is_x:
        allowed = (0, 8, 16, 32) if is64 else (0, 8, 16)
        if insn.off not in allowed:
            raise _Bad(f"off must be one of {', '.join(map(str, allowed))} for mov (is {insn.off})")
        _zero(insn, "imm")
    else:
        allowed_off = (0, 1) if op in (BPF_DIV, BPF_MOD) else (0,)
        if insn.off not in allowed_off:
            what = "0 or 1" if len(allowed_off) == 2 else "0"
            raise _Bad(f"off must be {what} (is {insn.off})")
        _zero(insn, "imm" if is_x else "src")
    _regs(insn, "dst", "src")


def _check_jmp(insn: Insn) -> None:
    op, is32, is_x = insn.op, insn.cls == BPF_JMP32, bool(insn.code & BPF_X)
    if op not in _VALID_JMP_OPS:
        raise _Bad("unknown jump operation")
    if op in (BPF_CALL, BPF_EXIT):
        if is32:
            raise _Bad(f"{'call' if op == BPF_CALL else 'exit'} is only valid in the JMP class")
        if is_x:
            raise _Bad("source bit must be 0 (BPF_K)")
        if op == BPF_EXIT:
            _zero(insn, "dst", "src", "off", "imm")
            return
        _zero(insn, "dst")
        if insn.src not in (0, BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL):
            raise _Bad(f"src must be 0, 1 or 2 for a call (is {insn.src})")
        if insn.src != BPF_PSEUDO_KFUNC_CALL:
            _zero(insn, "off")
        return
    if op == BPF_JA:
        if is_x:
            raise _Bad("source bit must be 0 (BPF_K)")
        _zero(insn, "dst", "src", "off" if is32 else "imm")
        return
    _zero(insn, "imm" if is_x else "src")
    _regs(insn, "dst", "src")


def _check_mem(insn: Insn) -> None:
    cls, mode, size = insn.cls, insn.mode, insn.size
    if cls == BPF_LDX:
        if mode not in (BPF_MEM, BPF_MEMSX) or (mode == BPF_MEMSX and size == BPF_DW):
            raise _Bad("unknown load mode/size")
        _zero(insn, "imm")
    elif cls == BPF_ST:
        if mode != BPF_MEM:
            raise _Bad("unknown store mode")
        _zero(insn, "src")
    elif mode == BPF_MEM:  # STX
        _zero(insn, "imm")
    elif mode == BPF_ATOMIC:
        if size not in (BPF_W, BPF_DW):
            raise _Bad("atomic operations must be 32 or 64 bits wide")
        if insn.imm not in ATOMIC_IMMS:
            raise _Bad(f"imm {insn.imm:#x} is not an atomic operation")
    else:
        raise _Bad("unknown store mode")
    _regs(insn, "dst", "src")


def _check_ld(insn: Insn) -> None:
    mode, size = insn.mode, insn.size
    if mode in (BPF_ABS, BPF_IND) and size != BPF_DW:
        _zero(insn, "dst", "off")
        if mode == BPF_ABS:
            _zero(insn, "src")
        _regs(insn, "src")
        return
    if mode == BPF_IMM and size == BPF_DW:
        _zero(insn, "off")
        if insn.src > BPF_PSEUDO_MAP_IDX_VALUE:
            raise _Bad(f"src must be 0..{BPF_PSEUDO_MAP_IDX_VALUE} for ld_imm64 (is {insn.src})")
        _regs(insn, "dst")
        return
    raise _Bad("unknown BPF_LD mode/size")


_CHECKS = {
    BPF_LD: _check_ld,
    BPF_LDX: _check_mem,
    BPF_ST: _check_mem,
    BPF_STX: _check_mem,
    BPF_ALU: _check_alu,
    BPF_JMP: _check_jmp,
    BPF_JMP32: _check_jmp,
    BPF_ALU64: _check_alu,
}


def decode(data: bytes, name: str = "<bytes>") -> list[Insn]:
    """Split `data` into slots and validate every one; raise DecodeError on the first bad one."""
    if len(data) % INSN_SIZE:
        raise DecodeError(f"{name}: length {len(data)} is not a multiple of {INSN_SIZE}")
    view = memoryview(data)
    insns = [unpack_slot(view, off) for off in range(0, len(data), INSN_SIZE)]
    pc = 0
    while pc < len(insns):
        insn = insns[pc]
        try:
            _CHECKS[insn.cls](insn)
            if insn.code == LD_IMM64_CODE:
                if pc + 1 >= len(insns):
                    raise _Bad("ld_imm64 is missing its second slot")
                second = insns[pc + 1]
                for f in ("code", "dst", "src", "off"):
                    if getattr(second, f):
                        raise _Bad(f"second slot {f} must be 0 (is {getattr(second, f)})")
                pc += 1
        except _Bad as exc:
            raise DecodeError(f"{name}: insn {pc} ({insn.code:#04x}): {exc}") from None
        pc += 1
    return insns


def encode(insns: list[Insn]) -> bytes:
    """The raw bytes of `insns` (8 per slot, little-endian `struct bpf_insn`)."""
    return insns_to_bytes(insns)
