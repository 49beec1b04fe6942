"""Unicorn smoke runs of jitted programs: random programs of the original instruction subset
against the Python reference of tests/jit_reference, bpf2bpf, kfunc and helper calls, and the
exception callback's return to the main program's caller (the ISA v4 additions are exercised
in test_jit_semantics)."""

from __future__ import annotations

import random

import keystone
import pytest
from unicorn import x86_const as X

from jit.compile import jit_program
from jit.layout import CTX_BASE, stub_address
from jit.listing import listing
from tests.jit_reference import COND, FP, SIZES, Memory, interpret, make_vp, run
from verifier.isa.insn import (
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ARSH,
    BPF_DW,
    BPF_JMP,
    BPF_JMP32,
    BPF_K,
    BPF_LSH,
    BPF_MOV,
    BPF_MUL,
    BPF_NEG,
    BPF_OR,
    BPF_RSH,
    BPF_SUB,
    BPF_X,
    BPF_XOR,
    Insn,
    alu64_reg,
    call_helper,
    call_kfunc,
    call_pseudo,
    exit_insn,
    ld_imm64,
    ldx_mem,
    mov64_imm,
    mov64_reg,
    st_mem,
    stx_mem,
)

ALU_OPS = [BPF_ADD, BPF_SUB, BPF_MUL, BPF_AND, BPF_OR, BPF_XOR, BPF_LSH, BPF_RSH, BPF_ARSH, BPF_MOV, BPF_NEG]
X86_ARGS = [X.UC_X86_REG_RDI, X.UC_X86_REG_RSI, X.UC_X86_REG_RDX, X.UC_X86_REG_RCX, X.UC_X86_REG_R8]
WRITABLE = [0, 2, 3, 4, 5, 6, 7, 8, 9]  # r1 stays the ctx pointer, r10 the frame pointer


def random_insn(rng: random.Random, left: int) -> Insn:
    roll = rng.random()
    dst, src = rng.choice(WRITABLE), rng.choice(range(10))
    cls = rng.choice([BPF_ALU, BPF_ALU64])
    if roll < 0.5:
        op = rng.choice(ALU_OPS)
        if op == BPF_NEG:
            return Insn(cls | op, dst)
        if rng.random() < 0.5:
            return Insn(cls | op | BPF_X, dst, src)
        imm = (
            rng.randrange(64 if cls == BPF_ALU64 else 32)
            if op in (BPF_LSH, BPF_RSH, BPF_ARSH)
            else rng.choice(
                [0, 1, -1, 5, 127, 128, -129, 0x1000, 0x7FFFFFFF, -0x80000000, rng.randrange(-(2**31), 2**31)]
            )
        )
        return Insn(cls | op | BPF_K, dst, 0, 0, imm)
    if roll < 0.7:
        size = rng.choice(list(SIZES))
        base, off = rng.choice([(1, rng.randrange(0, 200)), (10, -rng.randrange(88, 500))])
        kind = rng.randrange(3)
        if kind == 0:
            return ldx_mem(size, dst, base, off)
        if kind == 1:
            return stx_mem(size, base, src, off)
        return st_mem(size, base, off, rng.randrange(-(2**31), 2**31))
    op = rng.choice(list(COND))
    jcls = rng.choice([BPF_JMP, BPF_JMP32])
    off = min(left, rng.choice([0, 1, 2, 3, rng.randint(0, left)]))  # mostly short hops
    if rng.random() < 0.5:
        return Insn(jcls | op | BPF_X, rng.choice(range(10)), src, off)
    return Insn(
        jcls | op | BPF_K,
        rng.choice(range(10)),
        0,
        off,
        rng.choice([0, 1, -1, 200, rng.randrange(-999, 999)]),
    )


@pytest.mark.parametrize("seed", range(30))
def test_random_programs_compute_what_bpf_says(seed: int) -> None:
    rng = random.Random(seed)
    init = [rng.getrandbits(64) for _ in range(10)]
    prologue: list[Insn] = []
    for r in WRITABLE:
        prologue += ld_imm64(r, init[r] if rng.random() < 0.8 else rng.randrange(-(2**31), 2**32))
    n = rng.randint(20, 120)
    body = [random_insn(rng, n - k) for k in range(n)]
    dump = [stx_mem(BPF_DW, 10, r, -8 * (r + 1)) for r in range(10)]
    insns = [*prologue, *body, *dump, exit_insn()]
    ctx = bytes(rng.getrandbits(8) for _ in range(256))
    jp = jit_program(make_vp([("main", insns)], stack=512), {})
    uc = run(jp, {X.UC_X86_REG_RDI: CTX_BASE}, ctx=ctx)

    regs = [0] * 12
    regs[1], regs[10] = CTX_BASE, FP
    ctx_mem, stack_mem = bytearray(ctx), bytearray(512)  # fresh guest memory is zero
    expected = interpret(insns, regs, Memory({CTX_BASE: ctx_mem, FP - 512: stack_mem}))
    assert uc.reg_read(X.UC_X86_REG_RAX) == expected
    assert bytes(uc.mem_read(CTX_BASE, 256)) == bytes(ctx_mem)
    assert bytes(uc.mem_read(FP - 512, 512)) == bytes(stack_mem)


