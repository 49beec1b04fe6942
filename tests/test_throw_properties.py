"""Generative property test of the project's central claim: every program the verifier
accepts releases every object exactly once, whether it throws or returns, and the two
engines (the JIT in Unicorn, `Pipeline.run`, and the reference interpreter, `run_interp`)
agree on everything observable.

Hypothesis draws a `Spec` from a small grammar and `render` turns it into text assembly:

- a call chain main -> f1 -> ... -> fk (k in 0..6), each callee static or `.global`, a frame
  sometimes calling the next one twice (before and after its early drops); main sometimes
  has a custom `.exception_callback` (cookie + c, the same through R6 and its own stack,
  or a constant c);
- an optional value passed down the chain in R1 and kept by every frame in a "carrier"
  location (R6-R9 or a stack slot): `ctx->len` read in main (a scalar), or the ctx
  pointer itself (globals get only scalars and the ctx, never object pointers);
- per frame 0..4 objects of 8, 16 or 24 bytes (`bpf_obj_new_impl`, NULL-checked with a
  C-style `goto` to the cleanup chain), each parked in one or two locations among R6-R9
  and fp-8*n (n 1..8), a location sometimes holding a derived pointer (obj + 8, objects of
  16 bytes or more); an object is sometimes dropped before the call/throw (its locations
  then nulled, or left stale), sometimes parked in one of two locations depending on the
  carried value ("split", the other one zeroed first), two objects sometimes trade their
  locations depending on it ("swap"); a static callee sometimes receives one of its
  caller's objects in R2 and keeps it too ("borrow": one object, several frames); unused
  locations sometimes hold scalars, some equal to heap addresses ("junk");
- deliberate flaws, drawn for one program in five: an object never parked ("lost"), a split
  whose other location is not zeroed, a swap of two different struct types;
- the innermost frame (or, sometimes, a frame above it, once its calls returned) throws a
  cookie always, never, or when the carried `ctx->len` is at most a threshold; the normal
  path then drops what each frame still holds, through the cleanup chain (NULL-checked
  drops of nulled, split objects) or an epilogue of its own when stale copies are left.

Properties:
1. a program without a deliberate flaw is accepted; one with flaws is rejected with one of
   the messages those flaws legitimately cause (any other rejection, or any exception
   other than VerifierError, fails);
2. on both engines: no leak, no double free, every object released exactly once, by
   `bpf_obj_drop` or by the unwinder; threw / cookie / return value as the spec predicts;
   the objects released by unwind are exactly the ones the spec says are live at the throw,
   frame by frame;
3. the engines agree on return value, throw, cookie, per-frame released ids and the ledger.

CI runs a fixed, derandomized set of examples; THROW_PROPERTY_EXAMPLES=2000 runs a deeper
search."""

from __future__ import annotations

import os
import re
from collections import Counter

from hypothesis import HealthCheck, event, given, settings

from tests.throw_programs import U64, Spec, specs
from tests.throw_render import render
from unwind.cli import pipeline
from unwind.interp_kernel import run_interp
from unwind.result import RunResult
from verifier.errors import VerifierError

EXAMPLES = int(os.environ.get("THROW_PROPERTY_EXAMPLES", "150"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- the properties ---------------------------------------------------------------------------


def released_ids(result: RunResult) -> dict[str, list[int]]:
    return {f.subprog: sorted(r.resource_id for r in f.released if r.resource_id is not None)
            for f in result.frames}


def fates(result: RunResult) -> list[tuple]:
    return [(o.id, o.address, o.size, o.type_name, o.alloc_pc, o.freed_by) for o in result.ledger.objects]


def check_run(spec: Spec, result: RunResult, engine: str) -> None:
    where = f"[{engine}]"
    ledger = result.ledger
    summary = ledger.summary()
    assert summary["allocated"] == spec.allocated(), where
    assert summary["leaked"] == 0 and not ledger.leaked(), (where, ledger.leaked())
    assert summary["double_freed"] == 0 and not ledger.double_freed, (where, ledger.double_free_records)
    assert all(o.freed_by in ("bpf_obj_drop", "unwind") for o in ledger.objects), where
    assert result.threw == spec.throws, where
    assert result.cookie == (spec.cookie if spec.throws else None), where
    assert result.retval & U64 == spec.expected_retval(), (where, result.retval, spec.expected_retval())
    by_unwind = sorted(o.id for o in ledger.objects if o.freed_by == "unwind")
    live = spec.live_at_throw()
    if spec.throws:
        assert summary["released_by_unwind"] == sum(len(v) for v in live.values()), where
        got = released_ids(result)
        for name, ids in live.items():
            assert got.get(name, []) == ids, (where, name, got)
        assert sorted(i for ids in got.values() for i in ids) == by_unwind, where
        assert [f.subprog for f in result.frames if not f.subprog.startswith("__")] == [
            f.name for f in reversed(spec.frames[: spec.throw_frame + 1])], where
    else:
        assert by_unwind == [] and result.frames == [], where


def check_spec(spec: Spec) -> None:
    text = render(spec)
    try:
        built = pipeline.build_text(text, "generated.s")
    except VerifierError as err:
        reasons = spec.reasons
        assert reasons, f"a program without flaws was rejected: {err}\n{text}"
        assert any(re.fullmatch(r, str(err)) for r in reasons), (
            f"rejected for {str(err)!r}, not one of {reasons} ({spec.flaws})\n{text}")
        event(f"rejected: {re.sub(r'[0-9]+', 'N', str(err))}")
        return
    assert not spec.flaws, f"accepted a program with flaws {spec.flaws}\n{text}"
    objs = sum(len(f.objs) for f in spec.frames)
    event(f"accepted: {'throws' if spec.throws else 'returns'}, depth {len(spec.frames) - 1}, "
          f"{'some' if objs else 'no'} objects")
    for what in ("borrow", "twice"):
        if any(getattr(f, what) for f in spec.frames):
            event(f"accepted with {what}")
    if any(o.partner is not None for f in spec.frames for o in f.objs):
        event("accepted with swap")
    ctx = spec.ctx()
    jit = built.run(ctx)
    interp = run_interp(built.verified, ctx=ctx)
    for result, engine in ((jit, "jit"), (interp, "interp")):
        check_run(spec, result, engine)
    assert (interp.retval, interp.threw, interp.cookie) == (jit.retval, jit.threw, jit.cookie)
    assert [(f.subprog, f.index, f.kind, f.desc_pc) for f in interp.frames] == [
        (f.subprog, f.index, f.kind, f.desc_pc) for f in jit.frames]
    assert [(f.subprog, Counter(f.released)) for f in interp.frames] == [
        (f.subprog, Counter(f.released)) for f in jit.frames]
    assert interp.ledger.summary() == jit.ledger.summary()
    assert fates(interp) == fates(jit)
    assert interp.ledger.double_freed == jit.ledger.double_freed


@SETTINGS
@given(specs())
def test_accepted_programs_release_every_object_exactly_once(spec: Spec) -> None:
    check_spec(spec)
