"""Byte-exact encodings of the ISA v4 instructions added to the JIT (div/mod and sdiv/smod,
movsx, le/be/bswap, sign-extending loads, every atomic, nospec, gotol, helper calls), from
the rules of shared/reference/kernel-x86-jit-and-exceptions.md §1.7 (the table's examples are
marked "ref"). Each sequence is also decoded with capstone into exactly the intended
instructions, and a representative image is re-assembled with keystone."""

from __future__ import annotations

import capstone
import keystone
import pytest

from jit.compile import jit_program
from jit.listing import listing
from jit.x86 import alu as x86_alu
from jit.x86 import mem as x86_mem
from jit.x86.encode import JitError
from tests.jit_reference import body, decode, one_image, program_vp, text
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
    BPF_JA,
    BPF_JMP32,
    BPF_K,
    BPF_LDX,
    BPF_LSH,
    BPF_MEMSX,
    BPF_MOD,
    BPF_MOV,
    BPF_OR,
    BPF_REG_AX,
    BPF_RSH,
    BPF_ST,
    BPF_STX,
    BPF_TO_BE,
    BPF_TO_LE,
    BPF_W,
    BPF_X,
    BPF_XCHG,
    BPF_XOR,
    Insn,
    alu64_imm,
    alu64_reg,
    call_helper,
    exit_insn,
    mov32_reg,
    mov64_imm,
)

AX = BPF_REG_AX
BPF_NOSPEC = 0xC0


def divmod_insn(op: int, is64: bool, dst: int, src: int | None, imm: int = 0, signed: bool = False) -> Insn:
    cls = BPF_ALU64 if is64 else BPF_ALU
    if src is None:
        return Insn(cls | op | BPF_K, dst, 0, int(signed), imm)
    return Insn(cls | op | BPF_X, dst, src, int(signed), 0)


def movsx(bits: int, dst: int, src: int, alu32: bool = False) -> Insn:
    return Insn((BPF_ALU if alu32 else BPF_ALU64) | BPF_MOV | BPF_X, dst, src, bits)


def end(kind: int, dst: int, width: int) -> Insn:
    return Insn(BPF_ALU | BPF_END | kind, dst, 0, 0, width)


def bswap(dst: int, width: int) -> Insn:
    return Insn(BPF_ALU64 | BPF_END | BPF_TO_LE, dst, 0, 0, width)


def ldsx(size: int, dst: int, src: int, off: int) -> Insn:
    return Insn(BPF_LDX | BPF_MEMSX | size, dst, src, off)


def atomic(size: int, dst: int, src: int, off: int, op: int) -> Insn:
    return Insn(BPF_STX | BPF_ATOMIC | size, dst, src, off, op)


def shift32(op: int, dst: int, src: int) -> Insn:
    return Insn(BPF_ALU | op | BPF_X, dst, src)


