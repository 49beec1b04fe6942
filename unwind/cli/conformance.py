"""bpf_conformance in-process: an unchecked build, both engines, the report, and the
suite's external plugin protocol (../shared/conformance/README.md). The `.data` format
itself is `unwind.cli.conformance_data`.

Why no checker: the suite's programs take raw memory in r1 (and its length in r2), use
uninitialised stack and call helper 5, none of which our verifier models (it verifies
kernel programs against a ctx). `build_unchecked` therefore builds the `CheckResult` the
checker would hand over for a program it accepted: every insn seen, subprogs at the
targets of local calls (main first), MAX_BPF_STACK bytes of stack each, no frame
descriptors, no exception (a kfunc call is refused: only the checker can vouch for its
typed arguments; jumps must stay in their subprog, which must end in exit or a jump, as
the kernel's check_subprogs has it); then `verifier.rewrite.fixups.finalize` applies the same rewrites as for
a verified program, so the kernel's div/mod guards are in what both engines run. Input is
still validated by `verifier.isa.decode` (reserved fields, registers), so the `negative/`
files are rejected by the same code that guards ELF/raw input.

Engines: `jit` compiles with `jit_program` (kfunc stubs from the kernel model, helper 5
bound to a stub that returns r1, as uBPF and rbpf do) and runs main on a `Machine` with
r1 = CTX_BASE (where the memory is written) and r2 = its length; `interp` runs the
reference interpreter (jit.interp.engine) with the same layout and helper and no kfunc stubs (the
suite calls none; whole runs with the kernel model are unwind.interp_kernel.run_interp).

Outcome of one file: PASS, FAIL (one report line: file, expected, actual or error) or SKIP
with a reason (no result/error section, unknown directive, callx: the kernel has none). An
`-- error` expectation passes when the program is rejected with exactly that message (the
reason part of our message) or, when the section is empty, with any message."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from jit.compile import jit_program
from jit.interp.engine import Interp
from jit.layout import CTX_BASE, CTX_SIZE, stub_address
from jit.machine import Machine
from unwind.cli.conformance_data import ConformanceError, DataFile, parse_data
from unwind.jit_kernel import kfunc_stub_addrs
from verifier.asm.ubpf import assemble_ubpf
from verifier.errors import BpfUnwindError, DecodeError, quoted, shown
from verifier.isa.decode import decode
from verifier.isa.insn import BPF_CALL, BPF_JMP, BPF_X, MAX_BPF_STACK, Insn, insns_to_bytes
from verifier.program import CheckResult, FdTab, FuncSym, Program, SubprogInfo, VerifiedProgram
from verifier.rewrite.fixups import finalize

ENGINES = ("jit", "interp")
HELPER_RETURN_R1 = 5  # the suite's only helper: uBPF/rbpf bind it as "return r1"
HELPER_STUB_SLOT = 64  # stub slots from here on are helpers: slot 64 + helper id
DEFAULT_BUDGET = 1_000_000
CALLX_CODE = BPF_JMP | BPF_CALL | BPF_X


def helper_stub_addrs() -> dict[int, int]:
    return {HELPER_RETURN_R1: stub_address(HELPER_STUB_SLOT + HELPER_RETURN_R1)}


# ---------------------------------------------------------------- building


def program_insns(df: DataFile) -> tuple[list[Insn], dict[int, str]]:
    """The file's program (raw wins over asm), validated by the decoder; label names by pc."""
    names: dict[int, str] = {}
    if df.raw is not None:
        data = df.raw
    elif df.asm is not None:
        prog = assemble_ubpf(df.asm, df.path, df.asm_line)
        data = insns_to_bytes(prog.insns)
        names = {pc: name for name, pc in prog.labels.items()}
    else:
        data = b""
    if not data:
        raise DecodeError(f"{df.path}: program has no instructions")
    if any(data[i] == CALLX_CODE for i in range(0, len(data) - 7, 8)):
        return [Insn(CALLX_CODE)], names  # reported as a skip by the caller
    return decode(data, df.path), names


