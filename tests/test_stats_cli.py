"""`bpf-unwind stats`: veristat's table, CSV and JSON for our verifier, and the comparison
of two runs (`--compare OLD.csv`), through the CLI entry point in-process."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from unwind.cli import pipeline
from unwind.cli.main import main
from unwind.cli.stats import descriptor_counts
from unwind.cli.stats_table import NUMERIC
from verifier.load.object import load_object

PROGS = Path(__file__).parent / "progs"
BASIC = str(PROGS / "basic.o")
FAIL = str(PROGS / "exceptions_cleanup_fail.o")
HEADER = ["file_name", "prog_name", "verdict", "duration", "total_insns", "total_states", "peak_states",
          "frame_descs", "fd_entries"]
ASM = "main:\n\tr1 = 1\n\tif r1 == 0 goto .Lz\n\tr0 = 0\n\texit\n.Lz:\n\tr0 = 1\n\texit\n"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str) -> str:
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("bpf-unwind: error: "), err
    assert "Traceback" not in err and "internal error" not in err
    return lines[0]


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture
def asm_file(tmp_path) -> str:
    p = tmp_path / "branchy.s"
    p.write_text(ASM)
    return str(p)


def test_table_has_a_row_per_program_of_every_file(capsys, asm_file):
    code, out, _ = run_cli(capsys, "stats", BASIC, asm_file)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split("  ")[0] == "File" and "Duration (us)" in lines[0] and "FD entries" in lines[0]
    assert set(lines[1]) == {"-", " "}
    rows = lines[2:]
    assert len(rows) == len(load_object(BASIC).programs) + 1
    assert rows[-1].split()[:3] == ["branchy.s", "main", "success"]
    assert rows[-1].split()[4:] == ["4", "0", "0", "0", "0"]  # the dead branch is never walked
    assert all(r.startswith("basic.o ") for r in rows[:-1])


def test_rejected_programs_are_rows_with_their_counters(capsys):
    code, out, _ = run_cli(capsys, "stats", FAIL, "--csv")
    assert code == 0
    rows = csv_rows(out)
    assert rows and all(r["verdict"] == "failure" for r in rows)
    assert all(int(r["total_insns"]) > 0 and r["frame_descs"] == "0" for r in rows)


def test_csv_header_and_counters_are_the_verifiers(capsys):
    code, out, _ = run_cli(capsys, "stats", BASIC, "--csv", "--prog", "basic_throw_releases_obj")
    assert code == 0
    assert out.splitlines()[0].split(",") == HEADER
    (row,) = csv_rows(out)
    vp = pipeline.verify(load_object(BASIC).program("basic_throw_releases_obj"), log_level=0)
    descs, entries = descriptor_counts(vp)
    assert (row["file_name"], row["verdict"]) == ("basic.o", "success")
    assert int(row["total_insns"]) == vp.stats["insn_processed"]
    assert int(row["total_states"]) == vp.stats["total_states"]
    assert int(row["peak_states"]) == vp.stats["peak_states"]
    assert (int(row["frame_descs"]), int(row["fd_entries"])) == (descs, entries) == (2, 8)


def test_csv_round_trip(capsys, tmp_path, asm_file):
    code, first, _ = run_cli(capsys, "stats", BASIC, FAIL, asm_file, "--csv")
    assert code == 0
    saved = tmp_path / "run.csv"
    saved.write_text(first)
    code, again, _ = run_cli(capsys, "stats", str(saved), "--csv")
    assert code == 0 and again == first


def test_json_has_one_object_per_program(capsys):
    code, out, _ = run_cli(capsys, "stats", BASIC, "--json", "--prog", "basic_throw*")
    assert code == 0
    objs = json.loads(out)
    assert [o["prog_name"] for o in objs] == ["basic_throw", "basic_throw_static", "basic_throw_releases_obj"]
    assert all(set(o) == set(HEADER) and isinstance(o["total_insns"], int) for o in objs)


def _write_csv(path: Path, rows: list[dict[str, str]], header: list[str] = HEADER) -> str:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return str(path)


def test_compare_against_the_same_programs_matches(capsys, tmp_path):
    _, out, _ = run_cli(capsys, "stats", BASIC, "--csv")
    old = tmp_path / "old.csv"
    old.write_text(out)
    code, out, _ = run_cli(capsys, "stats", "--compare", str(old), BASIC, "--csv")
    assert code == 0
    rows = csv_rows(out)
    assert len(rows) == len(load_object(BASIC).programs)
    for r in rows:
        assert (r["verdict_base"], r["verdict_comp"], r["verdict_diff"]) == ("success", "success", "MATCH")
        assert r["total_insns_diff"] == "0" and r["total_insns_pct"] == "0.0"
        assert r["fd_entries_base"] == r["fd_entries_comp"]


def test_compare_two_csvs_shows_changes_verdicts_and_missing_programs(capsys, tmp_path):
    base = [{**dict.fromkeys(HEADER, "0"), "file_name": "a.o", "prog_name": "p", "verdict": "success",
             "total_insns": "200", "total_states": "0"},
            {**dict.fromkeys(HEADER, "0"), "file_name": "a.o", "prog_name": "gone", "verdict": "success"}]
    comp = [{**base[0], "verdict": "failure", "total_insns": "150", "total_states": "4"},
            {**dict.fromkeys(HEADER, "0"), "file_name": "a.o", "prog_name": "new", "verdict": "failure"}]
    a, b = _write_csv(tmp_path / "a.csv", base), _write_csv(tmp_path / "b.csv", comp)
    code, out, _ = run_cli(capsys, "stats", "--compare", a, b)
    assert code == 0
    lines = out.splitlines()
    assert "Verdict (A)" in lines[0] and "Insns (DIFF)" in lines[0] and "FD entries (B)" in lines[0]
    p_row, gone_row, new_row = lines[2:]
    assert p_row.split()[:5] == ["a.o", "p", "success", "failure", "MISMATCH"]
    assert "-50 (-25.00%)" in p_row and "+4 (+100.00%)" in p_row  # States from a base of 0
    assert gone_row.split()[:5] == ["a.o", "gone", "success", "N/A", "N/A"]
    assert new_row.split()[:5] == ["a.o", "new", "N/A", "failure", "N/A"]
    code, out, _ = run_cli(capsys, "stats", "--compare", a, b, "--json")
    first = json.loads(out)[0]
    assert first["verdict"] == {"base": "success", "comp": "failure", "diff": "MISMATCH"}
    assert first["total_insns"] == {"base": 200, "comp": 150, "diff": -50, "pct": -25.0}


def test_a_veristat_csv_is_read_and_its_missing_columns_are_na(capsys, tmp_path):
    header = ["file_name", "prog_name", "verdict", "duration", "total_insns", "total_states", "peak_states",
              "max_states_per_insn", "mark_read_max_len"]
    row = dict(zip(header, ["basic.o", "basic_throw", "success", "31", "2", "0", "0", "0", "0"], strict=True))
    k = _write_csv(tmp_path / "kernel.csv", [row], header)
    code, out, _ = run_cli(capsys, "stats", "--compare", k, BASIC, "--prog", "basic_throw", "--csv")
    assert code == 0
    (r,) = csv_rows(out)
    assert (r["total_insns_base"], r["total_insns_comp"], r["verdict_diff"]) == ("2", "2", "MATCH")
    assert (r["fd_entries_base"], r["fd_entries_comp"], r["fd_entries_diff"]) == ("N/A", "4", "N/A")


@pytest.mark.parametrize(("argv", "says"), [
    (["stats"], "give at least one FILE"),
    (["stats", "/nonexistent/x.o"], "cannot read"),
    (["stats", BASIC, "--prog", "no_such_prog"], "no program 'no_such_prog'"),
    (["stats", "--compare", "/nonexistent/old.csv", BASIC], "cannot read"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, says):
    code, _, err = run_cli(capsys, *argv)
    assert says in one_error(code, err)


@pytest.mark.parametrize(("text", "says"), [
    ("", "empty file"),
    ("file,prog\nx,y\n", "header lacks file_name, prog_name, verdict"),
    ("file_name,prog_name,verdict,total_insns\na.o,p,success,many\n", "'many' is not an integer"),
    ("file_name,prog_name,verdict\na.o,p,maybe\n", "'maybe' is neither success nor failure"),
    ("file_name,prog_name,verdict\na.o,p\n", "2 fields, the header has 3"),
    ('file_name,prog_name,verdict\n"a.o\n', "malformed CSV"),
])
def test_malformed_csv_is_one_line_exit_2(capsys, tmp_path, text, says):
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    for argv in (["stats", str(bad)], ["stats", "--compare", str(bad), BASIC]):
        code, _, err = run_cli(capsys, *argv)
        line = one_error(code, err)
        assert says in line and "bad.csv" in line


def test_numeric_columns_are_the_tables_numbers():
    assert NUMERIC == tuple(HEADER[3:])
