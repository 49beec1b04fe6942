"""Mutation operators for the malformed-input tests (tests/malformed.py): bytes, ELF
section and file headers, BTF headers and type words, text lines and tokens. Every choice
goes through a `Chooser`, so hypothesis (`data.draw`) and a seeded `random.Random` drive
the same operators."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol


class Chooser(Protocol):
    def int(self, lo: int, hi: int) -> int: ...


class RandomChooser:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


def pick(c: Chooser, seq: Sequence):  # noqa: ANN201 - any element type
    return seq[c.int(0, len(seq) - 1)]


# ---------------------------------------------------------------- mutations

INTERESTING = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000,
               0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0x7FFFFFFFFFFFFFFF]  # fmt: skip
TOKENS = ["r0", "r10", "r11", "w3", "%r0", "%r10", "%r16", "0", "-1", "0x", "0xffffffff", "4294967296",
          "-2147483649", "9" * 4301, "+" + "1" * 50, ",", ":", "[", "]", "(", ")", "*", "ll", "goto", "+0",
          "-1", "call", "exit", "bpf_throw", "bpf_obj_new_impl", ".Lx", "main", "\x00", "\t", "\x1b",
          "\u2028", "é", "#", ";", "//", "--", "-- asm", "-- result", "-- mem", "-- raw", "-- error",
          ".global", ".struct", ".exception_callback", "lock", "fetch", "lddw", "ja32", "s/=",
          "%="]  # fmt: skip


def how_many(c: Chooser, most: int) -> int:
    """How many mutations: one half the time (inputs close to valid go deeper), else 2..most."""
    return 1 if c.int(0, 1) else c.int(2, most)


ODD_CHARS = (0, 9, 11, 12, 27, 127, 0x85, 0xA0, 0x2028, 0xFEFF, 0x10FFFF)


def mutate_bytes(c: Chooser, data: bytes, ops: int | None = None) -> bytes:
    """Byte-level mutations: flip, set, insert, delete, truncate, duplicate, splice words."""
    buf = bytearray(data)
    for _ in range(ops if ops is not None else how_many(c, 6)):
        n = len(buf)
        kind = c.int(0, 7)
        pos = c.int(0, max(n - 1, 0))
        if kind == 0 and n:
            buf[pos] ^= 1 << c.int(0, 7)
        elif kind == 1 and n:
            buf[pos] = c.int(0, 255)
        elif kind == 2:
            buf[pos:pos] = bytes(c.int(0, 255) for _ in range(c.int(1, 16)))
        elif kind == 3 and n:
            del buf[pos : pos + c.int(1, 64)]
        elif kind == 4:
            del buf[c.int(0, n) :]
        elif kind == 5 and n:
            end = min(n, pos + c.int(1, 64))
            buf[pos:pos] = buf[pos:end]
        elif kind == 6 and n >= 4:
            width = pick(c, (1, 2, 4, 8))
            if pos + width <= n:
                value = pick(c, INTERESTING) & ((1 << (8 * width)) - 1)
                buf[pos : pos + width] = value.to_bytes(width, "little")
        elif kind == 7 and n >= 8:
            p = pos & ~7  # an instruction-aligned 8-byte slot
            buf[p : p + 8] = bytes(c.int(0, 255) for _ in range(8))
    return bytes(buf)


ELF_HEADER_FIELDS = ((4, 1), (5, 1), (0x10, 2), (0x12, 2), (0x28, 8), (0x3A, 2), (0x3C, 2), (0x3E, 2))
_SHDR_FIELDS = (0, 4, 8, 24, 32, 40, 44, 56)  # offsets of sh_name .. sh_entsize we mutate
_SHDR_WIDTH = {0: 4, 4: 4, 8: 8, 24: 8, 32: 8, 40: 4, 44: 4, 56: 8}


def mutate_elf(c: Chooser, data: bytes) -> bytes:
    """ELF-aware mutations (section headers, ELF header fields) plus byte mutations."""
    buf = bytearray(data)
    for _ in range(c.int(1, 4)):
        kind = c.int(0, 3)
        if kind <= 1 and len(buf) >= 64:
            shoff = int.from_bytes(buf[0x28:0x30], "little")
            shnum = int.from_bytes(buf[0x3C:0x3E], "little")
            if shnum and shoff + shnum * 64 <= len(buf):
                base = shoff + c.int(0, shnum - 1) * 64 + pick(c, _SHDR_FIELDS)
                width = _SHDR_WIDTH[base - shoff - ((base - shoff) // 64) * 64]
                value = pick(c, INTERESTING) if c.int(0, 1) else c.int(0, len(buf) + 64)
                buf[base : base + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        elif kind == 2 and len(buf) >= 64:
            off, width = pick(c, ELF_HEADER_FIELDS)
            value = pick(c, INTERESTING) & ((1 << (8 * width)) - 1)
            buf[off : off + width] = value.to_bytes(width, "little")
        else:
            buf = bytearray(mutate_bytes(c, bytes(buf), 1))
    return bytes(buf)


def mutate_btf(c: Chooser, data: bytes) -> bytes:
    """BTF-aware: header fields and 32-bit words of the type section, plus byte mutations."""
    buf = bytearray(data)
    for _ in range(c.int(1, 4)):
        if c.int(0, 2) == 0 or len(buf) < 24:
            buf = bytearray(mutate_bytes(c, bytes(buf), 1))
            continue
        words = max((len(buf) - 28) // 4, 0)
        pos = pick(c, (4, 8, 12, 16, 20)) if c.int(0, 2) == 0 else 24 + 4 * c.int(0, words)
        value = pick(c, INTERESTING) if c.int(0, 1) else c.int(0, 1 << 32) ^ (c.int(0, 31) << 24)
        if pos + 4 <= len(buf):
            buf[pos : pos + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(buf)


def mutate_text(c: Chooser, text: str) -> str:
    """Line and token mutations of a text input (assembly or a .data file)."""
    lines = text.splitlines() or [""]
    for _ in range(how_many(c, 5)):
        i = c.int(0, len(lines) - 1)
        kind = c.int(0, 7)
        if kind == 0 and len(lines) > 1:
            del lines[i]
        elif kind == 1:
            lines.insert(i, lines[c.int(0, len(lines) - 1)])
        elif kind == 2:
            j = c.int(0, len(lines) - 1)
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == 3:
            words = lines[i].split(" ")
            words[c.int(0, len(words) - 1)] = pick(c, TOKENS)
            lines[i] = " ".join(words)
        elif kind == 4:
            pos = c.int(0, len(lines[i]))
            lines[i] = lines[i][:pos] + pick(c, TOKENS) + lines[i][pos:]
        elif kind == 5 and lines[i]:
            pos = c.int(0, len(lines[i]) - 1)
            lines[i] = lines[i][:pos] + lines[i][pos + c.int(1, 8) :]
        elif kind == 6:
            pos = c.int(0, len(lines[i]))
            lines[i] = lines[i][:pos] + chr(pick(c, ODD_CHARS)) + lines[i][pos:]
        else:
            lines = lines[: c.int(0, len(lines))] or [""]
    return "\n".join(lines) + ("\n" if c.int(0, 1) else "")
