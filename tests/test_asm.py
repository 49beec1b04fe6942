"""verifier.asm.assembler / verifier.asm.disasm: the llvm-objdump syntax both ways, the canonical-text
round trip over tests/asm_corpus, exact encodings, error messages and the kernel log form."""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.asm.assembler import assemble
from verifier.asm.disasm import disassemble, insn_text, kernel_insn_text
from verifier.errors import AsmError
from verifier.isa.decode import decode, encode
from verifier.isa.insn import Insn
from verifier.program import FuncSym, StructType

CORPUS = Path(__file__).parent / "asm_corpus"
CORPUS_FILES = sorted(CORPUS.glob("*.s"))


def one(text: str) -> bytes:
    return encode(assemble(text + "\nexit\n").insns)[:-8]


# ---------------------------------------------------------------------------------------------
# Corpus: canonical text is a fixed point, and the Program survives text and bytes.


def test_corpus_is_present():
    assert {p.stem for p in CORPUS_FILES} >= {"alu", "mem", "jumps", "calls"}


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.stem)
def test_corpus_text_round_trip_is_identity(path):
    text = path.read_text()
    program = assemble(text, path.name)
    assert disassemble(program) == text
    again = assemble(disassemble(program), path.name)
    assert again == program
    assert decode(encode(program.insns), path.name) == program.insns


def test_corpus_covers_every_opcode_class_and_operand_shape():
    codes: set[int] = set()
    srcs: dict[int, set[int]] = {}
    offs: dict[int, set[int]] = {}
    imms: dict[int, set[int]] = {}
    for path in CORPUS_FILES:
        insns = assemble(path.read_text(), path.name).insns
        pc = 0
        while pc < len(insns):
            i = insns[pc]
            codes.add(i.code)
            srcs.setdefault(i.code, set()).add(i.src)
            offs.setdefault(i.code, set()).add(i.off)
            imms.setdefault(i.code, set()).add(i.imm)
            pc += 2 if i.is_ld_imm64() else 1
    alu = {c | op | s for c in (0x04, 0x07) for op in range(0, 0xE0, 0x10) for s in (0, 8)}
    alu -= {0x8C, 0x8F, 0xDF}  # neg X, ALU64 END X
    jmp = {c | op | s for c in (0x05, 0x06) for op in range(0x10, 0xE0, 0x10) for s in (0, 8)}
    jmp -= {0x85, 0x8D, 0x95, 0x9D, 0x86, 0x8E, 0x96, 0x9E}
    mem = {0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91}  # ldx, ldx sx
    mem |= {0x62, 0x6A, 0x72, 0x7A, 0x63, 0x6B, 0x73, 0x7B, 0xC3, 0xDB}  # st, stx, atomic
    other = {0x18, 0x20, 0x28, 0x30, 0x40, 0x48, 0x50, 0x05, 0x06, 0x85, 0x95}
    assert codes == alu | jmp | mem | other
    assert {1, 8, 16} <= offs[0x3F] | offs[0xBF] | offs[0xBC] and 32 in offs[0xBF]  # sdiv, movsx
    assert imms[0xDC] == imms[0xD4] == imms[0xD7] == {16, 32, 64}
    assert imms[0xDB] == imms[0xC3] == {0x00, 0x40, 0x50, 0xA0, 0x01, 0x41, 0x51, 0xA1, 0xE1, 0xF1}
    assert srcs[0x85] == {0, 1, 2} and srcs[0x18] == {0, 1, 2, 3, 4, 5, 6}


# ---------------------------------------------------------------------------------------------
# Exact encodings (LLVM 14 `llvm-mc -triple bpf -show-encoding -mattr=+alu32`; the v4 forms
# LLVM 14 lacks are taken from RFC 9669's opcode table).

