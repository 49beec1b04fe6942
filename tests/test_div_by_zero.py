"""Issue 14, class 7: division and modulo by zero, every variant, on every path.

RFC 9669: a division by zero gives 0; a modulo by zero leaves dst unchanged (for the
32-bit class: its low half, zero-extended). Signed and unsigned alike.
- The checker rejects a constant zero divisor with the kernel's "div by zero" (checked
  against Linux 6.18: BPF_PROG_LOAD of each of the eight variants fails with that line).
- A register divisor that is zero at run time is the rewrite's guards' business: both
  engines run the guarded program and give the ISA's value.
- The conformance runner builds programs without the checker; there the rewrite turns a
  constant zero divisor into the ISA's result too, so the JIT (whose `div` would fault)
  and the interpreter never disagree."""

import pytest

from unwind.cli import pipeline
from unwind.cli.conformance import EXECUTORS, build_unchecked
from unwind.interp_kernel import run_interp
from verifier.asm.assembler import assemble
from verifier.check.checker import check
from verifier.errors import VerifierError
from verifier.isa.insn import (
    BPF_ALU,
    BPF_ALU64,
    BPF_DIV,
    BPF_K,
    BPF_MOD,
    BPF_X,
    Insn,
    exit_insn,
    ld_imm64,
    mov64_imm,
)

U64 = (1 << 64) - 1
# (op, off, name in llvm syntax)
VARIANTS = [(BPF_DIV, 0, "/="), (BPF_DIV, 1, "s/="), (BPF_MOD, 0, "%="), (BPF_MOD, 1, "s%=")]
CLASSES = [(BPF_ALU64, "r"), (BPF_ALU, "w")]
DSTS = [7, 0, U64, 0xFFFFFFFF_00000007, 0x80000000_00000000, 0x7FFFFFFF_FFFFFFF9]


def ids(param) -> str:
    return {BPF_DIV: "div", BPF_MOD: "mod", BPF_ALU64: "64", BPF_ALU: "32"}.get(param, str(param))


def isa_by_zero(op: int, cls: int, dst: int) -> int:
    """What RFC 9669 says `dst op= 0` leaves in dst."""
    if op == BPF_DIV:
        return 0
    return dst if cls == BPF_ALU64 else dst & 0xFFFFFFFF


@pytest.mark.parametrize(("op", "off", "spelling"), VARIANTS, ids=[v[2] for v in VARIANTS])
@pytest.mark.parametrize(("cls", "reg"), CLASSES, ids=["64", "32"])
def test_checker_rejects_a_constant_zero_divisor_like_the_kernel(op, off, spelling, cls, reg):
    prog = assemble(f"main:\n    r0 = 7\n    {reg}0 {spelling} 0\n    exit\n", "div0.s")
    with pytest.raises(VerifierError) as info:
        check(prog)
    assert str(info.value) == "div by zero"
    insn_line = f"1: ({cls | op | BPF_K:02x}) {reg}0 {spelling} 0"
    assert info.value.log.splitlines()[-2:] == [insn_line, "div by zero"]


@pytest.mark.parametrize(("op", "off", "spelling"), VARIANTS, ids=[v[2] for v in VARIANTS])
@pytest.mark.parametrize(("cls", "reg"), CLASSES, ids=["64", "32"])
@pytest.mark.parametrize("dst", DSTS, ids=hex)
def test_verified_register_zero_divisor_gives_the_isa_result_on_both_engines(op, off, spelling, cls, reg,
                                                                           dst):
    text = (f"main:\n    r0 = {dst:#x} ll\n    r1 = 0\n    {reg}0 {spelling} {reg}1\n"
            "    exit\n.prog_type syscall\n")
    built = pipeline.build(pipeline.load_text(text, "div0.s"), log_level=0)
    want = isa_by_zero(op, cls, dst)
    assert built.run().retval == want
    assert run_interp(built.verified).retval == want


def unchecked(op: int, off: int, cls: int, dst: int, by_reg: bool) -> list[Insn]:
    src = [mov64_imm(1, 0)] if by_reg else []
    div = Insn(cls | op | (BPF_X if by_reg else BPF_K), 0, 1 if by_reg else 0, off, 0)
    return [*ld_imm64(0, dst), *src, div, exit_insn()]


@pytest.mark.parametrize(("op", "off", "spelling"), VARIANTS, ids=[v[2] for v in VARIANTS])
@pytest.mark.parametrize(("cls", "reg"), CLASSES, ids=["64", "32"])
@pytest.mark.parametrize("by_reg", [False, True], ids=["imm0", "reg0"])
@pytest.mark.parametrize("engine", sorted(EXECUTORS))
def test_unchecked_zero_divisor_gives_the_isa_result_on_both_engines(op, off, spelling, cls, reg, by_reg,
                                                                    engine):
    for dst in DSTS:
        vp = build_unchecked(unchecked(op, off, cls, dst, by_reg), "div0")
        r0, _ = EXECUTORS[engine](vp, b"", 10_000)
        assert r0 == isa_by_zero(op, cls, dst), (engine, hex(dst))
