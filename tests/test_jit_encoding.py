"""Byte-exact encodings of the x86-64 JIT against the kernel reference tables
(shared/reference/kernel-x86-jit-and-exceptions.md §1.2, §1.7, §1.8), each sequence also
decoded with capstone and, for a representative program, re-assembled with keystone. The
frame pieces are in test_jit_frames, the ISA v4 additions in test_jit_encoding_v4."""

from __future__ import annotations

import capstone
import keystone
import pytest

from jit.x86 import encode as x86
from jit.x86 import flow
from jit.x86.encode import JitError
from tests.jit_reference import body, decode, one_image, text
from verifier.isa.insn import (
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ARSH,
    BPF_B,
    BPF_DW,
    BPF_H,
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
    BPF_K,
    BPF_LSH,
    BPF_MUL,
    BPF_NEG,
    BPF_OR,
    BPF_REG_AX,
    BPF_RSH,
    BPF_SUB,
    BPF_W,
    BPF_X,
    BPF_XOR,
    Insn,
    alu64_imm,
    alu64_reg,
    exit_insn,
    ja,
    jmp_imm,
    jmp_reg,
    ld_imm64,
    ldx_mem,
    mov32_imm,
    mov32_reg,
    mov64_imm,
    mov64_reg,
    st_mem,
    stx_mem,
)

AX = BPF_REG_AX


def alu32_imm(op: int, d: int, imm: int) -> Insn:
    return Insn(BPF_ALU | op | BPF_K, d, 0, 0, imm)


def alu32_reg(op: int, d: int, s: int) -> Insn:
    return Insn(BPF_ALU | op | BPF_X, d, s, 0, 0)


def jmp32_reg(op: int, d: int, s: int, off: int) -> Insn:
    return Insn(BPF_JMP32 | op | BPF_X, d, s, off, 0)


def jmp32_imm(op: int, d: int, imm: int, off: int) -> Insn:
    return Insn(BPF_JMP32 | op | BPF_K, d, 0, off, imm)


