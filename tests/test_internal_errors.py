"""Issue 14: every "internal error" the malformed-input runs (tests/malformed.py) found,
each a regression test. An internal error is a bug of ours, never a property of the
input: the input must be accepted or rejected with a reason."""

import pytest

from tests import malformed
from unwind.cli import pipeline
from unwind.cli.conformance import ConformanceError, build_unchecked
from unwind.interp_kernel import run_interp
from verifier.isa.insn import BPF_JEQ, call_kfunc, call_pseudo, exit_insn, ja, jmp_imm, mov64_imm
from verifier.protos.kfuncs import KFUNCS_BY_NAME

TWO_STRUCTS = """\
.struct a 8
.struct b 16
main:
    r1 = a ll
    r2 = 0
    if r2 == 0 goto .L1
.L1:
    call bpf_obj_new_impl
    if r0 == 0 goto .L2
    r1 = r0
    call bpf_obj_drop_impl
.L2:
    r6 = b ll
    r1 = r6
    call bpf_obj_new_impl
    if r0 == 0 goto .L3
    r1 = r0
    call bpf_obj_drop_impl
.L3:
    r0 = 0
    exit
"""


def test_obj_new_struct_set_in_another_basic_block_is_found():
    # "verifier internal error: cannot tell which struct bpf_obj_new_impl allocates at insn
    # 4": R1 was set before a branch and the program names two structs. The rewrite now
    # propagates R1's constant along every path (verifier.rewrite.consts).
    built = pipeline.build(pipeline.load_text(TWO_STRUCTS, "two.s"), log_level=0)
    obj_new = call_kfunc(KFUNCS_BY_NAME["bpf_obj_new_impl"].btf_id)
    news = [pc for pc, insn in enumerate(built.verified.insns) if insn == obj_new]
    sizes = [built.verified.insns[pc - 3].imm for pc in news]  # r1 = size; r2 = meta ll; call
    assert sizes == [8, 16]
    for result in (built.run(), run_interp(built.verified)):
        assert result.retval == 0 and not result.ledger.leaked() and len(result.ledger.objects) == 2


def test_unchecked_build_refuses_kfunc_calls():
    # The conformance runner's unchecked build reached the same internal error with a
    # bpf_obj_new_impl call in raw bytes (no checker vouches for its argument).
    insns = [mov64_imm(1, 1), call_kfunc(KFUNCS_BY_NAME["bpf_obj_new_impl"].btf_id), exit_insn()]
    with pytest.raises(ConformanceError, match="kfunc call at insn 1 is not supported by bpf-unwind"):
        build_unchecked(insns, "raw")


@pytest.mark.parametrize("fmt", malformed.FORMATS)
def test_seeds_of_every_format_keep_the_contract(fmt):
    seeds = malformed.seeds()
    items = {"btf_ext": seeds.btf_ext}.get(fmt, getattr(seeds, fmt))
    assert items, f"no seeds for {fmt}"
    with malformed.bounded():
        for item in items[:40]:
            malformed.run_case(fmt, item)


@pytest.mark.parametrize(("insns", "message"), [
    ([mov64_imm(0, 1), jmp_imm(BPF_JEQ, 0, 0, 5), exit_insn()], "jump out of range from insn 1 to 7"),
    ([mov64_imm(0, 1), ja(-3), exit_insn()], "jump out of range from insn 1 to -1"),
    ([mov64_imm(0, 1), exit_insn(), mov64_imm(0, 2)], None),  # unreachable tail: the last insn
    ([call_pseudo(1), exit_insn(), mov64_imm(0, 2), ja(-3), exit_insn()],
     "jump out of range from insn 3 to 1"),
], ids=["forward", "backward", "no-exit", "into-caller"])  # fmt: skip
def test_unchecked_build_checks_subprogs_like_the_kernel(insns, message):
    # Found comparing the engines on mutated raw bytes: the JIT refused a jump leaving its
    # image ("bpf_jit: jump out of subprog") while the interpreter ran, the jump untaken.
    with pytest.raises(ConformanceError, match=message or "last insn is not an exit or jmp"):
        build_unchecked(insns, "raw")
