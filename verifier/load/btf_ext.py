"""The `.BTF.ext` section of a clang-built object: func_info, line_info and CO-RE relocations.

Owns `parse_btf_ext(data, btf, source)` -> `BtfExt`. Each of the three sub-sections is a
record size followed by per-ELF-section blocks (section name, record count, records);
instruction offsets are byte offsets into that ELF section, as clang writes them.
Only the CO-RE relocation kinds are interpreted further (TYPE_ID_LOCAL gives the local
type id of `bpf_core_type_id_local()`). line_info records (`struct bpf_line_info`) are kept
with their file name and source line read from the BTF string table; the linker turns them
into `verifier.program.LineInfo` at the program's insn indexes."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from verifier.errors import LoadError
from verifier.load.btf import Btf

_HDR = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, func/line info off/len
_CORE_HDR = struct.Struct("<II")
_U32 = struct.Struct("<I")
_BLOCK = struct.Struct("<II")

# enum bpf_core_relo_kind
CORE_RELO_KINDS = (
    "field_byte_offset", "field_byte_size", "field_exists", "field_signed", "field_lshift_u64",
    "field_rshift_u64", "type_id_local", "type_id_target", "type_exists", "type_size",
    "enumval_exists", "enumval_value", "type_matches",
)  # fmt: skip
BPF_CORE_TYPE_ID_LOCAL = 6
BPF_CORE_TYPE_ID_TARGET = 7


@dataclass(frozen=True)
class FuncInfo:
    insn_off: int  # bytes into the ELF section
    type_id: int  # BTF FUNC


@dataclass(frozen=True)
class CoreRelo:
    insn_off: int  # bytes into the ELF section
    type_id: int
    access: str
    kind: int

    @property
    def kind_name(self) -> str:
        return CORE_RELO_KINDS[self.kind] if self.kind < len(CORE_RELO_KINDS) else f"kind#{self.kind}"


@dataclass(frozen=True)
class LineRec:
    """One `struct bpf_line_info` as clang wrote it: `line_col` is line << 10 | column."""

    insn_off: int  # bytes into the ELF section
    file_name_off: int  # BTF string offsets
    line_off: int
    line_col: int
    file_name: str
    line: str


@dataclass
class BtfExt:
    func_info: dict[str, list[FuncInfo]] = field(default_factory=dict)  # ELF section -> records
    core_relos: dict[str, list[CoreRelo]] = field(default_factory=dict)
    line_info: dict[str, list[LineRec]] = field(default_factory=dict)  # ELF section -> records

    @property
    def line_info_count(self) -> int:
        return sum(len(recs) for recs in self.line_info.values())


def _blocks(data: bytes, start: int, length: int, min_rec: int, what: str, btf: Btf, source: str):
    """Yield (section name, record offset, record size) for every record of one sub-section."""
    if length == 0:
        return
    end = start + length
    if end > len(data) or length < 4:
        raise LoadError(f"{source}: .BTF.ext {what} lies outside the section")
    (rec_size,) = _U32.unpack_from(data, start)
    if rec_size < min_rec or rec_size % 4 or rec_size > 1024:
        raise LoadError(f"{source}: .BTF.ext {what} record size {rec_size} is invalid")
    pos = start + 4
    while pos < end:
        if pos + _BLOCK.size > end:
            raise LoadError(f"{source}: .BTF.ext {what} block header is truncated")
        name_off, count = _BLOCK.unpack_from(data, pos)
        pos += _BLOCK.size
        if count == 0 or pos + count * rec_size > end:
            raise LoadError(f"{source}: .BTF.ext {what}: block of {count} records does not fit the section")
        sec = _btf_string(btf, name_off, source, what)
        for i in range(count):
            yield sec, pos + i * rec_size
        pos += count * rec_size


def _btf_string(btf: Btf, off: int, source: str, what: str) -> str:
    strings = btf.strings
    if off >= len(strings):
        raise LoadError(f"{source}: .BTF.ext {what}: string offset {off} is outside the BTF string table")
    end = strings.find(b"\0", off)
    try:
        return strings[off : end if end >= 0 else len(strings)].decode()
    except UnicodeDecodeError:
        raise LoadError(f"{source}: .BTF.ext {what}: string at offset {off} is not UTF-8") from None


def parse_btf_ext(data: bytes, btf: Btf, source: str = "<btf.ext>") -> BtfExt:
    """Parse a raw `.BTF.ext` against its object's `.BTF`; raise LoadError when malformed."""
    if len(data) < _HDR.size:
        raise LoadError(f"{source}: .BTF.ext is {len(data)} bytes, shorter than its header")
    magic, version, _flags, hdr_len, fi_off, fi_len, li_off, li_len = _HDR.unpack_from(data)
    if magic != 0xEB9F or version != 1:
        raise LoadError(f"{source}: .BTF.ext has bad magic {magic:#06x} or version {version}")
    if hdr_len < _HDR.size or hdr_len > len(data):
        raise LoadError(f"{source}: .BTF.ext header length {hdr_len} is invalid")
    ext = BtfExt()
    for sec, pos in _blocks(data, hdr_len + fi_off, fi_len, 8, "func_info", btf, source):
        off, type_id = _BLOCK.unpack_from(data, pos)
        btf.get(type_id)
        ext.func_info.setdefault(sec, []).append(FuncInfo(off, type_id))
    for sec, pos in _blocks(data, hdr_len + li_off, li_len, 16, "line_info", btf, source):
        off, file_off, line_off, line_col = struct.unpack_from("<IIII", data, pos)
        file_name = _btf_string(btf, file_off, source, "line_info")
        line = _btf_string(btf, line_off, source, "line_info")
        ext.line_info.setdefault(sec, []).append(LineRec(off, file_off, line_off, line_col, file_name, line))
    if hdr_len >= _HDR.size + _CORE_HDR.size:
        cr_off, cr_len = _CORE_HDR.unpack_from(data, _HDR.size)
        for sec, pos in _blocks(data, hdr_len + cr_off, cr_len, 16, "core_relo", btf, source):
            off, type_id, access_off, kind = struct.unpack_from("<IIII", data, pos)
            btf.get(type_id)
            if kind >= len(CORE_RELO_KINDS):
                raise LoadError(f"{source}: .BTF.ext CO-RE relocation kind {kind} is unknown")
            access = _btf_string(btf, access_off, source, "core_relo")
            ext.core_relos.setdefault(sec, []).append(CoreRelo(off, type_id, access, kind))
    return ext
