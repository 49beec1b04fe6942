"""The ELF container of a BPF object, read with pyelftools into plain validated records.

Owns `read_elf(data, path)` -> `ElfImage`: the header checks (64-bit, little-endian,
EM_BPF, relocatable), every section header (its data must lie inside the file), the
symbol table and the REL relocation sections keyed by the section they patch. This is the
only module that touches pyelftools; whatever it raises on a corrupt file becomes one
`LoadError` naming the file and the structure being read. Counts read from the file are
checked against section sizes before any loop runs, so a corrupt count cannot hang."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

from elftools.common.exceptions import ELFError, ELFParseError
from elftools.construct.core import ConstructError
from elftools.elf.elffile import ELFFile

from verifier.errors import LoadError, quoted, shown

SHT_NULL, SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_REL, SHT_NOBITS = 0, 1, 2, 3, 9, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHN_UNDEF, SHN_ABS, SHN_COMMON = 0, 0xFFF1, 0xFFF2
EM_BPF = 247
MAX_SECTIONS = 4096
MAX_SYMBOLS = 1 << 16
MAX_RELOCS = 1 << 16
_SHT = {
    "SHT_NULL": SHT_NULL, "SHT_PROGBITS": SHT_PROGBITS, "SHT_SYMTAB": SHT_SYMTAB,
    "SHT_STRTAB": SHT_STRTAB, "SHT_REL": SHT_REL, "SHT_NOBITS": SHT_NOBITS,
}  # fmt: skip
# What pyelftools (and the construct library it vendors) raise on malformed input.
_PARSE_ERRORS = (ELFError, ELFParseError, ConstructError, struct.error, ValueError, IndexError, KeyError,
                 TypeError, AttributeError, AssertionError, OverflowError, UnicodeDecodeError)  # fmt: skip


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int | str  # SHT_* number for the kinds above, pyelftools' name otherwise
    flags: int
    data: bytes  # b"" for NOBITS
    size: int
    link: int
    info: int

    @property
    def is_exec(self) -> bool:
        return self.type == SHT_PROGBITS and bool(self.flags & SHF_EXECINSTR)

    @property
    def is_alloc(self) -> bool:
        return bool(self.flags & SHF_ALLOC)


@dataclass(frozen=True)
class Symbol:
    index: int
    name: str
    value: int
    size: int
    type: str  # "FUNC" | "OBJECT" | "SECTION" | "NOTYPE" | "FILE" ...
    bind: str  # "LOCAL" | "GLOBAL" | "WEAK"
    shndx: int  # section index; SHN_UNDEF (0) for externs, SHN_ABS / SHN_COMMON special


@dataclass(frozen=True)
class Reloc:
    offset: int  # byte offset in the patched section
    type: int  # R_BPF_* number
    sym: int  # symbol index


@dataclass
class ElfImage:
    path: str
    sections: list[Section]
    symbols: list[Symbol]
    relocs: dict[int, list[Reloc]] = field(default_factory=dict)  # patched section index -> relocs

    def section(self, name: str) -> Section | None:
        for s in self.sections:
            if s.name == name:
                return s
        return None


def _shndx(raw: int | str) -> int:
    if isinstance(raw, int):
        return raw
    return {"SHN_UNDEF": SHN_UNDEF, "SHN_ABS": SHN_ABS, "SHN_COMMON": SHN_COMMON}.get(raw, -1)


def read_elf(data: bytes, path: str) -> ElfImage:
    """Parse and validate the ELF structure of a BPF object; raise LoadError on any defect."""
    if len(data) < 64 or data[:4] != b"\x7fELF":
        raise LoadError(f"{path}: not an ELF file" + (f" ({len(data)} bytes)" if len(data) < 64 else ""))
    if data[4] != 2:
        raise LoadError(f"{path}: ELF class {data[4]} is not ELFCLASS64 (a BPF object is 64-bit)")
    if data[5] != 1:
        raise LoadError(f"{path}: ELF data encoding {data[5]} is not little-endian (ELFDATA2LSB)")
    what = "ELF header"
    try:
        elf = ELFFile(io.BytesIO(data))
        machine = elf.header["e_machine"]
        if machine not in ("EM_BPF", EM_BPF):
            raise LoadError(f"{path}: ELF machine is {machine}, not EM_BPF")
        if elf.header["e_type"] != "ET_REL":
            raise LoadError(f"{path}: ELF type is {elf.header['e_type']}, not a relocatable object (ET_REL)")
        nsec = elf.num_sections()
        if not 0 < nsec <= MAX_SECTIONS:
            raise LoadError(f"{path}: ELF has {nsec} sections")
        shoff = elf.header["e_shoff"]
        if shoff + nsec * elf.header["e_shentsize"] > len(data) or elf.header["e_shentsize"] != 64:
            raise LoadError(f"{path}: ELF section header table lies outside the file")
        sections = []
        for idx in range(nsec):
            what = f"section header {idx}"
            sections.append(_read_section(elf, idx, len(data), path))
        symtabs = [s for s in sections if s.type == SHT_SYMTAB]
        if len(symtabs) != 1:
            raise LoadError(f"{path}: expected one .symtab section, found {len(symtabs)}")
        what = "symbol table"
        symbols = _read_symbols(elf, symtabs[0], nsec, path)
        image = ElfImage(path, sections, symbols)
        for sec in sections:
            if sec.type == SHT_REL:
                what = f"relocation section {shown(sec.name)}"
                image.relocs.setdefault(sec.info, []).extend(_read_relocs(sec, sections, symbols, path))
            elif sec.type == "SHT_RELA":
                raise LoadError(f"{path}: RELA section {shown(sec.name)} is not expected in a BPF object")
        return image
    except _PARSE_ERRORS as err:
        raise LoadError(f"{path}: corrupt ELF ({what}): {type(err).__name__}: {err}") from None


def _read_section(elf: ELFFile, idx: int, file_len: int, path: str) -> Section:
    sec = elf.get_section(idx)
    h = sec.header
    stype = _SHT.get(h["sh_type"], h["sh_type"])
    name = sec.name if idx else ""
    if not isinstance(name, str):
        raise LoadError(f"{path}: section {idx} has no readable name")
    if stype not in (SHT_NOBITS, SHT_NULL) and h["sh_offset"] + h["sh_size"] > file_len:
        raise LoadError(
            f"{path}: section {shown(name) if name else idx} ({h['sh_size']} bytes at {h['sh_offset']:#x})"
            " lies outside the file"
        )
    content = b"" if stype in (SHT_NOBITS, SHT_NULL) else bytes(sec.data())
    return Section(idx, name, stype, h["sh_flags"], content, h["sh_size"], h["sh_link"], h["sh_info"])


def _read_symbols(elf: ELFFile, symtab: Section, nsec: int, path: str) -> list[Symbol]:
    sec = elf.get_section(symtab.index)
    entsize = sec.header["sh_entsize"]
    if entsize != 24 or symtab.size % 24:
        raise LoadError(f"{path}: .symtab entry size {entsize} / size {symtab.size} is invalid")
    count = symtab.size // 24
    if count > MAX_SYMBOLS:
        raise LoadError(f"{path}: .symtab has {count} symbols (limit {MAX_SYMBOLS})")
    if not 0 < symtab.link < nsec:
        raise LoadError(f"{path}: .symtab string table index {symtab.link} does not exist")
    out = []
    for i in range(count):
        sym = sec.get_symbol(i)
        e = sym.entry
        shndx = _shndx(e["st_shndx"])
        if shndx < 0 or (shndx >= nsec and shndx not in (SHN_ABS, SHN_COMMON)):
            raise LoadError(f"{path}: symbol {i} {quoted(sym.name)} refers to missing section"
                            f" {e['st_shndx']}")
        bind = e["st_info"]["bind"].removeprefix("STB_")
        stype = e["st_info"]["type"].removeprefix("STT_")
        out.append(Symbol(i, sym.name, e["st_value"], e["st_size"], str(stype), str(bind), shndx))
    return out


def _read_relocs(rel: Section, sections: list[Section], symbols: list[Symbol], path: str) -> list[Reloc]:
    if not 0 < rel.info < len(sections):
        raise LoadError(f"{path}: relocation section {shown(rel.name)} patches missing section {rel.info}")
    if rel.size % 16:
        raise LoadError(f"{path}: relocation section {shown(rel.name)} size {rel.size} is not a"
                        " multiple of 16")
    count = rel.size // 16
    if count > MAX_RELOCS:
        raise LoadError(f"{path}: relocation section {shown(rel.name)} has {count} entries (limit"
                        f" {MAX_RELOCS})")
    target = sections[rel.info]
    out = []
    for i in range(count):
        off, info = struct.unpack_from("<QQ", rel.data, i * 16)
        sym, rtype = info >> 32, info & 0xFFFFFFFF
        if sym >= len(symbols):
            raise LoadError(f"{path}: {shown(rel.name)} entry {i} refers to missing symbol {sym}")
        if off >= max(target.size, 1):
            raise LoadError(f"{path}: {shown(rel.name)} entry {i} offset {off:#x} is outside"
                            f" section {shown(target.name)}")
        out.append(Reloc(off, rtype, sym))
    return out