D, M = BPF_DIV, BPF_MOD
DIV_MOD: list[tuple[str, Insn, str, str]] = [
    ("ref r0 /= r1", divmod_insn(D, True, 0, 1), "52 31 d2 48 f7 f7 5a",
     "push rdx; xor edx, edx; div rdi; pop rdx"),
    ("w0 /= w1", divmod_insn(D, False, 0, 1), "52 31 d2 f7 f7 5a",
     "push rdx; xor edx, edx; div edi; pop rdx"),
    ("r1 /= r2", divmod_insn(D, True, 1, 2), "50 52 48 89 f8 31 d2 48 f7 f6 48 89 c7 5a 58",
     "push rax; push rdx; mov rax, rdi; xor edx, edx; div rsi; mov rdi, rax; pop rdx; pop rax"),
    ("r1 %= r2", divmod_insn(M, True, 1, 2), "50 52 48 89 f8 31 d2 48 f7 f6 48 89 d7 5a 58",
     "push rax; push rdx; mov rax, rdi; xor edx, edx; div rsi; mov rdi, rdx; pop rdx; pop rax"),
    ("r3 /= r1", divmod_insn(D, True, 3, 1), "50 48 89 d0 31 d2 48 f7 f7 48 89 c2 58",
     "push rax; mov rax, rdx; xor edx, edx; div rdi; mov rdx, rax; pop rax"),
    ("r3 %= r1", divmod_insn(M, True, 3, 1), "50 48 89 d0 31 d2 48 f7 f7 58",
     "push rax; mov rax, rdx; xor edx, edx; div rdi; pop rax"),
    ("ref r1 /= r0", divmod_insn(D, True, 1, 0), "50 52 49 89 c3 48 89 f8 31 d2 49 f7 f3 48 89 c7 5a 58",
     "push rax; push rdx; mov r11, rax; mov rax, rdi; xor edx, edx; div r11; mov rdi, rax; pop rdx; pop rax"),
    ("ref r1 /= r3", divmod_insn(D, True, 1, 3), "50 52 49 89 d3 48 89 f8 31 d2 49 f7 f3 48 89 c7 5a 58",
     "push rax; push rdx; mov r11, rdx; mov rax, rdi; xor edx, edx; div r11; mov rdi, rax; pop rdx; pop rax"),
    ("r0 %= r3", divmod_insn(M, True, 0, 3), "52 49 89 d3 31 d2 49 f7 f3 48 89 d0 5a",
     "push rdx; mov r11, rdx; xor edx, edx; div r11; mov rax, rdx; pop rdx"),
    ("w3 /= w0", divmod_insn(D, False, 3, 0), "50 49 89 c3 89 d0 31 d2 41 f7 f3 89 c2 58",
     "push rax; mov r11, rax; mov eax, edx; xor edx, edx; div r11d; mov edx, eax; pop rax"),
    ("r4 /= r4", divmod_insn(D, True, 4, 4), "50 52 48 89 c8 31 d2 48 f7 f1 48 89 c1 5a 58",
     "push rax; push rdx; mov rax, rcx; xor edx, edx; div rcx; mov rcx, rax; pop rdx; pop rax"),
    ("r7 /= r8", divmod_insn(D, True, 7, 8), "50 52 4c 89 e8 31 d2 49 f7 f6 49 89 c5 5a 58",
     "push rax; push rdx; mov rax, r13; xor edx, edx; div r14; mov r13, rax; pop rdx; pop rax"),
    ("w7 %= w8", divmod_insn(M, False, 7, 8), "50 52 44 89 e8 31 d2 41 f7 f6 41 89 d5 5a 58",
     "push rax; push rdx; mov eax, r13d; xor edx, edx; div r14d; mov r13d, edx; pop rdx; pop rax"),
    ("ax /= r1", divmod_insn(D, True, AX, 1), "50 52 4c 89 d0 31 d2 48 f7 f7 49 89 c2 5a 58",
     "push rax; push rdx; mov rax, r10; xor edx, edx; div rdi; mov r10, rax; pop rdx; pop rax"),
    ("r0 /= 10", divmod_insn(D, True, 0, None, 10), "52 49 c7 c3 0a 00 00 00 31 d2 49 f7 f3 5a",
     "push rdx; mov r11, 0xa; xor edx, edx; div r11; pop rdx"),
    ("r0 %= 0x12345678", divmod_insn(M, True, 0, None, 0x12345678),
     "52 49 c7 c3 78 56 34 12 31 d2 49 f7 f3 48 89 d0 5a",
     "push rdx; mov r11, 0x12345678; xor edx, edx; div r11; mov rax, rdx; pop rdx"),
    ("w1 %= -3", divmod_insn(M, False, 1, None, -3),
     "50 52 49 c7 c3 fd ff ff ff 89 f8 31 d2 41 f7 f3 89 d7 5a 58",
     "push rax; push rdx; mov r11, 0xfffffffffffffffd; mov eax, edi; xor edx, edx; div r11d; mov edi, edx; "
     "pop rdx; pop rax"),
    ("r0 s/= r1", divmod_insn(D, True, 0, 1, signed=True), "52 48 99 48 f7 ff 5a",
     "push rdx; cqo; idiv rdi; pop rdx"),
    ("w0 s/= w1", divmod_insn(D, False, 0, 1, signed=True), "52 99 f7 ff 5a",
     "push rdx; cdq; idiv edi; pop rdx"),
    ("r2 s%= r3", divmod_insn(M, True, 2, 3, signed=True),
     "50 52 49 89 d3 48 89 f0 48 99 49 f7 fb 48 89 d6 5a 58",
     "push rax; push rdx; mov r11, rdx; mov rax, rsi; cqo; idiv r11; mov rsi, rdx; pop rdx; pop rax"),
    ("r0 s%= r0", divmod_insn(M, True, 0, 0, signed=True), "52 49 89 c3 48 99 49 f7 fb 48 89 d0 5a",
     "push rdx; mov r11, rax; cqo; idiv r11; mov rax, rdx; pop rdx"),
    ("w3 s/= w0", divmod_insn(D, False, 3, 0, signed=True), "50 49 89 c3 89 d0 99 41 f7 fb 89 c2 58",
     "push rax; mov r11, rax; mov eax, edx; cdq; idiv r11d; mov edx, eax; pop rax"),
    ("w4 s%= w3", divmod_insn(M, False, 4, 3, signed=True), "50 52 49 89 d3 89 c8 99 41 f7 fb 89 d1 5a 58",
     "push rax; push rdx; mov r11, rdx; mov eax, ecx; cdq; idiv r11d; mov ecx, edx; pop rdx; pop rax"),
    ("r1 s/= -7", divmod_insn(D, True, 1, None, -7, signed=True),
     "50 52 49 c7 c3 f9 ff ff ff 48 89 f8 48 99 49 f7 fb 48 89 c7 5a 58",
     "push rax; push rdx; mov r11, 0xfffffffffffffff9; mov rax, rdi; cqo; idiv r11; mov rdi, rax; "
     "pop rdx; pop rax"),
    ("w9 s%= 7", divmod_insn(M, False, 9, None, 7, signed=True),
     "50 52 49 c7 c3 07 00 00 00 44 89 f8 99 41 f7 fb 41 89 d7 5a 58",
     "push rax; push rdx; mov r11, 7; mov eax, r15d; cdq; idiv r11d; mov r15d, edx; pop rdx; pop rax"),
]

