"""BMI2 shifts by a register (shlx/shrx/sarx), which our JIT emits only for a `KernelHost`
whose CPU has BMI2: every dst/src pair and width decodes, with capstone, to the instruction
the kernel emits, and R4 (rcx) as the count keeps the `shl/shr/sar dst, cl` form."""

from __future__ import annotations

import capstone
import pytest

from jit.lower import lower_insn
from jit.lower_ctx import LowerCtx
from jit.x86 import alu
from jit.x86.encode import X86_NAMES, hw
from verifier.isa.insn import BPF_ALU, BPF_ALU64, BPF_ARSH, BPF_LSH, BPF_RSH, BPF_X, Insn

MNEMONIC = {BPF_LSH: "shlx", BPF_RSH: "shrx", BPF_ARSH: "sarx"}
CS = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
NAMES32 = {"rax": "eax", "rcx": "ecx", "rdx": "edx", "rbx": "ebx", "rsi": "esi", "rdi": "edi", "rbp": "ebp"}


def _name(reg: int, is64: bool) -> str:
    name = X86_NAMES[hw(reg)]
    if is64:
        return name
    return NAMES32.get(name, name + "d")


@pytest.mark.parametrize("op", [BPF_LSH, BPF_RSH, BPF_ARSH])
@pytest.mark.parametrize("is64", [True, False])
def test_shiftx_decodes_for_every_register_pair(op, is64):
    for dst in range(11):
        for src in range(11):
            code = alu.emit_shiftx(op, is64, dst, src)
            (ins,) = list(CS.disasm(code, 0))
            d, s = _name(dst, is64), _name(src, is64)
            assert (ins.mnemonic, ins.op_str, ins.size) == (MNEMONIC[op], f"{d}, {d}, {s}", 5)


def test_the_reference_example():
    assert alu.emit_shiftx(BPF_LSH, True, 0, 1).hex(" ") == "c4 e2 c1 f7 c0"  # r0 <<= r1


def _lower(insn: Insn, bmi2: bool) -> bytes:
    ctx = LowerCtx(name="t", insns=[insn, Insn(0x95, 0, 0, 0, 0)], addrs=[0, 0, 0], cleanup_addr=0,
                   padding=False, image_addr=0, epilogue=b"\xc3", resolve_call=lambda k, i: None,
                   resolve_func=lambda k, i: 0, bmi2=bmi2)  # fmt: skip
    return lower_insn(ctx, 0)[0]


def test_lowering_picks_bmi2_only_when_asked_and_never_for_a_count_in_rcx():
    shl = Insn(BPF_ALU64 | BPF_LSH | BPF_X, 0, 1, 0, 0)
    assert _lower(shl, True) == alu.emit_shiftx(BPF_LSH, True, 0, 1)
    assert _lower(shl, False)[:1] == b"\x51"  # push rcx: the policy without BMI2
    by_rcx = Insn(BPF_ALU | BPF_RSH | BPF_X, 0, 4, 0, 0)
    assert _lower(by_rcx, True) == _lower(by_rcx, False)
