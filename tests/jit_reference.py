"""Test helpers shared by the JIT tests: a small Python reference for BPF semantics (ISA v4
minus calls), the mainline verifier rewrites the JIT relies on, a bare Unicorn harness that
runs a JitProgram's main image, and the byte/capstone helpers of the encoding tests.

The reference follows the ISA document, not the JIT: division by zero gives 0, modulo by
zero leaves dst (zero-extended for 32 bits), INT_MIN s/ -1 wraps to INT_MIN and
INT_MIN s% -1 is 0, so the JIT, which relies on the verifier's guards, is checked together
with verifier.rewrite.fixups.div_mod_patch when a test jits `patch_straight_line(program)`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import capstone
from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_EXEC, UC_PROT_READ, Uc
from unicorn import x86_const as X

from jit.compile import jit_program
from jit.image import JitImage, JitProgram
from jit.layout import (
    CTX_BASE,
    CTX_SIZE,
    HOST_STUB_BASE,
    PAGE,
    STACK_BASE,
    STACK_SIZE,
    STACK_TOP,
    STUB_BASE,
    STUB_REGION_SIZE,
)
from verifier.isa.insn import (
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ARSH,
    BPF_ATOMIC,
    BPF_B,
    BPF_CMPXCHG,
    BPF_DIV,
    BPF_DW,
    BPF_END,
    BPF_FETCH,
    BPF_H,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JMP,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    BPF_LD,
    BPF_LDX,
    BPF_LSH,
    BPF_MEMSX,
    BPF_MOD,
    BPF_MOV,
    BPF_MUL,
    BPF_NEG,
    BPF_OR,
    BPF_RSH,
    BPF_ST,
    BPF_STX,
    BPF_SUB,
    BPF_W,
    BPF_XCHG,
    BPF_XOR,
    Insn,
    exit_insn,
    mov32_reg,
)
from verifier.program import FdTab, FrameDesc, Subprog, SubprogKind, VerifiedProgram
from verifier.rewrite.fixups import div_mod_patch
from verifier.rewrite.regusage import detect_reg_usage

M32 = (1 << 32) - 1
M64 = (1 << 64) - 1
SIZES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 8}
FP = STACK_TOP - 16  # rbp of a main image entered by `run`: below the return address and saved rbp
X86_OF = {0: X.UC_X86_REG_RAX, 1: X.UC_X86_REG_RDI, 2: X.UC_X86_REG_RSI, 3: X.UC_X86_REG_RDX,
          4: X.UC_X86_REG_RCX, 5: X.UC_X86_REG_R8, 6: X.UC_X86_REG_RBX, 7: X.UC_X86_REG_R13,
          8: X.UC_X86_REG_R14, 9: X.UC_X86_REG_R15, 10: X.UC_X86_REG_RBP}


def sx(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _sdiv(a: int, b: int) -> int:
    """Signed division truncating toward zero (C, x86 idiv)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _bswap(value: int, nbytes: int) -> int:
    return int.from_bytes((value & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little"), "big")


def ref_alu(regs: list[int], insn: Insn) -> None:
    """One ALU/ALU64 insn, ISA semantics, on `regs` (64-bit unsigned values)."""
    is64 = insn.cls == BPF_ALU64
    bits = 64 if is64 else 32
    mask = (1 << bits) - 1
    op, off = insn.op, insn.off
    if op == BPF_END:
        width = insn.imm // 8
        value = regs[insn.dst]
        swap = is64 or insn.uses_reg_src
        regs[insn.dst] = _bswap(value, width) if swap else value & ((1 << insn.imm) - 1)
        return
    dst = regs[insn.dst] & mask
    src = (regs[insn.src] if insn.uses_reg_src else sx(insn.imm, 32)) & mask
    sh = src & (bits - 1)
    if op == BPF_MOV:
        result = sx(src, off) if off else src
    elif op in (BPF_DIV, BPF_MOD) and off == 1:
        a, b = sx(dst, bits), sx(src, bits)
        if op == BPF_DIV:
            result = 0 if b == 0 else _sdiv(a, b)
        else:
            result = a if b == 0 else a - b * _sdiv(a, b)
    elif op == BPF_DIV:
        result = 0 if src == 0 else dst // src
    elif op == BPF_MOD:
        result = dst if src == 0 else dst % src
    else:
        result = {
            BPF_ADD: lambda: dst + src, BPF_SUB: lambda: dst - src, BPF_MUL: lambda: dst * src,
            BPF_AND: lambda: dst & src, BPF_OR: lambda: dst | src, BPF_XOR: lambda: dst ^ src,
            BPF_NEG: lambda: -dst, BPF_LSH: lambda: dst << sh, BPF_RSH: lambda: dst >> sh,
            BPF_ARSH: lambda: sx(dst, bits) >> sh,
        }[op]()
    regs[insn.dst] = result & mask


COND = {
    BPF_JEQ: lambda a, b, n: a == b,
    BPF_JNE: lambda a, b, n: a != b,
    BPF_JSET: lambda a, b, n: bool(a & b),
    BPF_JGT: lambda a, b, n: a > b,
    BPF_JGE: lambda a, b, n: a >= b,
    BPF_JLT: lambda a, b, n: a < b,
    BPF_JLE: lambda a, b, n: a <= b,
    BPF_JSGT: lambda a, b, n: sx(a, n) > sx(b, n),
    BPF_JSGE: lambda a, b, n: sx(a, n) >= sx(b, n),
    BPF_JSLT: lambda a, b, n: sx(a, n) < sx(b, n),
    BPF_JSLE: lambda a, b, n: sx(a, n) <= sx(b, n),
}


class Memory:
    """Flat little-endian memory made of named regions at absolute addresses."""

    def __init__(self, regions: dict[int, bytearray]) -> None:
        self.regions = regions

    def _find(self, addr: int, size: int) -> tuple[bytearray, int]:
        for base, buf in self.regions.items():
            if base <= addr and addr + size <= base + len(buf):
                return buf, addr - base
        raise AssertionError(f"reference: access to {addr:#x} outside every region")

    def load(self, addr: int, size: int) -> int:
        buf, at = self._find(addr, size)
        return int.from_bytes(buf[at : at + size], "little")

    def store(self, addr: int, size: int, value: int) -> None:
        buf, at = self._find(addr, size)
        buf[at : at + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")


def ref_atomic(regs: list[int], mem: Memory, insn: Insn) -> None:
    size = SIZES[insn.size]
    mask = (1 << (8 * size)) - 1
    addr = (regs[insn.dst] + insn.off) & M64
    old = mem.load(addr, size)
    val = regs[insn.src] & mask
    op = insn.imm
    if op == BPF_CMPXCHG:
        if old == regs[0] & mask:
            mem.store(addr, size, val)
        regs[0] = old
        return
    new = {BPF_ADD: old + val, BPF_AND: old & val, BPF_OR: old | val, BPF_XOR: old ^ val,
           BPF_XCHG & ~BPF_FETCH: val}[op & ~BPF_FETCH]
    mem.store(addr, size, new)
    if op & BPF_FETCH:
        regs[insn.src] = old


def interpret(insns: Sequence[Insn], regs: list[int], mem: Memory, budget: int = 100_000) -> int:
    """Run until exit; returns r0. `regs` (at least R0..R10) is updated in place."""
    pc = 0
    for _ in range(budget):
        insn = insns[pc]
        pc += 1
        cls = insn.cls
        if cls in (BPF_ALU, BPF_ALU64):
            ref_alu(regs, insn)
        elif cls == BPF_LD and insn.is_ld_imm64():
            regs[insn.dst] = (insns[pc].imm & M32) << 32 | (insn.imm & M32)
            pc += 1
        elif cls == BPF_LDX:
            size = SIZES[insn.size]
            value = mem.load((regs[insn.src] + insn.off) & M64, size)
            regs[insn.dst] = sx(value, 8 * size) & M64 if insn.mode == BPF_MEMSX else value
        elif cls == BPF_ST:
            mem.store((regs[insn.dst] + insn.off) & M64, SIZES[insn.size], sx(insn.imm, 32))
        elif cls == BPF_STX and insn.mode == BPF_ATOMIC:
            ref_atomic(regs, mem, insn)
        elif cls == BPF_STX:
            mem.store((regs[insn.dst] + insn.off) & M64, SIZES[insn.size], regs[insn.src])
        elif insn.is_exit():
            return regs[0]
        elif insn.is_jump():
            if insn.op == 0:  # JA / gotol
                pc += insn.jump_offset()
                continue
            n = 64 if cls == BPF_JMP else 32
            b = regs[insn.src] if insn.uses_reg_src else sx(insn.imm, 32)
            if COND[insn.op](regs[insn.dst] & ((1 << n) - 1), b & ((1 << n) - 1), n):
                pc += insn.off
        else:
            raise AssertionError(f"reference: unexpected {insn}")
    raise AssertionError("reference: budget exhausted")


# ---------------------------------------------------------------- verifier rewrites


def is_cmpxchg32(insn: Insn) -> bool:
    return insn.code == BPF_STX | BPF_ATOMIC | BPF_W and insn.imm == BPF_CMPXCHG


def rewrite(insn: Insn) -> list[Insn]:
    """What the mainline verifier leaves for the JIT in place of one insn: the div/mod
    guards (verifier.rewrite.fixups.div_mod_patch), and BPF_ZEXT_REG(R0) (`w0 = w0`, imm 1) after a
    32-bit cmpxchg, which mainline inserts whatever bpf_jit_needs_zext() says."""
    found = div_mod_patch(insn)
    if found is not None:
        return found[0]
    if is_cmpxchg32(insn):
        return [insn, mov32_reg(0, 0).replace(imm=1)]
    return [insn]


def patch_straight_line(insns: Sequence[Insn]) -> list[Insn]:
    """`rewrite` every insn of a program without jumps (so no offset needs fixing)."""
    assert not any(i.is_jump() for i in insns), "patch_straight_line: jumps are not relocated"
    return [out for insn in insns for out in rewrite(insn)]


# ---------------------------------------------------------------- Unicorn harness


def run(jp: JitProgram, regs: dict[int, int], stubs: dict[int, bytes] | None = None, ctx: bytes = b"") -> Uc:
    """Map the images, a `hlt` return address, the stub region, the stack and the ctx; run
    main until it returns to the host. `regs` maps Unicorn register ids to initial values."""
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    for img in jp.images:
        uc.mem_map(img.address, -(-len(img.code) // PAGE) * PAGE, UC_PROT_READ | UC_PROT_EXEC)
        uc.mem_write(img.address, img.code)
    uc.mem_map(HOST_STUB_BASE, PAGE)
    uc.mem_write(HOST_STUB_BASE, b"\xf4")  # hlt: the main image returns here
    uc.mem_map(STUB_BASE, STUB_REGION_SIZE)
    for addr, code in (stubs or {}).items():
        uc.mem_write(addr, code)
    uc.mem_map(STACK_BASE, STACK_SIZE)
    uc.mem_map(CTX_BASE, CTX_SIZE)
    uc.mem_write(CTX_BASE, ctx)
    uc.mem_write(STACK_TOP - 8, struct.pack("<Q", HOST_STUB_BASE))
    uc.reg_write(X.UC_X86_REG_RSP, STACK_TOP - 8)
    for reg, value in regs.items():
        uc.reg_write(reg, value)
    uc.emu_start(jp.main.address, 0, count=1_000_000)
    assert uc.reg_read(X.UC_X86_REG_RIP) == HOST_STUB_BASE + 1, "did not return to the host stub"
    assert uc.reg_read(X.UC_X86_REG_RSP) == STACK_TOP
    return uc


# ---------------------------------------------------------------- encoding helpers

MD = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def make_vp(
    funcs: list[tuple[str, list[Insn]]],
    *,
    stack: int = 0,
    descs: dict[int, list[int]] | None = None,
    boundary: bool = False,
    exception_cb: int | None = None,
) -> VerifiedProgram:
    """Subprogs in order (main first), callee-saved pushes from detect_reg_usage; `descs`
    maps a subprog index to the pcs of its frame descriptors."""
    insns: list[Insn] = []
    subprogs = []
    for i, (name, body) in enumerate(funcs):
        start = len(insns)
        insns += body
        kind = SubprogKind.MAIN if i == 0 else SubprogKind.STATIC
        if i == exception_cb:
            kind = SubprogKind.EXCEPTION_CB
        regs = detect_reg_usage(insns, start, len(insns))
        subprogs.append(Subprog(name, start, len(insns), kind, stack if i == 0 else 0, regs))
    fdtabs = [FdTab([FrameDesc(pc) for pc in (descs or {}).get(i, [])]) for i in range(len(funcs))]
    return VerifiedProgram("t", insns, subprogs, fdtabs, exception_cb, None, boundary)


def program_vp(insns: Sequence[Insn], stack: int = 512) -> VerifiedProgram:
    """A one-subprog VerifiedProgram (callee-saved pushes from detect_reg_usage)."""
    insns = list(insns)
    sp = Subprog("main", 0, len(insns), SubprogKind.MAIN, stack, detect_reg_usage(insns, 0, len(insns)))
    return VerifiedProgram("t", insns, [sp], [FdTab()], None, None, False)


def one_image(
    insns: list[Insn], stack: int = 0, stubs: dict[int, int] | None = None,
    helpers: dict[int, int] | None = None,
) -> JitImage:
    """The main image of a one-subprog program (callee-saved pushes from detect_reg_usage)."""
    regs = detect_reg_usage(insns, 0, len(insns))
    sp = Subprog("main", 0, len(insns), SubprogKind.MAIN, stack, regs)
    vp = VerifiedProgram("t", insns, [sp], [FdTab()], None, None, False)
    return jit_program(vp, stubs or {}, helper_addrs=helpers).main


def body(insns: list[Insn]) -> bytes:
    """Bytes of `insns` alone, jitted as the body of `insns; exit`."""
    img = one_image([*insns, exit_insn()], stack=512)
    return img.code[img.addrs[0] : img.addrs[len(insns)]]


def decode(code: bytes, address: int = 0) -> list[capstone.CsInsn]:
    """Capstone (Intel syntax) decoding that must consume every byte."""
    out = list(MD.disasm(code, address))
    assert sum(i.size for i in out) == len(code), "capstone did not consume every byte"
    return out


def text(code: bytes) -> str:
    return "; ".join(f"{i.mnemonic} {i.op_str}".strip() for i in decode(code))