SHIFTS: list[tuple[str, Insn, str, str]] = [
    ("r3 >>= r0", alu64_reg(BPF_RSH, 3, 0), "51 48 89 c1 48 d3 ea 59",
     "push rcx; mov rcx, rax; shr rdx, cl; pop rcx"),
    ("r0 s>>= r3", alu64_reg(BPF_ARSH, 0, 3), "51 48 89 d1 48 d3 f8 59",
     "push rcx; mov rcx, rdx; sar rax, cl; pop rcx"),
    ("w4 <<= w3", shift32(BPF_LSH, 4, 3), "49 89 cb 48 89 d1 41 d3 e3 4c 89 d9",
     "mov r11, rcx; mov rcx, rdx; shl r11d, cl; mov rcx, r11"),
    ("r4 >>= r4", alu64_reg(BPF_RSH, 4, 4), "48 d3 e9", "shr rcx, cl"),
    ("r5 <<= r9", alu64_reg(BPF_LSH, 5, 9), "51 4c 89 f9 49 d3 e0 59",
     "push rcx; mov rcx, r15; shl r8, cl; pop rcx"),
    ("w9 >>= w4", shift32(BPF_RSH, 9, 4), "41 d3 ef", "shr r15d, cl"),
    ("r4 s>>= 1", alu64_imm(BPF_ARSH, 4, 1), "48 d1 f9", "sar rcx, 1"),
]

