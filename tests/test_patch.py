"""verifier.rewrite.patch directly: patching with descriptor pcs moved before, at and after the
patched insn, jumps relinked, ranges removed, subprogs appended."""

import pytest

from tests.verify_helpers import flat
from verifier.errors import VerifierError
from verifier.isa.insn import (
    BPF_JEQ,
    call_pseudo,
    exit_insn,
    ja,
    jmp_imm,
    ld_imm64,
    mov64_imm,
    mov64_reg,
)
from verifier.program import (
    FdTab,
    FrameDesc,
    SubprogKind,
)
from verifier.rewrite.patch import (
    Edit,
    PatchState,
    WorkSubprog,
    append_subprog,
    apply_edits,
    patch_edit,
    patch_insn,
    remove_insns,
)

# --- verifier.rewrite.patch directly ---------------------------------------------------------------


def state(insns, starts=(0,), descs=None):
    descs = descs or {}
    subs = [WorkSubprog(f"s{i}", start, "main" if i == 0 else "static",
                        fdtab=FdTab([FrameDesc(pc) for pc in descs.get(i, [])]))
            for i, start in enumerate(starts)]
    return PatchState.build(insns, subs)


def test_patch_moves_descriptors_before_at_and_after():
    insns = [mov64_imm(0, 0), mov64_imm(0, 0), call_pseudo(7), mov64_imm(0, 0), mov64_imm(0, 0),
             call_pseudo(4), mov64_imm(0, 0), mov64_imm(0, 0), call_pseudo(1), exit_insn(), exit_insn()]
    st = state(insns, (0, 10), descs={0: [2, 5, 8]})
    patch_insn(st, 5, [mov64_imm(1, 1), mov64_imm(2, 2), insns[5]], anchor=2)
    assert [d.pc for d in st.subprogs[0].fdtab.descs] == [2, 7, 10]
    assert st.subprogs[1].start == 12
    for pc in (2, 7, 10):  # every call still reaches the second subprog
        assert pc + st.insns[pc].imm + 1 == 12
    assert st.aux[7].orig_idx == 5 and st.aux[5].orig_idx is None and st.aux[8].orig_idx == 6


def test_patch_default_anchor_is_the_kernels_rule():
    st = state([call_pseudo(1), exit_insn(), exit_insn()], (0, 2), descs={0: [0]})
    patch_insn(st, 0, [call_pseudo(1), mov64_imm(0, 0)])
    assert st.subprogs[0].fdtab.descs[0].pc == 0 and st.insns[0] == call_pseudo(2)


def test_patch_other_insns_are_taken_as_given():
    st = state([call_pseudo(1), exit_insn(), exit_insn()], (0, 2))
    patch_insn(st, 0, [mov64_imm(0, 0), call_pseudo(7)], anchor=0)
    assert st.insns[1] == call_pseudo(7)


def test_patch_relinks_jumps_around_and_onto_the_patched_insn():
    insns = [jmp_imm(BPF_JEQ, 1, 0, 1),  # 0 -> 2 (the patched insn)
             jmp_imm(BPF_JEQ, 1, 1, 2),  # 1 -> 4 (crosses)
             mov64_imm(0, 1),  # 2: patched
             ja(-4),  # 3 -> 0 (backward, crosses)
             ja(-3),  # 4 -> 2 (backward onto the patched insn)
             exit_insn()]
    st = state(insns)
    patch_insn(st, 2, [ja(1), mov64_imm(0, 9), mov64_imm(0, 1)])
    assert st.insns[0] == jmp_imm(BPF_JEQ, 1, 0, 1)  # enters the patch at its start
    assert st.insns[1] == jmp_imm(BPF_JEQ, 1, 1, 4)
    assert st.insns[2] == ja(1)  # jumps inside the patch are taken as given
    assert st.insns[5] == ja(-6) and st.insns[6] == ja(-5)


def test_patch_of_an_ld_imm64_replaces_both_slots():
    insns = flat(ja(2), ld_imm64(1, 5), exit_insn())
    st = state(insns)
    patch_insn(st, 1, [mov64_imm(1, 5)])
    assert st.insns == [ja(1), mov64_imm(1, 5), exit_insn()]


def test_patch_errors():
    st = state(flat(ld_imm64(1, 5), exit_insn()))
    with pytest.raises(VerifierError, match="splits the ld_imm64"):
        patch_insn(st, 1, [exit_insn()])
    with pytest.raises(VerifierError, match="empty patch"):
        patch_insn(st, 2, [])
    far = state([jmp_imm(BPF_JEQ, 1, 0, 1), mov64_imm(0, 0), exit_insn()])
    with pytest.raises(VerifierError, match="out of range"):
        patch_insn(far, 1, [mov64_imm(0, 0)] * 40000)


