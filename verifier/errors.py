"""Error types raised by verifier/, and the rule that keeps their messages on one line.

Each error carries a one-line message naming the program and, where there is one, the
instruction at fault. The command line prints `str(err)` and exits non-zero; no caller
should ever need a traceback to understand one of these.

Text taken from the input (section, symbol, function, map, BTF and label names, asm
tokens, file names) may hold any character. Messages embed it through `quoted` (or
`shown`), which escape control and other non-printable characters (`\\n`, `\\x1b`,
`\\u2028`...), so the message stays one line and says exactly what the input holds. As a
last guard, `BpfUnwindError` applies `shown` to its whole message: a site that forgot the
rule still cannot print two lines."""

from __future__ import annotations

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(text: str) -> str:
    """`text` with every non-printable character escaped, Python-style; printable text
    (including non-ASCII letters and backslashes) is left as it is."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        else:
            out.append(ascii(ch)[1:-1])  # \xNN, \uNNNN or \UNNNNNNNN
    return "".join(out)


def quoted(text: str) -> str:
    """A name from the input for a message: `'name'`, escaped by `shown`."""
    return f"'{shown(text)}'"


class BpfUnwindError(Exception):
    """Base of every error the project reports to users as one line."""

    def __init__(self, message: str = "", *args: object) -> None:
        super().__init__(shown(str(message)), *args)


class DecodeError(BpfUnwindError):
    """Raw bytes that are not a valid instruction stream (reserved field set, bad opcode...)."""


class AsmError(BpfUnwindError):
    """Text assembly that does not parse; message is `file:line: what`."""


class LoadError(BpfUnwindError):
    """An input file (ELF object, BTF) that cannot be loaded."""


class VerifierError(BpfUnwindError):
    """The program was rejected; `log` is the full verifier log, message its last line."""

    def __init__(self, message: str, log: str = "", insn_idx: int | None = None) -> None:
        super().__init__(message)
        self.log = log
        self.insn_idx = insn_idx