CASES: list[tuple[str, list[Insn], str, str]] = [
    ("r0 += 1", [alu64_imm(BPF_ADD, 0, 1)], "48 83 c0 01", "add rax, 1"),
    ("r0 += 0x1000", [alu64_imm(BPF_ADD, 0, 0x1000)], "48 05 00 10 00 00", "add rax, 0x1000"),
    ("r1 += 0x1000", [alu64_imm(BPF_ADD, 1, 0x1000)], "48 81 c7 00 10 00 00", "add rdi, 0x1000"),
    ("r0 -= 0x1000", [alu64_imm(BPF_SUB, 0, 0x1000)], "48 2d 00 10 00 00", "sub rax, 0x1000"),
    ("w0 &= 0x1000", [alu32_imm(BPF_AND, 0, 0x1000)], "25 00 10 00 00", "and eax, 0x1000"),
    ("w7 |= 2", [alu32_imm(BPF_OR, 7, 2)], "41 83 cd 02", "or r13d, 2"),
    ("r9 ^= -1", [alu64_imm(BPF_XOR, 9, -1)], "49 83 f7 ff", "xor r15, 0xffffffffffffffff"),
    ("r0 += r1", [alu64_reg(BPF_ADD, 0, 1)], "48 01 f8", "add rax, rdi"),
    ("w0 += w1", [alu32_reg(BPF_ADD, 0, 1)], "01 f8", "add eax, edi"),
    ("r7 -= r8", [alu64_reg(BPF_SUB, 7, 8)], "4d 29 f5", "sub r13, r14"),
    ("w5 ^= w1", [alu32_reg(BPF_XOR, 5, 1)], "41 31 f8", "xor r8d, edi"),
    ("r1 = r2", [mov64_reg(1, 2)], "48 89 f7", "mov rdi, rsi"),
    ("w1 = w2", [mov32_reg(1, 2)], "89 f7", "mov edi, esi"),
    ("w1 = w1", [mov32_reg(1, 1)], "89 ff", "mov edi, edi"),
    ("r1 = r1", [mov64_reg(1, 1)], "", ""),
    ("ax = r1", [mov64_reg(AX, 1)], "49 89 fa", "mov r10, rdi"),
    ("w7 = w6", [mov32_reg(7, 6)], "41 89 dd", "mov r13d, ebx"),
    ("r0 = 0", [mov64_imm(0, 0)], "31 c0", "xor eax, eax"),
    ("r7 = 0", [mov64_imm(7, 0)], "45 31 ed", "xor r13d, r13d"),
    ("r0 = 1", [mov64_imm(0, 1)], "b8 01 00 00 00", "mov eax, 1"),
    ("r8 = 1", [mov64_imm(8, 1)], "41 be 01 00 00 00", "mov r14d, 1"),
    ("r0 = -1", [mov64_imm(0, -1)], "48 c7 c0 ff ff ff ff", "mov rax, 0xffffffffffffffff"),
    ("r9 = -2", [mov64_imm(9, -2)], "49 c7 c7 fe ff ff ff", "mov r15, 0xfffffffffffffffe"),
    ("w0 = -1", [mov32_imm(0, -1)], "b8 ff ff ff ff", "mov eax, 0xffffffff"),
    ("r0 = -r0", [Insn(BPF_ALU64 | BPF_NEG, 0)], "48 f7 d8", "neg rax"),
    ("w7 = -w7", [Insn(BPF_ALU | BPF_NEG, 7)], "41 f7 dd", "neg r13d"),
    ("r0 *= 3", [alu64_imm(BPF_MUL, 0, 3)], "48 6b c0 03", "imul rax, rax, 3"),
    ("r1 *= 0x1000", [alu64_imm(BPF_MUL, 1, 0x1000)], "48 69 ff 00 10 00 00", "imul rdi, rdi, 0x1000"),
    ("r0 *= r1", [alu64_reg(BPF_MUL, 0, 1)], "48 0f af c7", "imul rax, rdi"),
    ("w7 *= w1", [alu32_reg(BPF_MUL, 7, 1)], "44 0f af ef", "imul r13d, edi"),
    ("r0 <<= 3", [alu64_imm(BPF_LSH, 0, 3)], "48 c1 e0 03", "shl rax, 3"),
    ("r0 <<= 1", [alu64_imm(BPF_LSH, 0, 1)], "48 d1 e0", "shl rax, 1"),
    ("w8 >>= 4", [alu32_imm(BPF_RSH, 8, 4)], "41 c1 ee 04", "shr r14d, 4"),
    ("r1 s>>= 63", [alu64_imm(BPF_ARSH, 1, 63)], "48 c1 ff 3f", "sar rdi, 0x3f"),
    (
        "r0 <<= r1",
        [alu64_reg(BPF_LSH, 0, 1)],
        "51 48 89 f9 48 d3 e0 59",
        "push rcx; mov rcx, rdi; shl rax, cl; pop rcx",
    ),
    ("r1 >>= r4", [alu64_reg(BPF_RSH, 1, 4)], "48 d3 ef", "shr rdi, cl"),
    (
        "r4 <<= r1",
        [alu64_reg(BPF_LSH, 4, 1)],
        "49 89 cb 48 89 f9 49 d3 e3 4c 89 d9",
        "mov r11, rcx; mov rcx, rdi; shl r11, cl; mov rcx, r11",
    ),
    (
        "w7 s>>= w1",
        [alu32_reg(BPF_ARSH, 7, 1)],
        "51 48 89 f9 41 d3 fd 59",
        "push rcx; mov rcx, rdi; sar r13d, cl; pop rcx",
    ),
    ("r0 = *(u8 *)(r1 + 0)", [ldx_mem(BPF_B, 0, 1, 0)], "48 0f b6 47 00", "movzx rax, byte ptr [rdi]"),
    ("r0 = *(u16 *)(r1 + 2)", [ldx_mem(BPF_H, 0, 1, 2)], "48 0f b7 47 02", "movzx rax, word ptr [rdi + 2]"),
    ("r0 = *(u32 *)(r1 + 4)", [ldx_mem(BPF_W, 0, 1, 4)], "8b 47 04", "mov eax, dword ptr [rdi + 4]"),
    ("r1 = *(u64 *)(r10 - 8)", [ldx_mem(BPF_DW, 1, 10, -8)], "48 8b 7d f8", "mov rdi, qword ptr [rbp - 8]"),
    ("r0 = *(u64 *)(r7 + 0)", [ldx_mem(BPF_DW, 0, 7, 0)], "49 8b 45 00", "mov rax, qword ptr [r13]"),
    ("r8 = *(u32 *)(r6 + 8)", [ldx_mem(BPF_W, 8, 6, 8)], "44 8b 73 08", "mov r14d, dword ptr [rbx + 8]"),
    (
        "r0 = *(u64 *)(r1 + 128)",
        [ldx_mem(BPF_DW, 0, 1, 128)],
        "48 8b 87 80 00 00 00",
        "mov rax, qword ptr [rdi + 0x80]",
    ),
    ("*(u64 *)(r10 - 8) = r1", [stx_mem(BPF_DW, 10, 1, -8)], "48 89 7d f8", "mov qword ptr [rbp - 8], rdi"),
    ("*(u8 *)(r10 - 1) = r1", [stx_mem(BPF_B, 10, 1, -1)], "40 88 7d ff", "mov byte ptr [rbp - 1], dil"),
    ("*(u8 *)(r10 - 1) = r2", [stx_mem(BPF_B, 10, 2, -1)], "40 88 75 ff", "mov byte ptr [rbp - 1], sil"),
    ("*(u8 *)(r10 - 1) = r0", [stx_mem(BPF_B, 10, 0, -1)], "88 45 ff", "mov byte ptr [rbp - 1], al"),
    ("*(u8 *)(r1 + 0) = r10", [stx_mem(BPF_B, 1, 10, 0)], "40 88 6f 00", "mov byte ptr [rdi], bpl"),
    ("*(u8 *)(r10 - 1) = r8", [stx_mem(BPF_B, 10, 8, -1)], "44 88 75 ff", "mov byte ptr [rbp - 1], r14b"),
    ("*(u16 *)(r10 - 2) = r1", [stx_mem(BPF_H, 10, 1, -2)], "66 89 7d fe", "mov word ptr [rbp - 2], di"),
    ("*(u16 *)(r7 + 2) = r1", [stx_mem(BPF_H, 7, 1, 2)], "66 41 89 7d 02", "mov word ptr [r13 + 2], di"),
    ("*(u32 *)(r7 + 0) = r8", [stx_mem(BPF_W, 7, 8, 0)], "45 89 75 00", "mov dword ptr [r13], r14d"),
    (
        "*(u64 *)(r10 - 512) = r1",
        [stx_mem(BPF_DW, 10, 1, -512)],
        "48 89 bd 00 fe ff ff",
        "mov qword ptr [rbp - 0x200], rdi",
    ),
    (
        "*(u64 *)(r10 - 8) = 0",
        [st_mem(BPF_DW, 10, -8, 0)],
        "48 c7 45 f8 00 00 00 00",
        "mov qword ptr [rbp - 8], 0",
    ),
    ("*(u8 *)(r10 - 1) = 0x12", [st_mem(BPF_B, 10, -1, 0x12)], "c6 45 ff 12", "mov byte ptr [rbp - 1], 0x12"),
    (
        "*(u16 *)(r10 - 2) = 0x1234",
        [st_mem(BPF_H, 10, -2, 0x1234)],
        "66 c7 45 fe 34 12",
        "mov word ptr [rbp - 2], 0x1234",
    ),
    (
        "*(u32 *)(r7 + 4) = 1",
        [st_mem(BPF_W, 7, 4, 1)],
        "41 c7 45 04 01 00 00 00",
        "mov dword ptr [r13 + 4], 1",
    ),
    (
        "*(u16 *)(r9 + 0) = -1",
        [st_mem(BPF_H, 9, 0, -1)],
        "66 41 c7 47 00 ff ff",
        "mov word ptr [r15], 0xffff",
    ),
    (
        "*(u64 *)(r1 + 200) = -1",
        [st_mem(BPF_DW, 1, 200, -1)],
        "48 c7 87 c8 00 00 00 ff ff ff ff",
        "mov qword ptr [rdi + 0xc8], 0xffffffffffffffff",
    ),
    (
        "r0 = 0x100000000 ll",
        list(ld_imm64(0, 0x100000000)),
        "48 b8 00 00 00 00 01 00 00 00",
        "movabs rax, 0x100000000",
    ),
    (
        "r7 = 0x123456789 ll",
        list(ld_imm64(7, 0x123456789)),
        "49 bd 89 67 45 23 01 00 00 00",
        "movabs r13, 0x123456789",
    ),
    ("r1 = 0xffffffff ll", list(ld_imm64(1, 0xFFFFFFFF)), "bf ff ff ff ff", "mov edi, 0xffffffff"),
    ("r1 = -2 ll", list(ld_imm64(1, -2)), "48 c7 c7 fe ff ff ff", "mov rdi, 0xfffffffffffffffe"),
    ("r9 = 0 ll", list(ld_imm64(9, 0)), "45 31 ff", "xor r15d, r15d"),
]
# conditional jumps: compare bytes, then `jcc +0` over one `r0 = 0` (2 bytes)
JUMPS: list[tuple[str, Insn, str, str]] = [
    ("if r1 == 0", jmp_imm(BPF_JEQ, 1, 0, 1), "48 85 ff 74 02", "test rdi, rdi; je"),
    ("if w1 == 0", jmp32_imm(BPF_JEQ, 1, 0, 1), "85 ff 74 02", "test edi, edi; je"),
    ("if r7 != 0", jmp_imm(BPF_JNE, 7, 0, 1), "4d 85 ed 75 02", "test r13, r13; jne"),
    ("if r0 > 5", jmp_imm(BPF_JGT, 0, 5, 1), "48 83 f8 05 77 02", "cmp rax, 5; ja"),
    ("if r0 > 1000", jmp_imm(BPF_JGT, 0, 1000, 1), "48 81 f8 e8 03 00 00 77 02", "cmp rax, 0x3e8; ja"),
    ("if w8 < 5", jmp32_imm(BPF_JLT, 8, 5, 1), "41 83 fe 05 72 02", "cmp r14d, 5; jb"),
    ("if r1 >= r2", jmp_reg(BPF_JGE, 1, 2, 1), "48 39 f7 73 02", "cmp rdi, rsi; jae"),
    ("if r1 <= r2", jmp_reg(BPF_JLE, 1, 2, 1), "48 39 f7 76 02", "cmp rdi, rsi; jbe"),
    ("if r1 s> r2", jmp_reg(BPF_JSGT, 1, 2, 1), "48 39 f7 7f 02", "cmp rdi, rsi; jg"),
    ("if r1 s< -1", jmp_imm(BPF_JSLT, 1, -1, 1), "48 83 ff ff 7c 02", "cmp rdi, -1; jl"),
    ("if r1 s>= 1", jmp_imm(BPF_JSGE, 1, 1, 1), "48 83 ff 01 7d 02", "cmp rdi, 1; jge"),
    ("if w1 s<= w2", jmp32_reg(BPF_JSLE, 1, 2, 1), "39 f7 7e 02", "cmp edi, esi; jle"),
    ("if r5 == r9", jmp_reg(BPF_JEQ, 5, 9, 1), "4d 39 f8 74 02", "cmp r8, r15; je"),
    ("if r1 & 1", jmp_imm(BPF_JSET, 1, 1, 1), "48 f7 c7 01 00 00 00 75 02", "test rdi, 1; jne"),
    ("if w7 & w1", jmp32_reg(BPF_JSET, 7, 1, 1), "41 85 fd 75 02", "test r13d, edi; jne"),
]


