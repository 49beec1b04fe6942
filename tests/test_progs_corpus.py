"""The C corpus under tests/progs: objects are fresh, every program loads as its source
says (expected.json), the skeleton-subset programs verify, JIT and run, and mutated or
truncated objects only ever produce our own errors."""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from pathlib import Path

import pytest

from unwind.cli import objcmd, pipeline
from verifier.errors import DecodeError, LoadError
from verifier.load.object import load_object, load_object_bytes
from verifier.protos import kfuncs
from verifier.protos.kfuncs import KF, ArgKind, KfuncProto, RetKind

PROGS = Path(__file__).parent / "progs"
EXPECTED = json.loads((PROGS / "expected.json").read_text())
CASES = [(obj, name) for obj, progs in EXPECTED.items() if not obj.startswith("_") for name in progs]
SUBSET = [(obj, name) for obj, name in CASES if EXPECTED[obj][name]["in_subset"]]

# Kfuncs the corpus calls beyond the skeleton's table (see the issue 4 report). Until the
# verifier's table has them, the structure tests add placeholders (ids 29001..) for them.
CORPUS_KFUNCS = (
    "bpf_obj_new_impl", "bpf_obj_drop_impl", "bpf_throw", "bpf_percpu_obj_new_impl",
    "bpf_percpu_obj_drop_impl", "bpf_iter_num_new", "bpf_iter_num_next", "bpf_iter_num_destroy",
    "bpf_rcu_read_lock", "bpf_rcu_read_unlock", "bpf_rbtree_add_impl",
)  # fmt: skip


@pytest.fixture
def corpus_kfuncs(monkeypatch):
    for i, name in enumerate(CORPUS_KFUNCS):
        if name not in kfuncs.KFUNCS_BY_NAME:
            monkeypatch.setitem(
                kfuncs.KFUNCS_BY_NAME,
                name,
                KfuncProto(name, 29001 + i, (ArgKind.SCALAR,), RetKind.VOID, KF.NONE),
            )


# ---- freshness: a stale object cannot hide ---------------------------------------------------


def _records() -> dict[str, tuple[str, str]]:
    out = {}
    for line in (PROGS / "objects.sha256").read_text().splitlines():
        obj, inputs, digest = line.split()
        out[obj] = (inputs, digest)
    return out


def input_digest(source: Path) -> str:
    """sha256 of the source followed by every header in include/ in name order (the Makefile's rule)."""
    h = hashlib.sha256(source.read_bytes())
    for header in sorted((PROGS / "include").glob("*.h"), key=lambda p: p.name):
        h.update(header.read_bytes())
    return h.hexdigest()


def test_every_source_has_a_recorded_object():
    sources = sorted(p.stem for p in PROGS.glob("*.c"))
    assert sorted(Path(o).stem for o in _records()) == sources
    assert sorted(p.stem for p in PROGS.glob("*.o")) == sources


@pytest.mark.parametrize("source", sorted(PROGS.glob("*.c")), ids=lambda p: p.name)
def test_object_matches_its_source(source):
    inputs, digest = _records()[source.with_suffix(".o").name]
    assert input_digest(source) == inputs, f"{source.name} or a header changed: run `make -C tests/progs`"
    obj_digest = hashlib.sha256(source.with_suffix(".o").read_bytes()).hexdigest()
    assert obj_digest == digest, f"{source.stem}.o was not built by `make -C tests/progs`"


def test_every_program_of_the_corpus_has_an_expectation(corpus_kfuncs):
    for obj in sorted(PROGS.glob("*.o")):
        assert sorted(load_object(obj).programs) == sorted(EXPECTED[obj.name]), obj.name


# ---- every program loads as the C source says ----------------------------------------------


@pytest.mark.parametrize("obj, name", CASES, ids=[f"{o}:{n}" for o, n in CASES])
def test_program_loads_as_the_source_says(corpus_kfuncs, obj, name):
    exp = EXPECTED[obj][name]
    loaded = load_object(PROGS / obj, only=name)
    prog, info = loaded.programs[name], loaded.infos[name]
    assert info.section == exp["section"]
    assert [f"{f.name}:{f.linkage}" for f in prog.funcs] == exp["funcs"]
    assert prog.funcs[0].start == 0 and [f.start for f in prog.funcs] == sorted(f.start for f in prog.funcs)
    assert sorted(set(info.kfunc_calls.values())) == exp["kfuncs"]
    assert sorted({r.map for r in info.map_refs.values()}) == exp["maps"]
    assert sorted(set(info.func_refs.values())) == exp["callbacks"]
    assert prog.exception_cb == exp["exception_cb"]
    assert sorted(prog.structs) == exp["structs"]
    if exp["exception_cb"]:
        assert exp["exception_cb"] in [f.name for f in prog.funcs]
    for pc in info.kfunc_calls:
        assert prog.insns[pc].is_kfunc_call()
    for pc, insn in enumerate(prog.insns):
        if insn.is_pseudo_call():
            assert prog.func_at(pc + insn.imm + 1) is not None, f"call at {pc} lands inside a function"


