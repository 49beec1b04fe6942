"""Byte-exact frame pieces of the x86-64 JIT (shared/reference/kernel-x86-jit-and-exceptions.md
§1.3-§1.5, §2.3): prologues with and without stack and callee-saved pushes, the exception
boundary and the default exception callback, the throw trampoline, the first-exit epilogue
that later exits jump to, and the call rel32."""

from __future__ import annotations

from jit.compile import jit_program
from jit.lower import FrameShape, build_epilogue, build_prologue
from tests.jit_reference import one_image, text
from verifier.isa.insn import (
    BPF_JEQ,
    call_kfunc,
    exit_insn,
    jmp_imm,
    mov64_imm,
    mov64_reg,
)
from verifier.program import FdTab, Subprog, SubprogKind, VerifiedProgram


def test_minimal_prologue_is_12_bytes() -> None:
    img = one_image([mov64_imm(0, 0), exit_insn()])
    assert img.code[: img.addrs[0]].hex(" ") == "0f 1f 44 00 00 0f 1f 00 55 48 89 e5"
    assert (
        text(img.code[: img.addrs[0]])
        == "nop dword ptr [rax + rax]; nop dword ptr [rax]; push rbp; mov rbp, rsp"
    )
    assert img.code[img.addrs[1] :].hex(" ") == "c9 c3"
    assert img.callee_regs_used == (False, False, False, False)


def test_prologue_with_stack_and_r6() -> None:
    img = one_image([mov64_reg(6, 1), mov64_imm(0, 0), exit_insn()], stack=5)
    assert img.stack_depth == 8
    assert img.code[8 : img.addrs[0]].hex(" ") == "55 48 89 e5 48 81 ec 08 00 00 00 53"
    assert img.code[img.addrs[2] :].hex(" ") == "5b c9 c3"
    assert img.callee_regs_used == (True, False, False, False)


def test_callee_pushes_in_fixed_order() -> None:
    shape = FrameShape(0, False, (False, True, False, True), False)
    assert build_prologue(shape)[12:].hex(" ") == "41 55 41 57"
    assert build_epilogue(shape).hex(" ") == "41 5f 41 5d c9 c3"


def test_exception_boundary_pushes_and_epilogue() -> None:
    shape = FrameShape(0, True, (True, True, True, True), False)
    assert build_prologue(shape)[12:].hex(" ") == "41 54 53 41 55 41 56 41 57"
    assert build_epilogue(shape).hex(" ") == "41 5f 41 5e 41 5d 5b 41 5c c9 c3"
    assert text(build_epilogue(shape)) == "pop r15; pop r14; pop r13; pop rbx; pop r12; leave; ret"


def test_throw_trampoline_pushes_all_four_without_r12() -> None:
    insns = [mov64_imm(6, 0), mov64_imm(7, 0), mov64_imm(8, 0), mov64_imm(9, 0), call_kfunc(42)]
    main = [mov64_imm(0, 0), exit_insn()]
    all_insns = main + insns
    subprogs = [
        Subprog("main", 0, 2, SubprogKind.MAIN, 0, (False,) * 4),
        Subprog("bpf_throw_tramp", 2, 7, SubprogKind.THROW_TRAMP, 0, (True,) * 4, hidden=True),
    ]
    vp = VerifiedProgram("t", all_insns, subprogs, [FdTab(), FdTab()], None, 1, False)
    tramp = jit_program(vp, {42: 0x200000}).images[1]
    assert tramp.code[8 : tramp.addrs[0]].hex(" ") == "55 48 89 e5 53 41 55 41 56 41 57"
    assert tramp.callee_regs_used == (True,) * 4 and not tramp.exception_boundary
    assert tramp.code[-5] == 0xE8  # no exit: the image ends with the call to bpf_throw


def test_default_exception_callback_is_31_bytes() -> None:
    insns = [mov64_imm(0, 0), exit_insn(), mov64_reg(0, 1), exit_insn()]
    subprogs = [
        Subprog("main", 0, 2, SubprogKind.MAIN, 0, (False,) * 4),
        Subprog("exception_cb", 2, 4, SubprogKind.EXCEPTION_CB, 0, (False,) * 4, hidden=True),
    ]
    vp = VerifiedProgram("t", insns, subprogs, [FdTab(), FdTab()], 1, None, True)
    jp = jit_program(vp, {})
    cb = jp.images[1]
    expected = "0f 1f 44 00 00 0f 1f 00 48 89 f4 48 89 d5 41 5f 41 5e 41 5d 5b 41 5c 48 89 ec 48 89 f8 c9 c3"
    assert cb.code.hex(" ") == expected and len(cb.code) == 31
    assert cb.is_exception_cb and jp.exception_cb is cb
    main = jp.main
    assert main.exception_boundary and main.callee_regs_used == (True,) * 4
    assert main.code[8 : main.addrs[0]].hex(" ") == "55 48 89 e5 41 54 53 41 55 41 56 41 57"


def test_later_exits_jump_to_the_first_epilogue() -> None:
    insns = [jmp_imm(BPF_JEQ, 1, 0, 2), mov64_imm(0, 1), exit_insn(), mov64_imm(0, 2), exit_insn()]
    img = one_image(insns)
    first_exit = img.code[img.addrs[2] : img.addrs[3]]
    assert first_exit.hex(" ") == "c9 c3"
    second = img.code[img.addrs[4] : img.addrs[5]]
    assert second[0] == 0xEB
    assert img.addrs[5] + int.from_bytes(second[1:], "little", signed=True) == img.addrs[2]


def test_kfunc_call_rel32() -> None:
    img = one_image([call_kfunc(7), exit_insn()], stubs={7: 0x200010})
    call = img.code[img.addrs[0] : img.addrs[1]]
    assert call[0] == 0xE8
    rel = int.from_bytes(call[1:], "little", signed=True)
    assert img.address + img.addrs[1] + rel == 0x200010
