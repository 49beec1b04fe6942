"""Issue 14: malformed inputs of every format we parse keep the error contract.

Hypothesis drives the mutation operators of tests/malformed_mutations.py over real seeds
(text assembly, the conformance suite's `.data` files, the C corpus's ELF objects and
their `.BTF` / `.BTF.ext`, raw instruction bytes) and tests/malformed.feed pushes each
input through parsing, checking, rewriting, JIT and both engines. Every input is
accepted or fails with one of our errors on one line, never a traceback, never an
internal error. Budgets (the checker's complexity limit, each engine's instruction
budget) bound every case deterministically; an alarm is only the safety net, and the peak
memory of the whole run is bounded too.

CI runs a few seconds' worth (derandomized, so the same inputs every run);
`MALFORMED_EXAMPLES=N` runs N per format. The large local run is
`.venv/bin/python -m tests.malformed --count N`. The command line is driven end to end
on a sample: exit 2 and exactly one `bpf-unwind: error:` line on stderr."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import malformed
from tests.malformed_mutations import RandomChooser, mutate_bytes, mutate_elf, mutate_text
from verifier.errors import BpfUnwindError, VerifierError

EXAMPLES = {"asm": 300, "data": 300, "elf": 150, "btf": 400, "btf_ext": 400, "raw": 300}
OVERRIDE = int(os.environ.get("MALFORMED_EXAMPLES", "0"))
MAX_RSS_GROWTH_MB = 1024
BIN = Path(sys.executable).parent / "bpf-unwind"


class DataChooser:
    """A Chooser whose every choice is a hypothesis draw (so failures shrink)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))


def fuzz_settings(fmt: str) -> settings:
    return settings(max_examples=OVERRIDE or EXAMPLES[fmt], deadline=None, derandomize=not OVERRIDE,
                    database=None, suppress_health_check=list(HealthCheck))


def fuzz(fmt: str):  # noqa: ANN201 - a test function
    @fuzz_settings(fmt)
    @given(st.data())
    def test(data):
        item = malformed.generate(DataChooser(data), fmt)
        with malformed.bounded():
            malformed.run_case(fmt, item)

    return test


@pytest.fixture(scope="module", autouse=True)
def memory_bound():
    before = malformed.max_rss_mb()
    yield
    assert malformed.max_rss_mb() - before < MAX_RSS_GROWTH_MB


test_malformed_text_assembly = fuzz("asm")
test_malformed_conformance_data_files = fuzz("data")
test_malformed_elf_objects = fuzz("elf")
test_malformed_btf = fuzz("btf")
test_malformed_btf_ext = fuzz("btf_ext")
test_malformed_raw_instruction_bytes = fuzz("raw")


def test_a_contract_breach_is_reported_not_swallowed(monkeypatch):
    # The harness itself: a traceback, an internal error and a two-line message all fail.
    def raising(exc: Exception):  # noqa: ANN202
        def feed(fmt: str, item: object) -> None:
            malformed._outcome(lambda: (_ for _ in ()).throw(exc))

        return feed

    cases = [(ZeroDivisionError("x"), "traceback: ZeroDivisionError"),
             (VerifierError("verifier internal error: x"), "internal error"),
             (_TwoLines("a\nb"), "multi-line message")]
    for exc, match in cases:
        monkeypatch.setattr(malformed, "feed", raising(exc))
        with pytest.raises(malformed.ContractBroken, match=match):
            malformed.run_case("asm", "")


class _TwoLines(BpfUnwindError):
    """An error type that bypasses the one-line guard, as a forgetful subclass could."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)


# ---------------------------------------------------------------- the command line end to end


def cli(*argv: str) -> tuple[int, str, str]:
    proc = subprocess.run([str(BIN), *argv], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def assert_contract(code: int, err: str, broken: bool) -> None:
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 2 or broken:
        lines = err.splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("bpf-unwind: error: "), (code, err)
    else:
        assert code in (0, 1) and err == "", (code, err)


def sample(tmp_path: Path) -> list[tuple[list[str], bool]]:
    """(argv, whether the input is certainly broken) for a deterministic sample."""
    seeds, rng = malformed.seeds(), RandomChooser(random.Random(14))
    elf = seeds.elf[0]
    files = {
        "trunc.o": elf[: len(elf) // 3],
        "shdr.o": mutate_elf(rng, elf),
        "bytes.o": mutate_bytes(rng, elf),
        "garbage.s": b"main:\n    r0 = 1\n    r0 +== \xe2\x80\xa8 r1\n    exit\n",
        "mut.s": mutate_text(rng, seeds.asm[0]).encode(),
        "badnum.data": b"-- asm\nmov %r0, 1\nexit\n-- result\n0xZZ\n",
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    p = {name: str(tmp_path / name) for name in files}
    return [
        (["verify", p["trunc.o"]], True), (["disasm", p["trunc.o"]], True),
        (["run", p["shdr.o"], "--prog", "basic_throw"], False), (["disasm", p["bytes.o"]], False),
        (["verify", p["garbage.s"]], True), (["run", p["garbage.s"], "--engine", "interp"], True),
        (["run", p["mut.s"]], False), (["conformance", p["badnum.data"]], True),
    ]  # fmt: skip


def test_cli_on_malformed_files_keeps_the_exit_status_contract(tmp_path):
    for argv, broken in sample(tmp_path):
        code, _, err = cli(*argv)
        assert_contract(code, err, broken)