MOVSX_END: list[tuple[str, Insn, str, str]] = [
    ("ref r0 = (s8)r1", movsx(8, 0, 1), "48 0f be c7", "movsx rax, dil"),
    ("r0 = (s16)r1", movsx(16, 0, 1), "48 0f bf c7", "movsx rax, di"),
    ("r0 = (s32)r1", movsx(32, 0, 1), "48 63 c7", "movsxd rax, edi"),
    ("r0 = (s8)r2", movsx(8, 0, 2), "48 0f be c6", "movsx rax, sil"),
    ("r7 = (s8)r8", movsx(8, 7, 8), "4d 0f be ee", "movsx r13, r14b"),
    ("r9 = (s32)r7", movsx(32, 9, 7), "4d 63 fd", "movsxd r15, r13d"),
    ("r3 = (s16)ax", movsx(16, 3, AX), "49 0f bf d2", "movsx rdx, r10w"),
    ("ref w0 = (s8)w1", movsx(8, 0, 1, alu32=True), "40 0f be c7", "movsx eax, dil"),
    ("w0 = (s8)w3", movsx(8, 0, 3, alu32=True), "40 0f be c2", "movsx eax, dl"),  # redundant REX, always
    ("w1 = (s8)w10", movsx(8, 1, 10, alu32=True), "40 0f be fd", "movsx edi, bpl"),
    ("w7 = (s8)w0", movsx(8, 7, 0, alu32=True), "44 0f be e8", "movsx r13d, al"),
    ("w0 = (s16)w1", movsx(16, 0, 1, alu32=True), "0f bf c7", "movsx eax, di"),
    ("w5 = (s16)w1", movsx(16, 5, 1, alu32=True), "44 0f bf c7", "movsx r8d, di"),
    ("w7 = (s16)w7", movsx(16, 7, 7, alu32=True), "45 0f bf ed", "movsx r13d, r13w"),
    ("ref r0 = be16 r0", end(BPF_TO_BE, 0, 16), "66 c1 c8 08 0f b7 c0", "ror ax, 8; movzx eax, ax"),
    ("r1 = be16 r1", end(BPF_TO_BE, 1, 16), "66 c1 cf 08 0f b7 ff", "ror di, 8; movzx edi, di"),
    ("r7 = be16 r7", end(BPF_TO_BE, 7, 16), "66 41 c1 cd 08 45 0f b7 ed", "ror r13w, 8; movzx r13d, r13w"),
    ("r0 = be32 r0", end(BPF_TO_BE, 0, 32), "0f c8", "bswap eax"),
    ("r5 = be32 r5", end(BPF_TO_BE, 5, 32), "41 0f c8", "bswap r8d"),
    ("r0 = be64 r0", end(BPF_TO_BE, 0, 64), "48 0f c8", "bswap rax"),
    ("r7 = be64 r7", end(BPF_TO_BE, 7, 64), "49 0f cd", "bswap r13"),
    ("r0 = le16 r0", end(BPF_TO_LE, 0, 16), "0f b7 c0", "movzx eax, ax"),
    ("r8 = le16 r8", end(BPF_TO_LE, 8, 16), "45 0f b7 f6", "movzx r14d, r14w"),
    ("r1 = le32 r1", end(BPF_TO_LE, 1, 32), "89 ff", "mov edi, edi"),
    ("r8 = le32 r8", end(BPF_TO_LE, 8, 32), "45 89 f6", "mov r14d, r14d"),
    ("r1 = le64 r1", end(BPF_TO_LE, 1, 64), "", ""),
    ("r1 = bswap16 r1", bswap(1, 16), "66 c1 cf 08 0f b7 ff", "ror di, 8; movzx edi, di"),
    ("r7 = bswap16 r7", bswap(7, 16), "66 41 c1 cd 08 45 0f b7 ed", "ror r13w, 8; movzx r13d, r13w"),
    ("r7 = bswap32 r7", bswap(7, 32), "41 0f cd", "bswap r13d"),
    ("r6 = bswap64 r6", bswap(6, 64), "48 0f cb", "bswap rbx"),
    ("r9 = bswap64 r9", bswap(9, 64), "49 0f cf", "bswap r15"),
]