ENCODINGS = [
    ("r1 += 5", "07 01 00 00 05 00 00 00"),
    ("w1 += w2", "0c 21 00 00 00 00 00 00"),
    ("r1 s>>= 3", "c7 01 00 00 03 00 00 00"),
    ("w3 -= -7", "14 03 00 00 f9 ff ff ff"),
    ("r1 = -r1", "87 01 00 00 00 00 00 00"),
    ("r1 = be16 r1", "dc 01 00 00 10 00 00 00"),
    ("r1 = le64 r1", "d4 01 00 00 40 00 00 00"),
    ("r1 = 0x123456789abcdef0 ll", "18 01 00 00 f0 de bc 9a 00 00 00 00 78 56 34 12"),
    ("r1 = 1311768467463790320 ll", "18 01 00 00 f0 de bc 9a 00 00 00 00 78 56 34 12"),
    ("r1 = -1 ll", "18 01 00 00 ff ff ff ff 00 00 00 00 ff ff ff ff"),
    ("r1 = 0xffffffff", "b7 01 00 00 ff ff ff ff"),
    ("r0 = *(u32 *)(r1 + 4)", "61 10 04 00 00 00 00 00"),
    ("r0 = *(u8 *)(r1 - 2)", "71 10 fe ff 00 00 00 00"),
    ("w0 = *(u8 *)(r1 + 7)", "71 10 07 00 00 00 00 00"),
    ("*(u64 *)(r10 - 8) = r1", "7b 1a f8 ff 00 00 00 00"),
    ("*(u16 *)(r10 - 2) = w3", "6b 3a fe ff 00 00 00 00"),
    ("*(u32 *)(r10 - 8) = 5", "62 0a f8 ff 05 00 00 00"),
    ("lock *(u64 *)(r10 - 8) |= r1", "db 1a f8 ff 40 00 00 00"),
    ("lock *(u32 *)(r10 - 8) ^= w2", "c3 2a f8 ff a0 00 00 00"),
    ("r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)", "db 1a f8 ff 01 00 00 00"),
    ("r1 = atomic_fetch_and((u64 *)(r10 - 8), r1)", "db 1a f8 ff 51 00 00 00"),
    ("r1 = xchg_64(r10 - 8, r1)", "db 1a f8 ff e1 00 00 00"),
    ("r0 = cmpxchg_64(r10 - 8, r0, r1)", "db 1a f8 ff f1 00 00 00"),
    ("w0 = cmpxchg32_32(r10 - 8, w0, w1)", "c3 1a f8 ff f1 00 00 00"),
    ("r0 = *(u32 *)skb[r2]", "40 20 00 00 00 00 00 00"),
    ("r0 = *(u8 *)skb[5]", "30 00 00 00 05 00 00 00"),
    ("if r1 s> 3 goto +2", "65 01 02 00 03 00 00 00"),
    ("if w1 == w2 goto -5", "1e 21 fb ff 00 00 00 00"),
    ("if w4 s<= -1 goto +0", "d6 04 00 00 ff ff ff ff"),
    ("goto +3", "05 00 03 00 00 00 00 00"),
    ("call 12", "85 00 00 00 0c 00 00 00"),
    ("call bpf_throw", "85 20 00 00 13 27 00 00"),
    # ISA v4 (RFC 9669)
    ("r1 s/= r2", "3f 21 01 00 00 00 00 00"),
    ("w1 s%= 3", "94 01 01 00 03 00 00 00"),
    ("r1 = (s8)r2", "bf 21 08 00 00 00 00 00"),
    ("r1 = (s32)r2", "bf 21 20 00 00 00 00 00"),
    ("w1 = (s16)w2", "bc 21 10 00 00 00 00 00"),
    ("r1 = bswap32 r1", "d7 01 00 00 20 00 00 00"),
    ("r0 = *(s16 *)(r1 + 2)", "89 10 02 00 00 00 00 00"),
    ("gotol -2", "06 00 00 00 fe ff ff ff"),
]


@pytest.mark.parametrize(("text", "raw"), ENCODINGS)
def test_exact_encoding(text, raw):
    prologue = "r0 = 0\nr0 = 0\nr0 = 0\nr0 = 0\nr0 = 0\n"  # room for backward jumps
    insns = assemble(prologue + text + "\nexit\nexit\nexit\nexit\n").insns
    n = len(bytes.fromhex(raw)) // 8
    assert encode(insns[5 : 5 + n]) == bytes.fromhex(raw)


# ---------------------------------------------------------------------------------------------
# File-level syntax.


