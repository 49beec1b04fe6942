"""Malformed inputs for every format bpf-unwind parses, and the contract each must keep.

Formats: text assembly (llvm-objdump syntax), the conformance suite's `.data` files, ELF
objects, `.BTF` and `.BTF.ext` sections, raw instruction bytes. Each format has seeds
(real inputs from the repository and the suite) and mutations driven by a `Chooser`, so
the same operators serve hypothesis (tests/test_malformed_inputs.py) and the seeded
random driver of a large local run:

    .venv/bin/python -m tests.malformed --count 20000 [--seed 1] [--formats asm data ...]

`feed(fmt, input)` pushes one input through everything that parses it and everything
after that (check with a small complexity limit, rewrite, JIT compile, both engines with
an instruction budget). The contract: the input is accepted, or the failure is one of our
error types (`BpfUnwindError`) whose message is one line and not an internal error. Any
other exception, or an internal error, raises `ContractBroken`. Budgets keep every case
bounded deterministically; `run_case` adds `signal.alarm` only as a safety net."""

from __future__ import annotations

import argparse
import random
import resource
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jit.compile import jit_program  # noqa: E402
from tests.malformed_mutations import (  # noqa: E402
    Chooser,
    RandomChooser,
    mutate_btf,
    mutate_bytes,
    mutate_elf,
    mutate_text,
    pick,
)
from unwind.cli import conformance as conf  # noqa: E402
from unwind.cli.conformance_data import parse_data  # noqa: E402
from unwind.interp_kernel import run_interp  # noqa: E402
from unwind.jit_kernel import kfunc_stub_addrs  # noqa: E402
from unwind.runner import ProgramRunner  # noqa: E402
from verifier.asm.assembler import assemble  # noqa: E402
from verifier.asm.disasm import disassemble  # noqa: E402
from verifier.asm.ubpf import assemble_ubpf  # noqa: E402
from verifier.check import loop  # noqa: E402
from verifier.check.checker import check  # noqa: E402
from verifier.errors import BpfUnwindError  # noqa: E402
from verifier.isa.decode import decode  # noqa: E402
from verifier.isa.insn import insns_to_bytes  # noqa: E402
from verifier.load.btf import parse_btf  # noqa: E402
from verifier.load.btf_ext import parse_btf_ext  # noqa: E402
from verifier.load.elf_file import read_elf  # noqa: E402
from verifier.load.objdump import disassemble_object  # noqa: E402
from verifier.load.object import load_object_bytes  # noqa: E402
from verifier.program import Program  # noqa: E402
from verifier.rewrite.fixups import finalize  # noqa: E402

SUITE = ROOT.parent / "shared" / "conformance" / "tests"
PROGS = ROOT / "tests" / "progs"
FORMATS = ("asm", "data", "elf", "btf", "btf_ext", "raw")
CHECK_LIMIT = 20_000  # processed insns per check (the kernel's is 1,000,000)
RUN_BUDGET = 5_000  # executed insns per run, each engine
ALARM_SECONDS = 60  # safety net only: the budgets above are what bound a case


class ContractBroken(AssertionError):
    """An input produced a traceback, an internal error or a multi-line message."""


# ---------------------------------------------------------------- seeds


def _elf_section(data: bytes, name: str) -> bytes:
    image = read_elf(data, "seed")
    sec = image.section(name)
    return sec.data if sec is not None else b""


@dataclass
class Seeds:
    asm: list[str]
    data: list[str]
    elf: list[bytes]
    btf: list[bytes]
    btf_ext: list[tuple[bytes, bytes]]  # (.BTF.ext, its .BTF)
    raw: list[bytes]


_SEEDS: Seeds | None = None


def seeds() -> Seeds:
    global _SEEDS
    if _SEEDS is None:
        asm = [p.read_text() for p in sorted((ROOT / "tests").glob("*/*.s"))]
        asm.append((ROOT / "unwind" / "cli" / "demo.s").read_text())
        data = [p.read_text() for p in sorted(SUITE.glob("*.data"))]
        elf = [p.read_bytes() for p in sorted(PROGS.glob("*.o"))]
        btf = [_elf_section(d, ".BTF") for d in elf]
        btf_ext = [(_elf_section(d, ".BTF.ext"), b) for d, b in zip(elf, btf, strict=True)]
        raw: list[bytes] = []
        for d in elf:  # every program of the corpus, as text (our disassembler) and as bytes
            for prog in load_object_bytes(d, "seed").programs.values():
                asm.append(disassemble(prog))
                raw.append(insns_to_bytes(prog.insns))
        for text in data:  # and the suite's programs as bytes
            df = parse_data(text)
            if df.raw or df.asm:
                raw.append(df.raw or insns_to_bytes(assemble_ubpf(df.asm).insns))
        _SEEDS = Seeds(asm, data, elf, btf, btf_ext, raw)
    return _SEEDS


def generate(c: Chooser, fmt: str) -> object:
    s = seeds()
    if fmt == "asm":
        return mutate_text(c, pick(c, s.asm))
    if fmt == "data":
        return mutate_text(c, pick(c, s.data))
    if fmt == "elf":
        seed = pick(c, s.elf)
        return mutate_elf(c, seed) if c.int(0, 2) else mutate_bytes(c, seed)
    if fmt == "btf":
        return mutate_btf(c, pick(c, s.btf))
    if fmt == "btf_ext":
        ext, btf = pick(c, s.btf_ext)
        return (mutate_btf(c, ext), btf) if c.int(0, 3) else (ext, mutate_btf(c, btf))
    if fmt == "raw":
        return mutate_bytes(c, pick(c, s.raw))
    raise ValueError(fmt)


# ---------------------------------------------------------------- the contract