def build_unchecked(insns: list[Insn], name: str = "conformance", names: dict[int, str] | None = None
                    ) -> VerifiedProgram:
    """A VerifiedProgram without the checker (see the module docstring)."""
    if not insns:
        raise DecodeError(f"{name}: program has no instructions")
    starts = {0}
    pc = 0
    while pc < len(insns):
        insn = insns[pc]
        if insn.is_pseudo_call():
            target = pc + insn.imm + 1
            if not 0 <= target < len(insns):
                raise ConformanceError(f"{name}: local call at insn {pc} to insn {target} is outside")
            starts.add(target)
        elif insn.is_kfunc_call():
            # kfuncs take typed kernel objects only the checker can vouch for (bpf_obj_new
            # needs the struct it allocates); the suite calls none.
            raise ConformanceError(f"{name}: kfunc call at insn {pc} is not supported by bpf-unwind without"
                                   " the checker")
        pc += 2 if insn.is_ld_imm64() else 1
    _check_subprogs(insns, sorted(starts), name)
    names = names or {}
    funcs = [FuncSym(name if s == 0 else names.get(s, f"func_{s}"), s) for s in sorted(starts)]
    prog = Program(name, list(insns), funcs, prog_type="conformance")
    subprogs = [SubprogInfo(f.name, f.start, stack_depth=MAX_BPF_STACK) for f in funcs]
    result = CheckResult(prog, subprogs, [FdTab() for _ in funcs], seen_exception=False,
                         exception_cb=None, seen_insns=set(range(len(insns))))
    return finalize(result)


def _check_subprogs(insns: list[Insn], starts: list[int], name: str) -> None:
    """The kernel's check_subprogs, which runs before do_check: every jump stays in its
    subprog and each subprog ends in exit or a jump. Without it the engines disagree on a
    program that breaks it (the JIT refuses a jump out of its image, the interpreter runs
    on until the jump is taken)."""
    bounds = [*starts, len(insns)]
    for i, start in enumerate(starts):
        end, last, pc = bounds[i + 1], start, start
        while pc < end:
            insn, last = insns[pc], pc
            if insn.is_jump() and not start <= (target := pc + insn.jump_offset() + 1) < end:
                raise ConformanceError(f"{name}: jump out of range from insn {pc} to {target}")
            pc += 2 if insn.is_ld_imm64() else 1
        if not (insns[last].is_exit() or insns[last].is_jump() and not insns[last].is_cond_jump()):
            raise ConformanceError(f"{name}: last insn is not an exit or jmp")


def build_asm(text: str, name: str = "conformance") -> VerifiedProgram:
    """Assemble `%r`-dialect text, validate it and build it unchecked (subprogs named by labels)."""
    prog = assemble_ubpf(text, name)
    insns = decode(insns_to_bytes(prog.insns), name)
    return build_unchecked(insns, name, {pc: label for label, pc in prog.labels.items()})


# ---------------------------------------------------------------- engines


def _check_mem(vp: VerifiedProgram, mem: bytes) -> None:
    if len(mem) > CTX_SIZE:
        raise ConformanceError(f"{vp.name}: {len(mem)} bytes of memory exceed {CTX_SIZE}")


def execute_jit(vp: VerifiedProgram, mem: bytes, budget: int = DEFAULT_BUDGET) -> tuple[int, bytes]:
    """Run `vp` as JIT code in Unicorn with r1 = the memory (at CTX_BASE), r2 = its length;
    return r0 and the memory afterwards."""
    _check_mem(vp, mem)
    helpers = helper_stub_addrs()
    jp = jit_program(vp, kfunc_stub_addrs(), helper_addrs=helpers)
    machine = Machine(jp, budget)
    machine.bind_stub(helpers[HELPER_RETURN_R1], lambda m: m.set_reg("rax", m.reg("rdi")))
    if mem:
        machine.write(CTX_BASE, mem)
    machine.set_reg("rsi", len(mem))
    r0 = machine.run(jp.main, CTX_BASE)
    return r0, machine.read(CTX_BASE, len(mem)) if mem else b""


