"""Frame descriptors across nested frames: the series' four-frame example, references held by
callers released at their call sites, the deviations for resources held twice and nested
throws, global chains checked in isolation, and derived pointers at one location."""

from __future__ import annotations

import pytest

from tests.verify_helpers import NEW, desc, obj, ok, poison, rejected
from verifier.asm.assembler import assemble
from verifier.check.checker import check
from verifier.check.exceptions import (
    MERGE_FAILED,
)
from verifier.errors import VerifierError

# --- nested frames -------------------------------------------------------------------------------

FOUR_FRAMES = """.struct obj 8

main:
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lmain_out
	r6 = r0
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lmain_free6
	r7 = r0
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lmain_free7
	r8 = r0
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lmain_free8
	r9 = r0
	call s1
	r1 = r9
	call bpf_obj_drop_impl
.Lmain_free8:
	r1 = r8
	call bpf_obj_drop_impl
.Lmain_free7:
	r1 = r7
	call bpf_obj_drop_impl
.Lmain_free6:
	r1 = r6
	call bpf_obj_drop_impl
.Lmain_out:
	r0 = 0
	exit

s1:
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Ls1_none
	r6 = r0
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Ls1_free6
	r7 = r0
	call s2
	r1 = r7
	call bpf_obj_drop_impl
.Ls1_free6:
	r1 = r6
	call bpf_obj_drop_impl
.Ls1_none:
	r0 = 0
	exit

s2:
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Ls2_none
	r8 = r0
	r1 = obj ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Ls2_free8
	r9 = r0
	r1 = 42
	call bpf_throw
	r1 = r9
	call bpf_obj_drop_impl
.Ls2_free8:
	r1 = r8
	call bpf_obj_drop_impl
.Ls2_none:
	r0 = 0
	exit
"""


def test_four_frame_example():
    # main -> s1 -> s2 -> bpf_throw; s1 holds objects in R6,R7, s2 in R8,R9, main in R6-R9.
    # (tests/e2e/four_frames.s; the NULL paths drop what they hold and return)
    res = ok(FOUR_FRAMES)
    main_call, s1_call, s2_throw = 24, 47, 67
    assert desc(res, 0, main_call).regs == [obj(6, "obj"), obj(7, "obj"), obj(8, "obj"), obj(9, "obj")]
    assert desc(res, 1, s1_call).regs == [obj(6, "obj"), obj(7, "obj"), poison(8), poison(9)]
    assert desc(res, 2, s2_throw).regs == [poison(6), poison(7), obj(8, "obj"), obj(9, "obj")]
    assert [len(t) for t in res.fdtabs] == [1, 1, 1]
    assert "frame_desc: frame1: insn_idx=67 regno=6 size=8 ref_obj_id=5 type=ptr_" in res.log
    assert "frame_desc: find_and_merge: cannot find frame descriptor for pc=24, creating new entry" in res.log


CALLER_HOLDS = """.struct foo 8
main:
	r1 = foo ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lout
	{keep}
	call sub
	{drop}
.Lout:
	r0 = 0
	exit
sub:
	{sub}
	r1 = 0
	call bpf_throw
	r0 = 0
	exit
"""


def test_reference_held_by_caller_is_released_at_callsite():
    res = ok(CALLER_HOLDS.format(keep="r6 = r0", drop="r1 = r6\n\tcall bpf_obj_drop_impl", sub="r0 = 0"))
    assert desc(res, 0, 6).regs[0] == obj(6)
    assert desc(res, 1, 13).regs == [poison(6), poison(7), poison(8), poison(9)]


def test_deviation_resource_held_twice_in_caller_gets_one_entry():
    text = CALLER_HOLDS.format(keep="r6 = r0\n\t*(u64 *)(r10 - 8) = r0",
                               drop="r1 = r6\n\tcall bpf_obj_drop_impl", sub="r0 = 0")
    d = desc(ok(text), 0, 7)
    assert d.stack == [obj(-8)]
    assert d.regs[0] == poison(6)  # the copy in R6 was invalidated by releasing fp-8


def test_deviation_nested_throw_still_checks_leaks():
    # reject_with_subprog_reference: v1 accepts it (no leak check in nested frames).
    text = CALLER_HOLDS.format(keep="r0 = 0", drop="r0 = 0",
                               sub=NEW.format(t="foo").strip() + "\n\tif r0 == 0 goto .Lsub_out\n.Lsub_out:")
    err = rejected(text)
    assert str(err) == "Unreleased reference id=2 alloc_insn=13"


GLOBAL_CHAIN = """.global g1
.global g2
.struct foo 8
main:
	call g1
	exit
g1:
	r1 = foo ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lg1_out
	r8 = r0
	call g2
	r1 = r8
	call bpf_obj_drop_impl
.Lg1_out:
	r0 = 0
	exit
g2:
	r1 = 7
	call bpf_throw
	r0 = 0
	exit
"""


def test_global_calling_throwing_global_is_checked_in_isolation():
    res = ok(GLOBAL_CHAIN)
    assert [sp.is_throw_reachable for sp in res.subprogs] == [True, True, True]
    # main: the exception path of `call g1` holds nothing
    assert desc(res, 0, 0).regs == [poison(6), poison(7), poison(8), poison(9)]
    # g1, frame 0 of its own verification: R8 at its call of g2
    assert desc(res, 1, 8).regs == [poison(6), poison(7), obj(8), poison(9)]
    assert desc(res, 2, 14).regs == [poison(6), poison(7), poison(8), poison(9)]
    assert "Func#2 ('g2') may throw exception, exploring program path where exception is thrown" in res.log


def test_two_offsets_into_one_object_at_one_location_do_not_merge():
    # deviation: one path holds obj, the other obj + 8 in R6 at the same throw; a single
    # entry would release the wrong address on one of them.
    text = (
        ".struct foo 16\nmain:\n\tr7 = *(u32 *)(r1 + 0)\n\tr1 = foo ll\n\tr2 = 0\n"
        "\tcall bpf_obj_new_impl\n\tif r0 == 0 goto .Lout\n\tr6 = r0\n"
        "\tif r7 == 0 goto .Lthrow\n\tr6 += 8\n.Lthrow:\n\tr1 = 0\n\tcall bpf_throw\n"
        "\tr0 = r6\n\texit\n.Lout:\n\tr0 = 0\n\texit\n"
    )
    with pytest.raises(VerifierError, match=MERGE_FAILED):
        check(assemble(text, "t.s"))
