"""The load -> verify -> JIT -> run pipeline, one function per stage, each taking the
previous stage's hand-off type (ARCHITECTURE.md). The command line and the tests both go
through here, so what a user runs is what the tests check."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from jit.compile import jit_program
from jit.image import JitProgram
from unwind.jit_kernel import helper_stub_addrs, kfunc_stub_addrs
from unwind.result import RunResult
from unwind.runner import ProgramRunner
from verifier.asm.assembler import assemble
from verifier.check.checker import check
from verifier.errors import LoadError
from verifier.program import Program, VerifiedProgram
from verifier.rewrite.fixups import finalize

DEMO_NAME = "demo.s"


def demo_source() -> str:
    return resources.files("unwind.cli").joinpath(DEMO_NAME).read_text()


def load_text(text: str, source: str) -> Program:
    return assemble(text, source)


def load_file(path: str | Path) -> Program:
    """Load a program from a text-assembly file (`.s`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise LoadError(f"{path}: cannot read: {err}") from None
    return load_text(text, str(path))


def read_input(path: str | None, what: str) -> bytes | None:
    """The bytes of an optional input file (`--data-in` and kin); one-line error when unreadable."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise LoadError(f"{what} {path}: cannot read: {err.strerror or err}") from None


def verify(prog: Program, log_level: int = 1) -> VerifiedProgram:
    """Check the program (raises VerifierError when rejected) and apply the rewrites."""
    return finalize(check(prog, log_level=log_level))


def jit(vp: VerifiedProgram) -> JitProgram:
    return jit_program(vp, kfunc_stub_addrs(), helper_addrs=helper_stub_addrs())


@dataclass
class Pipeline:
    """Every stage's output for one program; runs reuse one machine per budget."""

    program: Program
    verified: VerifiedProgram
    jitted: JitProgram
    _runners: dict[int, ProgramRunner] = field(default_factory=dict, repr=False)

    def run(self, ctx: bytes | None = None, budget: int = 10_000_000) -> RunResult:
        runner = self._runners.get(budget)
        if runner is None:
            runner = self._runners[budget] = ProgramRunner(self.jitted, budget)
        return runner.run(ctx)


def build(prog: Program, log_level: int = 1) -> Pipeline:
    vp = verify(prog, log_level=log_level)
    return Pipeline(prog, vp, jit(vp))


def build_text(text: str, source: str = "<asm>", log_level: int = 1) -> Pipeline:
    return build(load_text(text, source), log_level=log_level)
