"""BTF and BTF.ext parsing: every kind from a hand-built blob, the corpus objects' BTF, and
one clear LoadError for each kind of malformed input."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from verifier.errors import LoadError
from verifier.load.btf import (
    BTF_KIND_DATASEC,
    BTF_KIND_DECL_TAG,
    BTF_KIND_FUNC,
    BTF_KIND_STRUCT,
    KIND_NAMES,
    parse_btf,
)
from verifier.load.btf_ext import BPF_CORE_TYPE_ID_LOCAL, parse_btf_ext

PROGS = Path(__file__).parent / "progs"


class BtfBuilder:
    """Assemble a raw .BTF blob: add(kind, name, info_vlen, size_or_type, tail bytes)."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self.types = bytearray()
        self.count = 0

    def s(self, text: str) -> int:
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(
        self, kind: int, name: str = "", vlen: int = 0, sot: int = 0, tail: bytes = b"", kflag: bool = False
    ) -> int:
        info = (kind << 24) | vlen | (1 << 31 if kflag else 0)
        self.types += struct.pack("<III", self.s(name), info, sot) + tail
        self.count += 1
        return self.count

    def blob(self, magic: int = 0xEB9F, version: int = 1) -> bytes:
        hdr = struct.pack(
            "<HBBIIIII", magic, version, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return hdr + bytes(self.types) + bytes(self.strings)


def every_kind() -> tuple[bytes, dict[str, int]]:
    b = BtfBuilder()
    ids = {}
    ids["int"] = b.add(1, "int", sot=4, tail=struct.pack("<I", (1 << 24) | 32))  # signed, 32 bits
    ids["ptr"] = b.add(2, sot=ids["int"])
    ids["arr"] = b.add(3, tail=struct.pack("<III", ids["int"], ids["int"], 5))
    members = struct.pack("<III", b.s("a"), ids["int"], 0) + struct.pack(
        "<III", b.s("bits"), ids["int"], (3 << 24) | 32
    )
    ids["struct"] = b.add(4, "pair", vlen=2, sot=8, tail=members, kflag=True)
    ids["union"] = b.add(5, "u", vlen=1, sot=4, tail=struct.pack("<III", b.s("x"), ids["int"], 0))
    ids["enum"] = b.add(
        6,
        "color",
        vlen=2,
        sot=4,
        tail=struct.pack("<Ii", b.s("RED"), 0) + struct.pack("<Ii", b.s("BLUE"), -1),
    )
    ids["fwd"] = b.add(7, "opaque")
    ids["typedef"] = b.add(8, "pair_t", sot=ids["struct"])
    ids["volatile"] = b.add(9, sot=ids["typedef"])
    ids["const"] = b.add(10, sot=ids["volatile"])
    ids["restrict"] = b.add(11, sot=ids["ptr"])
    ids["proto"] = b.add(13, vlen=1, sot=ids["int"], tail=struct.pack("<II", b.s("arg"), ids["int"]))
    ids["func"] = b.add(12, "f", vlen=1, sot=ids["proto"])
    ids["var"] = b.add(14, "v", sot=ids["arr"], tail=struct.pack("<I", 1))
    ids["datasec"] = b.add(15, ".data", vlen=1, sot=20, tail=struct.pack("<III", ids["var"], 0, 20))
    ids["float"] = b.add(16, "double", sot=8)
    ids["tag"] = b.add(17, "exception_callback:cb", sot=ids["func"], tail=struct.pack("<i", -1))
    ids["type_tag"] = b.add(18, "user", sot=ids["int"])
    ids["enum64"] = b.add(
        19, "big", vlen=1, sot=8, tail=struct.pack("<III", b.s("HUGE"), 0xFFFFFFFF, 0xFFFFFFFF), kflag=True
    )
    return b.blob(), ids


def test_every_kind_parses_with_names_sizes_and_tails():
    blob, ids = every_kind()
    btf = parse_btf(blob, "t")
    assert [btf.get(ids[k]).kind_name for k in ids] == [
        "INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD", "TYPEDEF", "VOLATILE", "CONST",
        "RESTRICT", "FUNC_PROTO", "FUNC", "VAR", "DATASEC", "FLOAT", "DECL_TAG", "TYPE_TAG", "ENUM64",
    ]  # fmt: skip
    assert len(KIND_NAMES) == 20
    assert btf.get(ids["int"]).int_bits == 32 and btf.get(ids["int"]).int_encoding == 1
    pair = btf.get(ids["struct"])
    assert [(m.name, m.offset, m.bitfield_size) for m in pair.members] == [("a", 0, 0), ("bits", 32, 3)]
    assert btf.resolve_size(ids["arr"]) == 20
    assert btf.resolve_size(ids["const"]) == 8  # const -> volatile -> typedef -> struct
    assert btf.resolve_size(ids["var"]) == 20
    assert btf.skip_modifiers(ids["const"]).name == "pair"
    assert [m.value for m in btf.get(ids["enum"]).members] == [0, -1]
    assert btf.get(ids["enum64"]).members[0].value == -1
    assert btf.get(ids["func"]).linkage == 1 and btf.func_linkage("f") == "global"
    assert btf.decl_tags(ids["func"]) == ["exception_callback:cb"]
    assert btf.datasec(".data").members[0].size == 20
    assert btf.type_name(ids["ptr"]) == "int *"
    assert btf.type_name(ids["struct"]) == "struct pair"


def _btf_of(obj: str):
    with open(PROGS / obj, "rb") as f:
        elf = ELFFile(f)
        return elf.get_section_by_name(".BTF").data(), elf.get_section_by_name(".BTF.ext").data()


def test_corpus_btf_functions_linkage_and_exception_callback_tag():
    raw, _ = _btf_of("basic.o")
    btf = parse_btf(raw, "basic.o")
    assert btf.func_linkage("basic_exception_cb") == "global"
    assert btf.func_linkage("add_three") == "static"
    assert btf.func_linkage("bpf_throw") == "extern"
    main = btf.find("basic_exception_cb", BTF_KIND_FUNC)[0]
    assert btf.decl_tags(main.id) == ["exception_callback:basic_cb"]
    node = btf.find("node", BTF_KIND_STRUCT)[0]
    assert node.size_or_type == 16 and [m.name for m in node.members] == ["value", "spare"]
    assert btf.find(".ksyms", BTF_KIND_DATASEC)


def test_corpus_two_exception_callback_tags_are_both_kept():
    raw, _ = _btf_of("exceptions_fail.o")
    btf = parse_btf(raw, "exceptions_fail.o")
    main = btf.find("reject_multiple_exception_cb", BTF_KIND_FUNC)[0]
    tags = btf.decl_tags(main.id)
    assert sorted(tags) == ["exception_callback:exception_cb_first", "exception_callback:exception_cb_second"]
    assert all(t.kind == BTF_KIND_DECL_TAG for t in btf.types if t.name.startswith("exception_callback:"))


def test_btf_ext_func_info_and_type_id_local_relocations():
    raw, raw_ext = _btf_of("basic.o")
    btf = parse_btf(raw, "basic.o")
    ext = parse_btf_ext(raw_ext, btf, "basic.o")
    tc_funcs = {btf.get(r.type_id).name for r in ext.func_info["tc"]}
    assert "basic_obj_new_drop" in tc_funcs and "add_three" not in tc_funcs
    relos = ext.core_relos["tc"]
    assert relos and all(r.kind == BPF_CORE_TYPE_ID_LOCAL for r in relos)
    assert {btf.get(r.type_id).name for r in relos} == {"node"}
    assert ext.line_info_count > 0


def _mutate(blob: bytes, off: int, fmt: str, value: int) -> bytes:
    out = bytearray(blob)
    struct.pack_into(fmt, out, off, value)
    return bytes(out)


@pytest.mark.parametrize(
    "mutation, message",
    [
        (lambda b: b[:10], "shorter than its header"),
        (lambda b: _mutate(b, 0, "<H", 0x1234), "bad magic"),
        (lambda b: _mutate(b, 2, "<B", 2), "version 2"),
        (lambda b: _mutate(b, 12, "<I", 1 << 20), "outside the section data"),
        (lambda b: _mutate(b, 24, "<I", 1 << 20), "outside the string table"),
        (lambda b: _mutate(b, 28, "<I", 25 << 24), "unknown kind 25"),
        (lambda b: _mutate(b, 24 + 16 + 8, "<I", 999), "does not exist"),  # the PTR's target
        (lambda b: _mutate(b, 12, "<I", 20), "runs past the end"),  # cuts the PTR record
    ],
)
def test_malformed_btf_is_one_load_error(mutation, message):
    blob, _ = every_kind()
    with pytest.raises(LoadError, match=message):
        parse_btf(mutation(blob), "bad.o: .BTF")


def test_modifier_loop_and_func_without_proto_are_rejected():
    b = BtfBuilder()
    b.add(8, "a", sot=2)
    b.add(8, "b", sot=1)
    btf = parse_btf(b.blob(), "loop")
    with pytest.raises(LoadError, match="loops"):
        btf.skip_modifiers(1)
    b = BtfBuilder()
    b.add(1, "int", sot=4, tail=struct.pack("<I", 32))
    b.add(12, "f", sot=1)
    with pytest.raises(LoadError, match="does not point to a FUNC_PROTO"):
        parse_btf(b.blob(), "func")


def test_malformed_btf_ext_is_one_load_error():
    raw, raw_ext = _btf_of("basic.o")
    btf = parse_btf(raw, "basic.o")
    with pytest.raises(LoadError, match="bad magic"):
        parse_btf_ext(_mutate(raw_ext, 0, "<H", 0), btf, "x")
    with pytest.raises(LoadError, match="func_info lies outside"):
        parse_btf_ext(_mutate(raw_ext, 12, "<I", 1 << 24), btf, "x")
    with pytest.raises(LoadError, match="record size"):
        hdr_len = struct.unpack_from("<I", raw_ext, 4)[0]
        fi_off = struct.unpack_from("<I", raw_ext, 8)[0]
        parse_btf_ext(_mutate(raw_ext, hdr_len + fi_off, "<I", 3), btf, "x")
