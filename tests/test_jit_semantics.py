"""Unicorn runs of the ISA v4 instructions against the Python reference (tests/jit_reference):
div/mod signed and unsigned (through the verifier's guards, so division by zero and
INT_MIN / -1 behave as the ISA says), 32-bit zero extension, movsx, le/be/bswap,
sign-extending loads, every atomic with its fetch result, cmpxchg success and failure, and
random branching programs mixing all of them.

The reference runs the program as written (ISA semantics); the JIT runs it after the
mainline rewrites (`rewrite`: div/mod guards, zext after a 32-bit cmpxchg), as the kernel
would. Registers R0..R9 are dumped to the stack before exit, so every register is compared.
"""

from __future__ import annotations

import random

import pytest
from unicorn import x86_const as X

from jit.compile import jit_program
from jit.layout import CTX_BASE
from tests.jit_reference import FP, M64, Memory, interpret, patch_straight_line, program_vp, rewrite, run
from verifier.isa.insn import (
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ATOMIC,
    BPF_B,
    BPF_CMPXCHG,
    BPF_DIV,
    BPF_DW,
    BPF_END,
    BPF_FETCH,
    BPF_H,
    BPF_JEQ,
    BPF_JGT,
    BPF_JMP,
    BPF_JMP32,
    BPF_JNE,
    BPF_JSGT,
    BPF_JSLT,
    BPF_K,
    BPF_LDX,
    BPF_MEMSX,
    BPF_MOD,
    BPF_MOV,
    BPF_MUL,
    BPF_OR,
    BPF_STX,
    BPF_TO_BE,
    BPF_TO_LE,
    BPF_W,
    BPF_X,
    BPF_XCHG,
    BPF_XOR,
    Insn,
    alu64_imm,
    exit_insn,
    ja,
    ld_imm64,
    ldx_mem,
    mov64_reg,
    st_mem,
    stx_mem,
)

STACK = 512
WRITABLE = [0, 2, 3, 4, 5, 6, 7, 8, 9]  # r1 stays the ctx pointer, r10 the frame pointer
INT_MIN64, INT_MIN32 = 1 << 63, 1 << 31
INTERESTING = [0, 1, 2, 3, 7, M64, M64 - 1, M64 - 6, INT_MIN64, INT_MIN64 - 1, INT_MIN32, INT_MIN32 - 1,
               0xFFFFFFFF, 0xFFFFFFFF80000000, 0x1234_5678_9ABC_DEF0, 0xFFFF_FFFF_0000_0007,
               0x8000_0000_FFFF_FFFF]
ATOMIC_OPS = [BPF_ADD, BPF_AND, BPF_OR, BPF_XOR, BPF_ADD | BPF_FETCH, BPF_AND | BPF_FETCH,
              BPF_OR | BPF_FETCH, BPF_XOR | BPF_FETCH, BPF_XCHG, BPF_CMPXCHG]


def compare(original: list[Insn], jitted: list[Insn], ctx: bytes = bytes(range(256))) -> int:
    """Run `original` in the reference and `jitted` through the JIT in Unicorn, both ending
    with a dump of R0..R9 to the top of the stack; compare r0, ctx and the stack."""
    dump = [stx_mem(BPF_DW, 10, r, -8 * (r + 1)) for r in range(10)] + [exit_insn()]
    jp = jit_program(program_vp([*jitted, *dump]), {})
    uc = run(jp, {X.UC_X86_REG_RDI: CTX_BASE}, ctx=ctx)
    regs = [0] * 12
    regs[1], regs[10] = CTX_BASE, FP
    ctx_mem, stack_mem = bytearray(ctx), bytearray(STACK)
    expected = interpret([*original, *dump], regs, Memory({CTX_BASE: ctx_mem, FP - STACK: stack_mem}))
    stack = bytes(uc.mem_read(FP - STACK, STACK))
    for r in range(10):
        slot = STACK - 8 * (r + 1)
        got = int.from_bytes(stack[slot : slot + 8], "little")
        assert got == regs[r], f"R{r}: jit {got:#x} != reference {regs[r]:#x}"
    assert stack == bytes(stack_mem)
    assert bytes(uc.mem_read(CTX_BASE, len(ctx))) == bytes(ctx_mem)
    assert uc.reg_read(X.UC_X86_REG_RAX) == expected
    return expected


