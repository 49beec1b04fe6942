"""finalize() and the patching machinery, on hand-built CheckResults (no checker needed).

Every finalize() test ends with `assert_descs_exact`: the insn at each descriptor pc is a
pseudo call, either to the throw trampoline (throw points) or to a static/global subprog
(caller frames)."""

import pytest

from tests.verify_helpers import flat
from verifier.errors import VerifierError
from verifier.isa.insn import (
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_DIV,
    BPF_JA,
    BPF_JEQ,
    BPF_JGT,
    BPF_JMP,
    BPF_JMP32,
    BPF_JNE,
    BPF_K,
    BPF_MOD,
    BPF_PSEUDO_FUNC,
    BPF_W,
    BPF_X,
    Insn,
    alu64_imm,
    call_kfunc,
    call_pseudo,
    exit_insn,
    ja,
    jmp_imm,
    ld_imm64,
    ldx_mem,
    mov64_imm,
    mov64_reg,
)
from verifier.program import (
    CheckResult,
    FdTab,
    FrameDesc,
    FuncSym,
    Program,
    StructType,
    SubprogInfo,
    SubprogKind,
    VerifiedProgram,
)
from verifier.protos.kfuncs import KFUNCS_BY_NAME
from verifier.rewrite.fixups import DEFAULT_CB_NAME, THROW_TRAMP_NAME, finalize

THROW = call_kfunc(KFUNCS_BY_NAME["bpf_throw"].btf_id)
OBJ_NEW = call_kfunc(KFUNCS_BY_NAME["bpf_obj_new_impl"].btf_id)
OBJ_DROP = call_kfunc(KFUNCS_BY_NAME["bpf_obj_drop_impl"].btf_id)
NOOP = mov64_reg(0, 0)  # `r0 = r0`: the series' seven no-op moves
FOO = StructType("foo", 16, 1)
BAR = StructType("bar", 24, 2)


def make(insns, subprogs=None, *, seen=None, descs=None, seen_exception=False, exception_cb=None,
         structs=(), type_refs=None):
    subprogs = subprogs or [SubprogInfo("main", 0)]
    descs = descs or {}
    fdtabs = [FdTab([FrameDesc(pc) for pc in descs.get(i, [])]) for i in range(len(subprogs))]
    prog = Program("t", insns, [FuncSym(s.name, s.start, s.linkage) for s in subprogs],
                   structs={s.name: s for s in structs}, type_refs=type_refs or {})
    seen = set(range(len(insns))) if seen is None else set(seen)
    return CheckResult(prog, subprogs, fdtabs, seen_exception, exception_cb, seen, ["line 1", "line 2"])


def assert_descs_exact(vp: VerifiedProgram) -> list[tuple[int, str]]:
    """(pc, kind of the call target) of every descriptor, after checking it lands on a call."""
    starts = {sp.start: sp for sp in vp.subprogs}
    found = []
    for i, tab in enumerate(vp.fdtabs):
        sp = vp.subprogs[i]
        for desc in tab.descs:
            assert sp.start <= desc.pc < sp.end
            insn = vp.insns[desc.pc]
            assert insn.is_pseudo_call(), (desc.pc, insn)
            callee = starts[desc.pc + insn.imm + 1]
            assert callee.kind in (SubprogKind.THROW_TRAMP, SubprogKind.STATIC, SubprogKind.GLOBAL)
            found.append((desc.pc, callee.kind))
    return found


def desc_pcs(vp: VerifiedProgram) -> list[list[int]]:
    return [[d.pc for d in tab.descs] for tab in vp.fdtabs]


# --- programs without exceptions -----------------------------------------------------------


def test_non_throwing_program_has_no_trampoline():
    vp = finalize(make([mov64_imm(0, 0), exit_insn()]))
    assert vp.throw_tramp is None and vp.exception_cb is None and not vp.exception_boundary
    assert vp.insns == [mov64_imm(0, 0), exit_insn()]
    assert [(s.name, s.kind, s.start, s.end) for s in vp.subprogs] == [("main", "main", 0, 2)]
    assert vp.log == "line 1\nline 2" and vp.stats["dead_insns_removed"] == 0


