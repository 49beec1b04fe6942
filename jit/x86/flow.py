"""x86-64 encoders for control flow and frames: compares, jcc/jmp/call, the callee-saved
pushes and pops, and the prologue/epilogue pieces. Same conventions as `jit.x86.encode` (registers
by BPF index, bytes exactly as the kernel's x86 JIT emits them)."""

from __future__ import annotations

from jit.x86.encode import (
    X86_REG_RSP,
    JitError,
    add_1reg,
    add_2reg,
    emit_mov_reg,
    emit_pop,
    emit_push,
    imm8,
    imm32,
    is_imm8,
    is_imm8_jmp_offset,
    is_simm32,
    maybe_emit_1mod,
    maybe_emit_mod,
)
from verifier.isa.insn import BPF_REG_FP

# ---------------------------------------------------------------- compares and jumps


def emit_cmp(is64: bool, dst: int, src: int) -> bytes:
    """`cmp dst, src` (39 /r)."""
    return maybe_emit_mod(dst, src, is64) + bytes([0x39, add_2reg(0xC0, dst, src)])


def emit_test(is64: bool, dst: int, src: int) -> bytes:
    """`test dst, src` (85 /r); with dst == src it is the compare-with-zero idiom."""
    return maybe_emit_mod(dst, src, is64) + bytes([0x85, add_2reg(0xC0, dst, src)])


def emit_cmp_imm(is64: bool, dst: int, imm: int) -> bytes:
    """`cmp dst, imm8/imm32` (83 /7 or 81 /7; no rax short form, as in the kernel)."""
    rex = maybe_emit_1mod(dst, is64)
    if is_imm8(imm):
        return rex + bytes([0x83, add_1reg(0xF8, dst)]) + imm8(imm)
    return rex + bytes([0x81, add_1reg(0xF8, dst)]) + imm32(imm)


def emit_test_imm(is64: bool, dst: int, imm: int) -> bytes:
    """`test dst, imm32` (F7 /0 id), never an imm8 form."""
    return maybe_emit_1mod(dst, is64) + bytes([0xF7, add_1reg(0xC0, dst)]) + imm32(imm)


def emit_jcc(cond: int, disp: int) -> bytes:
    """Conditional jump: short `7x rel8` in the kernel's window, else near `0F 8x rel32`."""
    if is_imm8_jmp_offset(disp):
        return bytes([cond]) + imm8(disp)
    if not is_simm32(disp):
        raise JitError(f"bpf_jit: cond_jmp gen bug {disp:#x}")
    return bytes([0x0F, cond + 0x10]) + imm32(disp)


def emit_jmp(disp: int) -> bytes:
    """Unconditional jump: `EB rel8` or `E9 rel32`."""
    if is_imm8_jmp_offset(disp):
        return b"\xeb" + imm8(disp)
    if not is_simm32(disp):
        raise JitError(f"bpf_jit: jmp gen bug {disp:#x}")
    return b"\xe9" + imm32(disp)


def emit_jmp_rel32(target: int, ip: int) -> bytes:
    """`jmp rel32` to an absolute target from guest address `ip` (the return thunk)."""
    rel = target - (ip + 5)
    if not is_simm32(rel):
        raise JitError(f"Target jmp {target:#x} is out of range")
    return b"\xe9" + imm32(rel)


def emit_call(target: int, ip: int) -> bytes:
    """`call rel32` at guest address `ip`."""
    rel = target - (ip + 5)
    if not is_simm32(rel):
        raise JitError(f"Target call {target:#x} is out of range")
    return b"\xe8" + imm32(rel)


# ---------------------------------------------------------------- frame


_CALLEE_SAVED = (6, 7, 8, 9)  # R6 rbx, R7 r13, R8 r14, R9 r15


def emit_push_callee_regs(used: tuple[bool, bool, bool, bool]) -> bytes:
    """Push the flagged R6..R9 in the fixed order rbx, r13, r14, r15."""
    return b"".join(emit_push(r) for r, u in zip(_CALLEE_SAVED, used, strict=True) if u)


def emit_pop_callee_regs(used: tuple[bool, bool, bool, bool]) -> bytes:
    """Pop the flagged R6..R9 in reverse: r15, r14, r13, rbx."""
    pairs = reversed(list(zip(_CALLEE_SAVED, used, strict=True)))
    return b"".join(emit_pop(r) for r, u in pairs if u)


def emit_sub_rsp(depth: int) -> bytes:
    """`sub rsp, imm32`: always the imm32 form, even for small depths."""
    return b"\x48\x81\xec" + imm32(depth)


def emit_push_rbp_frame() -> bytes:
    """`push rbp; mov rbp, rsp`."""
    return emit_push(BPF_REG_FP) + emit_mov_reg(True, BPF_REG_FP, X86_REG_RSP)


def emit_leave() -> bytes:
    return b"\xc9"


def emit_ret() -> bytes:
    return b"\xc3"
