"""Differential property tests: random programs give the same r0 and the same memory in the
reference interpreter and in the JIT run in Unicorn.

Programs are built from valid instructions only (what the verifier would accept: no
division by a constant zero, immediate shifts in range, jumps forward within their block)
and run unchecked with the fixups' guards (unwind.cli.conformance.build_unchecked). Layout:
r1 = 128 bytes of input (random in [0, 64)), r2 = its length, r9 = loop counter; the
prologue fills r0, r3-r9 and 64 bytes of stack, the epilogue copies the stack into input
bytes [64, 128) so stack contents are compared without comparing addresses. Variants:
straight-line and forward-branching blocks, a bounded loop around a block, and a
bpf2bpf call to a subprog with its own random block."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unwind.cli.conformance import EXECUTORS, build_unchecked
from verifier.isa.insn import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_B,
    BPF_DW,
    BPF_H,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_JNE,
    BPF_LDX,
    BPF_MEM,
    BPF_MEMSX,
    BPF_STX,
    BPF_SUB,
    BPF_W,
    BPF_X,
    Insn,
    call_pseudo,
    exit_insn,
    ld_imm64,
    ldx_mem,
    mov64_imm,
    st_mem,
    stx_mem,
)

DSTS = (0, 2, 3, 4, 5, 6, 7, 8)  # r1 (input), r9 (loop counter), r10 (fp) are never written
SRCS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)  # r10 is never read as a value (differs per engine)
ALU_OPS = (0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xA0, 0xB0, 0xC0, 0xD0)
JMP_OPS = (0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0xA0, 0xB0, 0xC0, 0xD0)
ATOMIC_IMMS = (0x00, 0x01, 0x40, 0x41, 0x50, 0x51, 0xA0, 0xA1, 0xE1, 0xF1)
SIZES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 8}
MEM_LEN = 128
DATA_LEN = 64
STACK_LEN = 64

IMMS = st.one_of(
    st.integers(-(1 << 31), (1 << 31) - 1),
    st.sampled_from([0, 1, -1, 2, 7, 31, 32, 63, 0xFF, 0x7FFF_FFFF, -(1 << 31), 0x8000]),
)
# DIFF_EXAMPLES=2000 for a deeper local hunt; CI keeps the default small.
SETTINGS = settings(max_examples=int(os.environ.get("DIFF_EXAMPLES", "60")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def alu_insn(draw) -> Insn:
    cls = draw(st.sampled_from((BPF_ALU64, BPF_ALU)))
    op = draw(st.sampled_from(ALU_OPS))
    dst = draw(st.sampled_from(DSTS))
    width = 64 if cls == BPF_ALU64 else 32
    if op == 0x80:  # neg
        return Insn(cls | op, dst)
    if op == 0xD0:  # end: to-le / to-be (ALU), bswap (ALU64)
        src_bit = draw(st.sampled_from((0, BPF_X))) if cls == BPF_ALU else 0
        return Insn(cls | op | src_bit, dst, imm=draw(st.sampled_from((16, 32, 64))))
    signed = op in (0x30, 0x90) and draw(st.booleans())
    if draw(st.booleans()):  # register source
        off = 1 if signed else 0
        if op == 0xB0 and draw(st.booleans()):
            off = draw(st.sampled_from((8, 16, 32) if width == 64 else (8, 16)))  # movsx
        return Insn(cls | op | BPF_X, dst, draw(st.sampled_from(SRCS)), off)
    imm = draw(IMMS)
    if op in (0x60, 0x70, 0xC0):
        imm = draw(st.integers(0, width - 1))
    if op in (0x30, 0x90) and imm == 0:
        imm = 3
    return Insn(cls | op, dst, 0, 1 if signed else 0, imm)


@st.composite
def mem_operand(draw, size: int, aligned: bool = False) -> tuple[int, int]:
    """(base register, offset): input memory [0, 64) through r1 or the stack through r10."""
    step = size if aligned else 1
    if draw(st.booleans()):
        return 1, draw(st.integers(0, (DATA_LEN - size) // step)) * step
    return 10, -STACK_LEN + draw(st.integers(0, (STACK_LEN - size) // step)) * step


@st.composite
def mem_insn(draw) -> Insn:
    kind = draw(st.sampled_from(("ldx", "ldxs", "st", "stx", "atomic")))
    if kind == "atomic":
        size = draw(st.sampled_from((BPF_W, BPF_DW)))
        base, off = draw(mem_operand(SIZES[size], aligned=True))
        src = draw(st.sampled_from(DSTS))  # fetch variants write their source register
        return Insn(BPF_STX | BPF_ATOMIC | size, base, src, off, draw(st.sampled_from(ATOMIC_IMMS)))
    size = draw(st.sampled_from((BPF_B, BPF_H, BPF_W) if kind == "ldxs" else tuple(SIZES)))
    base, off = draw(mem_operand(SIZES[size]))
    if kind in ("ldx", "ldxs"):
        mode = BPF_MEMSX if kind == "ldxs" else BPF_MEM
        return Insn(BPF_LDX | mode | size, draw(st.sampled_from(DSTS)), base, off)
    if kind == "st":
        return st_mem(size, base, off, draw(IMMS))
    return stx_mem(size, base, draw(st.sampled_from(SRCS)), off)


@st.composite
def jump_insn(draw, remaining: int) -> Insn:
    """A forward jump landing at most `remaining` insns ahead (on the block's end at most)."""
    off = draw(st.integers(0, remaining))
    kind = draw(st.sampled_from(("cond", "cond", "ja", "gotol")))
    if kind == "ja":
        return Insn(BPF_JMP | BPF_JA, off=off)
    if kind == "gotol":
        return Insn(BPF_JMP32 | BPF_JA, imm=off)
    cls = draw(st.sampled_from((BPF_JMP, BPF_JMP32)))
    op = draw(st.sampled_from(JMP_OPS))
    dst = draw(st.sampled_from(SRCS))
    if draw(st.booleans()):
        return Insn(cls | op | BPF_X, dst, draw(st.sampled_from(SRCS)), off)
    return Insn(cls | op, dst, 0, off, draw(IMMS))


@st.composite
def block(draw, branches: bool, max_len: int = 14) -> list[Insn]:
    n = draw(st.integers(1, max_len))
    out: list[Insn] = []
    for i in range(n):
        kinds = ["alu", "alu", "mem"] + (["jump"] if branches else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "alu":
            out.append(draw(alu_insn()))
        elif kind == "mem":
            out.append(draw(mem_insn()))
        else:
            out.append(draw(jump_insn(n - i - 1)))
    return out


def prologue(values: list[int]) -> list[Insn]:
    out: list[Insn] = []
    for reg, value in zip((0, 3, 4, 5, 6, 7, 8, 9), values, strict=True):
        out.extend(ld_imm64(reg, value))
    for k in range(STACK_LEN // 8):
        out.append(st_mem(BPF_DW, 10, -STACK_LEN + 8 * k, values[k % len(values)] & 0x7FFF_FFFF))
    return out


def epilogue() -> list[Insn]:
    out: list[Insn] = []
    for k in range(STACK_LEN // 8):
        out += [ldx_mem(BPF_DW, 2, 10, -STACK_LEN + 8 * k), stx_mem(BPF_DW, 1, 2, DATA_LEN + 8 * k)]
    return [*out, exit_insn()]


def loop(body: list[Insn], count: int) -> list[Insn]:
    """r9 = count; do { body } while (--r9 != 0)."""
    return [mov64_imm(9, count), *body, Insn(BPF_ALU64 | BPF_SUB, 9, imm=1),
            Insn(BPF_JMP | BPF_JNE, 9, 0, -(len(body) + 2), 0)]


VALUES = st.lists(st.integers(0, (1 << 64) - 1), min_size=8, max_size=8)
DATA = st.binary(min_size=MEM_LEN, max_size=MEM_LEN)


def assert_same(insns: list[Insn], data: bytes) -> None:
    vp = build_unchecked(insns, "diff")
    interp = EXECUTORS["interp"](vp, data, 100_000)
    jit = EXECUTORS["jit"](vp, data, 100_000)
    assert jit[0] == interp[0], f"r0: jit {jit[0]:#x} != interp {interp[0]:#x}"
    assert jit[1] == interp[1], "memory differs"


@SETTINGS
@given(values=VALUES, data=DATA, body=block(branches=False, max_len=24))
def test_straight_line(values, data, body):
    assert_same([*prologue(values), *body, *epilogue()], data)


@SETTINGS
@given(values=VALUES, data=DATA, first=block(branches=True), second=block(branches=True))
def test_forward_branches(values, data, first, second):
    assert_same([*prologue(values), *first, *second, *epilogue()], data)


@SETTINGS
@given(values=VALUES, data=DATA, body=block(branches=True, max_len=10), count=st.integers(1, 6))
def test_bounded_loop(values, data, body, count):
    assert_same([*prologue(values), *loop(body, count), *epilogue()], data)


@SETTINGS
@given(values=VALUES, data=DATA, caller=block(branches=True, max_len=8), callee=block(branches=True))
def test_bpf2bpf_call(values, data, caller, callee):
    main = [*prologue(values), *caller, None, *epilogue()]
    at = main.index(None)
    sub = [*(st_mem(BPF_DW, 10, -8 * (k + 1), k) for k in range(STACK_LEN // 8)), *callee,
           mov64_imm(9, 0), exit_insn()]  # writes r9: the caller's must be restored
    main[at] = call_pseudo(len(main) - at - 1)
    assert_same([*main, *sub], data)