def test_multi_subprog_non_throwing_program_flags_no_subprog_as_trampoline():
    # The series left bpf_throw_tramp_subprog at 0 here, so main was JIT-ed as the trampoline.
    insns = [call_pseudo(1), exit_insn(), mov64_imm(0, 0), exit_insn()]
    vp = finalize(make(insns, [SubprogInfo("main", 0), SubprogInfo("f", 2)], descs={0: [0]}))
    assert vp.throw_tramp is None
    assert [s.kind for s in vp.subprogs] == ["main", "static"]
    assert assert_descs_exact(vp) == [(0, "static")]


# --- exceptions: default callback, trampoline, redirection ----------------------------------


def test_default_callback_and_trampoline_layout():
    insns = [mov64_imm(1, 5), THROW, mov64_imm(0, 0), exit_insn()]
    vp = finalize(make(insns, seen={0, 1}, descs={0: [1]}, seen_exception=True))
    main, cb, tramp = vp.subprogs
    assert (main.start, main.end) == (0, 2)
    assert (cb.name, cb.kind, cb.hidden, cb.start, cb.end) == (DEFAULT_CB_NAME, "exception_cb", True, 2, 4)
    assert (tramp.name, tramp.kind, tramp.hidden, tramp.start, tramp.end) == (
        THROW_TRAMP_NAME, "throw_tramp", True, 4, 9)
    assert vp.insns[2:4] == [mov64_reg(0, 1), exit_insn()]  # mainline returns the cookie
    assert vp.insns[4:9] == [mov64_imm(6, 0), mov64_imm(7, 0), mov64_imm(8, 0), mov64_imm(9, 0), THROW]
    assert vp.insns[1] == call_pseudo(4 - 1 - 1)
    assert vp.exception_cb == 1 and vp.throw_tramp == 2 and vp.exception_boundary
    assert tramp.callee_regs_used == (True, True, True, True)
    assert cb.callee_regs_used == main.callee_regs_used == (False, False, False, False)
    assert desc_pcs(vp) == [[1], [], []]
    assert assert_descs_exact(vp) == [(1, "throw_tramp")]
    assert vp.stats["throws_redirected"] == 1


def test_custom_exception_callback_gets_no_default():
    insns = [mov64_imm(1, 1), THROW, mov64_reg(0, 1), exit_insn()]
    subs = [SubprogInfo("main", 0), SubprogInfo("cb", 2, "global", is_exception_cb=True)]
    vp = finalize(make(insns, subs, descs={0: [1]}, seen_exception=True, exception_cb=1))
    assert [(s.name, s.kind, s.hidden) for s in vp.subprogs] == [
        ("main", "main", False), ("cb", "exception_cb", False), (THROW_TRAMP_NAME, "throw_tramp", True)]
    assert vp.exception_cb == 1 and vp.throw_tramp == 2
    assert assert_descs_exact(vp) == [(1, "throw_tramp")]


def test_custom_callback_of_a_program_that_never_throws():
    insns = [mov64_imm(0, 0), exit_insn(), mov64_reg(0, 1), exit_insn()]
    subs = [SubprogInfo("main", 0), SubprogInfo("cb", 2, "global", is_exception_cb=True)]
    vp = finalize(make(insns, subs, seen={0, 1}, exception_cb=1))  # unseen cb is kept whole
    assert vp.exception_cb == 1 and vp.throw_tramp is None and len(vp.insns) == 4