def straight(insns: list[Insn]) -> None:
    compare(insns, patch_straight_line(insns))


def fold(reg: int) -> list[Insn]:
    """`r6 = r6 * 0x1000193 ^ reg`: every intermediate result reaches the final R6."""
    return [alu64_imm(BPF_MUL, 6, 0x1000193), Insn(BPF_ALU64 | BPF_XOR | BPF_X, 6, reg)]


def set_regs(values: dict[int, int]) -> list[Insn]:
    return [i for r, v in values.items() for i in ld_imm64(r, v)]


# ---------------------------------------------------------------- div / mod


DIV_SHAPES = [(0, 1), (1, 0), (3, 1), (1, 3), (4, 3), (3, 4), (0, 3), (3, 0), (5, 9), (2, 2), (0, 0), (7, 8)]


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("is64", [True, False], ids=["64", "32"])
@pytest.mark.parametrize("op", [BPF_DIV, BPF_MOD], ids=["div", "mod"])
def test_div_mod_by_register(op: int, is64: bool, signed: bool) -> None:
    """Every register shape (dst/src among R0, R3, R4, extended, equal) against dividends
    and divisors including 0, -1, 1 and INT_MIN; the other registers keep their values."""
    cls = BPF_ALU64 if is64 else BPF_ALU
    rng = random.Random(op * 7 + is64 * 3 + signed)
    insns: list[Insn] = []
    for n in range(6 * len(DIV_SHAPES)):
        dst, src = DIV_SHAPES[n % len(DIV_SHAPES)]
        dividend = rng.choice(INTERESTING + [rng.getrandbits(64)])
        divisor = rng.choice(INTERESTING + [rng.getrandbits(64), rng.getrandbits(8)])
        others = {r: rng.getrandbits(64) for r in WRITABLE if r not in (dst, src, 6)}
        values = {**others, src: divisor, dst: dividend} if dst != src else {**others, dst: dividend}
        insns += set_regs(values)
        insns.append(Insn(cls | op | BPF_X, dst, src, int(signed)))
        insns += [stx_mem(BPF_DW, 10, dst, -96 - 8 * (n % 50)), *fold(dst)]
        if dst == 1 or src == 1:
            insns += set_regs({1: CTX_BASE})
    straight(insns)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("is64", [True, False], ids=["64", "32"])
@pytest.mark.parametrize("op", [BPF_DIV, BPF_MOD], ids=["div", "mod"])
def test_div_mod_by_immediate(op: int, is64: bool, signed: bool) -> None:
    """K divisors: imm is sign-extended to 64 bits, then read as unsigned unless signed;
    `s/ -1` and `s% -1` are the verifier's neg / `w = 0` rewrites."""
    cls = BPF_ALU64 if is64 else BPF_ALU
    rng = random.Random(op + is64 + signed)
    insns: list[Insn] = []
    for imm in [1, 3, -1, -3, 7, -7, 0x7FFFFFFF, -0x80000000, 255, 0x10000]:
        for dst in (0, 3, 4, 8):
            insns += set_regs({dst: rng.choice(INTERESTING + [rng.getrandbits(64)])})
            insns.append(Insn(cls | op | BPF_K, dst, 0, int(signed), imm))
            insns += fold(dst)
    straight(insns)


