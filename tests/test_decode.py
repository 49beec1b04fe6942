"""verifier.isa.decode: reserved-field validation (bpf_conformance negative data, kernel/RFC 9669
rules) and the bytes <-> Insn round trip for every opcode class."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from verifier.asm.assembler import assemble
from verifier.asm.disasm import insn_text, kernel_insn_text
from verifier.asm.line import parse_insn
from verifier.errors import DecodeError
from verifier.isa.decode import decode, encode
from verifier.isa.insn import Insn
from verifier.protos.kfuncs import KFUNCS_BY_NAME

NEGATIVE = Path("/work/shared/conformance/negative")
CORPUS = Path(__file__).parent / "asm_corpus"
FIELD_OF_SUFFIX = {"offset": "off", "src": "src", "dst": "dst", "imm": "imm"}


def read_raw(path: Path) -> bytes:
    """The `-- raw` section of a bpf_conformance .data file: lines of 8 hex bytes, or one
    64-bit little-endian word per token."""
    out = bytearray()
    in_raw = False
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "--" in line:
            in_raw = "raw" in line
            continue
        if not in_raw:
            continue
        tokens = line.split()
        if len(tokens) == 8 and all(re.fullmatch(r"[0-9a-fA-F]{2}", t) for t in tokens):
            out += bytes(int(t, 16) for t in tokens)
        else:
            for t in tokens:
                out += int(t, 16).to_bytes(8, "little")
    return bytes(out)


UNUSED_FILES = sorted(NEGATIVE.glob("unused-*.data"))


def test_conformance_negative_data_is_present():
    assert len(UNUSED_FILES) == 45


@pytest.mark.parametrize("path", UNUSED_FILES, ids=lambda p: p.stem)
def test_unused_field_set_is_rejected(path):
    data = read_raw(path)
    assert len(data) == 16
    field = FIELD_OF_SUFFIX[path.stem.rsplit("-", 1)[1]]
    with pytest.raises(DecodeError) as err:
        decode(data, path.name)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path.name}: insn 0 (0x{data[0]:02x}): ")
    assert re.search(rf"\b{field}\b", msg), msg
    # Clearing the reserved field makes the same program valid.
    first = decode(data[8:], "exit")[0]
    assert first.is_exit()


def hx(text: str) -> bytes:
    return bytes.fromhex(text)


# (raw bytes, message fragment): kernel / RFC 9669 rules beyond the conformance files.
INVALID = [
    ("b7 0b 00 00 00 00 00 00", "dst register r11 is invalid"),
    ("bf f1 00 00 00 00 00 00", "src register r15 is invalid"),
    ("bf 21 04 00 00 00 00 00", "off must be one of 0, 8, 16, 32 for mov (is 4)"),
    ("bc 21 20 00 00 00 00 00", "off must be one of 0, 8, 16 for mov (is 32)"),
    ("3f 21 02 00 00 00 00 00", "off must be 0 or 1 (is 2)"),
    ("2f 21 01 00 00 00 00 00", "off must be 0 (is 1)"),
    ("dc 01 00 00 08 00 00 00", "imm must be 16, 32 or 64"),
    ("d7 01 00 00 30 00 00 00", "imm must be 16, 32 or 64"),
    ("df 01 00 00 10 00 00 00", "ALU64 byte swap must use BPF_TO_LE"),
    ("8f 01 00 00 00 00 00 00", "neg takes no source operand"),
    ("e7 01 00 00 00 00 00 00", "unknown ALU operation"),
    ("f4 01 00 00 00 00 00 00", "unknown ALU operation"),
    ("db 1a f8 ff 02 00 00 00", "imm 0x2 is not an atomic operation"),
    ("db 1a f8 ff e0 00 00 00", "imm 0xe0 is not an atomic operation"),
    ("d3 1a f8 ff 00 00 00 00", "atomic operations must be 32 or 64 bits wide"),
    ("99 10 00 00 00 00 00 00", "unknown load mode/size"),
    ("c2 0a 00 00 00 00 00 00", "unknown store mode"),
    ("83 1a 00 00 00 00 00 00", "unknown store mode"),
    ("06 00 01 00 02 00 00 00", "off must be 0 (is 1)"),
    ("0d 00 01 00 00 00 00 00", "source bit must be 0"),
    ("86 00 00 00 01 00 00 00", "call is only valid in the JMP class"),
    ("96 00 00 00 00 00 00 00", "exit is only valid in the JMP class"),
    ("8d 00 00 00 00 00 00 00", "source bit must be 0"),
    ("85 30 00 00 01 00 00 00", "src must be 0, 1 or 2 for a call (is 3)"),
    ("85 10 01 00 01 00 00 00", "off must be 0 (is 1)"),
    ("e5 00 00 00 00 00 00 00", "unknown jump operation"),
    ("f6 00 00 00 00 00 00 00", "unknown jump operation"),
    ("15 0c 00 00 00 00 00 00", "dst register r12 is invalid"),
    ("1d b1 00 00 00 00 00 00", "src register r11 is invalid"),
    ("18 71 00 00 00 00 00 00 00 00 00 00 00 00 00 00", "src must be 0..6 for ld_imm64 (is 7)"),
    ("18 01 01 00 00 00 00 00 00 00 00 00 00 00 00 00", "off must be 0 (is 1)"),
    ("18 01 00 00 00 00 00 00 01 00 00 00 00 00 00 00", "second slot code must be 0 (is 1)"),
    ("18 01 00 00 00 00 00 00 00 02 00 00 00 00 00 00", "second slot dst must be 0 (is 2)"),
    ("18 01 00 00 00 00 00 00 00 10 00 00 00 00 00 00", "second slot src must be 0 (is 1)"),
    ("18 01 00 00 00 00 00 00 00 00 04 00 00 00 00 00", "second slot off must be 0 (is 4)"),
    ("18 01 00 00 00 00 00 00", "ld_imm64 is missing its second slot"),
    ("00 00 00 00 00 00 00 00", "unknown BPF_LD mode/size"),
    ("38 00 00 00 00 00 00 00", "unknown BPF_LD mode/size"),
    ("30 01 00 00 00 00 00 00", "dst must be 0 (is 1)"),
    ("30 10 00 00 00 00 00 00", "src must be 0 (is 1)"),
    ("50 00 02 00 00 00 00 00", "off must be 0 (is 2)"),
]


@pytest.mark.parametrize(("raw", "fragment"), INVALID)
def test_invalid_encodings_are_rejected(raw, fragment):
    data = hx("b7 00 00 00 00 00 00 00") + hx(raw)
    with pytest.raises(DecodeError) as err:
        decode(data, "prog.o")
    prefix = f"prog.o: insn 1 (0x{data[8]:02x}): "
    assert str(err.value).startswith(prefix + fragment)


def test_message_format_names_program_slot_and_field():
    with pytest.raises(DecodeError, match=r"^prog\.o: insn 3 \(0xb7\): src must be 0 \(is 2\)$"):
        decode(hx("95 00 00 00 00 00 00 00") * 3 + hx("b7 20 00 00 00 00 00 00"), "prog.o")


def test_length_must_be_a_multiple_of_eight():
    with pytest.raises(DecodeError, match=r"^x\.bin: length 12 is not a multiple of 8$"):
        decode(b"\x95" + bytes(11), "x.bin")
    assert decode(b"") == []


# Valid encodings of every opcode class (one slot, or two for ld_imm64).
VALID = [
    "07 01 00 00 05 00 00 00",  # r1 += 5
    "0c 21 00 00 00 00 00 00",  # w1 += w2
    "3f 21 01 00 00 00 00 00",  # r1 s/= r2
    "94 01 01 00 03 00 00 00",  # w1 s%= 3
    "bf 21 08 00 00 00 00 00",  # r1 = (s8)r2
    "bf 21 20 00 00 00 00 00",  # r1 = (s32)r2
    "bc 21 10 00 00 00 00 00",  # w1 = (s16)w2
    "84 01 00 00 00 00 00 00",  # w1 = -w1
    "dc 01 00 00 40 00 00 00",  # r1 = be64 r1
    "d7 01 00 00 20 00 00 00",  # r1 = bswap32 r1
    "18 01 00 00 01 00 00 00 00 00 00 00 02 00 00 00",  # r1 = 0x200000001 ll
    "18 61 00 00 01 00 00 00 00 00 00 00 02 00 00 00",  # ld_pseudo r1, 6, ...
    "20 00 00 00 05 00 00 00",  # r0 = *(u32 *)skb[5]
    "50 10 00 00 fe ff ff ff",  # r0 = *(u8 *)skb[r1 - 2]
    "79 a1 f8 ff 00 00 00 00",  # r1 = *(u64 *)(r10 - 8)
    "91 21 02 00 00 00 00 00",  # r1 = *(s8 *)(r2 + 2)
    "81 21 02 00 00 00 00 00",  # r1 = *(s32 *)(r2 + 2)
    "7a 0a f8 ff 05 00 00 00",  # *(u64 *)(r10 - 8) = 5
    "63 1a fc ff 00 00 00 00",  # *(u32 *)(r10 - 4) = r1
    "c3 1a fc ff e1 00 00 00",  # w1 = xchg32_32(r10 - 4, w1)
    "db 1a f8 ff f1 00 00 00",  # r0 = cmpxchg_64(r10 - 8, r0, r1)
    "db 1a f8 ff 51 00 00 00",  # r1 = atomic_fetch_and(...)
    "05 00 fe ff 00 00 00 00",  # goto -2
    "06 00 00 00 ff ff ff 7f",  # gotol +2147483647
    "45 03 01 00 10 00 00 00",  # if r3 & 16 goto +1
    "de 21 01 00 00 00 00 00",  # if w1 s<= w2 goto +1
    "85 00 00 00 0c 00 00 00",  # call 12
    "85 10 00 00 ff ff ff ff",  # call pc-1
    "85 20 00 00 13 27 00 00",  # call bpf_throw
    "85 20 01 00 13 27 00 00",  # kfunc call with a module BTF fd index in off (kernel allows it)
    "95 00 00 00 00 00 00 00",  # exit
]


@pytest.mark.parametrize("raw", VALID)
def test_valid_encodings_round_trip(raw):
    data = hx(raw)
    insns = decode(data)
    assert len(insns) == len(data) // 8
    assert encode(insns) == data


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.s")), ids=lambda p: p.stem)
def test_corpus_encodes_and_decodes_identically(path):
    program = assemble(path.read_text(), path.name)
    data = encode(program.insns)
    assert len(data) == 8 * len(program.insns)
    assert decode(data, path.name) == program.insns


def _grid() -> list[tuple[Insn, ...]]:
    regs = (0, 10, 11)
    srcs = (0, 1, 2, 6, 7, 11)
    offs = (0, 1, 8, 16, 32, -8)
    imms = (0, 16, 32, 64, -1, 0x41, 0xE1, 0xF1, 10003)
    out = []
    for code, dst, src, off, imm in itertools.product(range(256), regs, srcs, offs, imms):
        out.append((Insn(code, dst, src, off, imm), Insn(0, 0, 0, 0, 7)))
    return out


def test_every_accepted_slot_prints_and_parses_back():
    """Exhaustive over all 256 opcodes and a grid of field values: whatever decode accepts,
    insn_text prints as text that parses back to the same slots, and the kernel log form
    names it without falling back to `<invalid>`."""
    accepted_codes = set()
    for pair in _grid():
        data = encode(list(pair) if pair[0].is_ld_imm64() else [pair[0]])
        try:
            insns = decode(data)
        except DecodeError:
            continue
        accepted_codes.add(pair[0].code)
        text = insn_text(insns, 0)
        slots, ref = parse_insn(text)
        if ref is not None:  # a kfunc by name: the assembler resolves it to its BTF id
            assert ref.kind == "call" and insns[0].is_kfunc_call(), text
            slots = [slots[0].replace(src=2, imm=KFUNCS_BY_NAME[ref.name].btf_id)]
        assert slots == insns[: len(slots)], (text, insns)
        assert "<invalid" not in kernel_insn_text(insns, 0)
    expected = {
        # ALU/ALU64: every op K and X, minus neg X / END X on ALU64 / ALU ops 0xe0-0xf0
        *(cls | op | s for cls in (0x04, 0x07) for op in range(0, 0xE0, 0x10) for s in (0, 8)),
        0x18, 0x20, 0x28, 0x30, 0x40, 0x48, 0x50,  # ld_imm64, abs, ind
        0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91,  # ldx mem, memsx
        0x62, 0x6A, 0x72, 0x7A, 0x63, 0x6B, 0x73, 0x7B, 0xC3, 0xDB,  # st, stx, atomic
        *(cls | op | s for cls in (0x05, 0x06) for op in range(0x10, 0xE0, 0x10) for s in (0, 8)
          if op not in (0x80, 0x90)),
        0x05, 0x06, 0x85, 0x95,
    }  # fmt: skip
    expected -= {0x8C, 0x8F, 0xDF}
    assert accepted_codes == expected
