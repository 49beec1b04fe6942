"""Lowering of one BPF instruction to x86-64 bytes, plus the prologue and epilogue shapes.

`lower_insn` is the kernel's `do_jit` switch for a single instruction: given the pass
context (addrs[] of the previous pass, the current index, cleanup_addr, padding, the image
address and call targets) it returns the bytes and the number of slots consumed. Branch
displacements follow the kernel exactly: `addrs[k + 1 + off] - addrs[k + 1]`, where
`addrs[k]` is where insn k starts in this pass and `addrs[k + 1]` where it ended last pass.
The switch is one table of handlers per instruction class; the ALU classes live in
`jit.lower_alu`.

Every instruction of ISA v4 is lowered except the legacy packet loads LD_ABS/LD_IND, which
the kernel's x86 JIT never sees either (the verifier rewrites them into native insns that
call the bpf_skb_load_helper_* conversion helpers, `gen_ld_abs`, as for converted classic
BPF), callx (no kernel JIT has an indirect call), and the kernel-internal forms this project
never produces (tail calls, arena casts and PROBE_* accesses, percpu moves, and the newer
load-acquire/store-release atomics). BPF_ST | BPF_NOSPEC (the verifier's barrier) is `lfence`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jit.lower_alu import lower_alu
from jit.lower_ctx import LowerCtx
from jit.x86 import encode as x86
from jit.x86 import flow, mem
from jit.x86.encode import JitError
from verifier.isa.insn import (
    BPF_ABS,
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_DW,
    BPF_EXIT,
    BPF_FETCH,
    BPF_IND,
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
)

# BPF_ST | BPF_NOSPEC: the verifier's speculation barrier shares its mode bits with ATOMIC.
BPF_NOSPEC = 0xC0
_ATOMIC_OPS = frozenset(
    (BPF_ADD, BPF_AND, BPF_OR, BPF_XOR, BPF_ADD | BPF_FETCH, BPF_AND | BPF_FETCH,
     BPF_OR | BPF_FETCH, BPF_XOR | BPF_FETCH, BPF_XCHG, BPF_CMPXCHG)
)
MAX_INSN_SIZE = 128  # BPF_MAX_INSN_SIZE
REG_MAX = 11  # BPF_REG_AX is the highest register a final program may name

JCC = {
    BPF_JEQ: x86.X86_JE, BPF_JNE: x86.X86_JNE, BPF_JSET: x86.X86_JNE,
    BPF_JGT: x86.X86_JA, BPF_JLT: x86.X86_JB, BPF_JGE: x86.X86_JAE, BPF_JLE: x86.X86_JBE,
    BPF_JSGT: x86.X86_JG, BPF_JSLT: x86.X86_JL, BPF_JSGE: x86.X86_JGE, BPF_JSLE: x86.X86_JLE,
}

@dataclass(frozen=True)
class FrameShape:
    """What the prologue saves: the unwinder reads the saved registers at these places."""

    stack_depth: int  # round_up(depth, 8), reserved by `sub rsp`
    push_r12: bool  # exception boundary
    regs: tuple[bool, bool, bool, bool]  # R6..R9 pushed
    exception_cb: bool  # frame taken from the arguments (rsi = sp, rdx = fp)


def build_prologue(shape: FrameShape) -> bytes:
    """NOP5 patch site, NOP3 tail-call slot, frame setup, stack, callee-saved pushes."""
    out = bytearray(x86.NOP5 + x86.NOP3)
    if shape.exception_cb:
        # mov rsp, rsi; mov rbp, rdx; restore the main program's saved kernel registers;
        # mov rsp, rbp: the callback now runs in the main program's frame.
        out += x86.emit_mov_reg(True, x86.X86_REG_RSP, 2)
        out += x86.emit_mov_reg(True, 10, 3)
        out += flow.emit_pop_callee_regs((True, True, True, True))
        out += x86.emit_pop(x86.X86_REG_R12)
        out += x86.emit_mov_reg(True, x86.X86_REG_RSP, 10)
    else:
        out += flow.emit_push_rbp_frame()
    if shape.stack_depth:
        out += flow.emit_sub_rsp(shape.stack_depth)
    if shape.push_r12:
        out += x86.emit_push(x86.X86_REG_R12)
    out += flow.emit_push_callee_regs(shape.regs)
    return bytes(out)


def build_epilogue(shape: FrameShape) -> bytes:
    """Pops in reverse, r12 last for the boundary, then `leave; ret`."""
    out = flow.emit_pop_callee_regs(shape.regs)
    if shape.push_r12:
        out += x86.emit_pop(x86.X86_REG_R12)
    return out + flow.emit_leave() + flow.emit_ret()


def lower_insn(ctx: LowerCtx, k: int) -> tuple[bytes, int]:
    """Bytes for subprog insn k and how many slots it consumed (2 for ld_imm64)."""
    insn = ctx.insns[k]
    if insn.dst > REG_MAX or insn.src > REG_MAX:
        raise ctx.unsupported(k)
    handler = _BY_CLASS.get(insn.cls)
    if handler is None:
        raise ctx.unsupported(k)
    code, slots = handler(ctx, k, insn)
    if len(code) > MAX_INSN_SIZE:
        raise JitError(f"bpf_jit: fatal insn size error at {ctx.where(k)}")
    return code, slots


# ---------------------------------------------------------------- memory


def _lower_ldx(ctx: LowerCtx, k: int, insn: Insn) -> tuple[bytes, int]:
    mode = insn.mode
    if mode == BPF_MEM:
        return x86.emit_ldx(insn.size, insn.dst, insn.src, insn.off), 1
    if mode == BPF_MEMSX and insn.size != BPF_DW:
        return mem.emit_ldsx(insn.size, insn.dst, insn.src, insn.off), 1
    raise ctx.unsupported(k)


def _lower_stx(ctx: LowerCtx, k: int, insn: Insn) -> tuple[bytes, int]:
    mode = insn.mode
    if mode == BPF_MEM:
        return x86.emit_stx(insn.size, insn.dst, insn.src, insn.off), 1
    if mode == BPF_ATOMIC and insn.size in (BPF_W, BPF_DW) and insn.imm in _ATOMIC_OPS:
        return mem.emit_atomic(insn.imm, insn.size, insn.dst, insn.src, insn.off), 1
    raise ctx.unsupported(k)


def _lower_st(ctx: LowerCtx, k: int, insn: Insn) -> tuple[bytes, int]:
    if insn.mode == BPF_MEM:
        return x86.emit_st_imm(insn.size, insn.dst, insn.off, insn.imm), 1
    if insn.code == BPF_ST | BPF_NOSPEC:
        return mem.emit_lfence(), 1
    raise ctx.unsupported(k)


def _lower_ld(ctx: LowerCtx, k: int, insn: Insn) -> tuple[bytes, int]:
    if insn.mode in (BPF_ABS, BPF_IND):
        raise JitError(
            f"bpf_jit: legacy LD_ABS/LD_IND (0x{insn.code:02x}) at {ctx.where(k)} is not supported: "
            "the kernel's x86 JIT never sees them (they are rewritten into calls of the "
            "bpf_skb_load_helper_* conversion helpers first)"
        )
    if not insn.is_ld_imm64() or k + 1 >= len(ctx.insns):
        raise ctx.unsupported(k)
    if insn.is_pseudo_func():
        value = ctx.resolve_func(k, insn)
    elif insn.src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE):
        value = ctx.resolve_map(k, insn, ctx.insns[k + 1])
    else:
        value = ld_imm64_value(insn, ctx.insns[k + 1])
    return x86.emit_mov_imm64(insn.dst, value), 2


# ---------------------------------------------------------------- jumps, calls, exit


def _lower_jmp(ctx: LowerCtx, k: int, insn: Insn) -> tuple[bytes, int]:
    op = insn.op
    if op in (BPF_JA, BPF_CALL, BPF_EXIT) and insn.uses_reg_src:
        raise ctx.unsupported(k)  # callx (the kernel has no indirect call), JA/EXIT with X
    if op == BPF_JA:
        return _lower_ja(ctx, k, insn), 1
    if op == BPF_CALL and insn.cls == BPF_JMP:
        return _lower_call(ctx, k, insn), 1
    if op == BPF_EXIT and insn.cls == BPF_JMP:
        return _lower_exit(ctx, k), 1
    if op not in JCC:
        raise ctx.unsupported(k)
    is64 = insn.cls == BPF_JMP
    if insn.uses_reg_src:
        if op == BPF_JSET:
            cmp = flow.emit_test(is64, insn.dst, insn.src)
        else:
            cmp = flow.emit_cmp(is64, insn.dst, insn.src)
    elif op == BPF_JSET:
        cmp = flow.emit_test_imm(is64, insn.dst, insn.imm)
    elif insn.imm == 0:
        cmp = flow.emit_test(is64, insn.dst, insn.dst)
    else:
        cmp = flow.emit_cmp_imm(is64, insn.dst, insn.imm)
    disp = ctx.jump_target(k, insn.off)
    pad = b""
    if ctx.padding and x86.is_imm8_jmp_offset(disp):
        nops = ctx.size_diff(k, len(cmp)) - 2
        if nops not in (0, 4):
            raise JitError(f"unexpected jmp_cond padding: {nops} bytes at {ctx.where(k)}")
        pad = x86.emit_nops(nops)
    return cmp + pad + flow.emit_jcc(JCC[op], disp), 1


def _emit_jmp_padded(ctx: LowerCtx, k: int, disp: int) -> bytes:
    pad = b""
    if ctx.padding and x86.is_imm8_jmp_offset(disp):
        nops = ctx.size_diff(k, 0) - 2
        if nops not in (0, 3):
            raise JitError(f"unexpected jump padding: {nops} bytes at {ctx.where(k)}")
        pad = x86.emit_nops(nops)
    return pad + flow.emit_jmp(disp)


def _lower_ja(ctx: LowerCtx, k: int, insn: Insn) -> bytes:
    if insn.cls == BPF_JMP32:
        off = insn.imm  # gotol
    else:
        off = insn.off
    disp = -2 if off == -1 else ctx.jump_target(k, off)
    if disp == 0:
        if not ctx.padding:
            return b""
        nops = ctx.size_diff(k, 0)
        if nops not in (0, 2, 5):
            raise JitError(f"unexpected nop jump padding: {nops} bytes at {ctx.where(k)}")
        return x86.emit_nops(nops)
    return _emit_jmp_padded(ctx, k, disp)


def _lower_exit(ctx: LowerCtx, k: int) -> bytes:
    if ctx.seen_exit:
        return _emit_jmp_padded(ctx, k, ctx.cleanup_addr - ctx.addrs[k + 1])
    ctx.seen_exit = True
    ctx.cleanup_addr = ctx.addrs[k]
    if ctx.return_thunk is None:
        return ctx.epilogue
    body = ctx.epilogue[:-1]  # all but the `ret`
    if not ctx.final:
        return body + b"\xe9" + bytes(4)  # always rel32: the size does not depend on the target
    ip = ctx.image_addr + ctx.addrs[k] + len(body)
    return body + flow.emit_jmp_rel32(ctx.return_thunk, ip)


def _lower_call(ctx: LowerCtx, k: int, insn: Insn) -> bytes:
    if insn.src not in (0, BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL):
        raise ctx.unsupported(k)
    ip = ctx.image_addr + ctx.addrs[k]
    target = ctx.resolve_call(k, insn)
    if target is None:
        return b"\xe8" + x86.imm32(0)
    try:
        return flow.emit_call(target, ip)
    except JitError as err:
        raise JitError(f"{err} at {ctx.where(k)}") from None


_Handler = Callable[[LowerCtx, int, Insn], tuple[bytes, int]]
_BY_CLASS: dict[int, _Handler] = {
    BPF_ALU: lower_alu,
    BPF_ALU64: lower_alu,
    BPF_LDX: _lower_ldx,
    BPF_STX: _lower_stx,
    BPF_ST: _lower_st,
    BPF_LD: _lower_ld,
    BPF_JMP: _lower_jmp,
    BPF_JMP32: _lower_jmp,
}
