"""ELF objects on the command line: `bpf-unwind disasm OBJ [--section S]` and
`load_program`, which the verify/jit/run commands use to accept clang-built objects.

`register(subparsers)` adds the `disasm` sub-command to the `bpf-unwind` parser. Errors are
`LoadError`/`DecodeError` (one line naming the file and what is at fault); the CLI's
`main` prints them and exits with status 2."""

from __future__ import annotations

import argparse
from pathlib import Path

from verifier.errors import LoadError
from verifier.load.objdump import disassemble_object
from verifier.load.object import load_object
from verifier.program import Program

ELF_MAGIC = b"\x7fELF"


def is_elf_file(path: str) -> bool:
    """True when `path` starts with the ELF magic (a text `.s` file never does)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == ELF_MAGIC
    except OSError:
        return False


def load_program(path: str, prog: str | None) -> Program:
    """The program `prog` of the ELF object at `path` (the only one when prog is None).

    Only that program is linked, so another program of the object that calls a kfunc
    our table lacks does not stop this one from loading."""
    return load_object(path, only=prog).program(prog)


def disasm_text(path: str, section: str | None = None) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise LoadError(f"{path}: cannot read: {err.strerror or err}") from None
    return disassemble_object(data, path, section)


def cmd_disasm(args: argparse.Namespace) -> int:
    print(disasm_text(args.file, args.section), end="")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `disasm` to the `bpf-unwind` sub-commands."""
    d = subparsers.add_parser(
        "disasm", help="disassemble an ELF object like `llvm-objdump -d -r --no-show-raw-insn`"
    )
    d.add_argument("file", help="a clang-built BPF object (.o)")
    d.add_argument("--section", help="only this code section (e.g. tc, .text, ?tc)")
    d.set_defaults(func=cmd_disasm)
