"""The adversarial property (tests/soundness_programs.py draws the programs): every program
the verifier accepts releases every object exactly once and touches nothing else, on both
engines, and the engines agree.

For each drawn program: the verifier either rejects it with a one-line VerifierError (any
other exception fails), or both the JIT in Unicorn (`Pipeline.run`) and the reference
interpreter (`run_interp`) run it without a fault, and on each: nothing leaked, nothing
freed twice, nothing freed that was never allocated (a bad free), the return value is 0 or
the cookie of a throw; and the two agree on return value, throw, cookie, frames unwound,
what each frame released and the whole ledger.

CI runs a fixed, derandomized set (SOUNDNESS_EXAMPLES, default 300, about 4 s);
`SOUNDNESS_EXAMPLES=100000` runs a large search, `SOUNDNESS_SEED=n` picks its seed, and
`SOUNDNESS_STATS=file` appends a JSON line of counts when the module finishes
(snapshots in file.<pid> while it runs)."""

from __future__ import annotations

import atexit
import json
import os
import re
from collections import Counter

from hypothesis import HealthCheck, event, given, seed, settings

from tests.soundness_programs import Prog, progs, render
from unwind.cli import pipeline
from unwind.interp_kernel import run_interp
from unwind.result import RunResult
from verifier.errors import BpfUnwindError, VerifierError

EXAMPLES = int(os.environ.get("SOUNDNESS_EXAMPLES", "300"))
SEED = os.environ.get("SOUNDNESS_SEED")
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=SEED is None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
STATS: Counter[str] = Counter()


def _dump_stats(final: bool = True) -> None:
    """Append the counts to SOUNDNESS_STATS at the end; every 1000 programs a snapshot goes
    to SOUNDNESS_STATS.<pid> (a long run can be read while it runs)."""
    path = os.environ.get("SOUNDNESS_STATS")
    if not path or not STATS:
        return
    line = json.dumps({"seed": SEED, "final": final, **STATS}) + "\n"
    with open(path if final else f"{path}.{os.getpid()}", "a" if final else "w") as fh:
        fh.write(line)


atexit.register(_dump_stats)


def fates(result: RunResult) -> list[tuple]:
    return [(o.id, o.address, o.size, o.type_name, o.alloc_pc, o.freed_by) for o in result.ledger.objects]


def releases(result: RunResult) -> list[tuple]:
    """Per frame, what its descriptor released. The value an entry that releases nothing
    read (a poison slot, a NULL) is left out: stack addresses and the stale contents of
    memory below a frame differ between the engines by design."""
    return [(f.subprog, f.kind, f.desc_pc,
             Counter((r.where, r.off, r.type, r.value if r.resource_id else None, r.resource_id)
                     for r in f.released)) for f in result.frames]


def run_engine(built: pipeline.Pipeline, prog: Prog, engine: str, text: str) -> RunResult:
    try:
        if engine == "jit":
            return built.run(prog.ctx())
        return run_interp(built.verified, ctx=prog.ctx())
    except BpfUnwindError as err:  # a fault, a kernel-model error, an unwind error
        STATS["faults"] += 1
        raise AssertionError(f"[{engine}] accepted program failed at run time: {err}\n{text}") from None


def check_ledger(result: RunResult, engine: str, text: str) -> None:
    led = result.ledger
    STATS["leaks"] += len(led.leaked())
    STATS["double_frees"] += len(led.freed_twice)
    STATS["bad_frees"] += len(led.bad_freed)
    where = f"[{engine}]\n{text}"
    assert not led.leaked(), (f"leaked {led.leaked()}", where)
    assert not led.freed_twice, (f"double free {led.double_free_records}", where)
    assert not led.bad_freed, (f"bad free {led.double_free_records}", where)
    assert all(o.freed_by in ("bpf_obj_drop", "unwind") for o in led.objects), where
    if result.threw:
        assert result.retval == result.cookie, where
    else:
        assert result.retval == 0 and result.frames == [], where


def check_prog(prog: Prog) -> None:
    text = render(prog)
    STATS["programs"] += 1
    if STATS["programs"] % 1000 == 0:
        _dump_stats(final=False)
    try:
        built = pipeline.build_text(text, "soundness.s", log_level=0)
    except VerifierError as err:
        msg = str(err)
        assert msg and "\n" not in msg and "internal error" not in msg, (msg, text)
        STATS["rejected"] += 1
        event(f"rejected: {re.sub(r'[0-9]+', 'N', msg)[:80]}")
        return
    STATS["accepted"] += 1
    jit = run_engine(built, prog, "jit", text)
    interp = run_engine(built, prog, "interp", text)
    STATS["threw"] += jit.threw
    STATS["released_by_unwind"] += jit.ledger.summary()["released_by_unwind"]
    event(f"accepted: {'threw' if jit.threw else 'returned'}, {len(prog.frames)} frames, "
          f"{'some' if jit.ledger.objects else 'no'} objects")
    for result, engine in ((jit, "jit"), (interp, "interp")):
        check_ledger(result, engine, text)
    agree = ((jit.retval, jit.threw, jit.cookie) == (interp.retval, interp.threw, interp.cookie)
             and releases(jit) == releases(interp) and fates(jit) == fates(interp)
             and jit.ledger.summary() == interp.ledger.summary())
    if not agree:
        STATS["disagreements"] += 1
    assert agree, ("engines disagree", releases(jit), releases(interp), fates(jit), fates(interp), text)


_test = given(progs())(check_prog)
if SEED is not None:
    _test = seed(int(SEED))(_test)
test_accepted_programs_touch_only_what_they_hold = SETTINGS(_test)