def test_int_min_over_minus_one_and_division_by_zero() -> None:
    """The edge cases one by one, with their ISA results spelled out."""
    cases = [
        (BPF_ALU64, BPF_DIV, 1, INT_MIN64, M64, INT_MIN64),  # INT_MIN s/ -1 wraps
        (BPF_ALU64, BPF_MOD, 1, INT_MIN64, M64, 0),
        (BPF_ALU, BPF_DIV, 1, 0xDEAD_0000_8000_0000, M64, INT_MIN32),
        (BPF_ALU, BPF_MOD, 1, 0xDEAD_0000_8000_0000, 0xFFFFFFFF, 0),
        (BPF_ALU64, BPF_DIV, 0, 1234, 0, 0),  # x / 0 = 0
        (BPF_ALU64, BPF_MOD, 0, 1234, 0, 1234),  # x % 0 = x
        (BPF_ALU, BPF_DIV, 0, 0xDEAD_0000_0000_1234, 0xFFFF_FFFF_0000_0000, 0),  # w divisor is 0
        (BPF_ALU, BPF_MOD, 0, 0xDEAD_0000_0000_1234, 0, 0x1234),  # zero-extended dst
        (BPF_ALU64, BPF_DIV, 1, 1234, 0, 0),
        (BPF_ALU64, BPF_MOD, 1, -1234 & M64, 0, -1234 & M64),
        (BPF_ALU, BPF_MOD, 1, 0xDEAD_0000_FFFF_FFF9, 0, 0xFFFF_FFF9),
        (BPF_ALU64, BPF_DIV, 1, -7 & M64, 2, -3 & M64),  # truncation toward zero
        (BPF_ALU64, BPF_MOD, 1, -7 & M64, 2, -1 & M64),  # sign of the dividend
        (BPF_ALU64, BPF_MOD, 1, 7, -3 & M64, 1),
        (BPF_ALU, BPF_DIV, 1, 0xFFFF_FFF9, 2, 0xFFFF_FFFD),
        (BPF_ALU64, BPF_DIV, 0, M64, 2, M64 >> 1),  # unsigned
    ]
    for cls, op, signed, dividend, divisor, result in cases:
        prog = [*set_regs({3: dividend, 4: divisor}), Insn(cls | op | BPF_X, 3, 4, signed), mov64_reg(0, 3)]
        assert compare(prog, patch_straight_line(prog)) == result


def test_unguarded_sequence_needs_the_fixups() -> None:
    """Without the verifier's guard the JIT's `div` faults on 0: the guard is what makes it
    safe (the JIT itself has no check, like the kernel's)."""
    prog = [*set_regs({3: 5, 4: 0}), Insn(BPF_ALU64 | BPF_DIV | BPF_X, 3, 4), mov64_reg(0, 3)]
    with pytest.raises(Exception, match="UC_ERR_EXCEPTION"):
        compare(prog, prog)
    assert len(patch_straight_line(prog)) == len(prog) + 3


# ---------------------------------------------------------------- movsx, byte order, loads


def test_movsx_every_width_and_register_shape() -> None:
    rng = random.Random(5)
    insns: list[Insn] = []
    shapes = [(0, 2), (2, 0), (3, 4), (5, 9), (7, 7), (0, 0), (8, 10)]
    for dst, src in shapes * 3:
        for cls, bits in [(BPF_ALU64, 8), (BPF_ALU64, 16), (BPF_ALU64, 32), (BPF_ALU, 8), (BPF_ALU, 16)]:
            value = rng.choice([0x80, 0x7F, 0xFF80, 0x7FFF, 0x8000_0000, 0x7FFF_FFFF, rng.getrandbits(64)])
            if src != 10:
                insns += set_regs({src: value | (rng.getrandbits(32) << 32)})
            insns += set_regs({dst: rng.getrandbits(64)}) if dst != src else []
            insns.append(Insn(cls | BPF_MOV | BPF_X, dst, src, bits))
            insns += fold(dst)
    straight(insns)


def test_end_and_bswap_every_width() -> None:
    rng = random.Random(6)
    insns: list[Insn] = []
    for dst in [0, 1, 3, 4, 5, 7, 9] * 2:
        for code in (BPF_ALU | BPF_END | BPF_TO_LE, BPF_ALU | BPF_END | BPF_TO_BE, BPF_ALU64 | BPF_END):
            for width in (16, 32, 64):
                if dst != 1:
                    insns += set_regs({dst: rng.getrandbits(64)})
                insns.append(Insn(code, dst, 0, 0, width))
                insns += fold(dst)
                if dst == 1:
                    insns += set_regs({1: CTX_BASE})
    straight(insns)