def test_remove_deletes_descriptors_in_range_including_the_first():
    # The series read desc[-1] after deleting descriptor 0 of a table.
    insns = [call_pseudo(4), call_pseudo(3), mov64_imm(0, 0), call_pseudo(1), exit_insn(), exit_insn()]
    st = state(insns, (0, 5), descs={0: [0, 1, 3]})
    remove_insns(st, 0, 3)
    assert [d.pc for d in st.subprogs[0].fdtab.descs] == [0]
    assert st.insns[0] == call_pseudo(1) and st.subprogs[1].start == 2


def test_remove_jump_into_range_lands_after_it():
    insns = [jmp_imm(BPF_JEQ, 1, 0, 1), exit_insn(), ja(0), mov64_imm(0, 2), ja(-3), exit_insn()]
    st = state(insns)
    remove_insns(st, 2, 1)  # jumps to the removed nop land on what followed it
    assert st.insns == [jmp_imm(BPF_JEQ, 1, 0, 1), exit_insn(), mov64_imm(0, 2), ja(-2), exit_insn()]


def test_remove_front_of_a_subprog_and_whole_subprogs():
    insns = [call_pseudo(3), exit_insn(),
             call_pseudo(1), exit_insn(),  # s1: removed entirely, with its descriptor
             mov64_imm(0, 0), mov64_imm(0, 1), exit_insn()]  # s2: its first insn removed
    st = state(insns, (0, 2, 4), descs={1: [2]})
    with pytest.raises(VerifierError, match="refers to a removed subprog"):
        remove_insns(state(insns, (0, 2, 4)), 2, 5)
    remove_insns(st, 2, 3)
    assert [(s.name, s.start) for s in st.subprogs] == [("s0", 0), ("s2", 2)]
    assert st.insns[0] == call_pseudo(1)  # its target's first insn went: now the new start
    with pytest.raises(VerifierError, match="main program"):
        remove_insns(st, 0, 2)
    with pytest.raises(VerifierError, match="splits the ld_imm64"):
        remove_insns(state(flat(ld_imm64(1, 1), exit_insn())), 1, 1)


def test_append_subprog_moves_nothing():
    st = state([call_pseudo(1), exit_insn(), exit_insn()], (0, 2), descs={0: [0]})
    idx = append_subprog(st, "h", [mov64_reg(0, 1), exit_insn()], SubprogKind.EXCEPTION_CB)
    assert idx == 2 and st.subprogs[2].start == 3 and st.subprogs[2].hidden
    assert st.subprog_end(2) == 5 and st.subprogs[0].fdtab.descs[0].pc == 0 and st.aux[4].seen


# --- batches: one relink per pass -----------------------------------------------------------


def test_batch_of_patches_is_the_sequential_result_in_one_relink():
    insns = [jmp_imm(BPF_JEQ, 1, 0, 3), mov64_imm(0, 1), call_pseudo(4), mov64_imm(0, 2), ja(-5),
             exit_insn(), exit_insn(), exit_insn()]
    patches = {1: ([mov64_imm(2, 2), insns[1]], 1), 3: ([insns[3], mov64_imm(3, 3), mov64_imm(4, 4)], 0)}
    one_by_one = state(insns, (0, 7), descs={0: [2]})
    for pc in sorted(patches, reverse=True):
        patch_insn(one_by_one, pc, *patches[pc])
    batched = state(insns, (0, 7), descs={0: [2]})
    apply_edits(batched, [patch_edit(batched, pc, *patches[pc]) for pc in patches])
    assert batched.insns == one_by_one.insns
    descs = [[d.pc for d in st.subprogs[0].fdtab.descs] for st in (batched, one_by_one)]
    assert descs[0] == descs[1] == [3]
    assert [s.start for s in batched.subprogs] == [s.start for s in one_by_one.subprogs] == [0, 10]
    assert one_by_one.relink_passes == 2 and batched.relink_passes == 1
    assert batched.insns_relinked == len(insns)


def test_batch_removes_a_dead_call_and_the_subprog_only_it_reached():
    # s1 (insns 2-3) is reached only by the dead call at 5 in s2: removed one by one, s1 goes
    # first and the call still points at it; in one batch both go.
    insns = [call_pseudo(3), exit_insn(), mov64_imm(0, 1), exit_insn(), mov64_imm(0, 0), call_pseudo(-4),
             exit_insn()]
    with pytest.raises(VerifierError, match="insn 5 refers to a removed subprog"):
        remove_insns(state(insns, (0, 2, 4)), 2, 2)
    st = state(insns, (0, 2, 4))
    apply_edits(st, [Edit(2, 2), Edit(5, 1)])
    assert [(s.name, s.start) for s in st.subprogs] == [("s0", 0), ("s2", 2)]
    assert st.insns == [call_pseudo(1), exit_insn(), mov64_imm(0, 0), exit_insn()]


def test_batch_edits_must_not_overlap():
    st = state([mov64_imm(0, 0)] * 4 + [exit_insn()])
    with pytest.raises(VerifierError, match="overlaps another"):
        apply_edits(st, [Edit(0, 2), Edit(1, 2)])
