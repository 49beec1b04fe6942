"""The bpf_conformance suite's `.data` files: `parse_data(text, path)` -> `DataFile`.

A file is a sequence of `-- name` sections (bpf_test_parser's format): `asm` (the `%r`
dialect, kept as text with its first line number), `raw` (instruction bytes, as eight
hex bytes a line or one 64-bit hex word per instruction), `mem` (hex bytes), `result` (hex
with `0x`, else decimal) and `error` (the expected message); an unknown directive is kept
for the runner to skip the file. Numbers are read with their length bounded first, so an
absurdly long literal is one `ConformanceError` line, never Python's own limit. Every
problem is a `ConformanceError` naming the file."""

from __future__ import annotations

from dataclasses import dataclass

from verifier.errors import BpfUnwindError, quoted

MAX_NUMBER_DIGITS = 40  # a 64-bit value needs at most 20 decimal / 16 hex digits


class ConformanceError(BpfUnwindError):
    """A `.data` file that cannot be parsed, or a program that cannot be built."""


def abbrev(text: str, limit: int = 24) -> str:
    """`text` for a message, cut to `limit` characters (a literal may be megabytes long)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_number(text: str, base: int, path: str, what: str) -> int:
    """`int(text, base)` for a number of at most MAX_NUMBER_DIGITS significant digits."""
    digits = text.strip().lstrip("+-")
    if base == 16 and digits[:2].lower() == "0x":
        digits = digits[2:]
    if len(digits.lstrip("0_")) > MAX_NUMBER_DIGITS:
        raise ConformanceError(f"{path}: {what} {quoted(abbrev(text.strip()))} is out of range")
    try:
        return int(text, base)
    except ValueError:
        raise ConformanceError(f"{path}: bad {what} {quoted(abbrev(text.strip()))}") from None

@dataclass
class DataFile:
    path: str
    asm: str | None = None
    asm_line: int = 1  # file line of the first asm line
    raw: bytes | None = None
    mem: bytes = b""
    result: int | None = None
    error: str | None = None
    unknown: str | None = None  # an unknown `-- x` directive: the runner skips the file


_HEADERS = ("asm", "result", "mem", "raw", "no register offset", " c", "error")


def _raw_bytes(lines: list[str], path: str) -> bytes:
    out = bytearray()
    for line in lines:
        tokens = line.split()
        what = f"raw instruction line {quoted(abbrev(line))}: number"
        if len(tokens) == 8 and all(len(t) == 2 for t in tokens):
            out += bytes(parse_number(t, 16, path, what) for t in tokens)
        else:
            for t in tokens:
                out += (parse_number(t, 16, path, what) & ((1 << 64) - 1)).to_bytes(8, "little")
    return bytes(out)


def parse_data(text: str, path: str = "<data>") -> DataFile:
    """Parse one `.data` file (format of bpf_test_parser, both raw forms)."""
    df = DataFile(path)
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for lineno, raw_line in enumerate(text.splitlines(), 1):
        line = raw_line.rstrip("\r").split("#", 1)[0]
        if "--" in line:
            current = next((h for h in _HEADERS if h in line), None)
            if current is None:
                df.unknown = df.unknown or line.strip()
                current = "unknown"
            elif current == "asm":
                df.asm_line = lineno + 1
            sections.setdefault(current, [])
            continue
        if current == "asm":
            sections["asm"].append(raw_line.rstrip("\r"))
        elif current is not None and line.strip():
            sections[current].append(line.strip())
    if "asm" in sections:
        df.asm = "\n".join(sections["asm"])
    if "raw" in sections:
        df.raw = _raw_bytes(sections["raw"], path)
    mem = [parse_number(t, 16, path, "memory byte") for line in sections.get("mem", []) for t in line.split()]
    if any(not 0 <= b <= 0xFF for b in mem):
        raise ConformanceError(f"{path}: memory bytes must be 00..ff")
    df.mem = bytes(mem)
    if sections.get("result"):
        last = sections["result"][-1]
        df.result = parse_number(last, 16 if "0x" in last else 10, path, "result")
    if "error" in sections:
        df.error = "\n".join(sections["error"]).strip()
    return df

