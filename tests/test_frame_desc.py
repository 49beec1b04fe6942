"""Frame descriptors (patches 02, 05, 10, 11 of the series): which throws are accepted, the
descriptors they produce (pc, location, type, btf), the merge rules, the `frame_desc:` log
lines, and the deviations that fix the review findings. Data first: program + outcome."""

from __future__ import annotations

import pytest

from tests.verify_helpers import NEW, REG, desc, obj, ok, poison, rejected
from verifier.asm.assembler import assemble
from verifier.check.cfg import setup_subprogs
from verifier.check.env import Env, Rejected
from verifier.check.exceptions import (
    MERGE_FAILED,
    fde_text,
    gen_exception_frame_descs,
    push_exception_frame_desc,
)
from verifier.check.prune import states_equal
from verifier.check.state import RefState, RegState, VerifierState, new_frame
from verifier.check.vlog import VLog
from verifier.program import FdEntry, FdTab
from verifier.regtypes import PTR_TO_CTX, SCALAR_VALUE

# The object's only copy is in R0 at the throw: R0-R5 are cleared by the call, nothing can
# release it (exceptions_cleanup_fail.c: reject_with_reference).
REJECT_WITH_REFERENCE = """.struct foo 8
main:
	r1 = foo ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lout
	r1 = 0
	call bpf_throw
.Lout:
	r0 = 0
	exit
"""


def test_reference_only_in_caller_saved_register_is_rejected():
    err = rejected(REJECT_WITH_REFERENCE)
    assert str(err) == "Unreleased reference id=1 alloc_insn=3"
    assert err.insn_idx == 6
    assert "frame_desc: frame0: Registers:" in err.log


HELD = """.struct foo 8
main:
	r1 = foo ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lout
	{keep}
	r1 = 0
	call bpf_throw
.Lout:
	r0 = 0
	exit
"""


@pytest.mark.parametrize(("keep", "entry"), [
    ("r6 = r0", obj(6)),
    ("r9 = r0", obj(9)),
    ("*(u64 *)(r10 - 8) = r0", obj(-8)),
])
def test_object_in_callee_saved_register_or_stack_is_accepted(keep, entry):
    res = ok(HELD.format(keep=keep))
    d = desc(res, 0, 7)
    assert entry in d.entries()
    assert res.seen_exception
    where = f"regno={entry.off}" if entry.off > 0 else f"off={entry.off}"
    assert f"frame_desc: frame0: insn_idx=7 {where} size=8 ref_obj_id=1 type=ptr_" in res.log


def test_log_of_an_accepted_throw():
    res = ok(HELD.format(keep="r6 = r0"))
    i = res.log.index("7: (85) call bpf_throw#10003")
    assert res.log[i + 1:i + 7] == [
        "frame_desc: frame0: Stack:",
        "frame_desc: frame0: Registers:",
        "frame_desc: frame0: insn_idx=7 regno=6 size=8 ref_obj_id=1 type=ptr_",
        "frame_desc: find_and_merge: cannot find frame descriptor for pc=7, creating new entry",
        "frame_desc: merge: creating new frame desc entry",
        "frame_desc: frame0: insn_idx=7 regno=7 size=8 ref_obj_id=0 type=?",
    ]
    assert desc(res, 0, 7).regs == [obj(6), poison(7), poison(8), poison(9)]


# --- merging ----------------------------------------------------------------------------------

# Two paths reach one throw: the fall-through path (explored first) puts {first} in the
# location, the other path {second}.
TWO_PATHS = """.struct A 8
.struct B 8
main:
	r7 = *(u32 *)(r1 + 0)
	{pre}
	if r7 == 0 goto .Lother
	{first}
	goto .Lthrow
.Lother:
	{second}
.Lthrow:
	r7 = 0
	r1 = 0
	call bpf_throw
	r0 = 0
	exit
.Lout:
	r0 = 0
	exit
"""


