"""The C corpus's recorded outcomes (tests/progs/expected.json) as an active oracle.

Every program of expected.json is loaded from its object and verified at its recorded
log_level. The outcome must be the recorded one: accepted, or rejected with the recorded
message in the log (for an accepted program with a message, that line must be in the log).
Two tables name the exceptions, each with its reason, so that they stay explicit:

- NOT_MODELLED: programs that need a feature this verifier does not model yet (maps,
  helpers, callbacks, iterators, ...). They must stop, at load or verification, with a
  one-line message that names the feature. When a feature lands, the program's outcome
  changes, this test fails, and its entry goes (the table only ever shrinks).
- DEVIATIONS: programs where bpf-unwind deliberately differs from the series (each is a
  row of docs/deviations.md): the outcome must be the one recorded here.

Accepted programs that also run (retval in expected.json) are run by the subset test of
tests/test_progs_corpus.py; this file only checks verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verifier.check.checker import check
from verifier.errors import LoadError, VerifierError
from verifier.load.object import load_object

PROGS = Path(__file__).parent / "progs"
DEVIATIONS_DOC = Path(__file__).parent.parent / "docs" / "deviations.md"
EXPECTED = json.loads((PROGS / "expected.json").read_text())
CASES = [(obj, name) for obj, progs in EXPECTED.items() if not obj.startswith("_") for name in progs]

MAP_UPDATE = "helper call #2 is not supported by bpf-unwind yet"  # bpf_map_update_elem
TAIL_CALL = "helper call #12 is not supported by bpf-unwind yet"  # bpf_tail_call
SPIN_LOCK = "global data holding a bpf_spin_lock (.data.A) is not supported by bpf-unwind"
RINGBUF_RESERVE = "helper call #131 is not supported by bpf-unwind yet"  # bpf_ringbuf_reserve
RINGBUF_DYNPTR = "helper call #198 is not supported by bpf-unwind yet"  # bpf_ringbuf_reserve_dynptr
MAP_LOOKUP = "helper call #1 is not supported by bpf-unwind yet"  # bpf_map_lookup_elem
CALLBACK = "callbacks (ld_imm64 of a function) are not supported by bpf-unwind"
ITER_NEW = "kfunc bpf_iter_num_new#10006 is not supported by bpf-unwind yet"
RCU_LOCK = "kfunc bpf_rcu_read_lock#10009 is not supported by bpf-unwind yet"

# program -> (substring of the one-line error it stops with, what it needs that is not modelled)
NOT_MODELLED: dict[str, tuple[str, str]] = {
    # exceptions.o
    "exception_tail_call": (TAIL_CALL, "prog array map jmp_table and bpf_tail_call"),
    # exceptions_fail.o
    "reject_async_callback_throw": (MAP_LOOKUP, "array map with bpf_timer, timer helpers, async callbacks"),
    "reject_with_lock": (SPIN_LOCK, "global bpf_spin_lock (.data.A), spin lock helpers"),
    "reject_subprog_with_lock": (SPIN_LOCK, "global bpf_spin_lock (.data.A), spin lock helpers"),
    "reject_with_rcu_read_lock": (RCU_LOCK, "RCU read-side critical sections"),
    "reject_subprog_with_rcu_read_lock": (RCU_LOCK, "RCU read-side critical sections"),
    "reject_with_rbtree_add_throw": (SPIN_LOCK, "spin lock, rbtree kfuncs, the `less` callback"),
    "reject_with_cb_reference": (CALLBACK, "bpf_loop and its callback frame"),
    "reject_with_cb": (CALLBACK, "bpf_loop and its callback frame"),
    "reject_exception_throw_cb": (CALLBACK, "bpf_loop and its callback frame"),
    "reject_exception_throw_cb_diff": (CALLBACK, "bpf_loop and its callback frames"),
    # exceptions_cleanup.o
    "exception_cleanup_mark_free": (
        "ctx access of fentry programs (the attach target's BTF-typed arguments) is not supported",
        "fentry ctx typed by kernel BTF, bpf_probe_read_kernel, hash map, .bss",
    ),
    "exceptions_cleanup_check": (CALLBACK, "hash map, bpf_for_each_map_elem callback"),
    "exceptions_cleanup_prog_num_iter": (ITER_NEW, "bpf_iter_num iterators; hash map"),
    "exceptions_cleanup_prog_num_iter_mult": (ITER_NEW, "bpf_iter_num iterators; hash map"),
    "exceptions_cleanup_prog_dynptr_iter": (RINGBUF_DYNPTR, "ringbuf map and dynptrs; iterators; hash map"),
    "exceptions_cleanup_obj": (MAP_UPDATE, "hash map helpers (MARK_RESOURCE)"),
    "exceptions_cleanup_percpu_obj": (
        "kfunc bpf_percpu_obj_new_impl#10004 is not supported by bpf-unwind yet",
        "per-CPU objects; hash map",
    ),
    "exceptions_cleanup_ringbuf": (RINGBUF_RESERVE, "ringbuf map and reserve/discard helpers; hash map"),
    "exceptions_cleanup_reg": (RINGBUF_RESERVE, "ringbuf map and reserve/discard helpers; hash map"),
    "exceptions_cleanup_null_or_ptr_do_ptr": (MAP_UPDATE, "hash map, ringbuf"),
    "exceptions_cleanup_null_or_ptr_do_null": (MAP_UPDATE, "hash map, ringbuf"),
    "exceptions_cleanup_callee_saved": (RINGBUF_RESERVE, "ringbuf reservations in R6-R9; hash map"),
    "exceptions_cleanup_callee_saved_noopt": (MAP_UPDATE, "hash map"),
    "exceptions_cleanup_frame": (RINGBUF_DYNPTR, "ringbuf map, dynptrs"),
    "exceptions_cleanup_dead_code_elim": (RINGBUF_RESERVE, "ringbuf map and reserve/discard helpers"),
    "exceptions_cleanup_frame_dce": (RINGBUF_DYNPTR, "ringbuf map, dynptrs"),
    "reject_slot_with_zero_vs_ptr_ok": (RINGBUF_RESERVE, "ringbuf map and reserve helper"),
    # exceptions_cleanup_fail.o
    "reject_slot_with_distinct_ptr": (RINGBUF_RESERVE, "ringbuf map and reserve helper"),
    "reject_slot_with_distinct_ptr_old": (RINGBUF_RESERVE, "ringbuf map and reserve helper"),
    "reject_slot_with_misc_vs_ptr": (RINGBUF_RESERVE, "ringbuf map and bpf_ringbuf_reserve"),
    "reject_slot_with_misc_vs_ptr_old": (RINGBUF_RESERVE, "ringbuf map and reserve helper; bpf_ktime_get_ns"),
    "reject_slot_with_invalid_vs_ptr": (RINGBUF_RESERVE, "ringbuf map and reserve helper"),
    "reject_slot_with_invalid_vs_ptr_old": (RINGBUF_RESERVE, "ringbuf map and reserve helper"),
    "reject_slot_with_zero_vs_ptr": (RINGBUF_RESERVE, "ringbuf map and reserve helper"),
}  # fmt: skip

# program -> (our verdict, substring of our message or None, the docs/deviations.md row it follows)
DEVIATIONS: dict[str, tuple[str, str | None, str]] = {
    "reject_with_subprog_reference": (
        "rejected",
        "Unreleased reference id=1 alloc_insn=6",
        "exceptional exits from nested frames skip the leak check",
    ),
}


def outcome(obj: str, name: str, log_level: int) -> tuple[str, str, str]:
    """(verdict, message, log) of loading and verifying one program; verdict is
    "accepted", "rejected" (by the verifier) or "load_error"."""
    try:
        prog = load_object(PROGS / obj, only=name).programs[name]
    except LoadError as err:
        return "load_error", str(err), ""
    try:
        result = check(prog, log_level=log_level)
    except VerifierError as err:
        return "rejected", str(err), err.log
    return "accepted", "", "\n".join(result.log)


def mismatch(exp: dict, got: tuple[str, str, str]) -> str | None:
    """Why the outcome `got` is not the recorded `exp` (None when it is)."""
    verdict, msg, log = got
    if verdict != exp["verdict"]:
        return f"recorded {exp['verdict']}, got {verdict}: {msg or 'no error'}"
    if exp.get("msg") and exp["msg"] not in log:
        return f"{verdict} as recorded, but {exp['msg']!r} is not in the log (error: {msg or 'none'})"
    return None


def _log_level(exp: dict) -> int:
    return exp.get("log_level") or 1


@pytest.mark.parametrize("obj, name", CASES, ids=[f"{o}:{n}" for o, n in CASES])
def test_verdict_matches_the_recorded_one(obj, name):
    exp = EXPECTED[obj][name]
    got = outcome(obj, name, _log_level(exp))
    if name in NOT_MODELLED:
        needle, reason = NOT_MODELLED[name]
        verdict, msg, _ = got
        assert verdict != "accepted", f"{name} now verifies: take it out of NOT_MODELLED"
        assert needle in msg and "\n" not in msg, f"{name} ({reason}) stops with {msg!r}, not {needle!r}"
        return
    if name in DEVIATIONS:
        verdict, needle, _row = DEVIATIONS[name]
        exp = {"verdict": verdict, "msg": needle}
    problem = mismatch(exp, got)
    assert problem is None, f"{obj}:{name}: {problem}"


def test_tables_name_corpus_programs_once():
    names = [n for _, n in CASES]
    assert len(names) == len(set(names)), "program names must be unique across the corpus"
    assert set(NOT_MODELLED) <= set(names) and set(DEVIATIONS) <= set(names)
    assert not set(NOT_MODELLED) & set(DEVIATIONS)
    subset = {n for o, n in CASES if EXPECTED[o][n]["in_subset"]}
    assert not subset & (set(NOT_MODELLED) | set(DEVIATIONS)), "subset programs must match as recorded"


def test_deviations_follow_a_documented_row():
    doc = DEVIATIONS_DOC.read_text()
    for name, (verdict, _msg, row) in DEVIATIONS.items():
        assert row in doc, f"{name}: no docs/deviations.md row says {row!r}"
        recorded = next(EXPECTED[o][n]["verdict"] for o, n in CASES if n == name)
        assert verdict != recorded, f"{name}: a deviation must differ from the recorded verdict"


def test_most_of_the_corpus_is_checked_as_recorded():
    checked = [n for _, n in CASES if n not in NOT_MODELLED and n not in DEVIATIONS]
    assert len(checked) >= 55  # of 96; raise the bar as NOT_MODELLED shrinks
    rejected = [n for o, n in CASES if n in checked and EXPECTED[o][n]["verdict"] == "rejected"]
    assert len(rejected) >= 10


def test_a_flipped_verdict_is_a_mismatch():
    got = outcome("exceptions_fail.o", "reject_multiple_exception_cb", 1)
    assert got[0] == "rejected"
    assert mismatch({"verdict": "rejected", "msg": "multiple exception callback tags"}, got) is None
    assert "recorded accepted, got rejected" in mismatch({"verdict": "accepted"}, got)
    assert "is not in the log" in mismatch({"verdict": "rejected", "msg": "Unreleased reference"}, got)
    ok = outcome("basic.o", "basic_throw", 1)
    assert ok[0] == "accepted" and "recorded rejected, got accepted" in mismatch({"verdict": "rejected"}, ok)