def test_sign_extending_loads() -> None:
    ctx = bytes([0x7F, 0x80, 0xFF, 0x01] * 64)
    insns: list[Insn] = []
    shapes = [(BPF_B, 0), (BPF_B, 1), (BPF_B, 2), (BPF_H, 0), (BPF_H, 1), (BPF_H, 200),
              (BPF_W, 0), (BPF_W, 1), (BPF_W, 250), (BPF_B, 129)]
    for size, off in shapes:
        for dst in (0, 3, 7):
            insns.append(Insn(BPF_LDX | BPF_MEMSX | size, dst, 1, off))
            insns += fold(dst)
    insns += [stx_mem(BPF_W, 10, 1, -300), Insn(BPF_LDX | BPF_MEMSX | BPF_H, 9, 10, -299)]  # rbp base
    insns += [mov64_reg(7, 10), Insn(BPF_LDX | BPF_MEMSX | BPF_B, 8, 7, -298)]  # r13 base
    compare(insns, insns, ctx)


# ---------------------------------------------------------------- atomics


@pytest.mark.parametrize("size", [BPF_W, BPF_DW], ids=["w", "dw"])
@pytest.mark.parametrize("op", ATOMIC_OPS, ids=lambda op: f"op{op:#x}")
def test_atomics(op: int, size: int) -> None:
    """Each op on the stack and on ctx, with src among R0/R3/R4/R9 and the pointer in R10,
    R1 or R0 (the cases where the fetch loop uses r10 in place of R0); R0 with garbage in
    its upper half for the 32-bit cmpxchg, equal to memory or not."""
    rng = random.Random(op * 3 + size)
    insns: list[Insn] = [st_mem(BPF_DW, 10, -64, 0x1111_2222_3333_4444), st_mem(BPF_DW, 10, -56, -5)]
    for n in range(12):
        base, off = rng.choice([(10, -64), (10, -56), (1, 8 * rng.randrange(20)), (0, 8), (0, 0)])
        src = rng.choice([3, 4, 9] + ([0] if base != 0 else []))
        insns += set_regs({src: rng.choice(INTERESTING + [rng.getrandbits(64)])})
        if op == BPF_CMPXCHG and base != 0 and src != 0:  # R0 is the comparand: equal or not
            if rng.random() < 0.6:
                insns.append(ldx_mem(size, 0, base, off))
            if size == BPF_W and rng.random() < 0.7:  # garbage above the 32 bits compared
                insns += [*set_regs({5: 0xABCD_0000_0000_0000}), Insn(BPF_ALU64 | BPF_OR | BPF_X, 0, 5)]
        if base == 0:
            insns += [mov64_reg(0, 10), alu64_imm(BPF_ADD, 0, -64)]  # R0 = fp - 64: the pointer
        insns.append(Insn(BPF_STX | BPF_ATOMIC | size, base, src, off, op))
        insns += [stx_mem(BPF_DW, 10, src, -400 - 8 * n), stx_mem(BPF_DW, 10, 0, -272 - 8 * n)]
    straight(insns)


def test_cmpxchg32_success_and_failure_spelled_out() -> None:
    prog = [
        *set_regs({5: 0x0000_0001_0000_0005, 0: 0xFFFF_FFFF_0000_0005, 2: 9}),
        stx_mem(BPF_DW, 10, 5, -8),
        Insn(BPF_STX | BPF_ATOMIC | BPF_W, 10, 2, -8, BPF_CMPXCHG),  # succeeds: low 32 bits match
        mov64_reg(3, 0),
        Insn(BPF_STX | BPF_ATOMIC | BPF_W, 10, 2, -8, BPF_CMPXCHG),  # R0 = 5 now, memory 9: fails
        ldx_mem(BPF_DW, 4, 10, -8),
    ]
    compare(prog, patch_straight_line(prog))
    regs = [0] * 12
    regs[10] = FP
    interpret([*prog, exit_insn()], regs, Memory({FP - STACK: bytearray(STACK)}))
    assert (regs[3], regs[0], regs[4]) == (5, 9, 0x0000_0001_0000_0009)