def test_multiple_exception_callback_tags_are_all_reported(corpus_kfuncs):
    loaded = load_object(PROGS / "exceptions_fail.o", only="reject_multiple_exception_cb")
    tags = loaded.infos["reject_multiple_exception_cb"].exception_cb_tags
    assert sorted(tags) == ["exception_cb_first", "exception_cb_second"]


def test_programs_calling_kfuncs_the_table_lacks_fail_naming_the_kfunc():
    for obj, name in CASES:
        missing = [k for k in EXPECTED[obj][name]["kfuncs"] if k not in kfuncs.KFUNCS_BY_NAME]
        if not missing:
            assert load_object(PROGS / obj, only=name).programs[name].name == name
            continue
        with pytest.raises(LoadError) as info:
            load_object(PROGS / obj, only=name)
        msg = str(info.value)
        assert msg.startswith(f"{PROGS / obj}: program '{name}': unknown kfunc '")
        assert re.search(r"unknown kfunc '(\w+)'", msg).group(1) in missing


# ---- the skeleton's subset verifies, JITs and runs from objects ------------------------------


@pytest.mark.parametrize("obj, name", SUBSET, ids=[f"{o}:{n}" for o, n in SUBSET])
def test_subset_program_runs_with_expected_result(obj, name):
    exp = EXPECTED[obj][name]
    prog = objcmd.load_program(str(PROGS / obj), name)
    result = pipeline.build(prog, log_level=exp.get("log_level", 1)).run()
    assert result.retval == exp["retval"]
    assert result.released_count == exp["released"]
    assert not result.ledger.leaked() and not result.ledger.double_freed
    if exp.get("msg"):
        assert exp["msg"] in pipeline.verify(prog, log_level=exp.get("log_level", 1)).log


def test_subset_covers_the_issue_scope():
    kinds = {k for o, n in SUBSET for k in EXPECTED[o][n]["kfuncs"]}
    assert {"bpf_obj_new_impl", "bpf_obj_drop_impl", "bpf_throw"} <= kinds
    linkages = {f.split(":")[1] for o, n in SUBSET for f in EXPECTED[o][n]["funcs"][1:]}
    assert linkages == {"static", "global"}
    assert any(EXPECTED[o][n]["exception_cb"] for o, n in SUBSET)


# ---- fuzz: mutated and truncated objects only raise our errors -------------------------------


def _try_load(data: bytes) -> None:
    try:
        load_object_bytes(data, "fuzz.o")
    except (LoadError, DecodeError) as err:
        assert str(err).startswith("fuzz.o") and "\n" not in str(err)


@pytest.mark.parametrize("obj", ["basic.o", "exceptions_cleanup_fail.o", "exceptions_fail.o"])
def test_fuzz_mutated_and_truncated_objects(corpus_kfuncs, obj):
    data = (PROGS / obj).read_bytes()
    rng = random.Random(obj)
    start = time.monotonic()
    for cut in range(0, len(data), max(1, len(data) // 97)):
        _try_load(data[:cut])
    for _ in range(400):
        buf = bytearray(data)
        for _ in range(rng.choice((1, 1, 2, 4, 16))):
            pos = rng.randrange(len(buf))
            buf[pos] = rng.choice((0, 0xFF, rng.randrange(256), buf[pos] ^ (1 << rng.randrange(8))))
        _try_load(bytes(buf))
    # Header and section-header fields are where counts and offsets live: hit them harder.
    shoff = int.from_bytes(data[0x28:0x30], "little")
    for _ in range(300):
        buf = bytearray(data)
        pos = rng.choice((rng.randrange(64), shoff + rng.randrange(len(data) - shoff)))
        buf[pos : pos + 4] = rng.randbytes(4)
        _try_load(bytes(buf[: len(data)]))
    assert time.monotonic() - start < 60