def test_every_throw_is_redirected_but_the_trampolines_own():
    # main: if r1 == 0 goto +2; r1 = 1; throw; call f; exit   f: r1 = 2; throw
    insns = [jmp_imm(BPF_JEQ, 1, 0, 2), mov64_imm(1, 1), THROW, call_pseudo(1), exit_insn(),
             mov64_imm(1, 2), THROW]
    subs = [SubprogInfo("main", 0), SubprogInfo("f", 5)]
    vp = finalize(make(insns, subs, descs={0: [2, 3], 1: [6]}, seen_exception=True))
    tramp = vp.subprogs[vp.throw_tramp]
    for pc in (2, 6):
        assert vp.insns[pc].is_pseudo_call() and pc + vp.insns[pc].imm + 1 == tramp.start
    assert vp.insns[tramp.end - 1] == THROW
    assert sorted(assert_descs_exact(vp)) == [(2, "throw_tramp"), (3, "static"), (6, "throw_tramp")]


# --- dead code -------------------------------------------------------------------------------


def test_dead_code_elim_after_throw():
    # exceptions_cleanup_dead_code_elim: seven no-op moves, throw, dead discard code.
    insns = [*[NOOP] * 7, mov64_imm(1, 0), THROW, mov64_imm(1, 0), mov64_imm(2, 0), exit_insn()]
    vp = finalize(make(insns, seen=range(9), descs={0: [8]}, seen_exception=True))
    assert vp.insns[:7] == [NOOP] * 7  # r0 = r0 is not a nop to the verifier
    assert vp.subprogs[0].end == 9 and vp.stats["dead_insns_removed"] == 3
    assert assert_descs_exact(vp) == [(8, "throw_tramp")]


def test_frame_dce_shape():
    # exceptions_cleanup_frame_dce: no-op moves and dead code around the calls of every frame.
    main = [mov64_imm(2, 0), jmp_imm(BPF_JEQ, 2, 0, 2), mov64_imm(6, 1), mov64_imm(7, 1),  # 0-3
            *[NOOP] * 7, call_pseudo(3), exit_insn(), mov64_imm(0, 9), exit_insn()]  # 4-14
    static_dce = [*[NOOP] * 7, call_pseudo(2), exit_insn(), exit_insn()]  # 15-24
    global_throw_dce = [mov64_imm(1, 0), THROW, mov64_imm(8, 1), mov64_imm(0, 1), exit_insn()]  # 25-29
    insns = main + static_dce + global_throw_dce
    subs = [SubprogInfo("main", 0), SubprogInfo("static_subprog_dce", 15),
            SubprogInfo("global_subprog_throw_dce", 25, "global")]
    seen = set(range(30)) - {2, 3, 13, 14, 24, 27, 28, 29}
    vp = finalize(make(insns, subs, seen=seen, descs={0: [11], 1: [22], 2: [26]}, seen_exception=True))
    # main lost 2 dead insns, the hard-wired `ja +0` and its dead tail; the static its tail.
    assert vp.stats["dead_insns_removed"] == 8 and vp.stats["nops_removed"] == 1
    assert [(s.start, s.end) for s in vp.subprogs[:3]] == [(0, 10), (10, 19), (19, 21)]
    assert desc_pcs(vp)[:3] == [[8], [17], [20]]
    assert vp.insns[8] == call_pseudo(10 - 8 - 1) and vp.insns[17] == call_pseudo(19 - 17 - 1)
    assert sorted(assert_descs_exact(vp)) == [(8, "static"), (17, "global"), (20, "throw_tramp")]
    # Dead code held the only R6/R7/R8 uses: they no longer count.
    assert [s.callee_regs_used for s in vp.subprogs[:3]] == [(False,) * 4] * 3


def test_hard_wired_taken_branch():
    # if r1 == 0 goto +1 is always taken: the fallthrough is dead, the jump becomes ja, then a nop.
    insns = [jmp_imm(BPF_JEQ, 1, 0, 1), mov64_imm(0, 1), mov64_imm(0, 2), exit_insn()]
    vp = finalize(make(insns, seen={0, 2, 3}))
    assert vp.insns == [mov64_imm(0, 2), exit_insn()]