def execute_interp(vp: VerifiedProgram, mem: bytes, budget: int = DEFAULT_BUDGET) -> tuple[int, bytes]:
    """The same with the reference interpreter (same layout, same helper)."""
    _check_mem(vp, mem)
    interp = Interp(vp, helpers={HELPER_RETURN_R1: lambda it: it.regs[1]}, budget=budget)
    if mem:
        interp.mem.write(CTX_BASE, mem)
    r0 = interp.run(CTX_BASE, len(mem))
    return r0, interp.mem.read(CTX_BASE, len(mem)) if mem else b""


EXECUTORS: dict[str, Callable[[VerifiedProgram, bytes, int], tuple[int, bytes]]] = {
    "jit": execute_jit, "interp": execute_interp,
}


def run_jit(vp: VerifiedProgram, mem: bytes, budget: int = DEFAULT_BUDGET) -> int:
    """r0 of `vp` on the JIT engine."""
    return execute_jit(vp, mem, budget)[0]


def run_interp(vp: VerifiedProgram, mem: bytes, budget: int = DEFAULT_BUDGET) -> int:
    """r0 of `vp` on the reference interpreter."""
    return execute_interp(vp, mem, budget)[0]


RUNNERS: dict[str, Callable[[VerifiedProgram, bytes, int], int]] = {"jit": run_jit, "interp": run_interp}


# ---------------------------------------------------------------- one file, many files


@dataclass
class Outcome:
    path: str
    status: str  # "pass" | "fail" | "skip" | "error" (the file cannot be read or parsed)
    detail: str = ""  # fail: "expected X, got Y"; skip: the reason; error: the message

    def line(self) -> str:
        return f"{self.path}: {self.detail}"


def _error_matches(expected: str, err: BpfUnwindError) -> bool:
    reason = getattr(err, "reason", None)
    return expected == "" or expected in (str(err).strip(), reason)


def _err_text(err: BpfUnwindError, path: str) -> str:
    """The error without the file name the report line already starts with."""
    text = str(err)
    if text.startswith(f"{path}:"):
        text = text[len(path) + 1 :].lstrip()
        if text[:1].isdigit():
            text = f"line {text}"
    return text


def _expected(df: DataFile) -> str:
    return f"error {quoted(df.error)}" if df.error is not None else f"{df.result:#x}"


def run_file(df: DataFile, engine: str, budget: int = DEFAULT_BUDGET) -> Outcome:
    """Run one parsed file on `engine` and judge it."""
    if df.unknown is not None:
        return Outcome(df.path, "skip", f"unknown directive {quoted(df.unknown)} (the suite's"
                                        " runner skips it)")
    if df.result is None and df.error is None:
        return Outcome(df.path, "skip", "no result and no error section")
    try:
        insns, names = program_insns(df)
        if insns[0].code == CALLX_CODE and len(insns) == 1:
            return Outcome(df.path, "skip", "callx (BPF_CALL|BPF_X): the kernel has no indirect call")
        vp = build_unchecked(insns, Path(df.path).stem, names)
        r0 = RUNNERS[engine](vp, df.mem, budget)
    except BpfUnwindError as err:
        if df.error is not None and _error_matches(df.error, err):
            return Outcome(df.path, "pass")
        return Outcome(df.path, "fail", f"expected {_expected(df)}, got error: {_err_text(err, df.path)}")
    if df.error is not None:
        return Outcome(df.path, "fail", f"expected {_expected(df)}, got {r0:#x}")
    if r0 != df.result:
        return Outcome(df.path, "fail", f"expected {df.result:#x}, got {r0:#x}")
    return Outcome(df.path, "pass")


