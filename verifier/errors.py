"""Error types raised by verifier/: each carries a one-line message naming the program and,
where there is one, the instruction at fault. The command line prints `str(err)` and exits
non-zero; no caller should ever need a traceback to understand one of these."""

from __future__ import annotations


class BpfUnwindError(Exception):
    """Base of every error the project reports to users as one line."""


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