@pytest.mark.parametrize(("name", "insns", "hexbytes", "asm"), CASES, ids=[c[0] for c in CASES])
def test_insn_bytes(name: str, insns: list[Insn], hexbytes: str, asm: str) -> None:
    code = body(insns)
    assert code.hex(" ") == hexbytes
    assert text(code) == asm


@pytest.mark.parametrize(("name", "insn", "hexbytes", "asm"), JUMPS, ids=[c[0] for c in JUMPS])
def test_cond_jump_bytes(name: str, insn: Insn, hexbytes: str, asm: str) -> None:
    code = body([insn, mov64_imm(0, 0)])[:-2]  # compare + jcc, without the skipped `r0 = 0`
    assert code.hex(" ") == hexbytes
    decoded = decode(code)
    *cmp, jcc = asm.split("; ")
    assert [f"{i.mnemonic} {i.op_str}" for i in decoded[:-1]] == cmp
    assert decoded[-1].mnemonic == jcc
    assert int(decoded[-1].op_str, 16) == len(code) + 2  # lands just past the skipped insn


def test_register_map() -> None:
    names = [x86.X86_NAMES[x86.hw(r)] for r in range(12)]
    assert names == ["rax", "rdi", "rsi", "rdx", "rcx", "r8", "rbx", "r13", "r14", "r15", "rbp", "r10"]
    assert [x86.reg2hex(r) for r in range(11)] == [0, 7, 6, 2, 1, 0, 3, 5, 6, 7, 5]
    assert [r for r in range(15) if x86.is_ereg(r)] == [5, 7, 8, 9, 11, 12, 13, 14]
    assert [r for r in range(15) if x86.is_ereg_8l(r)] == [1, 2, 5, 7, 8, 9, 10, 11, 12, 13, 14]
    assert x86.is_axreg(0) and not x86.is_axreg(1)


