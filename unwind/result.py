"""What one run of a program produced (`RunResult`) and the unwind trace it carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple


class Released(NamedTuple):
    """One frame-descriptor entry the unwinder acted on (a tuple: built once per entry on
    the unwinder's hot path, where a frozen dataclass costs several times more)."""

    where: str  # "stack" | "reg"
    off: int  # fp-relative slot offset (stack) or regno 6..9 (reg)
    type: str  # reg_type_str of the entry, e.g. "ptr_" / "?" for poison
    btf_name: str  # struct name for objects
    value: int  # the pointer found there (0: NULL, nothing to free)
    resource_id: int | None  # ledger id freed, None if nothing was freed


@dataclass
class UnwoundFrame:
    """One native frame walked by bpf_throw, innermost first."""

    subprog: str
    index: int  # subprog index
    kind: str
    ip: int
    sp: int
    bp: int
    ret_offset: int  # ip - image address
    desc_pc: int | None  # insn pc of the descriptor used (None: hidden frame / no desc)
    released: list[Released] = field(default_factory=list)
    saved_regs: tuple[int, int, int, int] = (0, 0, 0, 0)  # R6..R9 of this frame at its call


@dataclass
class RunResult:
    program: str
    retval: int
    threw: bool
    cookie: int | None
    frames: list[UnwoundFrame]
    ledger: Any  # unwind.kernel.ledger.Ledger
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def released_count(self) -> int:
        return sum(1 for f in self.frames for r in f.released if r.resource_id is not None)
