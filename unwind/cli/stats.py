"""`bpf-unwind stats FILE... [--csv | --json] [--compare OLD.csv] [--prog NAME]`: veristat's
table for our verifier, one row per program of every file given (an ELF object: each of
its programs, in section order; text assembly: its program; a `.csv`: the rows an earlier
`stats --csv` wrote, or veristat's own CSV, whose columns we share).

Columns (CSV names as veristat's where veristat has them): file_name, prog_name, verdict
(success / failure), duration (us, wall time of verify and rewrite), total_insns
(processed), total_states, peak_states, frame_descs and fd_entries (frame descriptors of
the verified program and their entries, over every fdtab; 0 for a rejected program, which
gets no descriptors). A rejected program is a row with its counters up to the rejection,
not an error. `--compare OLD.csv` puts OLD's rows (base, A) against the files' rows (B),
veristat -C style (unwind.cli.stats_table). Bad input (unreadable file, a program no file
has, malformed CSV) is one `LoadError` line, exit 2."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import time
from fnmatch import fnmatchcase

from unwind.cli import objcmd, pipeline
from unwind.cli import stats_table as table
from unwind.cli.stats_table import COLUMNS, NUMERIC, Row
from verifier.errors import LoadError, VerifierError, quoted, shown
from verifier.load.object import load_object
from verifier.program import Program, VerifiedProgram

VERDICTS = ("success", "failure")


def descriptor_counts(vp: VerifiedProgram) -> tuple[int, int]:
    """(frame descriptors, descriptor entries) over every fdtab of the program."""
    descs = [d for tab in vp.fdtabs for d in tab.descs]
    return len(descs), sum(len(d.entries()) for d in descs)


def program_row(file_name: str, prog: Program) -> Row:
    """Verify `prog` (log level 0) and measure it."""
    start = time.perf_counter_ns()
    try:
        vp = pipeline.verify(prog, log_level=0)
    except VerifierError as err:
        elapsed = time.perf_counter_ns() - start
        stats: dict[str, int] = getattr(err, "stats", {})
        verdict, descs, entries = "failure", 0, 0
    else:
        elapsed = time.perf_counter_ns() - start
        stats = vp.stats
        verdict = "success"
        descs, entries = descriptor_counts(vp)
    values = {
        "duration": elapsed // 1000,
        "total_insns": stats.get("insn_processed", 0),
        "total_states": stats.get("total_states", 0),
        "peak_states": stats.get("peak_states", 0),
        "frame_descs": descs,
        "fd_entries": entries,
    }
    return Row(file_name, prog.name, verdict, values)


def file_programs(path: str) -> list[Program]:
    if objcmd.is_elf_file(path):
        return list(load_object(path).programs.values())
    return [pipeline.load_file(path)]


def _int(text: str, where: str, column: str) -> int | None:
    if text.strip() in ("", "N/A"):
        return None
    try:
        return int(text)
    except ValueError:
        raise LoadError(f"{where}: column {column}: {quoted(text)} is not an integer") from None


def read_csv(path: str) -> list[Row]:
    """Rows of a stats CSV (ours or veristat's): file_name, prog_name and verdict are
    required; a numeric column the file lacks is N/A in its rows."""
    try:
        with open(path, newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as err:
        raise LoadError(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    try:
        records = list(csv.reader(io.StringIO(text)))
    except csv.Error as err:
        raise LoadError(f"{path}: malformed CSV: {err}") from None
    if not records:
        raise LoadError(f"{path}: malformed CSV: empty file, no header row")
    header = [h.strip() for h in records[0]]
    missing = [c for c in ("file_name", "prog_name", "verdict") if c not in header]
    if missing:
        raise LoadError(f"{path}: malformed CSV: header lacks {', '.join(missing)}")
    rows = []
    for lineno, rec in enumerate(records[1:], start=2):
        where = f"{path}:{lineno}"
        if not rec:
            continue
        if len(rec) != len(header):
            raise LoadError(f"{where}: malformed CSV: {len(rec)} fields, the header has {len(header)}")
        cells = dict(zip(header, rec, strict=True))
        verdict = cells["verdict"].strip().lower()
        if verdict not in VERDICTS:
            raise LoadError(f"{where}: verdict {quoted(cells['verdict'])} is neither success nor failure")
        values = {c: _int(cells[c], where, c) for c in NUMERIC if c in cells}
        rows.append(Row(cells["file_name"], cells["prog_name"], verdict, values))
    return rows


def collect(paths: list[str]) -> list[Row]:
    """Rows of every file, in the order given (CSV files are read, the others verified)."""
    rows: list[Row] = []
    for path in paths:
        if path.endswith(".csv"):
            rows.extend(read_csv(path))
            continue
        base = os.path.basename(path)
        rows.extend(program_row(base, prog) for prog in file_programs(path))
    return rows


def select(rows: list[Row], patterns: list[str] | None, what: str) -> list[Row]:
    """The rows whose program matches one of `patterns` (names or shell globs); each
    pattern must match some row."""
    if not patterns:
        return rows
    for pat in patterns:
        if not any(fnmatchcase(r.prog_name, pat) for r in rows):
            names = ", ".join(shown(r.prog_name) for r in rows[:8]) + (", ..." if len(rows) > 8 else "")
            raise LoadError(f"no program {quoted(pat)} in {what} (programs: {names or 'none'})")
    return [r for r in rows if any(fnmatchcase(r.prog_name, p) for p in patterns)]


def rows_csv(rows: list[Row]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([c.name for c in COLUMNS])
    for r in rows:
        w.writerow([r.cell(c.name) for c in COLUMNS])
    return out.getvalue()


def rows_json(rows: list[Row]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=2)


def cmd_stats(args: argparse.Namespace) -> int:
    if not args.files:
        raise LoadError("stats: give at least one FILE (.o, .s or .csv)")
    comp = select(collect(args.files), args.prog, " ".join(map(shown, args.files)))
    if args.compare is None:
        out = rows_csv(comp) if args.csv else rows_json(comp) if args.json else table.stats_table(comp)
    else:
        base = select(read_csv(args.compare), args.prog, shown(args.compare))
        show = table.compare_csv if args.csv else table.compare_json if args.json else table.compare_table
        out = show(base, comp)
    print(out.rstrip("\n"))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `stats` to the `bpf-unwind` sub-commands."""
    s = subparsers.add_parser("stats", help="veristat-style table: verdict, insns, states, descriptors")
    s.add_argument("files", nargs="*", metavar="FILE",
                   help="ELF objects (.o: every program), text assembly (.s) or earlier stats (.csv)")
    fmt = s.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row, as veristat -o csv")
    fmt.add_argument("--json", action="store_true", help="a JSON array, one object per program")
    s.add_argument("--compare", metavar="OLD.csv",
                   help="compare OLD.csv (A) with the FILEs (B): base, comp and diff of each column")
    s.add_argument("--prog", action="append", metavar="NAME",
                   help="only programs named so (a shell glob; may be repeated)")
    s.set_defaults(func=cmd_stats)