def data_files(paths: Sequence[str | Path]) -> list[Path]:
    """Every `.data` file named or under a named directory, sorted per argument."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.rglob("*.data")))
        elif p.exists():
            files.append(p)
        else:
            raise ConformanceError(f"{p}: no such file or directory")
    return files


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def summary(self) -> str:
        text = f"{self.count('pass')} passed, {self.count('fail')} failed"
        skipped, errors = self.count("skip"), self.count("error")
        text += f", {skipped} skipped" if skipped else ""
        return text + (f", {errors} unreadable" if errors else "")

    def errors(self) -> list[str]:
        """One line per file that could not be read or parsed (the CLI's stderr)."""
        return [o.detail for o in self.outcomes if o.status == "error"]

    def lines(self, show_skips: bool = True) -> list[str]:
        out = [f"FAIL {o.line()}" for o in self.outcomes if o.status == "fail"]
        if show_skips:
            out += [f"SKIP {o.line()}" for o in self.outcomes if o.status == "skip"]
        return [*out, self.summary()]


def run_paths(paths: Sequence[str | Path], engine: str = "jit", budget: int = DEFAULT_BUDGET) -> Report:
    report = Report()
    for path in data_files(paths):
        try:
            df = parse_data(path.read_text(), str(path))
        except (OSError, UnicodeDecodeError) as err:
            report.outcomes.append(Outcome(str(path), "error", shown(f"{path}: cannot read: {err}")))
            continue
        except ConformanceError as err:
            report.outcomes.append(Outcome(str(path), "error", str(err)))
            continue
        report.outcomes.append(run_file(df, engine, budget))
    return report


# ---------------------------------------------------------------- plugin protocol


def plugin_run(program_hex: str, mem_hex: str = "", engine: str = "jit", budget: int = DEFAULT_BUDGET) -> int:
    """The suite's plugin: program as hex text, memory as hex bytes; returns r0."""
    try:
        code = bytes.fromhex("".join(program_hex.split()))
        mem = bytes.fromhex("".join(mem_hex.split()))
    except ValueError as err:
        raise ConformanceError(f"bad hex input: {err}") from None
    df = DataFile("<plugin>", raw=code, mem=mem, result=0)
    insns, _ = program_insns(df)
    if insns[0].code == CALLX_CODE and len(insns) == 1:
        raise ConformanceError("callx (BPF_CALL|BPF_X) is not supported: the kernel has no indirect call")
    return RUNNERS[engine](build_unchecked(insns, "plugin"), mem, budget)


# ---------------------------------------------------------------- command line


def cmd_conformance(args: argparse.Namespace) -> int:
    """Exit 0 when every file passed (or was skipped), 1 when a test failed, 2 when a file
    could not be read or parsed (one `bpf-unwind: error:` line on stderr for each)."""
    report = run_paths(args.paths, args.engine, args.budget)
    for line in report.lines(show_skips=not args.quiet_skips):
        print(line)
    for line in report.errors():
        print(f"bpf-unwind: error: {line}", file=sys.stderr)
    if report.count("error"):
        return 2
    return 0 if report.count("fail") == 0 else 1


def cmd_conformance_plugin(args: argparse.Namespace) -> int:
    try:
        r0 = plugin_run(sys.stdin.read(), args.memhex or "", args.engine, args.budget)
    except BpfUnwindError as err:
        print(str(err), file=sys.stderr)
        return 1
    print(f"{r0:#x}")
    return 0


def register_conformance(subparsers: argparse._SubParsersAction) -> None:
    c = subparsers.add_parser("conformance", help="run bpf_conformance .data files in-process")
    c.add_argument("paths", nargs="+", metavar="PATH", help=".data files or directories of them")
    c.add_argument("--engine", choices=ENGINES, default="jit")
    c.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="instruction budget per test")
    c.add_argument("--quiet-skips", action="store_true", help="do not list skipped files")
    c.set_defaults(func=cmd_conformance)


def register_plugin(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("conformance-plugin",
                              help="bpf_conformance plugin: program hex on stdin, r0 in hex on stdout")
    p.add_argument("memhex", nargs="?", metavar="MEMHEX", help="input memory as hex bytes")
    p.add_argument("--engine", choices=ENGINES, default="jit")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET)
    p.set_defaults(func=cmd_conformance_plugin)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add both subcommands (`conformance`, `conformance-plugin`) to the CLI's subparsers."""
    register_conformance(subparsers)
    register_plugin(subparsers)


__all__ = [
    "EXECUTORS", "ConformanceError", "DataFile", "Outcome", "Report", "build_asm", "build_unchecked",
    "parse_data", "plugin_run", "program_insns", "register", "register_conformance", "register_plugin",
    "run_file", "run_interp", "run_jit", "run_paths",
]
