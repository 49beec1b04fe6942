"""verifier.check.checker: register/stack/ctx/object rules, calls, exits, CFG, pruning, limits,
the log layout and the patch-01 reachability pass. Data first: program text + outcome."""

from __future__ import annotations

import pytest

import verifier.check.loop
from tests.verify_helpers import CB, GLOBAL_CTX, ok, raw_rejected, rejected
from verifier.asm.assembler import assemble
from verifier.check.checker import check
from verifier.errors import VerifierError
from verifier.isa.insn import BPF_JEQ, Insn, call_pseudo, exit_insn, ja, jmp_imm, ld_imm64, mov64_imm
from verifier.program import FuncSym, Program

OBJ = ".struct foo 16\n"
NEW = "\tr1 = foo ll\n\tr2 = 0\n\tcall bpf_obj_new_impl\n"


# --- accepted / rejected, message is the last log line -------------------------------------

REJECTS = [
    ("r0_not_init", "main:\n\texit\n", "R0 !read_ok"),
    ("read_not_init", "main:\n\tr0 = r3\n\texit\n", "R3 !read_ok"),
    ("write_fp", "main:\n\tr10 = 0\n\tr0 = 0\n\texit\n", "frame pointer is read only"),
    ("stack_read_above_fp", "main:\n\tr0 = *(u64 *)(r10 + 8)\n\texit\n",
     "invalid read from stack R10 off=8 size=8"),
    ("stack_write_too_deep", "main:\n\t*(u64 *)(r10 - 520) = r1\n\tr0 = 0\n\texit\n",
     "invalid write to stack R10 off=-520 size=8"),
    ("stack_misaligned", "main:\n\tr0 = *(u64 *)(r10 - 4)\n\texit\n",
     "misaligned stack access off 0+0+-4 size 8"),
    ("ptr_partial_spill", "main:\n\t*(u32 *)(r10 - 8) = r1\n\tr0 = 0\n\texit\n",
     "invalid size of register spill"),
    ("ptr_partial_fill", "main:\n\t*(u64 *)(r10 - 8) = r1\n\tr0 = *(u32 *)(r10 - 8)\n\texit\n",
     "invalid size of register fill"),
    ("ctx_out_of_range", "main:\n\tr0 = *(u32 *)(r1 + 200)\n\texit\n",
     "invalid bpf_context access off=200 size=4"),
    ("ctx_store", "main:\n\t*(u32 *)(r1 + 0) = 0\n\tr0 = 0\n\texit\n",
     "invalid bpf_context access off=0 size=4"),
    ("ctx_modified", "main:\n\tr1 += 4\n\tr0 = *(u32 *)(r1 + 0)\n\texit\n",
     "dereference of modified ctx ptr R1 off=4 disallowed"),
    ("scalar_deref", "main:\n\tr1 = 0\n\tr0 = *(u64 *)(r1 + 0)\n\texit\n",
     "R1 invalid mem access 'scalar'"),
    ("ptr_32bit_alu", "main:\n\tw1 += 1\n\tr0 = 0\n\texit\n", "R1 32-bit pointer arithmetic prohibited"),
    ("ptr_bitwise", "main:\n\tr1 &= 7\n\tr0 = 0\n\texit\n", "R1 bitwise operator &= on pointer prohibited"),
    ("div_by_zero", "main:\n\tr0 = 1\n\tr0 /= 0\n\texit\n", "div by zero"),
    # a tc program may return a pointer (privileged); fentry programs must return 0
    ("return_ptr", ".prog_type fentry\nmain:\n\tr0 = r10\n\texit\n",
     "At program exit the register R0 is not a known value (fp)"),
    ("helper", "main:\n\tcall 1\n\tr0 = 0\n\texit\n", "helper call #1 is not supported by bpf-unwind yet"),
    ("bad_helper", "main:\n\tcall 212\n\tr0 = 0\n\texit\n", "invalid func unknown#212"),
    # the kernel verifies only the globals something calls: an uncalled one is dead code
    ("called_global_checked",
     ".global g\nmain:\n\tcall g\n\tr0 = 0\n\texit\ng:\n\tr2 = 1\n\tr0 = *(u32 *)(r2 + 0)\n\texit\n",
     "R2 invalid mem access 'scalar'"),
    ("unknown_kfunc", "main:\n\tcall kfunc(999)\n\tr0 = 0\n\texit\n",
     "insn 0: kernel btf_id 999 is not a function"),
    ("fall_off_end", "main:\n\tr0 = 0\n", "last insn is not an exit or jmp"),
    ("infinite_loop", "main:\n\tr0 = 0\n.Lloop:\n\tr1 = 1\n\tgoto .Lloop\n",
     "infinite loop detected at insn 1"),
    # r0 is 0 or 1 on every round: the back edge meets a state equal to one being explored
    ("unbounded_loop", "main:\n\tr0 = *(u32 *)(r1 + 0)\n.Ll:\n\tr0 &= 1\n\tif r0 != 7 goto .Ll\n\texit\n",
     "infinite loop detected at insn 1"),
]


