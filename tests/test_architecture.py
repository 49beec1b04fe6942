"""ARCHITECTURE.md's layering, checked on the sources.

`ALLOWED` is the import table as data: every module of verifier/, jit/ and unwind/ belongs
to the unit with the longest matching name (a subpackage, a root module that is a hand-off
type, or the package root), and may import modules of its own unit and of the units listed
for it, nothing else of ours. Imports inside functions and `TYPE_CHECKING` blocks count.
On top of the table: no import cycle between any two modules, verifier/ never touches the
emulator or the disassembler libraries, nothing imports tests/ or benchmarks/, every module
has a docstring, and no source file passes 400 lines. The synthetic cases at the end show
that each rule fails when broken."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("verifier", "jit", "unwind")
MAX_LINES = 400

_V_VOCAB = {"verifier.errors", "verifier.isa", "verifier.regtypes", "verifier.protos", "verifier.program"}
VERIFIER = _V_VOCAB | {"verifier.asm", "verifier.load", "verifier.check", "verifier.rewrite"}
JIT = {"jit", "jit.x86", "jit.layout", "jit.interp"}

# unit -> units it may import (besides itself). Read top to bottom: each unit sits above
# the ones it names, so the table is the layering of ARCHITECTURE.md.
ALLOWED: dict[str, set[str]] = {
    "verifier": set(),  # the package's __init__: a docstring
    "verifier.errors": set(),
    "verifier.regtypes": set(),
    "verifier.isa": {"verifier.errors"},
    "verifier.protos": {"verifier.isa", "verifier.regtypes", "verifier.errors"},
    "verifier.program": {"verifier.isa", "verifier.regtypes", "verifier.errors"},
    "verifier.asm": _V_VOCAB - {"verifier.regtypes"},
    "verifier.load": _V_VOCAB | {"verifier.asm"},
    "verifier.check": _V_VOCAB | {"verifier.asm"},
    "verifier.rewrite": _V_VOCAB,
    "jit.layout": set(),
    "jit.x86": {"verifier.isa", "verifier.errors"},
    "jit.interp": {"verifier.isa", "verifier.program", "verifier.errors", "jit.layout"},
    "jit": VERIFIER | {"jit.x86", "jit.layout"},
    "unwind.result": set(),
    "unwind.kernel": VERIFIER | {"jit.layout", "unwind.result"},
    "unwind": VERIFIER | JIT | {"unwind.kernel", "unwind.result"},
    "unwind.live": VERIFIER | JIT,  # the running kernel as an oracle: knows no model of ours
    "unwind.cli": VERIFIER | JIT | {"unwind", "unwind.kernel", "unwind.result", "unwind.live"},
}
# Third-party packages a unit must not import: the verifier knows no machine.
FORBIDDEN_EXTERNAL: dict[str, set[str]] = {
    **{unit: {"unicorn", "capstone", "keystone"} for unit in VERIFIER},
    "jit.x86": {"unicorn", "capstone", "keystone"},
    "jit.interp": {"unicorn"},
}
NEVER_IMPORTED = {"tests", "benchmarks"}


def unit_of(module: str) -> str:
    """The longest ALLOWED key that is `module` or a package containing it."""
    best = ""
    for unit in ALLOWED:
        if (module == unit or module.startswith(unit + ".")) and len(unit) > len(best):
            best = unit
    if not best:
        raise KeyError(f"{module} belongs to no unit of the import table")
    return best


def imports_of(module: str, source: str, known: Iterable[str] = ()) -> set[str]:
    """Every module `source` imports, anywhere in it. `from pkg import name` names the
    submodule pkg.name when `known` has it, else pkg. Relative imports are resolved."""
    known = set(known)
    tree = ast.parse(source)
    package = module.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return out


def violations(module: str, source: str, known: Iterable[str] = ()) -> list[str]:
    """What `module` (with this source) imports against the table."""
    unit = unit_of(module)
    bad: list[str] = []
    for name in sorted(imports_of(module, source, known)):
        top = name.split(".")[0]
        if top in NEVER_IMPORTED:
            bad.append(f"{module} imports {name} ({top}/ is never imported)")
        elif top in PACKAGES:
            target = unit_of(name)
            if target != unit and target not in ALLOWED[unit]:
                bad.append(f"{module} ({unit}) imports {name} ({target})")
        elif top in FORBIDDEN_EXTERNAL.get(unit, ()):
            bad.append(f"{module} ({unit}) imports {top}")
    return bad


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing
    itself (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1 or node in graph.get(node, ()):
                    cycles.append(sorted(comp))
    return cycles


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = package_modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_table(module):
    assert violations(module, MODULES[module].read_text(), MODULES) == []


def test_no_import_cycle_between_modules():
    graph = {
        m: {i for i in imports_of(m, p.read_text(), MODULES) if i in MODULES and i != m}
        for m, p in MODULES.items()
    }
    assert find_cycles(graph) == []


def test_every_unit_of_the_table_exists():
    for unit in ALLOWED:
        assert unit in MODULES, f"import table names {unit}, which is no module or package"


def test_nothing_imports_tests_or_benchmarks():
    for path in sorted(ROOT.glob("benchmarks/*.py")):
        assert not {i for i in imports_of(module_name(path), path.read_text()) if i.startswith("tests")}


def test_every_module_says_what_it_owns():
    for path in MODULES.values():
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, f"{path.relative_to(ROOT)} has no module docstring"


def test_no_source_file_over_400_lines():
    sources = [*MODULES.values(), *ROOT.glob("tests/*.py"), *ROOT.glob("benchmarks/*.py")]
    long = {
        str(p.relative_to(ROOT)): n for p in sources if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


# The rules fail when broken: synthetic modules against the same table.
@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("verifier.check.fake", "from jit.machine import Machine"),
        ("verifier.isa.fake", "from verifier.program import Program"),
        ("verifier.isa.fake", "def f():\n    from verifier.check.state import scalar\n"),
        ("verifier.protos.fake", "import verifier.asm.disasm"),
        ("verifier.rewrite.fake", "from verifier.check.state import scalar"),
        ("verifier.load.fake", "import unicorn"),
        ("jit.x86.fake", "from jit.lower_ctx import LowerCtx"),
        ("jit.interp.fake", "from jit.machine import Machine"),
        ("jit.fake", "from unwind.result import RunResult"),
        ("unwind.kernel.fake", "from unwind.unwinder import bpf_throw"),
        ("unwind.fake", "from unwind.cli.pipeline import Pipeline"),
        ("unwind.live.fake", "from unwind.kernel.ledger import Ledger"),
        ("unwind.fake", "from unwind.live.load import kernel_load"),
        ("unwind.cli.fake", "from tests.unwind_harness import run"),
        ("verifier.check.fake", "from ..rewrite.patch import Patcher"),
    ],
)
def test_a_forbidden_import_is_caught(module, source):
    assert violations(module, source, MODULES)


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("verifier.check.fake", "from verifier.check.state import scalar\nfrom verifier.asm import disasm"),
        ("jit.fake", "from jit.x86 import encode\nfrom verifier.rewrite.regusage import detect_reg_usage"),
        ("unwind.cli.fake", "from unwind.unwinder import bpf_throw\nfrom jit.machine import Machine"),
    ],
)
def test_an_allowed_import_passes(module, source):
    assert violations(module, source, MODULES) == []


def test_a_cycle_is_caught():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