MEMORY: list[tuple[str, Insn, str, str]] = [
    ("r0 = *(s8 *)(r1 + 0)", ldsx(BPF_B, 0, 1, 0), "48 0f be 47 00", "movsx rax, byte ptr [rdi]"),
    ("r0 = *(s8 *)(r10 - 1)", ldsx(BPF_B, 0, 10, -1), "48 0f be 45 ff", "movsx rax, byte ptr [rbp - 1]"),
    ("r7 = *(s16 *)(r10 - 2)", ldsx(BPF_H, 7, 10, -2), "4c 0f bf 6d fe", "movsx r13, word ptr [rbp - 2]"),
    ("r1 = *(s16 *)(r7 + 0)", ldsx(BPF_H, 1, 7, 0), "49 0f bf 7d 00", "movsx rdi, word ptr [r13]"),
    ("r8 = *(s32 *)(r7 + 300)", ldsx(BPF_W, 8, 7, 300), "4d 63 b5 2c 01 00 00",
     "movsxd r14, dword ptr [r13 + 0x12c]"),
    ("r9 = *(s32 *)(r10 - 512)", ldsx(BPF_W, 9, 10, -512), "4c 63 bd 00 fe ff ff",
     "movsxd r15, dword ptr [rbp - 0x200]"),
    ("r3 = *(s8 *)(r1 + 200)", ldsx(BPF_B, 3, 1, 200), "48 0f be 97 c8 00 00 00",
     "movsx rdx, byte ptr [rdi + 0xc8]"),
    ("ref lock *(u64 *)(r10 - 8) += r1", atomic(BPF_DW, 10, 1, -8, BPF_ADD), "f0 48 01 7d f8",
     "lock add qword ptr [rbp - 8], rdi"),
    ("lock *(u32 *)(r10 - 4) += w1", atomic(BPF_W, 10, 1, -4, BPF_ADD), "f0 01 7d fc",
     "lock add dword ptr [rbp - 4], edi"),
    ("lock *(u64 *)(r7 + 8) &= r0", atomic(BPF_DW, 7, 0, 8, BPF_AND), "f0 49 21 45 08",
     "lock and qword ptr [r13 + 8], rax"),
    ("lock *(u32 *)(r7 + 4) |= w8", atomic(BPF_W, 7, 8, 4, BPF_OR), "f0 45 09 75 04",
     "lock or dword ptr [r13 + 4], r14d"),
    ("lock *(u64 *)(r1 + 300) |= r9", atomic(BPF_DW, 1, 9, 300, BPF_OR), "f0 4c 09 bf 2c 01 00 00",
     "lock or qword ptr [rdi + 0x12c], r15"),
    ("lock *(u32 *)(r10 - 8) ^= w2", atomic(BPF_W, 10, 2, -8, BPF_XOR), "f0 31 75 f8",
     "lock xor dword ptr [rbp - 8], esi"),
    ("r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)", atomic(BPF_DW, 10, 1, -8, BPF_ADD | BPF_FETCH),
     "f0 48 0f c1 7d f8", "lock xadd qword ptr [rbp - 8], rdi"),
    ("w1 = atomic_fetch_add((u32 *)(r10 - 8), w1)", atomic(BPF_W, 10, 1, -8, BPF_ADD | BPF_FETCH),
     "f0 0f c1 7d f8", "lock xadd dword ptr [rbp - 8], edi"),
    ("r0 = atomic_fetch_add((u64 *)(r10 - 8), r0)", atomic(BPF_DW, 10, 0, -8, BPF_ADD | BPF_FETCH),
     "f0 48 0f c1 45 f8", "lock xadd qword ptr [rbp - 8], rax"),
    ("w8 = atomic_fetch_add((u32 *)(r7 + 0), w8)", atomic(BPF_W, 7, 8, 0, BPF_ADD | BPF_FETCH),
     "f0 45 0f c1 75 00", "lock xadd dword ptr [r13], r14d"),
    ("r1 = xchg_64(r10 - 8, r1)", atomic(BPF_DW, 10, 1, -8, BPF_XCHG), "f0 48 87 7d f8",
     "lock xchg qword ptr [rbp - 8], rdi"),
    ("r0 = xchg_64(r10 - 8, r0)", atomic(BPF_DW, 10, 0, -8, BPF_XCHG), "f0 48 87 45 f8",
     "lock xchg qword ptr [rbp - 8], rax"),
    ("w5 = xchg32_32(r6 + 4, w5)", atomic(BPF_W, 6, 5, 4, BPF_XCHG), "f0 44 87 43 04",
     "lock xchg dword ptr [rbx + 4], r8d"),
    ("r0 = cmpxchg_64(r10 - 8, r0, r1)", atomic(BPF_DW, 10, 1, -8, BPF_CMPXCHG), "f0 48 0f b1 7d f8",
     "lock cmpxchg qword ptr [rbp - 8], rdi"),
    ("r0 = cmpxchg_64(r10 - 8, r0, r3)", atomic(BPF_DW, 10, 3, -8, BPF_CMPXCHG), "f0 48 0f b1 55 f8",
     "lock cmpxchg qword ptr [rbp - 8], rdx"),
    ("w0 = cmpxchg32_32(r1 + 0, w0, w2)", atomic(BPF_W, 1, 2, 0, BPF_CMPXCHG), "f0 0f b1 77 00",
     "lock cmpxchg dword ptr [rdi], esi"),
    ("w0 = cmpxchg32_32(r9 + 0, w0, w8)", atomic(BPF_W, 9, 8, 0, BPF_CMPXCHG), "f0 45 0f b1 77 00",
     "lock cmpxchg dword ptr [r15], r14d"),
    ("w0 = w0 (BPF_ZEXT_REG after a 32-bit cmpxchg)", mov32_reg(0, 0).replace(imm=1), "89 c0",
     "mov eax, eax"),
    ("nospec", Insn(BPF_ST | BPF_NOSPEC), "0f ae e8", "lfence"),
]