@pytest.mark.parametrize(("name", "text", "msg"), REJECTS, ids=[r[0] for r in REJECTS])
def test_rejects(name, text, msg):
    err = rejected(text)
    assert str(err) == msg
    lines = err.log.rstrip().splitlines()
    if msg.startswith("infinite loop"):  # the kernel prints both states after the message
        assert lines[-2].startswith("cur state:") and lines[-1].startswith("old state:")
        lines = lines[:-2]
    assert lines[-1] == msg


ACCEPTS = [
    ("minimal", "main:\n\tr0 = 0\n\texit\n"),
    ("uncalled_global_is_dead_code", ".global g\nmain:\n\tr0 = 0\n\texit\ng:\n\tr0 = r5\n\texit\n"),
    ("ctx_reads", "main:\n\tr0 = *(u32 *)(r1 + 0)\n\tr2 = *(u32 *)(r1 + 16)\n"
     "\tr3 = *(u8 *)(r1 + 191)\n\texit\n"),
    ("uninit_stack_read", "main:\n\tr0 = *(u64 *)(r10 - 16)\n\texit\n"),
    ("spill_fill_ctx", "main:\n\t*(u64 *)(r10 - 8) = r1\n\tr2 = *(u64 *)(r10 - 8)\n"
     "\tr0 = *(u32 *)(r2 + 16)\n\texit\n"),
    ("stack_ptr_arith", "main:\n\tr2 = r10\n\tr2 += -16\n\t*(u64 *)(r2 + 0) = 5\n"
     "\tr0 = *(u64 *)(r10 - 16)\n\texit\n"),
    ("bounded_loop", "main:\n\tr0 = 0\n.Lloop:\n\tr0 += 1\n\tif r0 < 50 goto .Lloop\n\texit\n"),
    ("const_fold_prunes_branch", "main:\n\tr0 = 3\n\tr0 *= 5\n\tif r0 == 15 goto .Lok\n\tr0 = r10\n"
     ".Lok:\n\texit\n"),
]


@pytest.mark.parametrize(("name", "text"), ACCEPTS, ids=[a[0] for a in ACCEPTS])
def test_accepts(name, text):
    res = ok(text)
    assert res.log[-1].startswith("processed ")


def prog_of(insns: list[Insn], funcs: list[FuncSym] | None = None) -> Program:
    return Program("raw", insns, funcs or [FuncSym("main", 0)])


def test_cfg_rejects_bad_jumps_and_calls():
    err = raw_rejected(prog_of([ja(5), mov64_imm(0, 0), exit_insn()]))
    assert str(err) == "jump out of range from insn 0 to 6"
    # a jump from one subprog into another
    two = [jmp_imm(BPF_JEQ, 1, 0, 2), mov64_imm(0, 0), exit_insn(), mov64_imm(0, 0), exit_insn()]
    err = raw_rejected(prog_of(two, [FuncSym("main", 0), FuncSym("f", 3)]))
    assert str(err) == "jump out of range from insn 0 to 3"
    call_mid = [call_pseudo(2), exit_insn(), mov64_imm(0, 0), mov64_imm(0, 0), exit_insn()]
    err = raw_rejected(prog_of(call_mid, [FuncSym("main", 0), FuncSym("f", 2)]))
    assert str(err) == "insn 0: call target 3 is not the start of a function"
    into_ldimm = [jmp_imm(BPF_JEQ, 1, 0, 1), *ld_imm64(0, 1), exit_insn()]
    assert str(raw_rejected(prog_of(into_ldimm))) == "jump into the middle of ldimm64 insn 1"
    assert str(raw_rejected(prog_of([mov64_imm(0, 0)]))) == "last insn is not an exit or jmp"