def alloc_into(t: str, dst: str) -> str:
    return NEW.format(t=t).strip() + f"\n\tif r0 == 0 goto .Lout\n\t{dst} = r0"


def two_paths(first: str, second: str, pre: str = "r0 = 0") -> str:
    return TWO_PATHS.format(pre=pre, first=first, second=second)


def test_objects_of_two_struct_types_in_one_register_fail_to_merge():
    # reject_slot_with_distinct_ptr, in this model's terms: struct A vs struct B
    err = rejected(two_paths(alloc_into("A", "r6"), alloc_into("B", "r6")))
    assert str(err) == MERGE_FAILED
    lines = err.log.rstrip().splitlines()
    assert lines[-3:] == [
        MERGE_FAILED,
        "frame_desc: old reg fde: regno=6 spill_type=<unknown> type=ptr_A btf= btf_id=1",
        "frame_desc: new reg fde: regno=6 spill_type=<unknown> type=ptr_B btf= btf_id=2",
    ]


def test_objects_of_two_struct_types_in_one_slot_fail_either_order():
    a, b = alloc_into("A", "*(u64 *)(r10 - 8)"), alloc_into("B", "*(u64 *)(r10 - 8)")
    for first, second in ((a, b), (b, a)):
        err = rejected(two_paths(first, second))
        assert str(err) == MERGE_FAILED
        assert "frame_desc: old stack fde: off=-8 spill_type=reg type=" in err.log


def test_uninitialised_register_vs_object_fails_to_merge():
    # reject_slot_with_invalid_vs_ptr: R6 = read of uninitialised fp-16 (an unknown scalar,
    # i.e. havoc -> NOT_INIT poison) on one path, an object on the other.
    err = rejected(two_paths(alloc_into("A", "r6"), "r0 = 0", pre="r6 = *(u64 *)(r10 - 16)"))
    assert str(err) == MERGE_FAILED
    assert err.log.rstrip().splitlines()[-1] == "frame_desc: new reg fde: regno=6 spill_type=<unknown> type=?"


def test_null_on_one_path_object_on_the_other_merges():
    # reject_slot_with_zero_vs_ptr_ok: fp-8 = 0 first, overwritten by an object on one path
    res = ok(two_paths(alloc_into("A", "*(u64 *)(r10 - 8)"), "r0 = 0", pre="*(u64 *)(r10 - 8) = 0"))
    d = res.fdtabs[0].descs[0]
    assert d.stack == [obj(-8, "A", 1)]
    # and in the other order
    res = ok(two_paths("r0 = 0", alloc_into("A", "*(u64 *)(r10 - 8)"), pre="*(u64 *)(r10 - 8) = 0"))
    assert res.fdtabs[0].descs[0].stack == [obj(-8, "A", 1)]


def test_null_register_vs_object_merges():
    res = ok(two_paths(alloc_into("A", "r6"), "r6 = 0"))
    assert res.fdtabs[0].descs[0].regs[0] == obj(6, "A", 1)


def test_lost_reference_is_unreleased():
    # reject_slot_with_zero_vs_ptr: the object in fp-8 is overwritten by 0 on one path
    text = two_paths("*(u64 *)(r10 - 8) = 0", "r0 = 0", pre=alloc_into("A", "*(u64 *)(r10 - 8)"))
    assert str(rejected(text)).startswith("Unreleased reference id=1")


# deviations ------------------------------------------------------------------------------------


def test_deviation_nonzero_scalar_spill_does_not_merge_with_object():
    # v1 skips scalar spills, so 7 on one path and an object on the other merged silently.
    text = two_paths(alloc_into("A", "*(u64 *)(r10 - 8)"), "r0 = 0", pre="r2 = 7\n\t*(u64 *)(r10 - 8) = r2")
    err = rejected(text)
    assert str(err) == MERGE_FAILED
    assert err.log.rstrip().splitlines()[-1] == "frame_desc: new stack fde: off=-8 spill_type=reg type=?"