# The fetching and/or/xor: the cmpxchg loop, R0 parked in r10, r10 in place of R0 operands.
FETCH_LOOPS: list[tuple[str, Insn, str, str]] = [
    ("r1 = atomic_fetch_and((u64 *)(r10 - 8), r1)", atomic(BPF_DW, 10, 1, -8, BPF_AND | BPF_FETCH),
     "49 89 c2 48 8b 45 f8 49 89 c3 49 21 fb f0 4c 0f b1 5d f8 75 ee 48 89 c7 4c 89 d0",
     "mov r10, rax; mov rax, qword ptr [rbp - 8]; mov r11, rax; and r11, rdi; "
     "lock cmpxchg qword ptr [rbp - 8], r11; jne 3; mov rdi, rax; mov rax, r10"),
    ("w2 = atomic_fetch_and((u32 *)(r1 + 0), w2)", atomic(BPF_W, 1, 2, 0, BPF_AND | BPF_FETCH),
     "49 89 c2 8b 47 00 41 89 c3 41 21 f3 f0 44 0f b1 5f 00 75 ef 89 c6 4c 89 d0",
     "mov r10, rax; mov eax, dword ptr [rdi]; mov r11d, eax; and r11d, esi; "
     "lock cmpxchg dword ptr [rdi], r11d; jne 3; mov esi, eax; mov rax, r10"),
    ("w0 = atomic_fetch_or((u32 *)(r10 - 8), w0)", atomic(BPF_W, 10, 0, -8, BPF_OR | BPF_FETCH),
     "49 89 c2 8b 45 f8 41 89 c3 45 09 d3 f0 44 0f b1 5d f8 75 ef 41 89 c2 4c 89 d0",
     "mov r10, rax; mov eax, dword ptr [rbp - 8]; mov r11d, eax; or r11d, r10d; "
     "lock cmpxchg dword ptr [rbp - 8], r11d; jne 3; mov r10d, eax; mov rax, r10"),
    ("r0 = atomic_fetch_or((u64 *)(r7 + 300), r0)", atomic(BPF_DW, 7, 0, 300, BPF_OR | BPF_FETCH),
     "49 89 c2 49 8b 85 2c 01 00 00 49 89 c3 4d 09 d3 f0 4d 0f b1 9d 2c 01 00 00 75 e8 49 89 c2 4c 89 d0",
     "mov r10, rax; mov rax, qword ptr [r13 + 0x12c]; mov r11, rax; or r11, r10; "
     "lock cmpxchg qword ptr [r13 + 0x12c], r11; jne 3; mov r10, rax; mov rax, r10"),
    ("r7 = atomic_fetch_xor((u64 *)(r0 + 16), r7)", atomic(BPF_DW, 0, 7, 16, BPF_XOR | BPF_FETCH),
     "49 89 c2 49 8b 42 10 49 89 c3 4d 31 eb f0 4d 0f b1 5a 10 75 ee 49 89 c5 4c 89 d0",
     "mov r10, rax; mov rax, qword ptr [r10 + 0x10]; mov r11, rax; xor r11, r13; "
     "lock cmpxchg qword ptr [r10 + 0x10], r11; jne 3; mov r13, rax; mov rax, r10"),
    ("w0 = atomic_fetch_xor((u32 *)(r0 - 4), w0)", atomic(BPF_W, 0, 0, -4, BPF_XOR | BPF_FETCH),
     "49 89 c2 41 8b 42 fc 41 89 c3 45 31 d3 f0 45 0f b1 5a fc 75 ee 41 89 c2 4c 89 d0",
     "mov r10, rax; mov eax, dword ptr [r10 - 4]; mov r11d, eax; xor r11d, r10d; "
     "lock cmpxchg dword ptr [r10 - 4], r11d; jne 3; mov r10d, eax; mov rax, r10"),
]