def test_constant_folding_marks_dead_code_unseen():
    res = ok("main:\n\tr0 = 3\n\tr0 *= 5\n\tif r0 == 15 goto .Lok\n\tr0 = r10\n.Lok:\n\texit\n")
    assert res.seen_insns == {0, 1, 2, 4}


def test_stack_depth_is_deepest_access():
    res = ok("main:\n\tr0 = *(u64 *)(r10 - 16)\n\t*(u32 *)(r10 - 40) = 1\n\texit\n")
    assert res.subprogs[0].stack_depth == 40


def test_stack_zero_and_spilled_constants_read_back():
    text = ("main:\n\t*(u64 *)(r10 - 8) = 0\n\tr0 = *(u64 *)(r10 - 8)\n\tif r0 != 0 goto .Lbad\n"
            "\tr1 = 0x1234\n\t*(u64 *)(r10 - 16) = r1\n\tr0 = *(u8 *)(r10 - 15)\n"
            "\tif r0 != 0x12 goto .Lbad\n\tr0 = 0\n\texit\n.Lbad:\n\tr0 = r10\n\texit\n")
    res = ok(text)
    # Linux 6.18 processes 11 insns: the zero reads back (the first "bad" branch is folded),
    # a byte that is not the spill's lowest reads as an unknown u8 (so .Lbad is explored,
    # and a tc program may return the frame pointer)
    assert res.stats["insn_processed"] == 11


# --- objects ---------------------------------------------------------------------------------

LEAK = OBJ + "main:\n" + NEW + "\tif r0 == 0 goto .Lout\n\tr6 = r0\n.Lout:\n\tr0 = 0\n\texit\n"
DROP = (OBJ + "main:\n" + NEW + "\tif r0 == 0 goto .Lout\n\tr1 = r0\n\tcall bpf_obj_drop_impl\n"
        ".Lout:\n\tr0 = 0\n\texit\n")
DOUBLE_DROP = (OBJ + "main:\n" + NEW + "\tif r0 == 0 goto .Lout\n\tr6 = r0\n"
               "\tr1 = r6\n\tcall bpf_obj_drop_impl\n"
               "\tr1 = r6\n\tcall bpf_obj_drop_impl\n.Lout:\n\tr0 = 0\n\texit\n")
DROP_MAYBE_NULL = OBJ + "main:\n" + NEW + "\tr1 = r0\n\tcall bpf_obj_drop_impl\n\tr0 = 0\n\texit\n"
DEREF_MAYBE_NULL = OBJ + "main:\n" + NEW + "\tr1 = *(u64 *)(r0 + 0)\n\tr0 = 0\n\texit\n"
FIELD_OOB = (OBJ + "main:\n" + NEW + "\tif r0 == 0 goto .Lout\n\tr6 = r0\n\tr1 = *(u64 *)(r6 + 16)\n"
             "\tr1 = r6\n\tcall bpf_obj_drop_impl\n.Lout:\n\tr0 = 0\n\texit\n")
OBJ_NEW_UNKNOWN = (OBJ + "main:\n\tr1 = *(u32 *)(r1 + 0)\n\tr2 = 0\n\tcall bpf_obj_new_impl\n"
                   "\tr0 = 0\n\texit\n")
OBJ_NEW_BAD_ID = OBJ + "main:\n\tr1 = 77\n\tr2 = 0\n\tcall bpf_obj_new_impl\n\tr0 = 0\n\texit\n"


def test_leak_at_normal_exit():
    err = rejected(LEAK)
    assert str(err) == "Unreleased reference id=1 alloc_insn=3"
    assert err.insn_idx == 7


def test_obj_drop_releases():
    ok(DROP)