def test_functions_labels_and_directives():
    text = """
    .global helper            ; before the function it names
.struct node 16
.exception_callback cb
.prog_type xdp
main:                          // the main program
        r1 = node ll
        call helper
        if r0 == 0 goto LBB0_2
        goto .Lout
    LBB0_2:
        r0 = 1
.Lout:  exit
helper:
        r0 = 7   # comment
        exit
cb:
        r0 = r1
        exit
"""
    p = assemble(text, "prog.s")
    assert p.name == "main" and p.source == "prog.s" and p.prog_type == "xdp"
    assert p.funcs == [FuncSym("main", 0), FuncSym("helper", 7, "global"), FuncSym("cb", 9)]
    assert p.exception_cb == "cb"
    assert p.structs == {"node": StructType("node", 16, 1)}
    assert p.type_refs == {0: "node"}
    assert p.insns[0] == Insn(0x18, 1, 0, 0, 1)
    assert p.insns[2] == Insn(0x85, 0, 1, 0, 4)  # helper at 7: 7 - 2 - 1
    assert p.insns[3] == Insn(0x15, 0, 0, 1, 0)  # LBB0_2 at 5
    assert p.insns[4] == Insn(0x05, 0, 0, 1, 0)  # .Lout at 6
    assert p.insns[6] == Insn(0x95)
    assert len(p.insns) == 11


def test_defaults_and_implicit_main():
    p = assemble("r0 = 0\nexit\n")
    assert p.name == "main" and p.funcs == [FuncSym("main", 0)]
    assert p.prog_type == "tc" and p.exception_cb is None and p.license == "GPL"
    assert p.source == "<asm>"


def test_pasted_llvm_objdump_output():
    text = """
prog.o:\tfile format elf64-bpf

Disassembly of section tc:

0000000000000000 <entry>:
       0:\tb7 00 00 00 00 00 00 00\tr0 = 0
       1:\t18 01 00 00 05 00 00 00 00 00 00 00 00 00 00 00\tr1 = 0x5 ll
       3:\t15 01 01 00 00 00 00 00\tif r1 == 0x0 goto +0x1 <LBB0_2>
       4:\t85 10 00 00 01 00 00 00\tcall pc+1

0000000000000028 <LBB0_2>:
       5:\t95 00 00 00 00 00 00 00\texit

0000000000000030 <sub>:
       6:\tb7 00 00 00 02 00 00 00\tr0 = 2
       7:\t95 00 00 00 00 00 00 00\texit
"""
    p = assemble(text, "dump.txt")
    assert [f.name for f in p.funcs] == ["entry", "sub"]
    assert p.funcs[1].start == 6
    assert encode(p.insns).hex(" ") == (
        "b7 00 00 00 00 00 00 00 18 01 00 00 05 00 00 00 00 00 00 00 00 00 00 00 "
        "15 01 01 00 00 00 00 00 85 10 00 00 01 00 00 00 95 00 00 00 00 00 00 00 "
        "b7 00 00 00 02 00 00 00 95 00 00 00 00 00 00 00"
    )


def test_numeric_jumps_and_pc_relative_calls_resolve_like_labels():
    a = assemble("f:\n if r1 > 3 goto .L1\n r0 = 0\n.L1:\n call g\n exit\ng:\n r0 = 1\n exit\n")
    b = assemble("f:\n if r1 > 3 goto +1\n r0 = 0\n call pc+1\n exit\ng:\n r0 = 1\n exit\n")
    assert a.insns == b.insns


def test_ld_imm64_of_a_function_is_a_pseudo_func_load():
    p = assemble("main:\n r2 = cb ll\n r0 = 0\n exit\ncb:\n r0 = 0\n exit\n")
    assert p.insns[0] == Insn(0x18, 2, 4, 0, 3)
    assert "r2 = cb ll" in disassemble(p)


def test_struct_type_ids_follow_declaration_order():
    p = assemble(".struct a 8\n.struct b 16\n.struct c 24 9\nr1 = c ll\nr1 = b ll\nexit\n")
    assert [(s.name, s.type_id) for s in p.structs.values()] == [("a", 1), ("b", 2), ("c", 9)]
    assert [p.insns[0].imm, p.insns[2].imm] == [9, 2]
    assert p.type_refs == {0: "c", 2: "b"}


# ---------------------------------------------------------------------------------------------
# Errors: one line, `file:line: message`.