# ---------------------------------------------------------------- random programs


def random_op(rng: random.Random) -> Insn:
    roll = rng.random()
    dst, src = rng.choice(WRITABLE), rng.choice(range(10))
    cls = rng.choice([BPF_ALU, BPF_ALU64])
    if roll < 0.3:
        op = rng.choice([BPF_DIV, BPF_MOD])
        signed = rng.random() < 0.5
        if rng.random() < 0.6:
            return Insn(cls | op | BPF_X, dst, src, int(signed))
        imm = rng.choice([1, -1, 2, -3, 10, 0x7FFFFFFF, -0x80000000, rng.randrange(1, 1 << 31)])
        return Insn(cls | op | BPF_K, dst, 0, int(signed), imm)
    if roll < 0.45:
        bits = rng.choice([8, 16, 32] if cls == BPF_ALU64 else [8, 16])
        return Insn(cls | BPF_MOV | BPF_X, dst, src, bits)
    if roll < 0.55:
        code = rng.choice([BPF_ALU | BPF_END | BPF_TO_LE, BPF_ALU | BPF_END | BPF_TO_BE, BPF_ALU64 | BPF_END])
        return Insn(code, dst, 0, 0, rng.choice([16, 32, 64]))
    if roll < 0.7:
        size = rng.choice([BPF_B, BPF_H, BPF_W])
        base, off = rng.choice([(1, rng.randrange(0, 200)), (10, -rng.randrange(88, 500))])
        return Insn(BPF_LDX | BPF_MEMSX | size, dst, base, off)
    size = rng.choice([BPF_W, BPF_DW])
    base, off = rng.choice([(1, 8 * rng.randrange(25)), (10, -8 * rng.randrange(12, 60))])
    return Insn(BPF_STX | BPF_ATOMIC | size, base, rng.choice(WRITABLE), off, rng.choice(ATOMIC_OPS))


def random_jump(rng: random.Random) -> Insn:
    op = rng.choice([BPF_JEQ, BPF_JNE, BPF_JGT, BPF_JSGT, BPF_JSLT])
    cls = rng.choice([BPF_JMP, BPF_JMP32])
    if rng.random() < 0.5:
        return Insn(cls | op | BPF_X, rng.choice(range(10)), rng.choice(range(10)))
    return Insn(cls | op | BPF_K, rng.choice(range(10)), 0, 0, rng.choice([0, 1, -1, 200]))


@pytest.mark.parametrize("seed", range(40))
def test_random_branching_programs(seed: int) -> None:
    """Blocks of one insn each (a div/mod or cmpxchg expands to its rewrite on the JIT side)
    and forward jumps over whole blocks, so both programs branch the same way."""
    rng = random.Random(seed)
    init = set_regs({r: rng.choice(INTERESTING + [rng.getrandbits(64)] * 4) for r in WRITABLE})
    blocks: list[tuple[Insn, int]] = []  # (insn, blocks skipped if it is a jump, else -1)
    n = rng.randint(20, 80)
    for k in range(n):
        if rng.random() < 0.15:
            blocks.append((random_jump(rng), rng.randint(0, n - k - 1)))
        elif rng.random() < 0.05:
            blocks.append((ja(0), rng.randint(0, n - k - 1)))
        else:
            blocks.append((random_op(rng), -1))
    original: list[Insn] = list(init)
    jitted: list[Insn] = list(init)
    expansions = [[insn] if skip >= 0 else rewrite(insn) for insn, skip in blocks]
    for k, (insn, skip) in enumerate(blocks):
        if skip < 0:
            original.append(insn)
            jitted += expansions[k]
            continue
        following = range(k + 1, k + 1 + skip)
        original_off = skip
        jitted_off = sum(len(expansions[j]) for j in following)
        if insn.op == 0:
            original.append(ja(original_off))
            jitted.append(ja(jitted_off))
        else:
            original.append(insn.replace(off=original_off))
            jitted.append(insn.replace(off=jitted_off))
    compare(original, jitted, bytes(rng.getrandbits(8) for _ in range(256)))