def test_double_drop_rejected():
    assert str(rejected(DOUBLE_DROP)) == "arg#0 expected pointer to allocated object"


def test_drop_of_maybe_null_rejected():
    assert str(rejected(DROP_MAYBE_NULL)) == "Possibly NULL pointer passed to trusted arg0"


def test_deref_of_maybe_null_rejected():
    assert str(rejected(DEREF_MAYBE_NULL)) == "R0 invalid mem access 'ptr_or_null_'"


def test_field_access_bounded_by_struct_size():
    assert str(rejected(FIELD_OOB)) == "access beyond struct foo at off 16 size 8"


def test_obj_new_needs_constant_struct_id():
    assert str(rejected(OBJ_NEW_UNKNOWN)) == "R1 must be a known constant"
    assert str(rejected(OBJ_NEW_BAD_ID)) == "bpf_obj_new type ID argument must be of a struct"


def test_null_check_propagates_to_register_and_stack_copies():
    # r6 and fp-8 are copies taken before the check; both become non-NULL / NULL with r0.
    text = (OBJ + "main:\n" + NEW + "\tr6 = r0\n\t*(u64 *)(r10 - 8) = r0\n\tif r0 == 0 goto .Lnull\n"
            "\tr1 = *(u64 *)(r6 + 8)\n\tr1 = *(u64 *)(r10 - 8)\n\tcall bpf_obj_drop_impl\n\tr0 = 0\n\texit\n"
            ".Lnull:\n\tr0 = r6\n\texit\n")  # r6 is a known-zero scalar on the NULL side
    res = ok(text, level=2)
    # as Linux 6.18 prints them (the NULL-tracking id is dropped once NULL is ruled out)
    line = {ln.split(":")[0]: ln for ln in res.log if ": (" in ln}
    assert line["6"].endswith("; R0=ptr_foo(ref_obj_id=1) refs=1")  # 6: if r0 == 0x0 goto pc+5
    assert line["8"].endswith("; R1=ptr_foo(ref_obj_id=1) R10=fp0 fp-8=ptr_foo(ref_obj_id=1) refs=1")
    assert "from 6 to 12: R0=0 R6=0 R10=fp0 fp-8=0" in res.log


def test_null_branch_releases_the_reference():
    ok(OBJ + "main:\n" + NEW + "\tif r0 != 0 goto .Lhave\n\tr0 = 0\n\texit\n.Lhave:\n"
       "\tr1 = r0\n\tcall bpf_obj_drop_impl\n\tr0 = 0\n\texit\n")


def test_drop_invalidates_copies_in_caller_frames():
    text = (OBJ + "main:\n" + NEW + "\tif r0 == 0 goto .Lout\n\tr6 = r0\n\tr1 = r0\n\tcall sub\n"
            "\tr1 = *(u64 *)(r6 + 0)\n.Lout:\n\tr0 = 0\n\texit\n"
            "sub:\n\tcall bpf_obj_drop_impl\n\tr0 = 0\n\texit\n")
    assert str(rejected(text)) == "R6 invalid mem access 'scalar'"


# --- calls -------------------------------------------------------------------------------------


def chain(n: int, throw: bool = False) -> str:
    """main -> f1 -> ... -> fn (static)."""
    out = "main:\n\tcall f1\n\tr0 = 0\n\texit\n"
    for i in range(1, n + 1):
        body = f"\tcall f{i + 1}\n" if i < n else ("\tr1 = 0\n\tcall bpf_throw\n" if throw else "")
        out += f"f{i}:\n{body}\tr0 = 0\n\texit\n"
    return out


def test_call_depth_limit_in_do_check():
    ok(chain(7))  # 8 frames
    # do_check's message has no " !" (Linux 6.18), check_max_stack_depth's has
    assert str(rejected(chain(8))) == "the call stack of 9 frames is too deep"


def test_call_depth_limit_in_reachability_pass():
    assert str(rejected(chain(8, throw=True))) == "the call stack of 8 frames is too deep !"


def test_static_call_passes_args_and_returns_r0():
    text = ("main:\n\tr1 = 40\n\tr6 = 1\n\tcall add2\n\tif r0 == 42 goto .Lok\n\tr0 = r10\n.Lok:\n"
            "\tr0 += r6\n\texit\nadd2:\n\tr0 = r1\n\tr0 += 2\n\texit\n")
    res = ok(text)
    assert 4 not in res.seen_insns


