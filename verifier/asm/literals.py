"""Literals of the text assembler: numbers with their length bounded before conversion,
and tokens cut short for messages.

Owns `LineError` (a syntax or range error in one line, no location yet: the caller adds
`file:line`), `parse_int` / `imm32` / `off16` / `small_int`, and `abbrev`. A literal of
thousands of digits is "out of range" here, before Python's own int() limit (4300 digits)
could turn it into a traceback, and the message shows its first characters and length."""

from __future__ import annotations

from verifier.errors import quoted
from verifier.isa.insn import s32


class LineError(Exception):
    """A syntax or range error in one line (no location yet)."""


MAX_DIGITS = 40  # a 64-bit value needs at most 20 decimal / 16 hex digits


def abbrev(tok: str, limit: int = 24) -> str:
    """A token for a message, cut to `limit` characters (a literal may be megabytes long)."""
    tok = tok.strip()
    return tok if len(tok) <= limit else f"{tok[:limit]}... ({len(tok)} characters)"


def parse_int(tok: str, what: str = "immediate") -> int:
    """Decimal or 0x-hex with an optional sign. The literal's length is bounded before it
    is converted: more than MAX_DIGITS significant digits is out of range for any field."""
    t = tok.replace(" ", "").replace("\t", "")
    neg = t.startswith("-")
    if t[:1] in "+-":
        t = t[1:]
    is_hex = t[:2].lower() == "0x"
    if len((t[2:] if is_hex else t).lstrip("0")) > MAX_DIGITS:
        raise LineError(f"{what} {quoted(abbrev(tok))} out of range")
    value = int(t, 16) if is_hex else int(t, 10)
    return -value if neg else value


def small_int(tok: str, what: str) -> int:
    """A short decimal field (`ld_pseudo` kind, byte-swap width), bounded before converting."""
    if len(tok.lstrip("0")) > MAX_DIGITS:
        raise LineError(f"{what} {quoted(abbrev(tok))} out of range")
    return int(tok)


def imm32(tok: str) -> int:
    """An s32 immediate; non-negative hex may use the full u32 range (wraps to s32)."""
    value = parse_int(tok)
    if "x" in tok.lower() and 0 <= value <= 0xFFFFFFFF:
        return s32(value)
    if not -(1 << 31) <= value < (1 << 31):
        raise LineError(f"immediate {abbrev(tok)} out of range (must fit s32, or u32 if hex)")
    return value


def off16(value: int, what: str = "offset") -> int:
    if not -(1 << 15) <= value < (1 << 15):
        raise LineError(f"{what} {value} out of range (must fit s16)")
    return value