def test_unused_static_subprog_is_removed_with_its_fdtab():
    insns = [call_pseudo(4), exit_insn(),  # main calls g
             mov64_imm(7, 0), call_pseudo(1), exit_insn(),  # unused static f (has a desc)
             mov64_imm(0, 1), exit_insn(),  # static g
             mov64_imm(0, 2), exit_insn()]  # global h, never called so never verified: removed too
    subs = [SubprogInfo("main", 0), SubprogInfo("f", 2), SubprogInfo("g", 5), SubprogInfo("h", 7, "global")]
    vp = finalize(make(insns, subs, seen={0, 1, 5, 6}, descs={0: [0], 1: [3]}))
    assert [(s.name, s.start, s.end) for s in vp.subprogs] == [("main", 0, 2), ("g", 2, 4)]
    assert vp.insns[0] == call_pseudo(1) and len(vp.fdtabs) == 2
    assert desc_pcs(vp) == [[0], []]
    assert assert_descs_exact(vp) == [(0, "static")]


def test_dead_ld_imm64_pair_and_live_pair_with_only_first_slot_seen():
    insns = flat(ld_imm64(1, 7), jmp_imm(BPF_JEQ, 1, 7, 2), ld_imm64(2, 1 << 40),
                 mov64_imm(0, 0), exit_insn())
    vp = finalize(make(insns, seen={0, 2, 5, 6}))  # second slot of the live pair not listed
    assert vp.insns == flat(ld_imm64(1, 7), mov64_imm(0, 0), exit_insn())


def test_unreached_main_is_never_removed():
    insns = [mov64_imm(0, 0), exit_insn()]
    vp = finalize(make(insns, seen=set()))
    assert vp.insns == insns


# --- kfunc fixups -----------------------------------------------------------------------------


def obj_new_throw_program():
    return flat(
        ldx_mem(BPF_W, 3, 1, 0),  # 0: r3 = ctx->len
        jmp_imm(BPF_JGT, 3, 100, 8),  # 1: crosses the obj_new patch -> 10
        ld_imm64(1, FOO.type_id),  # 2-3: r1 = foo ll
        mov64_imm(2, 0),  # 4
        OBJ_NEW,  # 5: grows by 3
        jmp_imm(BPF_JEQ, 0, 0, 3),  # 6 -> 10
        mov64_reg(6, 0),  # 7
        mov64_imm(1, 0),  # 8
        THROW,  # 9
        mov64_imm(0, 0),  # 10
        exit_insn(),  # 11
    )


def test_obj_new_insertion_before_a_descriptor():
    result = make(obj_new_throw_program(), descs={0: [9]}, seen_exception=True, structs=[FOO, BAR],
                  type_refs={2: "foo"})
    vp = finalize(result)
    assert vp.insns[5:9] == flat(mov64_imm(1, FOO.size), ld_imm64(2, FOO.type_id), OBJ_NEW)
    assert vp.insns[1] == jmp_imm(BPF_JGT, 3, 100, 11)  # still lands on `r0 = 0`
    assert vp.insns[13] == mov64_imm(0, 0) and vp.insns[9] == jmp_imm(BPF_JEQ, 0, 0, 3)
    assert desc_pcs(vp)[0] == [12]
    assert assert_descs_exact(vp) == [(12, "throw_tramp")]
    assert vp.subprogs[0].callee_regs_used == (True, False, False, False)
    assert result.fdtabs[0].descs[0].pc == 9  # the checker's descriptors are not mutated


def test_obj_new_type_from_mov_imm_and_drop_meta():
    insns = [mov64_imm(1, BAR.type_id), mov64_imm(2, 0), OBJ_NEW, mov64_reg(1, 0), OBJ_DROP,
             mov64_imm(0, 0), exit_insn()]
    vp = finalize(make(insns, structs=[FOO, BAR]))
    assert vp.insns[2:6] == flat(mov64_imm(1, BAR.size), ld_imm64(2, BAR.type_id), OBJ_NEW)
    # Every allocation is a bar, so every dropped object is one.
    assert vp.insns[7:10] == flat(ld_imm64(2, BAR.type_id), OBJ_DROP)