def test_callee_sees_r6_not_init():
    assert str(rejected("main:\n\tr6 = 1\n\tcall s\n\texit\ns:\n\tr0 = r6\n\texit\n")) == "R6 !read_ok"


def test_caller_r1_r5_cleared_after_call():
    text = "main:\n\tr2 = 1\n\tcall s\n\tr0 = r2\n\texit\ns:\n\tr0 = 0\n\texit\n"
    assert str(rejected(text)) == "R2 !read_ok"


def test_callee_writes_caller_stack_through_pointer():
    text = ("main:\n\tr1 = r10\n\tr1 += -8\n\tcall s\n\tr0 = *(u64 *)(r10 - 8)\n\texit\n"
            "s:\n\t*(u64 *)(r1 + 0) = 7\n\tr0 = 0\n\texit\n")
    res = ok(text)
    assert res.subprogs[0].stack_depth == 8 and res.subprogs[1].stack_depth == 0


def test_global_subprog_verified_alone_with_ctx_arg():
    res = ok(GLOBAL_CTX)
    assert "Func#1 ('g') is global and assumed valid." in res.log
    assert "Validating g() func#1..." in res.log
    assert res.subprogs[1].linkage == "global"


def test_global_subprog_rejects_pointer_args_and_pointer_return():
    # g reads R1 first: its implied signature is g(u64) (verifier/asm/signature.py)
    bad_arg = ".global g\nmain:\n\tr1 = r10\n\tcall g\n\texit\ng:\n\tr0 = r1\n\texit\n"
    assert ok(".global g\nmain:\n\tr1 = r10\n\tcall g\n\texit\ng:\n\tr0 = 0\n\texit\n")  # g()
    assert str(rejected(bad_arg)) == "Caller passes invalid args into func#1 ('g')"
    bad_ret = ".global g\nmain:\n\tcall g\n\tr0 = 0\n\texit\ng:\n\tr0 = r10\n\texit\n"
    assert str(rejected(bad_ret)) == "At subprogram exit the register R0 is not a scalar value (fp)"


def test_global_leak_checked_in_its_own_verification():
    text = OBJ + ".global g\nmain:\n\tcall g\n\texit\ng:\n" + NEW + "\tr0 = 0\n\texit\n"
    assert str(rejected(text)) == "Unreleased reference id=1 alloc_insn=5"


# --- exception callback, reachability ----------------------------------------------------------

def test_exception_callback_is_verified_with_one_scalar_arg():
    res = ok(CB + "main:\n\tr1 = 1\n\tcall bpf_throw\n\tr0 = 0\n\texit\ncb:\n\tr0 = r1\n\texit\n")
    assert res.exception_cb == 1 and res.subprogs[1].is_exception_cb
    assert res.seen_exception
    assert str(rejected(CB + "main:\n\tr0 = 0\n\texit\ncb:\n\tr0 = r2\n\texit\n")) == "R2 !read_ok"


def test_exception_callback_rules():
    direct = CB + "main:\n\tr1 = 0\n\tcall cb\n\tr0 = 0\n\texit\ncb:\n\tr0 = r1\n\texit\n"
    assert str(rejected(direct)) == "insn 1 cannot call exception cb directly"
    throws = (CB + "main:\n\tr0 = 0\n\texit\ncb:\n\tcall s\n\tr0 = 0\n\texit\n"
              "s:\n\tr1 = 0\n\tcall bpf_throw\n\texit\n")
    assert str(rejected(throws)) == "bpf_throw kfunc (insn 6) cannot be called from callback subprog 2"
    static = ".exception_callback cb\nmain:\n\tr0 = 0\n\texit\ncb:\n\tr0 = 0\n\texit\n"
    assert str(rejected(static)) == "exception callback 'cb' must have global linkage"


