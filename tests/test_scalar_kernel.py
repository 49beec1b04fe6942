"""EQUALITY of the scalar domain (verifier/check/scalar*.py) with the live kernel's verifier.

Hypothesis (derandomized, SCALAR_KERNEL_EXAMPLES examples, default 40) writes straight-line
tc programs over r2..r9: ctx loads and constants, then ALU64/ALU32 ops (imm and register
operands, shifts, mul, div, neg, byte swaps, 32-bit and sign-extending movs) and
conditional jumps (JMP/JMP32, imm and register) whose taken side skips one instruction.
The kernel verifies each at log level 2; a tiny abstract evaluator built on our domain
(tests/scalar_kernel_eval.py) follows the log (each printed instruction, each `from X to
Y:` branch it pops, each pruned `safe`) and every register value the kernel prints must equal `scalar_text` of
ours, the `P` of precise scalars aside. The evaluator also keeps the kernel's scalar ids:
movs link registers, `+= const` links with an offset, and a jump refines the linked live
registers (`sync_linked_regs`), so ids print the same too. DIRECTED programs reach the
rarer rules (edges of JNE, one shared value of tnum and range, one-bit JSET, the fork
of a [-1, 0] value before AND/OR).
`SCALAR_KERNEL_RANDOM=1 SCALAR_KERNEL_EXAMPLES=4000` explores new programs each run."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.live_kernel import require_live_kernel
from tests.scalar_kernel_eval import ALU_OPS, CTX_LOADS, JMP_OPS, REGS, U64, follow_log
from unwind.live.load import kernel_load
from verifier.asm.assembler import assemble

EXAMPLES = int(os.environ.get("SCALAR_KERNEL_EXAMPLES", "40"))
RANDOM = bool(os.environ.get("SCALAR_KERNEL_RANDOM"))  # explore: new programs every run

# --- the generator --------------------------------------------------------------------------

imm32 = st.one_of(st.integers(-600, 600), st.sampled_from(
    [0x7FFFFFFF, -0x80000000, 0xFFFF, 0x8000, 0x10000, 0xFF00, -256, 0x7FFFFF00]),
    st.integers(-(1 << 31), (1 << 31) - 1))
imm64 = st.one_of(st.sampled_from([1 << 32, 1 << 63, (1 << 63) - 1, U64 - 0xFF, 0xFFFFFFFF00000000,
                                   0x100000005]), st.integers(0, U64))
jmp_imm = st.one_of(st.integers(-2, 0x101), st.sampled_from([1, 2, 4, 8, 0x80, 0x100, 0xFFFF, 0x7FFFFFFF,
                                                             -0x80000000, -1, 0xFF00]), imm32)
reg = st.sampled_from(list(REGS))


@st.composite
def init_op(draw: st.DrawFn, dst: int) -> tuple:
    kind = draw(st.sampled_from(["ldx", "ldx", "ldx", "movi", "lddw"]))
    if kind == "ldx":
        return ("ldx", dst, *draw(st.sampled_from(CTX_LOADS)))
    if kind == "movi":
        return ("movi", dst, draw(imm32), draw(st.booleans()))
    return ("lddw", dst, draw(imm64))


@st.composite
def body_op(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["alu"] * 8 + ["jmp"] * 5 + ["mov", "movsx", "neg", "end"]))
    dst, alu64 = draw(reg), draw(st.booleans())
    if kind == "alu":
        op = draw(st.sampled_from(list(ALU_OPS)))
        if draw(st.booleans()):
            return ("alu", op, dst, draw(reg), 0, alu64)
        if op in ("<<", ">>", "s>>"):
            imm = draw(st.integers(0, 63 if alu64 else 31))
        elif op in ("/", "%"):
            imm = draw(imm32.filter(bool))
        else:
            imm = draw(imm32)
        return ("alu", op, dst, None, imm, alu64)
    if kind == "jmp":
        op = draw(st.sampled_from(list(JMP_OPS)))
        src = draw(st.one_of(st.none(), reg))
        return ("jmp", op, dst, src, draw(jmp_imm), not alu64)
    if kind == "mov":
        return ("mov", dst, draw(reg), alu64)
    if kind == "movsx":
        bits = draw(st.sampled_from([8, 16, 32] if alu64 else [8, 16]))
        return ("movsx", dst, draw(reg), bits, alu64)
    if kind == "neg":
        return ("neg", dst, alu64)
    return ("end", dst, draw(st.sampled_from(["le", "be", "bswap"])), draw(st.sampled_from([16, 32, 64])))


@st.composite
def programs(draw: st.DrawFn) -> list[tuple]:
    inits = [("movi", 0, 0, True)] + [draw(init_op(r)) for r in REGS]
    return inits + draw(st.lists(body_op(), min_size=3, max_size=18)) + [("movi", 0, 0, True)]


def render(op: tuple) -> str:
    k = op[0]
    rw = lambda r, wide: f"{'r' if wide else 'w'}{r}"  # noqa: E731
    if k == "ldx":
        return f"r{op[1]} = *({op[2]} *)(r1 + {op[3]})"
    if k == "movi":
        return f"{rw(op[1], op[3])} = {op[2]}"
    if k == "lddw":
        return f"r{op[1]} = {op[2]} ll"
    if k == "alu":
        _, o, dst, src, imm, wide = op
        return f"{rw(dst, wide)} {o}= {rw(src, wide) if src is not None else imm}"
    if k == "mov":
        return f"{rw(op[1], op[3])} = {rw(op[2], op[3])}"
    if k == "movsx":
        return f"{rw(op[1], op[4])} = (s{op[3]}) {rw(op[2], op[4])}"
    if k == "neg":
        return f"{rw(op[1], op[2])} = -{rw(op[1], op[2])}"
    if k == "end":
        return f"r{op[1]} = {op[2]}{op[3]} r{op[1]}"
    raise AssertionError(op)


def program_text(ops: list[tuple]) -> tuple[str, dict[int, int]]:
    """The asm text (every jump skips the next op) and each op's slot pc."""
    lines, pcs, pc = [".prog_type tc", "main:"], {}, 0
    for i, op in enumerate(ops):
        lines.append(f".L{i}:")
        pcs[i] = pc
        if op[0] == "jmp":
            _, o, dst, src, imm, j32 = op
            w = "w" if j32 else "r"
            lines.append(f"\tif {w}{dst} {o} {f'{w}{src}' if src is not None else imm} goto .L{i + 2}")
        else:
            lines.append("\t" + render(op))
        pc += 2 if op[0] == "lddw" else 1
    lines += [f".L{len(ops)}:", "\texit"]
    pcs[len(ops)] = pc
    return "\n".join(lines) + "\n", pcs