def test_rex_and_modrm_helpers() -> None:
    assert x86.add_1mod(0x48, 7) == 0x49  # r13 as r/m
    assert x86.add_2mod(0x40, 7, 8) == 0x45  # r13 r/m, r14 reg
    assert x86.add_2reg(0xC0, 0, 1) == 0xF8
    assert x86.maybe_emit_mod(0, 1, False) == b""
    assert x86.maybe_emit_mod(0, 1, True) == b"\x48"
    assert x86.maybe_emit_1mod(9, False) == b"\x41"
    assert x86.insn_suffix(10, 1, 0) == bytes([0x7D, 0x00])  # disp8 even for off 0 (rbp base)
    assert x86.insn_suffix(7, 0, 0) == bytes([0x45, 0x00])  # r13 base, same rule
    with pytest.raises(JitError):
        x86.insn_suffix(x86.X86_REG_R12, 0, 0)  # would need a SIB


def test_imm_windows() -> None:
    assert x86.is_imm8(127) and not x86.is_imm8(128) and x86.is_imm8(-128)
    assert x86.is_imm8_jmp_offset(123) and not x86.is_imm8_jmp_offset(124)
    assert flow.emit_jcc(x86.X86_JE, 123) == b"\x74\x7b"
    assert flow.emit_jcc(x86.X86_JE, 124) == b"\x0f\x84\x7c\x00\x00\x00"
    assert flow.emit_jcc(x86.X86_JNE, -128) == b"\x75\x80"
    assert flow.emit_jcc(x86.X86_JNE, -129) == b"\x0f\x85\x7f\xff\xff\xff"
    assert flow.emit_jmp(124) == b"\xe9\x7c\x00\x00\x00"
    assert flow.emit_jmp(-2) == b"\xeb\xfe"


