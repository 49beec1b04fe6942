"""Issue 14, classes 1, 2 and 5: a location that holds an object on one path and anything
not provably NULL on another must not merge into one frame-descriptor entry. Each program
below was accepted before the fix and then freed something it should not have on one of
the engines (a stale pointer: double free; a scalar that looks like a heap address, the
ctx: bad free; a canary left by a callee's prologue on the JIT only: engines disagree).

Data first: the program, then the verdict. The sound neighbours (the slot or register
NULLed on the path that does not allocate) are accepted and run clean on both engines."""

from __future__ import annotations

import pytest

from jit.layout import HEAP_BASE
from tests.verify_helpers import obj, poison, rejected
from unwind.cli import pipeline
from unwind.interp_kernel import run_interp
from verifier.check.exceptions import MERGE_FAILED

ALLOC = "\tr1 = foo ll\n\tr2 = 0\n\tcall bpf_obj_new_impl\n\tif r0 == 0 goto .Lout\n"

# Class 1: s1 spills an object to its fp-16 and drops it; s2 runs later in the same stack
# memory and writes fp-16 with a new object on one path only (ctx->len == 0; the default
# ctx has len 74, so at run time the other path is taken and fp-16 still holds s1's
# pointer). `{s1}` is what s1 leaves in the slot.
STALE_SLOT = """.struct foo 8
main:
	r6 = r1
	call s1
	r1 = r6
	call s2
	r0 = 0
	exit
s1:
{s1}	r0 = 0
	exit
s2:
	r6 = *(u32 *)(r1 + 0)
{pre}	if r6 != 0 goto .Lthrow
""" + ALLOC + """	*(u64 *)(r10 - 16) = r0
.Lthrow:
	r1 = 1
	call bpf_throw
	r0 = 0
	exit
.Lout:
	r0 = 0
	exit
"""
S1_FREED_OBJECT = ALLOC.replace(".Lout", ".Ldone") + ("\t*(u64 *)(r10 - 16) = r0\n\tr1 = r0\n"
                                                      "\tcall bpf_obj_drop_impl\n.Ldone:\n")
S1_HEAP_LOOKALIKE = f"\tr1 = {HEAP_BASE:#x} ll\n\t*(u64 *)(r10 - 16) = r1\n"
# Class 5: s1 holds nothing, but using R6-R9 makes its prologue push them: on the JIT the
# memory below s2's frame pointer holds those pushes (the host's canaries), on the
# interpreter zeroes.
S1_PUSHES = "\tr6 = 1\n\tr7 = 2\n\tr8 = 3\n\tr9 = 4\n"

# Classes 2 and 5: one location holds a non-referenced pointer on the path taken at run
# time (len != 0) and an object on the other; both meet at one throw.
TWO_KINDS = """.struct foo 8
main:
	r7 = *(u32 *)(r1 + 0)
	{other}
	if r7 != 0 goto .Lthrow
""" + ALLOC + """	{keep}
.Lthrow:
	r7 = 0
	r1 = 1
	call bpf_throw
	r0 = 0
	exit
.Lout:
	r0 = 0
	exit
"""

# Class 5 in a caller frame: main reaches one call of a throwing static subprog with R6 the
# ctx on one path and an object on the other; main's descriptor is keyed at the call.
CALLER_FRAME = """.struct foo 8
main:
	r7 = *(u32 *)(r1 + 0)
	r6 = r1
	r8 = 1
	if r7 != 0 goto .Lcall
""" + ALLOC + """	r6 = r0
	r8 = 0
.Lcall:
	r7 = 0
	r1 = 0
	call thrower
	if r8 != 0 goto .Lout
	r1 = r6
	call bpf_obj_drop_impl
	r0 = 0
	exit
.Lout:
	r0 = 0
	exit
thrower:
	r1 = 1
	call bpf_throw
	r0 = 0
	exit
"""

# ... and at a global call's exception path (patch 02): the same shape, `thrower` global.
GLOBAL_CALLER = ".global thrower\n" + CALLER_FRAME

