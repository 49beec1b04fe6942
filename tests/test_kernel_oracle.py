"""The live kernel as the oracle of the whole corpus (`bpf-unwind kernel`): every program of
tests/progs, the e2e programs, the demo and the conformance programs a tc program can
express is loaded into the running kernel and compared with our pipeline; any DISAGREE
fails. The counts per outcome are printed at the end of the run (conftest.py).

On these machines bpf() works, so in CI (`CI` set) an unusable kernel fails the test with
the reason instead of skipping it. Also here: the loader's failure modes (malformed input,
one line, exit 2) and that 1,000 loads leak no file descriptor."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.live_kernel import require_live_kernel
from unwind.cli import oracle, pipeline
from unwind.live.load import kernel_load
from verifier.asm.ubpf import assemble_ubpf
from verifier.load.object import load_object
from verifier.program import FuncSym, Program

ROOT = Path(__file__).resolve().parents[1]
PROGS = ROOT / "tests" / "progs"
ASM = sorted((ROOT / "tests" / "e2e").glob("*.s")) + [ROOT / "unwind" / "cli" / "demo.s"]
CONFORMANCE = ROOT.parent / "shared" / "conformance" / "tests"
OUTCOME_COUNTS: Counter[str] = Counter()


def _check(rows: list[oracle.Comparison]) -> None:
    OUTCOME_COUNTS.update(r.outcome for r in rows)
    bad = [f"{r.file}:{r.prog}: {r.reason} (kernel: {r.kernel} {r.kernel_msg}; ours: {r.ours} {r.our_msg};"
           f" xlated: {r.xlated}; jit: {r.jit})" for r in rows if r.outcome == "DISAGREE"]  # fmt: skip
    assert bad == []
    far = [f"{r.file}:{r.prog}: ours {r.our_insns}, kernel {r.kernel_insns}" for r in rows
           if r.kernel == r.ours == "accepted" and r.kernel_insns and r.our_insns
           and not 1 / 1.5 <= r.our_insns / r.kernel_insns <= 1.5]  # fmt: skip
    assert far == [], "processed insns beyond a factor of 1.5 of verified_insns"


@pytest.mark.parametrize("obj", sorted(p.name for p in PROGS.glob("*.o")))
def test_corpus_objects_agree_with_the_kernel(obj):
    require_live_kernel()
    _check(oracle.compare_file(str(PROGS / obj), all_progs=True))


@pytest.mark.parametrize("path", ASM, ids=lambda p: p.name)
def test_text_assembly_agrees_with_the_kernel(path):
    require_live_kernel()
    _check(oracle.compare_file(str(path)))


def _conformance_programs() -> list[tuple[str, str]]:
    """(name, asm) of the conformance programs a tc program can express: no input memory
    and no calls (R1 is the ctx there and the memory pointer in the suite; a program that
    uses it as a pointer is compared as what it is in a tc program)."""
    out = []
    for path in sorted(CONFORMANCE.glob("*.data")):
        text = path.read_text()
        if "-- asm" not in text or "-- mem" in text:
            continue
        asm = text.split("-- asm", 1)[1].split("\n--", 1)[0]
        if any(w in ("call", "callx") for w in asm.replace(",", " ").split()):
            continue
        out.append((path.stem, asm))
    return out


@pytest.mark.skipif(not CONFORMANCE.is_dir(), reason="../shared/conformance is not beside the checkout")
def test_conformance_programs_agree_with_the_kernel():
    require_live_kernel()
    rows = []
    for name, asm in _conformance_programs():
        insns = assemble_ubpf(asm, name).insns
        prog = Program(name, insns, [FuncSym(name, 0, "global")], prog_type="tc", source=name)
        rows.append(oracle.compare(prog, None, name))
    assert len(rows) > 50
    _check(rows)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_thousand_loads_leak_no_file_descriptor():
    require_live_kernel()
    obj = load_object(PROGS / "exceptions.o")
    accepted = obj.programs["exception_throw_subprog"]
    rejected = obj.programs["exception_throw_from_void_global"]
    broken = pipeline.load_text("main:\n\tr0 = r5\n\texit\n", "broken.s")  # R5 !read_ok
    before = _fds()
    for i in range(1000):
        kp = kernel_load((accepted, rejected, broken)[i % 3], obj if i % 3 < 2 else None)
        kp.close()
    assert _fds() == before


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unwind.cli.main", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)  # fmt: skip


def test_cli_reports_malformed_input_on_one_line(tmp_path):
    require_live_kernel()
    bad = tmp_path / "bad.o"
    bad.write_bytes(b"\x7fELF" + bytes(60))
    res = _cli("kernel", str(bad))
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.splitlines()) == 1 and res.stderr.startswith("bpf-unwind: error: ")


def test_cli_table_and_exit_status():
    require_live_kernel()
    res = _cli("kernel", str(PROGS / "basic.o"), "--all")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "basic_throw_releases_obj" in res.stdout and res.stdout.rstrip().endswith("0 DISAGREE")
    res = _cli("kernel", str(PROGS / "basic.o"), "--prog", "basic_ctx_len", "--json")
    assert '"outcome": "agree"' in res.stdout and '"retval_kernel": 74' in res.stdout


@pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare is not installed")
def test_without_privileges_the_cli_says_so_on_one_line():
    """In a user namespace we are root without CAP_BPF in the initial namespace: bpf() says EPERM."""
    res = subprocess.run(["unshare", "-Ur", sys.executable, "-m", "unwind.cli.main", "kernel",
                          str(PROGS / "basic.o"), "--all"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)  # fmt: skip
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.splitlines() == [res.stderr.rstrip("\n")]
    assert "live kernel not usable" in res.stderr and "EPERM" in res.stderr and "CAP_BPF" in res.stderr