def _expect_one_line(err: BpfUnwindError) -> None:
    msg = str(err)
    if len(msg.splitlines()) > 1 or "\n" in msg or "\r" in msg:
        raise ContractBroken(f"multi-line message from {type(err).__name__}: {msg!r}")
    if "internal error" in msg:
        raise ContractBroken(f"internal error: {msg}")


def _outcome(fn: Callable[[], object]) -> object | None:
    """fn(), or None when it failed the way the contract allows."""
    try:
        return fn()
    except BpfUnwindError as err:
        _expect_one_line(err)
        return None


def _verify_and_run(prog: Program) -> None:
    result = _outcome(lambda: check(prog, log_level=0))
    if result is None:
        return
    vp = _outcome(lambda: finalize(result))
    if vp is None:
        return
    _outcome(lambda: run_interp(vp, budget=RUN_BUDGET))
    jp = _outcome(lambda: jit_program(vp, kfunc_stub_addrs()))
    if jp is not None:
        _outcome(lambda: ProgramRunner(jp, RUN_BUDGET).run())


def _run_unchecked(insns: list) -> None:
    vp = _outcome(lambda: conf.build_unchecked(insns, "fuzz"))
    if vp is not None:
        for engine in conf.EXECUTORS:
            _outcome(lambda engine=engine: conf.EXECUTORS[engine](vp, b"\x01" * 64, RUN_BUDGET))


def feed(fmt: str, item: object) -> None:
    """Push one input through every stage that takes it (see the module docstring)."""
    if fmt == "asm":
        prog = _outcome(lambda: assemble(item, "fuzz.s"))
        if prog is not None:
            _verify_and_run(prog)
    elif fmt == "data":
        df = _outcome(lambda: parse_data(item, "fuzz.data"))
        if df is not None:
            for engine in conf.ENGINES:
                outcome = conf.run_file(df, engine, RUN_BUDGET)
                if "\n" in outcome.detail or "internal error" in outcome.detail:
                    raise ContractBroken(f"conformance outcome: {outcome.detail!r}")
    elif fmt == "elf":
        _outcome(lambda: disassemble_object(item, "fuzz.o"))
        obj = _outcome(lambda: load_object_bytes(item, "fuzz.o"))
        if obj is not None:
            for prog in obj.programs.values():
                _verify_and_run(prog)
    elif fmt == "btf":
        _outcome(lambda: parse_btf(item, "fuzz.BTF"))
    elif fmt == "btf_ext":
        ext, raw_btf = item
        btf = _outcome(lambda: parse_btf(raw_btf, "fuzz.BTF"))
        if btf is not None:
            _outcome(lambda: parse_btf_ext(ext, btf, "fuzz.BTF.ext"))
    elif fmt == "raw":
        insns = _outcome(lambda: decode(item, "fuzz.bin"))
        if insns:
            _run_unchecked(insns)
    else:
        raise ValueError(fmt)


@contextmanager
def bounded(check_limit: int = CHECK_LIMIT):
    """The checker's complexity limit lowered for the duration (a deterministic budget)."""
    saved = loop.BPF_COMPLEXITY_LIMIT_INSNS
    loop.BPF_COMPLEXITY_LIMIT_INSNS = check_limit
    try:
        yield
    finally:
        loop.BPF_COMPLEXITY_LIMIT_INSNS = saved


def _alarm(signum: int, frame: object) -> None:
    raise ContractBroken(f"case still running after {ALARM_SECONDS} s (hang?)")


def run_case(fmt: str, item: object) -> None:
    """`feed` under the safety-net alarm; any exception other than our errors is a
    ContractBroken carrying the traceback."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(ALARM_SECONDS)
    try:
        feed(fmt, item)
    except ContractBroken:
        raise
    except Exception as err:  # noqa: BLE001 - every other exception breaks the contract
        raise ContractBroken(f"traceback: {type(err).__name__}: {err}\n{traceback.format_exc()}") from err
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- the large local run


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="malformed inputs for every format, seeded random mutations")
    ap.add_argument("--count", type=int, default=1000, help="inputs per format")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    ap.add_argument("--save", type=Path, help="directory to write each breaking input to")
    args = ap.parse_args(argv)
    totals: Counter[str] = Counter()
    broken: Counter[str] = Counter()
    first: dict[str, str] = {}
    t0 = time.perf_counter()
    with bounded():
        for fmt in args.formats:
            chooser = RandomChooser(random.Random(f"{args.seed}:{fmt}"))
            for i in range(args.count):
                item = generate(chooser, fmt)
                totals[fmt] += 1
                try:
                    run_case(fmt, item)
                except ContractBroken as err:
                    kind = "internal" if "internal error" in str(err) else "traceback"
                    broken[f"{fmt}:{kind}"] += 1
                    key = str(err).splitlines()[0][:160]
                    if key not in first:
                        first[key] = f"{fmt} #{i}"
                        print(f"BROKEN {fmt} #{i}: {str(err)[:2000]}", flush=True)
                        if args.save:
                            args.save.mkdir(parents=True, exist_ok=True)
                            path = args.save / f"{fmt}-{i}"
                            if isinstance(item, tuple):
                                item = item[0] + b"\n--BTF--\n" + item[1]
                            path.write_bytes(item.encode() if isinstance(item, str) else item)
            print(f"{fmt}: {totals[fmt]} inputs, {broken[f'{fmt}:traceback']} tracebacks, "
                  f"{broken[f'{fmt}:internal']} internal errors ({time.perf_counter() - t0:.0f} s, "
                  f"max RSS {max_rss_mb():.0f} MB)", flush=True)
    print(f"total: {sum(totals.values())} inputs, {sum(broken.values())} broken, "
          f"{len(first)} distinct, {time.perf_counter() - t0:.0f} s")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
