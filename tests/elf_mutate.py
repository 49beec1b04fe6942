"""Byte-level edits of a built BPF object for the malformed-input tests: rename a section
in place, read its header fields. Written against the ELF64 layout directly (not through
our loader), so the edits do not depend on the code under test."""

from __future__ import annotations

import struct

SHDR = struct.Struct("<IIQQQQIIQQ")  # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, ...


def section_headers(data: bytes) -> list[tuple[int, ...]]:
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shnum, = struct.unpack_from("<H", data, 0x3C)
    return [SHDR.unpack_from(data, shoff + i * SHDR.size) for i in range(shnum)]


def shstrtab_offset(data: bytes) -> int:
    shstrndx, = struct.unpack_from("<H", data, 0x3E)
    return section_headers(data)[shstrndx][4]


def section_index(data: bytes, name: str) -> int:
    base = shstrtab_offset(data)
    for i, h in enumerate(section_headers(data)):
        end = data.index(b"\0", base + h[0])
        if data[base + h[0] : end] == name.encode():
            return i
    raise KeyError(name)


def rename_section(data: bytes, name: str, new: bytes) -> bytes:
    """`data` with section `name` renamed to `new` (same length: the string is overwritten
    where it stands, so a string another name shares the tail of changes with it)."""
    if len(new) != len(name):
        raise ValueError("the new name must be as long as the old one")
    pos = shstrtab_offset(data) + section_headers(data)[section_index(data, name)][0]
    return data[:pos] + new + data[pos + len(new) :]