ALL = DIV_MOD + SHIFTS + MOVSX_END + MEMORY + FETCH_LOOPS


@pytest.mark.parametrize(("name", "insn", "hexbytes", "asm"), ALL, ids=[c[0] for c in ALL])
def test_v4_insn_bytes(name: str, insn: Insn, hexbytes: str, asm: str) -> None:
    code = body([insn])
    assert code.hex(" ") == hexbytes
    assert text(code) == asm


@pytest.mark.parametrize(("name", "insn", "hexbytes", "asm"), FETCH_LOOPS, ids=[c[0] for c in FETCH_LOOPS])
def test_fetch_loop_retries_from_the_load(name: str, insn: Insn, hexbytes: str, asm: str) -> None:
    """The jne goes back to the load right after `mov r10, rax`, never to the save."""
    code = body([insn])
    ins = decode(code)
    jne = next(i for i in ins if i.mnemonic == "jne")
    assert int(jne.op_str, 16) == 3 and ins[1].address == 3 and ins[1].mnemonic == "mov"
    assert "ptr" in ins[1].op_str and "lock cmpxchg" in f"{ins[4].mnemonic}"


def test_div_mod_helper_forms() -> None:
    assert x86_alu.emit_mov_aux_imm(-1).hex(" ") == "49 c7 c3 ff ff ff ff"
    assert x86_alu.emit_div_mod(False, True, False, 0, 1) == bytes.fromhex("5231d248f7f75a")
    with pytest.raises(JitError, match="unknown atomic opcode 02"):
        x86_mem.emit_atomic_rmw(0x02, BPF_DW, 10, 1, -8)