def test_mov_imm64_ladder() -> None:
    assert len(x86.emit_mov_imm64(0, 0)) == 2
    assert len(x86.emit_mov_imm64(7, 0)) == 3
    assert len(x86.emit_mov_imm64(0, 5)) == 5
    assert len(x86.emit_mov_imm64(7, 5)) == 6
    assert len(x86.emit_mov_imm64(0, -5)) == 7
    assert len(x86.emit_mov_imm64(0, 1 << 40)) == 10
    assert x86.emit_mov_imm64(0, 0xFFFFFFFF80000000) == b"\x48\xc7\xc0\x00\x00\x00\x80"


@pytest.mark.parametrize("n", range(1, 9))
def test_nops_table(n: int) -> None:
    (ins,) = decode(x86.NOPS[n])
    assert ins.mnemonic in ("nop", "nopl", "nopw") and ins.size == n
    assert x86.emit_nops(11) == x86.NOPS[8] + x86.NOPS[3]


def test_ja_forms() -> None:
    # ja +0 emits nothing; ja -1 is `jmp .` (EB FE); gotol uses imm.
    img = one_image([ja(0), mov64_imm(0, 0), exit_insn()])
    assert img.addrs[1] == img.addrs[0]
    assert body([ja(-1)]).hex(" ") == "eb fe"
    gotol = Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, 1)
    assert body([gotol, mov64_imm(0, 1)]).hex(" ") == "eb 05 b8 01 00 00 00"
    assert body([Insn(BPF_JMP | BPF_JA, 0, 0, 1, 0), mov64_imm(0, 1)])[:2].hex(" ") == "eb 05"