def test_bpf2bpf_call_preserves_callee_saved_registers() -> None:
    main = [
        mov64_imm(6, 1000),
        mov64_imm(1, 5),
        mov64_imm(2, 7),
        call_pseudo(2),
        alu64_reg(BPF_ADD, 0, 6),
        exit_insn(),
    ]
    sub = [mov64_reg(6, 1), Insn(BPF_ALU64 | BPF_MUL | BPF_X, 6, 2), mov64_reg(0, 6), exit_insn()]
    jp = jit_program(make_vp([("main", main), ("sub", sub)]), {})
    uc = run(jp, {X.UC_X86_REG_RBX: 0x5A5A})
    assert uc.reg_read(X.UC_X86_REG_RAX) == 1035
    assert uc.reg_read(X.UC_X86_REG_RBX) == 0x5A5A  # restored by main's epilogue


def test_kfunc_call_reaches_its_stub() -> None:
    stub = stub_address(2)
    jp = jit_program(
        make_vp([("main", [mov64_imm(1, 40), mov64_imm(2, 2), call_kfunc(5), exit_insn()])]), {5: stub}
    )
    uc = run(jp, {}, stubs={stub: bytes.fromhex("488d0437c3")})  # lea rax, [rdi + rsi]; ret
    assert uc.reg_read(X.UC_X86_REG_RAX) == 42



def test_helper_call_reaches_its_stub_and_is_named_in_the_listing() -> None:
    """Helper calls (src 0) are `E8 rel32` to helper_addrs[imm], like kfunc calls; the
    helper id space is separate from the kfunc BTF ids (both use 5 here)."""
    helper, kfunc = stub_address(4), stub_address(5)
    insns = [mov64_imm(1, 40), mov64_imm(2, 2), call_helper(5), mov64_reg(1, 0), call_kfunc(5), exit_insn()]
    jp = jit_program(make_vp([("main", insns)]), {5: kfunc}, helper_addrs={5: helper})
    img = jp.main
    call = img.code[img.addrs[2] : img.addrs[3]]
    assert call[0] == 0xE8
    assert img.address + img.addrs[3] + int.from_bytes(call[1:], "little", signed=True) == helper
    stubs = {helper: bytes.fromhex("488d0437c3"), kfunc: bytes.fromhex("488d4701c3")}  # lea rax, [rdi + 1]
    assert run(jp, {}, stubs=stubs).reg_read(X.UC_X86_REG_RAX) == 43
    text = listing(jp)
    assert "# helper 5 stub" in text and "# kfunc stub 5" in text

def test_exception_callback_returns_to_the_main_programs_caller() -> None:
    """A fake bpf_throw stub clobbers the callee-saved registers, then enters the default
    callback with rsi = main's sp at the call and rdx = main's fp, like the kernel: the
    callback restores rbx/r12-r15 from main's frame and returns its r1 to the host."""
    main = [
        mov64_imm(6, 1),
        mov64_imm(7, 2),
        mov64_imm(8, 3),
        mov64_imm(9, 4),
        mov64_imm(1, 42),
        call_kfunc(1),
        mov64_imm(0, 0),
        exit_insn(),
    ]
    cb = [mov64_reg(0, 1), exit_insn()]
    vp = make_vp([("main", main), ("exception_cb", cb)], stack=8, boundary=True, exception_cb=1)
    stub = stub_address(1)
    jp = jit_program(vp, {1: stub})
    ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
    asm = (
        "lea rsi, [rsp + 8]; mov rdx, rbp; mov rbx, 0xdead; mov r12, 0xdead; mov r13, 0xdead; "
        f"mov r15, 0xdead; mov rbp, 0xdead; movabs rax, {jp.images[1].address:#x}; jmp rax"
    )
    code = bytes(ks.asm(asm)[0])
    saved = {
        X.UC_X86_REG_RBX: 11,
        X.UC_X86_REG_R12: 12,
        X.UC_X86_REG_R13: 13,
        X.UC_X86_REG_R14: 14,
        X.UC_X86_REG_R15: 15,
        X.UC_X86_REG_RBP: 0x77,
    }
    uc = run(jp, saved, stubs={stub: code})
    assert uc.reg_read(X.UC_X86_REG_RAX) == 42
    for reg, value in saved.items():
        assert uc.reg_read(reg) == value
