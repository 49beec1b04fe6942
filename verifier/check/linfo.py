"""Source lines in the verifier log (the kernel's `verbose_linfo`): before an instruction
line the log shows `; <source line> @ <file basename>:<line>` of the line_info record that
covers the instruction, the last record at or before it, unless that record names the
same file and line as the one shown last: clang often writes two records for one line
(two columns of it), and the log has no columns. What was shown last is remembered across
branch pops and across the global subprogs verified after main, as the kernel remembers
it (checked against its level-2 log: after `from 33 to 16:` the line of insn 16 is shown
again only when another line was shown in between)."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

from verifier.program import LineInfo

_SPACES = " \t\n\v\f\r"  # what the kernel's ltrim skips (isspace)


def linfo_text(li: LineInfo) -> str:
    """`; int x = 0; @ prog.c:12` (leading blanks of the source line dropped)."""
    return f"; {li.line.lstrip(_SPACES)} @ {li.file_name.rpartition('/')[2]}:{li.line_num}"


class LinfoPrinter:
    """The line_info of one program and the record printed last."""

    def __init__(self, line_info: Sequence[LineInfo]) -> None:
        self.records = sorted(line_info, key=lambda li: li.insn_off)
        self.starts = [li.insn_off for li in self.records]
        self.prev: tuple[str, int] | None = None  # (file, line) printed last

    def find(self, pc: int) -> int | None:
        """Index of the record covering insn `pc`, None if none does (`find_linfo`)."""
        i = bisect_right(self.starts, pc) - 1
        return i if i >= 0 else None

    def line_before(self, pc: int) -> str | None:
        """The source line to log before insn `pc`, or None when there is nothing new."""
        i = self.find(pc)
        if i is None:
            return None
        li = self.records[i]
        if (li.file_name, li.line_num) == self.prev:
            return None
        self.prev = (li.file_name, li.line_num)
        return linfo_text(li)