REPRESENTATIVE = [
    mov64_imm(0, 1),
    alu64_imm(BPF_ADD, 0, 0x1000),
    alu64_imm(BPF_ADD, 1, 0x1000),
    mov64_imm(7, 0),
    alu64_reg(BPF_SUB, 7, 0),
    mov32_reg(2, 1),
    alu64_imm(BPF_MUL, 2, 3),
    alu64_reg(BPF_LSH, 0, 1),
    Insn(BPF_ALU | BPF_NEG, 8),
    stx_mem(BPF_DW, 10, 1, -8),
    stx_mem(BPF_B, 10, 1, -1),
    stx_mem(BPF_H, 7, 8, 2),
    st_mem(BPF_W, 10, -16, 0x1234),
    ldx_mem(BPF_DW, 0, 10, -8),
    ldx_mem(BPF_B, 3, 1, 5),
    ldx_mem(BPF_W, 9, 7, -300),
    *ld_imm64(4, 0x123456789A),
    jmp_imm(BPF_JGT, 0, 5, 2),
    jmp_reg(BPF_JSLT, 1, 9, 1),
    jmp_imm(BPF_JSET, 3, 0x80, 0),
    mov64_imm(0, 0),
    exit_insn(),
]


def test_keystone_reassembles_capstone_text() -> None:
    """Capstone's AT&T text of a representative image, re-assembled with keystone at the
    same addresses, gives back the same bytes. The one deliberate difference in this image
    is `sub rsp, imm32`, which the kernel never shortens to imm8: there keystone's bytes
    must decode to the same instruction."""
    img = one_image(REPRESENTATIVE, stack=16)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.syntax = capstone.CS_OPT_SYNTAX_ATT
    ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
    ks.syntax = keystone.KS_OPT_SYNTAX_ATT
    exact, longer = 0, []
    # From byte 8: keystone mis-assembles `nopl (%rax, %rax)` (0F 18 24 00), a keystone bug.
    for ins in md.disasm(img.code[8:], img.address + 8):
        asm = f"{ins.mnemonic} {ins.op_str}"
        encoding = bytes(ks.asm(asm, ins.address)[0])
        if encoding == bytes(ins.bytes):
            exact += 1
            continue
        (again,) = md.disasm(encoding, ins.address)
        assert f"{again.mnemonic} {again.op_str}" == asm
        longer.append(asm)
    assert longer == ["subq $0x10, %rsp"]
    assert exact > len(REPRESENTATIVE)


def test_keystone_known_divergence_disp8_zero() -> None:
    """The kernel always uses a disp8, even 0; an assembler picks mod=00."""
    ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
    assert bytes(ks.asm("movzx rax, byte ptr [rdi]")[0]).hex(" ") == "48 0f b6 07"
    assert body([ldx_mem(BPF_B, 0, 1, 0)]).hex(" ") == "48 0f b6 47 00"