def check_program(ops: list[tuple]) -> None:
    text, pcs = program_text(ops)
    kp = kernel_load(assemble(text, "<scalar>"), None, log_level=2)
    try:
        assert kp.accepted, f"kernel rejected a generated program:\n{text}\n{kp.log[-2000:]}"
        follow_log(ops, pcs, kp.log, text)
    finally:
        kp.close()


def _ld(dst: int, size: str = "u8") -> tuple:
    return ("ldx", dst, size, 0)


def _j(o: str, dst: int, imm: int, j32: bool = False, src: int | None = None) -> tuple:
    return ("jmp", o, dst, src, imm, j32)


def _a(o: str, dst: int, imm: int, alu64: bool = True, src: int | None = None) -> tuple:
    return ("alu", o, dst, src, imm, alu64)


_NOP = ("movi", 0, 0, True)
DIRECTED = {
    "jne at each end of each range": [
        _ld(2), _j("!=", 2, 255), _NOP, _ld(3), _j("!=", 3, 0), _NOP, _ld(4), _a("-", 4, 128),
        _j("!=", 4, 127), _NOP, _j("!=", 4, -128), _NOP, _j("!=", 4, 127, True), _NOP,
        _j("!=", 4, -128, True), _NOP, _ld(5), _j("!=", 5, 255, True), _NOP],
    "tnum and u64 range share one value": [
        _ld(2), _a("&", 2, 9), _a("|", 2, 4), _j("<", 2, 5), _NOP, _j(">", 2, 11), _NOP,
        _ld(3), _a("&", 3, 9), _a("|", 3, 4), _j("<", 3, 6), _NOP, _j(">", 3, 12), _NOP,
        _ld(4, "u32"), _a("+", 4, 1), ("movi", 5, 0, False), _j("==", 5, 0, True, 4), _NOP],
    "subreg shares one value with the u32 range": [
        _ld(5, "u32"), _a("<<", 5, 32), _ld(6), _a("&", 6, 9), _a("|", 6, 4), _a("|", 5, 0, True, 6),
        _j("<", 5, 6, True), _NOP, _j(">", 5, 12, True), _NOP],
    "signed range crossing zero meets one end of the unsigned": [
        _ld(2), _a("-", 2, 5, False), _j("s>", 2, 5, True), _NOP, _j(">", 2, 10, True), _NOP,
        _ld(3), _a("-", 3, 5), _j("s>", 3, 5), _NOP, _j(">", 3, 10), _NOP,
        _ld(4), _a("-", 4, 5), _j("s<", 4, -3), _NOP, _j("<", 4, 100), _NOP],
    "a [-1, 0] dst forks before AND/OR with a constant": [
        _ld(2, "u32"), _a("<<", 2, 63), _a("s>>", 2, 63), ("mov", 3, 2, True), _a("|", 3, 4),
        ("mov", 4, 2, True), _a("&", 4, 12, False), ("movi", 5, 12, True), ("mov", 6, 2, True),
        _a("&", 6, 0, True, 5), _a("*", 2, 3)],
    "jset with one bit": [
        _ld(2), _j("&", 2, 8), _NOP, _ld(3, "u32"), _j("&", 3, -0x80000000, True), _NOP,
        _ld(4, "u16"), _j("&", 4, 0x300), _NOP],
}


@pytest.mark.parametrize("name", sorted(DIRECTED))
def test_directed_programs_print_like_the_kernel(name: str) -> None:
    require_live_kernel()
    regs = {op[1] for op in DIRECTED[name] if op[0] in ("ldx", "movi")}
    init = [("movi", 0, 0, True)] + [("movi", r, 0, True) for r in REGS if r not in regs]
    check_program(init + DIRECTED[name] + [_NOP])


@settings(max_examples=EXAMPLES, derandomize=not RANDOM, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def _property(ops: list[tuple]) -> None:
    check_program(ops)


def test_scalar_domain_prints_like_the_kernel() -> None:
    require_live_kernel()
    _property()