def test_obj_drop_meta_is_zero_with_two_allocated_types():
    insns = flat(ld_imm64(1, 1), OBJ_NEW, ld_imm64(1, 2), OBJ_NEW, mov64_reg(1, 0), OBJ_DROP, exit_insn())
    vp = finalize(make(insns, structs=[FOO, BAR], type_refs={0: "foo", 3: "bar"}))
    assert vp.insns[-4:-1] == flat(ld_imm64(2, 0), OBJ_DROP)
    assert vp.insns[3:5] == flat(ld_imm64(2, FOO.type_id))
    assert vp.insns[9:11] == flat(ld_imm64(2, BAR.type_id))


def test_obj_new_type_across_a_block_boundary_falls_back_or_fails():
    # r1 is loaded before a jump target: not the same basic block.
    insns = flat(ld_imm64(1, 1), jmp_imm(BPF_JEQ, 3, 0, 0), OBJ_NEW, exit_insn())
    vp = finalize(make(insns, structs=[FOO], type_refs={0: "foo"}))  # only one struct referenced
    assert vp.insns[3:7] == flat(mov64_imm(1, FOO.size), ld_imm64(2, FOO.type_id), OBJ_NEW)
    insns = flat(ld_imm64(1, 1), ld_imm64(1, 2), jmp_imm(BPF_JEQ, 3, 0, 0), OBJ_NEW, exit_insn())
    vp = finalize(make(insns, structs=[FOO, BAR], type_refs={0: "foo", 2: "bar"}))  # R1 = bar on every path
    assert vp.insns[5:9] == flat(mov64_imm(1, BAR.size), ld_imm64(2, BAR.type_id), OBJ_NEW)
    insns = flat(jmp_imm(BPF_JEQ, 3, 0, 3), ld_imm64(1, 1), ja(2), ld_imm64(1, 2), OBJ_NEW, exit_insn())
    with pytest.raises(VerifierError, match="insn 6: the struct it allocates differs between paths"):
        finalize(make(insns, structs=[FOO, BAR], type_refs={1: "foo", 4: "bar"}))


def test_descriptor_on_a_non_call_is_an_internal_error():
    with pytest.raises(VerifierError, match="verifier internal error: frame descriptor pc 0"):
        finalize(make([mov64_imm(0, 0), exit_insn()], descs={0: [0]}))


# --- div/mod guards, checked by running them ---------------------------------------------


def to_signed(v, mask):
    return v - (mask + 1) if v > mask >> 1 else v