REACH = (".global g\n.global gt\n"
         "main:\n\tcall s1\n\tcall s3\n\tcall g\n\tr0 = 0\n\texit\n"
         "s1:\n\tcall s2\n\tr0 = 0\n\texit\n"
         "s2:\n\tr1 = 0\n\tcall bpf_throw\n\tr0 = 0\n\texit\n"
         "s3:\n\tr0 = 0\n\texit\n"
         "g:\n\tcall gt\n\tr0 = 0\n\texit\n"
         "gt:\n\tr1 = 0\n\tcall bpf_throw\n\tr0 = 0\n\texit\n"
         "unused:\n\tr1 = 0\n\tcall bpf_throw\n\tr0 = 0\n\texit\n")


def test_throw_reachability_marking():
    # `unused` throws but is not reachable from main; the static one is never verified.
    res = ok(REACH)
    marks = {sp.name: sp.is_throw_reachable for sp in res.subprogs}
    assert marks == {"main": True, "s1": True, "s2": True, "s3": False, "g": True, "gt": True,
                     "unused": False}


def test_no_throw_insn_means_no_marking():
    res = ok("main:\n\tcall s\n\texit\ns:\n\tr0 = 0\n\texit\n")
    assert not any(sp.is_throw_reachable for sp in res.subprogs)
    assert not res.seen_exception


# --- log, stats, limits -----------------------------------------------------------------------


def test_level1_log_lines():
    res = ok("main:\n\tr0 = 0\n\texit\n")
    assert res.log == ["0: (b7) r0 = 0", "1: (95) exit",
                       "processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 "
                       "peak_states 0 mark_read 0"]
    assert res.stats["insn_processed"] == 2


def test_level2_state_alignment_and_branch_pops():
    res = ok("main:\n\tr0 = *(u32 *)(r1 + 0)\n\tif r0 == 0 goto .Lz\n\tr0 = 1\n.Lz:\n\texit\n", level=2)
    assert res.log[0] == "0: R1=ctx() R10=fp0"  # level 2 starts with the whole state
    assert res.log[1] == ("0: (61) r0 = *(u32 *)(r1 +0)" + " " * 10
                          + "; R0=scalar(smin=0,smax=umax=0xffffffff,var_off=(0x0; 0xffffffff)) R1=ctx()")
    assert res.log[1].index(";") == 38
    assert "from 1 to 3: R0=0 R1=ctx() R10=fp0" in res.log


def test_level0_keeps_only_the_error():
    err = rejected("main:\n\texit\n", level=0)
    assert err.log == "R0 !read_ok\n"
    assert check(assemble("main:\n\tr0 = 0\n\texit\n"), log_level=0).log == []


def test_insn_limit(monkeypatch):
    monkeypatch.setattr(verifier.check.loop, "BPF_COMPLEXITY_LIMIT_INSNS", 100)
    text = "main:\n\tr0 = 0\n.Lloop:\n\tr0 += 1\n\tif r0 < 1000 goto .Lloop\n\texit\n"
    assert str(rejected(text)) == "BPF program is too large. Processed 101 insn"


def test_pruning_happens_and_stats_are_counted():
    # Eight independent diamonds: without pruning 2**8 paths.
    body = "".join(f"\tr2 = *(u32 *)(r1 + {4 * i})\n\tif r2 == 0 goto .Ld{i}\n\tr3 = 1\n.Ld{i}:\n"
                   f"\tr3 = 0\n\tr4 = 0\n\tr5 = 0\n\tr6 = 0\n" for i in range(8))
    res = ok("main:\n" + body + "\tr0 = 0\n\texit\n")
    assert res.stats["insn_processed"] < 200
    assert res.stats["total_states"] > 0
    assert any(line.endswith(": safe") for line in res.log)


def test_static_subprog_may_leave_r0_unset_when_the_caller_ignores_it():
    # clang drops return values of static functions nobody uses; prepare_func_exit passes
    # the callee's R0 through as it is.
    check(assemble("main:\n\tcall f\n\tr0 = 0\n\texit\nf:\n\tr1 = 1\n\texit\n", "t.s"))


def test_caller_reading_an_unset_r0_of_a_static_subprog_is_rejected():
    with pytest.raises(VerifierError, match="R0 !read_ok"):
        check(assemble("main:\n\tcall f\n\texit\nf:\n\tr1 = 1\n\texit\n", "t.s"))