ERRORS = [
    ("r0 = 0\nr11 = 1\nexit", 2, "invalid register 'r11'"),
    ("r0 = 0\nif w12 == 0 goto +0\nexit", 2, "invalid register 'w12'"),
    ("r0 = 0\nr0 = *(u64 *)(w1 + 0)\nexit", 2, "'w1' must be a 64-bit r register"),
    ("r0 = 0\nw1 += r2\nexit", 2, "mix 32-bit and 64-bit registers"),
    ("mov r0, 1\nexit", 1, "unknown instruction 'mov r0, 1'"),
    ("r0 = 0\nr0 = foo(1)\nexit", 2, "cannot parse right-hand side"),
    ("r0 = 0\n\nr1 = 2147483648\nexit", 3, "immediate 2147483648 out of range"),
    ("r0 = 0x100000000\nexit", 1, "immediate 0x100000000 out of range"),
    ("r0 = -2147483649\nexit", 1, "out of range"),
    ("*(u32 *)(r10 - 8) = 0x1ffffffff\nexit", 1, "out of range"),
    ("r1 = 0x10000000000000000 ll\nexit", 1, "out of range (64 bits)"),
    ("r0 = *(u64 *)(r1 + 32768)\nexit", 1, "offset 32768 out of range (must fit s16)"),
    ("goto +40000\nexit", 1, "jump offset 40000 out of range"),
    ("r0 = 0\ngoto .Lnowhere\nexit", 2, "unknown label '.Lnowhere'"),
    ("r0 = 0\ncall no_such_function\nexit", 2, "unknown call target 'no_such_function'"),
    ("r1 = missing ll\nexit", 1, "unknown symbol 'missing'"),
    ("f:\n r0 = 0\n goto .Lg\n exit\ng:\n.Lg:\n exit", 3, "leaves function 'f' (in another function)"),
    ("f:\n r0 = 0\n goto -3\n exit", 3, "leaves function 'f' (outside the program)"),
    ("f:\n goto +1\n exit\ng:\n exit", 2, "leaves function 'f' (in another function)"),
    ("f:\n call pc+5\n exit", 2, "is outside the program"),
    ("f:\ng:\n exit", 2, "function 'f' has no instructions"),
    ("f:\n exit\nf:\n exit", 3, "label 'f' is defined twice"),
    ("f:\n  helper:\n exit", 2, "must start at column 0"),
    (".bogus 1\nexit", 1, "unknown directive '.bogus'"),
    (".global nothere\nf:\n exit", 1, ".global names unknown function 'nothere'"),
    (".exception_callback cb\nf:\n exit", 1, "names unknown function 'cb'"),
    (".struct a\nexit", 1, ".struct takes NAME SIZE"),
    ("r1 = be8 r1\nexit", 1, "byte swap width must be 16, 32 or 64"),
    ("w1 = (s32)w2\nexit", 1, "32-bit movsx takes (s8) or (s16)"),
    ("r1 = atomic_fetch_add((u64 *)(r10 - 8), r2)\nexit", 1, "same register on both sides"),
    ("r1 = cmpxchg_64(r10 - 8, r1, r2)\nexit", 1, "cmpxchg compares against r0/w0"),
    ("lock *(u16 *)(r10 - 8) += r1\nexit", 1, "atomic operations take u32 or u64"),
    ("r1 = *(u8 *)skb[0]\nexit", 1, "packet loads write r0"),
    ("ld_pseudo r1, 9, 0\nexit", 1, "ld_pseudo kind 9 out of range"),
    ("", 1, "no instructions"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), ERRORS)
def test_errors_name_file_and_line(text, line, fragment):
    with pytest.raises(AsmError) as err:
        assemble(text, "bad.s")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"bad.s:{line}: "), msg
    assert fragment in msg, msg


# ---------------------------------------------------------------------------------------------
# insn_text without context, and the kernel log form.


def test_insn_text_without_names_uses_relative_forms():
    p = assemble("f:\n if r1 != 0 goto +1\n call g\n goto -3\n exit\ng:\n call kfunc(77)\n exit\n")
    insns = p.insns
    assert insn_text(insns, 0) == "if r1 != 0 goto +1"
    assert insn_text(insns, 1) == "call pc+2"
    assert insn_text(insns, 1, call_names={4: "g"}) == "call g"
    assert insn_text(insns, 2) == "goto -3"
    assert insn_text(insns, 2, labels={0: ".Ltop"}) == "goto .Ltop"
    assert insn_text(insns, 4) == "call kfunc(77)"