REJECTED = {
    # class 1: a stale object pointer of s1 (double free at run time before the fix)
    "stale_object_slot": STALE_SLOT.format(s1=S1_FREED_OBJECT, pre=""),
    # class 1: a scalar equal to the first heap address (bad free)
    "stale_heap_lookalike_slot": STALE_SLOT.format(s1=S1_HEAP_LOOKALIKE, pre=""),
    # class 5: a slot beyond the non-allocating path's stack depth (JIT frees a canary)
    "slot_beyond_stack_depth": STALE_SLOT.format(s1=S1_PUSHES, pre=""),
    # class 2: R6 = ctx vs object (the unwinder freed the ctx)
    "ctx_vs_object_register": TWO_KINDS.format(other="r6 = r1", keep="r6 = r0"),
    # class 5: the same in a stack slot, and a stack pointer instead of the ctx
    "ctx_vs_object_slot": TWO_KINDS.format(other="*(u64 *)(r10 - 8) = r1", keep="*(u64 *)(r10 - 8) = r0"),
    "stack_ptr_vs_object_register": TWO_KINDS.format(other="r6 = r10\n\tr6 += -8", keep="r6 = r0"),
    "caller_frame_ctx_vs_object": CALLER_FRAME,
    "global_call_ctx_vs_object": GLOBAL_CALLER,
}


@pytest.mark.parametrize("name", REJECTED)
def test_object_vs_anything_not_null_does_not_merge(name):
    err = rejected(REJECTED[name])
    assert str(err) == MERGE_FAILED
    old, new = err.log.rstrip().splitlines()[-2:]
    # one side is the object, the other the NOT_INIT poison (`type=?`), in either order
    assert {old.split(" fde: ")[0], new.split(" fde: ")[0]} <= {
        "frame_desc: old stack", "frame_desc: new stack", "frame_desc: old reg", "frame_desc: new reg"}
    assert sorted([old.endswith("type=?"), new.endswith("type=?")]) == [False, True], (old, new)


def test_the_stale_slot_is_poison_beyond_the_depth_of_the_path_that_never_wrote_it():
    err = rejected(REJECTED["stale_object_slot"])
    assert "frame_desc: frame1: insn_idx=25 off=-16 beyond the stack depth of this path: NOT_INIT" in err.log
    assert err.log.rstrip().splitlines()[-2:] == [
        "frame_desc: old stack fde: off=-16 spill_type=reg type=foo btf= btf_id=1",
        "frame_desc: new stack fde: off=-16 spill_type=reg type=?",
    ]


# The sound neighbours: the location is NULL on the path that does not allocate.
ACCEPTED = {
    "stale_slot_nulled_first": STALE_SLOT.format(s1=S1_FREED_OBJECT, pre="\t*(u64 *)(r10 - 16) = 0\n"),
    "pushes_below_nulled_slot": STALE_SLOT.format(s1=S1_PUSHES, pre="\tr2 = 0\n\t*(u64 *)(r10 - 16) = r2\n"),
    "null_vs_object_register": TWO_KINDS.format(other="r6 = 0", keep="r6 = r0"),
    "null_vs_object_slot": TWO_KINDS.format(other="*(u64 *)(r10 - 8) = 0", keep="*(u64 *)(r10 - 8) = r0"),
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_null_vs_object_merges_and_runs_clean_on_both_engines(name):
    built = pipeline.build_text(ACCEPTED[name], f"{name}.s", log_level=0)
    for ctx_len in (0, 74):  # both paths at run time
        ctx = bytearray(192)
        ctx[0] = ctx_len
        jit, interp = built.run(bytes(ctx)), run_interp(built.verified, ctx=bytes(ctx))
        for res in (jit, interp):
            s = res.ledger.summary()
            assert res.threw and res.cookie == 1
            assert (s["leaked"], s["double_freed"], s["bad_freed"]) == (0, 0, 0), (name, ctx_len, s)
            assert s["released_by_unwind"] == (1 if ctx_len == 0 else 0)
        assert jit.ledger.summary() == interp.ledger.summary()


def test_a_non_referenced_pointer_is_a_poison_entry_not_a_missing_one():
    res = pipeline.verify(pipeline.load_text("main:\n\tr6 = r1\n\tr1 = 1\n\tcall bpf_throw\n"
                                             "\tr0 = 0\n\texit\n", "t.s"))
    (d,) = res.fdtabs[0].descs
    assert d.regs == [poison(6), poison(7), poison(8), poison(9)]
    res = pipeline.verify(pipeline.load_text(ACCEPTED["null_vs_object_register"], "t.s"))
    (d,) = res.fdtabs[0].descs
    assert d.regs[0] == obj(6)