def tdiv(a, b):
    """Division truncating toward zero, in exact integers."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def run(insns, regs):
    """A tiny interpreter for the ALU/JMP subset the guards use."""
    regs = dict(regs)
    pc = 0
    while True:
        i = insns[pc]
        pc += 1
        if i.is_exit():
            return regs[0]
        wide = i.cls in (BPF_ALU64, BPF_JMP)
        mask = (1 << 64) - 1 if wide else (1 << 32) - 1
        a = regs.get(i.dst, 0) & mask
        b = (regs.get(i.src, 0) if i.code & BPF_X else i.imm) & mask
        if i.cls in (BPF_JMP, BPF_JMP32):
            taken = {BPF_JA: True, BPF_JEQ: a == b, BPF_JNE: a != b, BPF_JGT: a > b}[i.op]
            pc += i.off if taken else 0
            continue

        if i.op in (BPF_DIV, BPF_MOD) and i.off == 1:
            sa, sb = to_signed(a, mask), to_signed(b, mask)
            assert sb not in (0, -1), "division fault: the guard did not protect the insn"
            q = tdiv(sa, sb)
            r = q if i.op == BPF_DIV else sa - sb * q
        else:
            r = {0x00: a + b, 0x80: -a, 0x90: a % b if b else None, 0x30: a // b if b else None,
                 0xA0: a ^ b, 0xB0: b}[i.op]
        assert r is not None, "division fault: the guard did not protect the insn"
        regs[i.dst] = r & mask


@pytest.mark.parametrize("cls", [BPF_ALU64, BPF_ALU])
@pytest.mark.parametrize("op", [BPF_DIV, BPF_MOD])
@pytest.mark.parametrize("signed", [0, 1])
@pytest.mark.parametrize(("x", "y"), [(7, 0), (7, -1), (-7, 2), (-(1 << 31), -1), (100, 7)])
def test_div_mod_by_register_guards(cls, op, signed, x, y):
    insn = Insn(cls | op | BPF_X, 0, 1, signed)
    vp = finalize(make([insn, exit_insn()]))
    mask = (1 << 64) - 1 if cls == BPF_ALU64 else (1 << 32) - 1
    xs, ys = x & mask, y & mask
    if ys == 0:
        expected = 0 if op == BPF_DIV else xs
    elif signed:
        sx, sy = to_signed(xs, mask), to_signed(ys, mask)
        q = tdiv(sx, sy)
        expected = (q if op == BPF_DIV else sx - sy * q) & mask
    else:
        expected = xs // ys if op == BPF_DIV else xs % ys
    assert run(vp.insns, {0: x & ((1 << 64) - 1), 1: y & ((1 << 64) - 1)}) == expected
    assert len(vp.insns) > 2


@pytest.mark.parametrize("op", [BPF_DIV, BPF_MOD])
def test_signed_div_mod_by_minus_one_constant(op):
    insn = Insn(BPF_ALU64 | op | BPF_K, 0, 0, 1, -1)
    vp = finalize(make([insn, exit_insn()]))
    assert len(vp.insns) == 2
    assert run(vp.insns, {0: 5}) == ((-5) & ((1 << 64) - 1) if op == BPF_DIV else 0)


def test_unsigned_div_by_constant_is_untouched():
    insns = [alu64_imm(BPF_DIV, 0, 3), exit_insn()]
    assert finalize(make(insns)).insns == insns


def test_div_guard_before_descriptor_and_across_jumps():
    insns = [jmp_imm(BPF_JEQ, 1, 0, 2), Insn(BPF_ALU64 | BPF_DIV | BPF_X, 0, 1), call_pseudo(1), exit_insn(),
             alu64_imm(BPF_ADD, 0, 1), exit_insn()]
    vp = finalize(make(insns, [SubprogInfo("main", 0), SubprogInfo("f", 4)], descs={0: [2]}))
    assert vp.insns[0] == jmp_imm(BPF_JEQ, 1, 0, 5) and vp.subprogs[1].start == 7
    assert vp.insns[5] == call_pseudo(1) and desc_pcs(vp) == [[5], []]
    assert assert_descs_exact(vp) == [(5, "static")]


def test_pseudo_func_reference_is_relinked():
    insns = flat(ld_imm64(2, 3, src=BPF_PSEUDO_FUNC), Insn(BPF_ALU64 | BPF_MOD | BPF_X, 0, 1), exit_insn(),
                 mov64_imm(0, 0), exit_insn())
    vp = finalize(make(insns, [SubprogInfo("main", 0), SubprogInfo("cb", 4)]))
    assert vp.subprogs[1].start == 5 and vp.insns[0].imm == 5 - 0 - 1


def test_gotol_is_relinked():
    gotol = Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, 2)  # `gotol +2`: the offset lives in imm
    insns = [gotol, Insn(BPF_ALU64 | BPF_DIV | BPF_X, 0, 1), exit_insn(), mov64_imm(0, 0), exit_insn()]
    vp = finalize(make(insns))
    assert vp.insns[0] == Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, 5) and vp.insns[6] == mov64_imm(0, 0)