def test_deviation_partly_zero_slot_is_poison():
    text = two_paths(alloc_into("A", "*(u64 *)(r10 - 8)"), "r0 = 0", pre="*(u32 *)(r10 - 8) = 0")
    assert str(rejected(text)) == MERGE_FAILED
    # as in the kernel's stack model, a second 4-byte store of zero turns the first (a
    # narrow spill of 0) into MISC bytes, so only an 8-byte zero makes the slot NULL
    whole = two_paths(alloc_into("A", "*(u64 *)(r10 - 8)"), "r0 = 0", pre="*(u64 *)(r10 - 8) = 0")
    assert ok(whole).fdtabs[0].descs[0].stack == [obj(-8, "A", 1)]


def test_merge_rules_unit():
    prog = assemble("main:\n\tr0 = 0\n\texit\n")
    env = Env(prog, VLog(1))
    tab = FdTab()
    push_exception_frame_desc(env, tab, 3, obj(6))
    push_exception_frame_desc(env, tab, 3, obj(6))
    push_exception_frame_desc(env, tab, 3, FdEntry(SCALAR_VALUE, REG, 7))
    push_exception_frame_desc(env, tab, 3, obj(7))  # a scalar entry is upgraded
    push_exception_frame_desc(env, tab, 3, FdEntry(SCALAR_VALUE, REG, 7))  # and kept
    assert env.log.lines == [
        "frame_desc: find_and_merge: cannot find frame descriptor for pc=3, creating new entry",
        "frame_desc: merge: creating new frame desc entry",
        "frame_desc: merge: no merging needed of new frame desc entry into old",
        "frame_desc: merge: creating new frame desc entry",
        "frame_desc: merge: merging new frame desc entry into old",
    ]
    assert tab.descs[0].regs[:2] == [obj(6), obj(7)]
    with pytest.raises(Rejected):
        push_exception_frame_desc(env, tab, 3, poison(6))
    expected = "frame_desc: old stack fde: off=-16 spill_type=reg type=foo btf= btf_id=1"
    assert fde_text(obj(-16), "old ") == expected


def test_cleanup_dry_run_rejects_resources_without_destructor():
    prog = assemble("main:\n\tr0 = 0\n\texit\n")
    env = Env(prog, VLog(1))
    setup_subprogs(env)
    state = VerifierState([new_frame(0, 0, -1)], [RefState(5, 0)])
    state.cur.regs[6] = RegState(PTR_TO_CTX, ref_obj_id=5)  # a referenced pointer with no dtor
    with pytest.raises(Rejected) as info:
        gen_exception_frame_descs(env, state, 0)
    assert info.value.msg == "frame_desc: frame0: failed to simulate cleanup for frame desc entry"


# --- global subprogs (patches 01-03) -----------------------------------------------------------

GLOBAL = """.global gsub
.struct foo 8
main:
	r6 = r1
	r1 = foo ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lout
	{keep}
	r1 = *(u32 *)(r6 + 16)
	if r1 == 0 goto .Ldrop
	r1 = r6
	call gsub
.Ldrop:
	{back}
	call bpf_obj_drop_impl
.Lout:
	r0 = 0
	exit
gsub:
	r0 = *(u32 *)(r1 + 0)
	if r0 == 0 goto .Lret
	r1 = 1
	call bpf_throw
.Lret:
	r0 = 0
	exit
"""


def test_throwing_global_subprog_gets_an_exception_path():
    # reject_exception_throw_ref_call_throwing_global, __success after patch 11
    res = ok(GLOBAL.format(keep="r7 = r0", back="r1 = r7"))
    assert "Func#1 ('gsub') is global and assumed valid." in res.log
    assert "Func#1 ('gsub') may throw exception, exploring program path where exception is thrown" in res.log
    assert [sp.is_throw_reachable for sp in res.subprogs] == [True, True]
    # the caller's descriptor is keyed at the call insn; R6 holds the ctx: a poison entry
    # (the series gives no entry, which would merge with an object of another path)
    assert desc(res, 0, 10).regs == [poison(6), obj(7), poison(8), poison(9)]
    # gsub verified on its own is frame 0 of its throw
    assert desc(res, 1, 18).regs == [poison(6), poison(7), poison(8), poison(9)]