def test_gotol_forms() -> None:
    """JMP32 JA takes its offset from imm: -1 is `jmp .`, short and near as for JA."""
    assert body([Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, -1)]).hex(" ") == "eb fe"
    far = [Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, 40)] + [alu64_imm(BPF_ADD, 0, 1)] * 40
    assert body(far)[:5].hex(" ") == "e9 a0 00 00 00"  # 40 * 4 bytes: past the short window
    near = [Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, 30)] + [alu64_imm(BPF_ADD, 0, 1)] * 30
    assert body(near)[:2].hex(" ") == "eb 78"


def test_listing_of_the_v4_corpus() -> None:
    text_ = listing(jit_program(program_vp(CORPUS), {}))
    for mnemonic in ("cqto", "cltd", "idivq", "movsbl", "movslq", "bswapq", "rorw",
                     "lock cmpxchgq", "lock xaddl", "lock xchgq", "lfence"):
        assert mnemonic in text_, mnemonic


def test_helper_call_is_e8_rel32() -> None:
    img = one_image([call_helper(6), exit_insn()], helpers={6: 0x200040})
    call = img.code[img.addrs[0] : img.addrs[1]]
    (ins,) = decode(call, img.address + img.addrs[0])
    assert ins.mnemonic == "call" and int(ins.op_str, 16) == 0x200040


# ---------------------------------------------------------------- keystone


CORPUS = [
    mov64_imm(0, 100),
    *[i for _, i, _, _ in ALL if i.code != BPF_ST | BPF_NOSPEC],
    Insn(BPF_ST | BPF_NOSPEC),
    exit_insn(),
]
# Instructions whose keystone encoding legitimately differs from the kernel's; each one must
# decode back to the same text: the kernel's disp8 of 0 (keystone picks mod=00, no disp; not
# for an r13 base, where mod=00 would mean rip-relative), and its redundant REX on
# `movsx r32, r8` for al/cl/dl/bl (keystone drops it).
KEYSTONE_SHORTER = {
    "lock cmpxchgl %esi, (%rdi)",
    "lock cmpxchgl %r14d, (%r15)",
    "movl (%rdi), %eax",
    "movsbl %dl, %eax",
    "movsbq (%rdi), %rax",
    "lock cmpxchgl %r11d, (%rdi)",
}


def _signed_imm(asm: str) -> str:
    """Capstone prints a sign-extended imm32 of a 64-bit op as an unsigned 64-bit decimal,
    which keystone rejects as out of range: give keystone the same value, signed."""
    head, _, rest = asm.partition("$")
    value, _, tail = rest.partition(",")
    number = int(value, 0)
    return f"{head}${number - (1 << 64) if number >> 63 else number},{tail}"


def test_keystone_reassembles_capstone_text_of_the_v4_corpus() -> None:
    img = one_image(CORPUS, stack=16)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.syntax = capstone.CS_OPT_SYNTAX_ATT
    ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
    ks.syntax = keystone.KS_OPT_SYNTAX_ATT
    exact, shorter, signed = 0, set(), 0
    start = img.addrs[0]  # the prologue is covered by test_jit_encoding
    for ins in md.disasm(img.code[start:], img.address + start):
        asm = f"{ins.mnemonic} {ins.op_str}"
        try:
            encoding = bytes(ks.asm(asm, ins.address)[0])
        except keystone.KsError:
            encoding = bytes(ks.asm(_signed_imm(asm), ins.address)[0])
            signed += 1
        if encoding == bytes(ins.bytes):
            exact += 1
            continue
        (again,) = md.disasm(encoding, ins.address)
        assert f"{again.mnemonic} {again.op_str}" == asm
        assert len(encoding) < ins.size
        shorter.add(asm)
    assert shorter == KEYSTONE_SHORTER
    assert signed == 2  # the sign-extended K divisors -3 and -7
    assert exact > 150