KERNEL_TEXT = [
    ("r0 = 0", "(b7) r0 = 0"),
    ("r1 += -8", "(07) r1 += -8"),
    ("r1 = r2", "(bf) r1 = r2"),
    ("w1 = (s8)w2", "(bc) w1 = (s8)w2"),
    ("r1 s/= r2", "(3f) r1 s/= r2"),
    ("w1 = -w1", "(84) w1 = -w1"),
    ("r0 = be16 r0", "(dc) r0 = be16 r0"),
    ("r1 = bswap64 r1", "(d7) r1 = bswap64 r1"),
    ("*(u64 *)(r10 - 8) = r1", "(7b) *(u64 *)(r10 -8) = r1"),
    ("*(u32 *)(r1 + 4) = 7", "(62) *(u32 *)(r1 +4) = 7"),
    ("r0 = *(u64 *)(r1 + 8)", "(79) r0 = *(u64 *)(r1 +8)"),
    ("r0 = *(s8 *)(r1 + 0)", "(91) r0 = *(s8 *)(r1 +0)"),
    ("lock *(u32 *)(r10 - 8) += w1", "(c3) lock *(u32 *)(r10 -8) += r1"),
    ("r1 = atomic_fetch_or((u64 *)(r10 - 8), r1)", "(db) r1 = atomic64_fetch_or((u64 *)(r10 -8), r1)"),
    ("w1 = atomic_fetch_xor((u32 *)(r2 + 4), w1)", "(c3) r1 = atomic_fetch_xor((u32 *)(r2 +4), r1)"),
    ("r3 = xchg_64(r10 - 16, r3)", "(db) r3 = atomic64_xchg((u64 *)(r10 -16), r3)"),
    ("r0 = cmpxchg_64(r10 - 8, r0, r1)", "(db) r0 = atomic64_cmpxchg((u64 *)(r10 -8), r0, r1)"),
    ("r0 = *(u16 *)skb[12]", "(28) r0 = *(u16 *)skb[12]"),
    ("r0 = *(u8 *)skb[r6 - 2]", "(50) r0 = *(u8 *)skb[r6 + -2]"),
    ("r1 = 0x5 ll", "(18) r1 = 0x5"),
    ("r1 = -1 ll", "(18) r1 = 0xffffffffffffffff"),
    ("if r0 != 0 goto +1", "(55) if r0 != 0x0 goto pc+1"),
    ("if r0 > 7 goto +0", "(25) if r0 > 0x7 goto pc+0"),
    ("if w1 s< -2 goto -1", "(c6) if w1 s< 0xfffffffe goto pc-1"),
    ("if r1 & r2 goto +1", "(4d) if r1 & r2 goto pc+1"),
    ("goto -1", "(05) goto pc-1"),
    ("gotol +1", "(06) gotol pc+1"),
    ("call bpf_throw", "(85) call bpf_throw#10003"),
    ("call kfunc(424242)", "(85) call kernel-function#424242"),
    ("call 1", "(85) call unknown#1"),
    ("exit", "(95) exit"),
]


@pytest.mark.parametrize(("text", "expected"), KERNEL_TEXT)
def test_kernel_insn_text(text, expected):
    insns = assemble(f"r0 = 0\n{text}\nexit\nexit\n").insns
    assert kernel_insn_text(insns, 1) == expected


def test_kernel_insn_text_pseudo_call_and_func_name_callback():
    insns = assemble("f:\n r1 = 1\n call g\n call 1\n exit\ng:\n r0 = 0\n exit\n").insns
    assert kernel_insn_text(insns, 1) == "(85) call pc+2"
    named = kernel_insn_text(insns, 2, func_name=lambda insn: "bpf_map_lookup_elem")
    assert named == "(85) call bpf_map_lookup_elem#1"


def test_local_labels_are_scoped_to_their_function():
    text = "f:\n\tif r1 == 0 goto .Lout\n\tr0 = 1\n.Lout:\n\texit\ng:\n\tgoto .Lout\n.Lout:\n\texit\n"
    prog = assemble(text, "x.s")
    assert prog.insns[0].off == 1  # f's .Lout
    assert prog.insns[3].off == 0  # g's own .Lout, not f's
