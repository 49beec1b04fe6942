"""detect_reg_usage: which of R6-R9 a subprog uses, the one definition verifier and JIT share."""

from verifier.isa.insn import (
    BPF_ADD,
    BPF_DW,
    BPF_JEQ,
    BPF_PSEUDO_MAP_IDX_VALUE,
    BPF_REG_AX,
    BPF_REG_FP,
    Insn,
    alu64_reg,
    call_kfunc,
    call_pseudo,
    exit_insn,
    jmp_reg,
    ld_imm64,
    ldx_mem,
    mov64_imm,
    mov64_reg,
    stx_mem,
)
from verifier.rewrite.regusage import detect_reg_usage

NONE = (False, False, False, False)


def test_dst_and_src_count():
    insns = [mov64_imm(6, 1), alu64_reg(BPF_ADD, 0, 9), exit_insn()]
    assert detect_reg_usage(insns, 0, 3) == (True, False, False, True)


def test_range_is_half_open():
    insns = [mov64_imm(6, 1), mov64_imm(7, 1), mov64_imm(8, 1), exit_insn()]
    assert detect_reg_usage(insns, 1, 2) == (False, True, False, False)
    assert detect_reg_usage(insns, 0, 0) == NONE


def test_memory_and_jump_operands():
    insns = [stx_mem(BPF_DW, BPF_REG_FP, 8, -8), ldx_mem(BPF_DW, 0, 7, 0), jmp_reg(BPF_JEQ, 0, 9, 0)]
    assert detect_reg_usage(insns, 0, 3) == (False, True, True, True)


def test_fp_and_ax_are_not_callee_saved():
    insns = [mov64_reg(BPF_REG_AX, BPF_REG_FP), mov64_reg(0, BPF_REG_AX), exit_insn()]
    assert detect_reg_usage(insns, 0, 3) == NONE


def test_ld_imm64_pseudo_src_is_not_a_register():
    # src 6 is BPF_PSEUDO_MAP_IDX_VALUE: the series' verifier copy counted it as R6.
    insns = [*ld_imm64(1, 0, src=BPF_PSEUDO_MAP_IDX_VALUE), exit_insn()]
    assert BPF_PSEUDO_MAP_IDX_VALUE == 6
    assert detect_reg_usage(insns, 0, 3) == NONE


def test_ld_imm64_dst_counts():
    insns = [*ld_imm64(8, 0x1234_5678_9ABC), exit_insn()]
    assert detect_reg_usage(insns, 0, 3) == (False, False, True, False)


def test_ld_imm64_second_slot_is_skipped():
    first, _ = ld_imm64(0, 1)
    odd_second = Insn(0, 7, 9, 0, 0)  # never produced by the builders; proves it is skipped
    assert detect_reg_usage([first, odd_second, exit_insn()], 0, 3) == NONE


def test_call_src_is_not_a_register():
    odd_call = Insn(0x85, 0, 8, 0, 5)  # a call's src is a pseudo value, never a register
    assert detect_reg_usage([call_pseudo(1), call_kfunc(10003), odd_call], 0, 3) == NONE


def test_returns_a_plain_tuple():
    result = detect_reg_usage([mov64_imm(9, 0)], 0, 1)
    assert isinstance(result, tuple) and result == (False, False, False, True)
