"""How `bpf-unwind stats` shows its rows: the columns, veristat's plain aligned table (text
left, numbers right, a dashed rule under the header) and the comparison of two sets of
rows in veristat's `-C` form: per program, for every column its base (A), its comparison
(B) and the difference, `+12 (+4.00%)` for numbers (a base of 0 against a non-zero value
is +100.00%), MATCH / MISMATCH for the verdict, N/A for a side that lacks the program or
the column. Programs pair up by (file_name, prog_name); base order first, then programs
only the comparison has."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Column:
    name: str  # CSV / JSON name (veristat's where veristat has the column)
    header: str  # table header
    numeric: bool = True


COLUMNS = (
    Column("file_name", "File", False),
    Column("prog_name", "Program", False),
    Column("verdict", "Verdict", False),
    Column("duration", "Duration (us)"),
    Column("total_insns", "Insns"),
    Column("total_states", "States"),
    Column("peak_states", "Peak states"),
    Column("frame_descs", "Frame descs"),
    Column("fd_entries", "FD entries"),
)
NUMERIC = tuple(c.name for c in COLUMNS if c.numeric)
NA = "N/A"


@dataclass
class Row:
    file_name: str
    prog_name: str
    verdict: str  # "success" | "failure"
    values: dict[str, int | None] = field(default_factory=dict)  # NUMERIC name -> value

    def get(self, name: str) -> str | int | None:
        if name in ("file_name", "prog_name", "verdict"):
            return getattr(self, name)
        return self.values.get(name)

    def cell(self, name: str) -> str:
        value = self.get(name)
        return NA if value is None else str(value)

    def as_dict(self) -> dict[str, str | int | None]:
        return {c.name: self.get(c.name) for c in COLUMNS}


def aligned(headers: list[str], rows: list[list[str]], left: set[int]) -> str:
    """veristat's table: columns two spaces apart, `left` columns left-aligned."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in pairs).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def stats_table(rows: list[Row]) -> str:
    left = {i for i, c in enumerate(COLUMNS) if not c.numeric}
    return aligned([c.header for c in COLUMNS], [[r.cell(c.name) for c in COLUMNS] for r in rows], left)


# ---------------------------------------------------------------- comparison


def pairs(base: list[Row], comp: list[Row]) -> list[tuple[str, str, Row | None, Row | None]]:
    a = {(r.file_name, r.prog_name): r for r in base}
    b = {(r.file_name, r.prog_name): r for r in comp}
    keys = list(a) + [k for k in b if k not in a]
    return [(f, p, a.get((f, p)), b.get((f, p))) for f, p in keys]


def diff(name: str, a: Row | None, b: Row | None) -> tuple[str | int | None, ...]:
    """(base, comp, diff, pct) of one column; verdict's diff is MATCH / MISMATCH, no pct."""
    va, vb = (a.get(name) if a else None), (b.get(name) if b else None)
    if name == "verdict":
        return va, vb, None if va is None or vb is None else "MATCH" if va == vb else "MISMATCH"
    if va is None or vb is None:
        return va, vb, None, None
    d = int(vb) - int(va)
    pct = 0.0 if d == 0 else 100.0 if va == 0 else d * 100.0 / int(va)
    return va, vb, d, round(pct, 2)


def _cmp_columns() -> list[Column]:
    return [c for c in COLUMNS if c.name not in ("file_name", "prog_name")]


def _s(v: object) -> str:
    return NA if v is None else str(v)


def compare_table(base: list[Row], comp: list[Row]) -> str:
    cols = _cmp_columns()
    headers = ["File", "Program"] + [f"{c.header} ({s})" for c in cols for s in ("A", "B", "DIFF")]
    rows = []
    for f, p, a, b in pairs(base, comp):
        cells = [f, p]
        for c in cols:
            va, vb, d, *pct = diff(c.name, a, b)
            shown = _s(d) if c.name == "verdict" or d is None else f"{d:+d} ({pct[0]:+.2f}%)"
            cells += [_s(va), _s(vb), shown]
        rows.append(cells)
    return aligned(headers, rows, {0, 1, 2, 3, 4})


def compare_csv(base: list[Row], comp: list[Row]) -> str:
    cols = _cmp_columns()
    header = ["file_name", "prog_name"]
    for c in cols:
        header += [f"{c.name}_base", f"{c.name}_comp", f"{c.name}_diff"] + ([] if c.name == "verdict"
                                                                          else [f"{c.name}_pct"])
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    for f, p, a, b in pairs(base, comp):
        w.writerow([f, p, *(_s(v) for c in cols for v in diff(c.name, a, b))])
    return out.getvalue()


def compare_json(base: list[Row], comp: list[Row]) -> str:
    out = []
    for f, p, a, b in pairs(base, comp):
        entry: dict[str, object] = {"file_name": f, "prog_name": p}
        for c in _cmp_columns():
            vals = diff(c.name, a, b)
            entry[c.name] = dict(zip(("base", "comp", "diff", "pct"), vals, strict=False))
        out.append(entry)
    return json.dumps(out, indent=2)