def test_throwing_global_subprog_reference_on_stack():
    res = ok(GLOBAL.format(keep="*(u64 *)(r10 - 8) = r0", back="r1 = *(u64 *)(r10 - 8)"))
    assert desc(res, 0, 10).stack == [obj(-8)]


PRUNE_AT_CALL = """.global gsub
main:
	r6 = r1
	r2 = *(u32 *)(r6 + 0)
	if r2 == 0 goto .La
	r2 = 0
.La:
	r3 = *(u32 *)(r6 + 4)
	if r3 == 0 goto .Lb
	r3 = 0
.Lb:
	r1 = r6
	r4 = 0
	r5 = 0
	r0 = 0
	call gsub
	r0 = 0
	exit
gsub:
	r1 = 1
	call bpf_throw
	r0 = 0
	exit
"""


def test_pruning_never_drops_the_exception_branch():
    # The first path stores a checkpoint at the call (insn 11) and pushes the exception
    # branch, which is popped at that same insn with an equal state: without patch 02's rule
    # it would be pruned (or taken for an infinite loop).
    res = ok(PRUNE_AT_CALL, level=2)
    assert "from 10 to 11: R0=0 R1=ctx() R2=0 R3=0 R4=0 R5=0 R6=ctx() R10=fp0" in res.log
    may_throw = [i for i, line in enumerate(res.log) if "may throw exception" in line]
    assert len(may_throw) == 1
    # level 2: "from 10 to 11: <state>", "11: <state>", the call insn, "Func#..." lines
    assert res.log[may_throw[0] - 4] == "from 10 to 11: R0=0 R1=ctx() R2=0 R3=0 R4=0 R5=0 R6=ctx() R10=fp0"
    # the other three paths are pruned at insn 7, the join before the call (a branch target:
    # a prune point of Linux 6.18), so their exception path is the explored one
    assert sum(line.endswith("7: safe") for line in res.log) == 3
    assert [d.pc for d in res.fdtabs[0].descs] == [11]


def test_flagged_state_is_never_equal():
    a = VerifierState([new_frame(0, 0, -1)])
    b = a.copy()
    assert states_equal(a, b)
    b.global_subprog_call_exception = True
    assert not states_equal(a, b) and not states_equal(b, a)


# Three paths meet before a throw with R7 = 0 (NULL), an object, or 5. The descriptor merges
# NULL with the object; the path with 5 must not be pruned against the NULL one (an
# imprecise R7 would cover it, and the unwinder would free 5): descriptor generation relies
# on R6-R9, so they are precise and that path reaches the throw, where 5 cannot merge.
PRECISE_AT_THROW = """.struct A 8
main:
	r6 = *(u32 *)(r1 + 0)
	r9 = 1
	r9 += 1
	r9 += 1
	r9 += 1
	if r6 > 10 goto .Lnotsmall
	r7 = 0
	goto .Ljoin
.Lnotsmall:
	if r6 > 20 goto .Lfive
	r1 = A ll
	r2 = 0
	call bpf_obj_new_impl
	if r0 == 0 goto .Lout
	r7 = r0
	goto .Ljoin
.Lfive:
	r7 = 5
.Ljoin:
	r8 = 0
	r8 += 1
	r8 += 1
	r8 += 1
	r1 = 1
	call bpf_throw
	r0 = 0
	exit
.Lout:
	r0 = 0
	exit
"""


def test_a_throw_makes_its_registers_precise(monkeypatch: pytest.MonkeyPatch) -> None:
    import verifier.check.precision as precision

    assert str(rejected(PRECISE_AT_THROW)) == MERGE_FAILED
    monkeypatch.setattr(precision, "mark_chain_precision", lambda env, state, bt: None)
    ok(PRECISE_AT_THROW)  # without precision the path with 5 is pruned: unsound
