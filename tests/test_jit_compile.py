"""The JIT pass loop (jump sizes, padding, convergence), image layout, pc -> return-offset
conversion, errors and the listing. Unicorn runs live in test_jit_runs and test_jit_semantics."""

from __future__ import annotations

import random

import capstone
import pytest

import jit.compile as jit_compile
from jit.compile import jit_program
from jit.image import JitImage
from jit.layout import (
    PAGE,
    stub_address,
)
from jit.listing import listing
from jit.lower import lower_insn
from jit.lower_ctx import LowerCtx
from jit.x86.encode import JitError
from tests.jit_reference import make_vp
from verifier.errors import BpfUnwindError
from verifier.isa.insn import (
    BPF_ADD,
    BPF_JEQ,
    BPF_JGT,
    BPF_JSET,
    Insn,
    alu64_imm,
    call_helper,
    call_kfunc,
    call_pseudo,
    exit_insn,
    ja,
    jmp_imm,
    ld_imm64,
    mov64_imm,
    mov64_reg,
)
from verifier.program import FdTab, Subprog, SubprogKind, VerifiedProgram

MD = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
M64 = (1 << 64) - 1


def jit_one(insns: list[Insn], stack: int = 0) -> JitImage:
    return jit_program(make_vp([("main", insns)], stack=stack), {}).main


# ---------------------------------------------------------------- pass loop and jumps


def fillers(nbytes: int) -> list[Insn]:
    """Straight-line insns of exactly `nbytes` bytes: `r0 += 1` (4) and `r1 = r2` (3)."""
    fours, rest = divmod(nbytes, 4)
    threes = {0: 0, 1: 3, 2: 2, 3: 1}[rest]
    fours -= {0: 0, 1: 2, 2: 1, 3: 0}[rest]
    return [alu64_imm(BPF_ADD, 0, 1)] * fours + [mov64_reg(1, 2)] * threes


@pytest.mark.parametrize(
    ("gap", "jcc", "jmp"),
    [
        (123, "74 7b", "eb 7b"),
        (124, "0f 84 7c 00 00 00", "e9 7c 00 00 00"),
        (0x80, "0f 84 80 00 00 00", "e9 80 00 00 00"),
    ],
)
def test_forward_jumps_straddle_the_short_window(gap: int, jcc: str, jmp: str) -> None:
    fill = fillers(gap)
    img = jit_one([jmp_imm(BPF_JEQ, 1, 0, len(fill)), *fill, mov64_imm(0, 0), exit_insn()])
    assert img.code[img.addrs[0] : img.addrs[1]].hex(" ") == "48 85 ff " + jcc
    img = jit_one([ja(len(fill)), *fill, mov64_imm(0, 0), exit_insn()])
    assert img.code[img.addrs[0] : img.addrs[1]].hex(" ") == jmp


@pytest.mark.parametrize(
    ("gap", "jmp"),
    [(123, "eb 83"), (124, "e9 7f ff ff ff"), (126, "e9 7d ff ff ff")],
)
def test_backward_jump_window(gap: int, jmp: str) -> None:
    """A backward jump starts near (64-byte estimates) and the next pass measures it with
    its own near size: it only becomes short if -(gap + 5) is in the window, so a gap of
    124..126 stays near although a short jump would reach (the kernel's rule)."""
    fill = fillers(gap)
    k = len(fill)
    img = jit_one([*fill, ja(-k - 1), exit_insn()])
    assert img.code[img.addrs[k] : img.addrs[k + 1]].hex(" ") == jmp


def test_straight_line_converges_in_two_sizing_passes() -> None:
    jp = jit_program(make_vp([("main", [mov64_imm(0, 1), exit_insn()])]), {})
    assert jp.passes == 2


def random_jump_program(rng: random.Random) -> list[Insn]:
    n = rng.randint(5, 90)
    body: list[Insn] = []
    for k in range(n):
        left = n - k  # insns after this one, exit included
        roll = rng.random()
        if roll < 0.25:
            body.append(
                jmp_imm(
                    rng.choice([BPF_JEQ, BPF_JGT, BPF_JSET]), 1, rng.randint(0, 300), rng.randint(0, left)
                )
            )
        elif roll < 0.35:
            body.append(ja(rng.randint(0, left)))
        elif roll < 0.45 and k > 0:
            body.append(ja(-rng.randint(1, k) - 1))  # backward, never run
        elif roll < 0.55:
            body.append(exit_insn())
        else:
            body.append(rng.choice(fillers(rng.choice([3, 4, 7, 11, 23, 40]))))
    return [*body, exit_insn()]


def test_random_jump_layouts_follow_the_kernel_rule() -> None:
    """Every jump decodes to the start of its target insn, and is short exactly when the
    final displacement is in [-128, 123]; exits after the first jump to the epilogue."""
    rng = random.Random(1234)
    for _ in range(150):
        insns = random_jump_program(rng)
        img = jit_one(insns)
        first_exit = next(k for k, i in enumerate(insns) if i.is_exit())
        for k, insn in enumerate(insns):
            code = img.code[img.addrs[k] : img.addrs[k + 1]]
            if insn.is_exit() and k > first_exit:
                target = img.addrs[first_exit]
            elif insn.is_jump():
                target = img.addrs[k + 1 + insn.off]
            else:
                continue
            if not code:  # ja +0 / jump to the next insn
                assert target == img.addrs[k + 1]
                continue
            jump = list(MD.disasm(code, img.addrs[k]))[-1]
            assert jump.mnemonic.startswith("j")
            assert int(jump.op_str, 16) == target
            assert jump.size == (
                2 if -128 <= target - img.addrs[k + 1] <= 123 else (6 if insn.is_cond_jump() else 5)
            )


def padding_ctx(insns: list[Insn], addrs: list[int]) -> LowerCtx:
    return LowerCtx(
        name="main",
        insns=insns,
        addrs=addrs,
        cleanup_addr=0,
        padding=True,
        image_addr=0,
        epilogue=b"\xc9\xc3",
        resolve_call=lambda k, i: None,
        resolve_func=lambda k, i: 0,
    )


def test_padding_keeps_a_shrinking_jump_at_its_previous_size() -> None:
    insns = [jmp_imm(BPF_JEQ, 1, 0, 1), mov64_imm(0, 0), exit_insn()]
    # Last pass the je was near (3 + 6 bytes); now its displacement (2) is short.
    code, _ = lower_insn(padding_ctx(insns, [12, 21, 23, 25]), 0)
    assert code.hex(" ") == "48 85 ff 0f 1f 40 00 74 02"
    code, _ = lower_insn(padding_ctx([ja(1), mov64_imm(0, 0), exit_insn()], [12, 17, 19, 21]), 0)
    assert code.hex(" ") == "0f 1f 00 eb 02"
    code, _ = lower_insn(padding_ctx([ja(0), exit_insn()], [12, 14, 16]), 0)
    assert code.hex(" ") == "66 90"
    with pytest.raises(JitError, match="unexpected jump padding: 5 bytes at main\\+0"):
        lower_insn(padding_ctx([ja(1), mov64_imm(0, 0), exit_insn()], [12, 19, 21, 23]), 0)
    with pytest.raises(JitError, match="unexpected jmp_cond padding"):
        lower_insn(padding_ctx(insns, [12, 20, 22, 24]), 0)


def test_no_convergence_names_the_subprog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jit_compile, "MAX_PASSES", 1)
    vp = make_vp([("main", [mov64_imm(0, 1), exit_insn()])])
    with pytest.raises(JitError, match="bpf_jit: main did not converge after 1 passes"):
        jit_program(vp, {})


# ---------------------------------------------------------------- layout and descriptors


def call_program() -> VerifiedProgram:
    main = [
        mov64_reg(6, 1),
        call_pseudo(6),  # -> sub at 8
        *ld_imm64(2, 1 << 40),
        call_kfunc(9),
        mov64_reg(0, 6),
        exit_insn(),
        mov64_imm(0, 0),
    ]
    sub = [mov64_reg(0, 1), call_kfunc(9), alu64_imm(BPF_ADD, 0, 1), exit_insn()]
    return make_vp([("main", main), ("sub", sub)], stack=16, descs={0: [4, 1], 1: [9]})


def test_images_are_placed_with_guard_pages() -> None:
    jp = jit_program(call_program(), {9: stub_address(3)}, code_base=0x0200_0000)
    main, sub = jp.images
    assert main.address == 0x0200_0000
    assert sub.address % PAGE == 0 and sub.address >= main.end + PAGE
    assert sub.address - PAGE < main.end + PAGE  # exactly one guard page
    assert jp.stub_addrs == {9: stub_address(3)}


def test_descriptor_keys_are_return_addresses() -> None:
    vp = call_program()
    jp = jit_program(vp, {9: stub_address(3)})
    for img in jp.images:
        calls = {
            i.address + i.size - img.address: i
            for i in MD.disasm(img.code, img.address)
            if i.mnemonic == "call"
        }
        assert img.fd_offsets == tuple(sorted(img.fd_offsets))
        for key, desc in zip(img.fd_offsets, img.fd_descs, strict=True):
            assert key in calls
            assert key == img.addrs[desc.pc - img.start + 1]
            assert img.find_desc(key) is desc
            assert img.insn_at(key - 1) == desc.pc
    main, sub = jp.images
    assert [d.pc for d in main.fd_descs] == [1, 4] and [d.pc for d in sub.fd_descs] == [9]
    call_sub = next(i for i in MD.disasm(main.code, main.address) if i.mnemonic == "call")
    assert int(call_sub.op_str, 16) == sub.address
    call_stub = [i for i in MD.disasm(sub.code, sub.address) if i.mnemonic == "call"][0]
    assert int(call_stub.op_str, 16) == stub_address(3)


def test_descriptor_not_at_a_call_is_an_internal_error() -> None:
    vp = make_vp([("main", [mov64_imm(0, 0), exit_insn()])], descs={0: [0]})
    with pytest.raises(JitError, match="frame desc pc=0 of main .* does not follow a call"):
        jit_program(vp, {})
    vp = make_vp([("main", [mov64_imm(0, 0), exit_insn()]), ("f", [exit_insn()])], descs={0: [2]})
    with pytest.raises(JitError, match="outside main"):
        jit_program(vp, {})


# ---------------------------------------------------------------- errors


UNSUPPORTED = [
    (Insn(0xBF, 1, 2, 1, 1), "0xbf"),  # ALU64 MOV X off 1: arena address-space cast
    (Insn(0xBF, 1, 2, -1, 0), "0xbf"),  # ALU64 MOV X off -1: percpu address
    (Insn(0xB7, 1, 0, 8, 1), "0xb7"),  # MOV K with an off
    (Insn(0xBC, 0, 1, 32), "0xbc"),  # ALU32 movsx from 32 bits does not exist
    (Insn(0x3F, 0, 1, 2), "0x3f"),  # DIV with off 2
    (Insn(0x9C, 0, 1, -1), "0x9c"),  # MOD with off -1
    (Insn(0xD4, 0, 0, 0, 8), "0xd4"),  # END with width 8
    (Insn(0xDF, 0, 0, 0, 16), "0xdf"),  # ALU64 END X
    (Insn(0x8F, 0, 1), "0x8f"),  # NEG X
    (Insn(0x99, 0, 1, 0), "0x99"),  # LDX MEMSX DW
    (Insn(0xD3, 10, 1, -8, 0), "0xd3"),  # atomic B
    (Insn(0xDB, 10, 1, -8, 0x02), "0xdb"),  # atomic DW with an unknown op
    (Insn(0xDB, 10, 1, -8, 0x100), "0xdb"),  # load-acquire: newer than ISA v4
    (Insn(0xDA, 10, 0, -8, 0), "0xda"),  # ST with the atomic/nospec mode and DW size
    (Insn(0x86, 0, 0, 0, 1), "0x86"),  # JMP32 CALL
    (Insn(0x96), "0x96"),  # JMP32 EXIT
    (Insn(0xF5), "0xf5"),  # tail call (kernel-internal)
    (Insn(0x8D, 1, 0, 0, 0), "0x8d"),  # callx: the kernel has no indirect call
    (Insn(0x9D), "0x9d"),  # EXIT with the X bit
    (Insn(0x0D, 0, 0, 0, 0), "0x0d"),  # JA with the X bit
]


@pytest.mark.parametrize(("insn", "code"), UNSUPPORTED, ids=[f"{c}-{i.off}-{i.imm}" for i, c in UNSUPPORTED])
def test_unsupported_insns_name_the_insn(insn: Insn, code: str) -> None:
    with pytest.raises(JitError, match=rf"bpf_jit: unsupported insn \({code}\) at main\+1$"):
        jit_program(make_vp([("main", [mov64_imm(0, 0), insn, exit_insn()])]), {})


@pytest.mark.parametrize(
    ("insns", "helpers", "message"),
    [
        ([mov64_imm(0, 0), Insn(0xFF)], None, r"bpf_jit: unsupported insn \(0xff\) at main\+1"),
        ([call_helper(1)], None, r"helper calls are not supported yet \(call 1\) at main\+0"),
        ([call_helper(1)], {2: stub_address(0)}, r"no stub address for helper 1 at main\+0"),
        ([call_kfunc(99)], None, r"no stub address for kfunc btf_id 99 at main\+0"),
        ([call_pseudo(5)], None, r"call target 6 is not a subprog start at main\+0"),
        ([Insn(0x20, 0, 0, 0, 4)], None, r"legacy LD_ABS/LD_IND \(0x20\) at main\+0 is not supported"),
        ([Insn(0x48, 0, 1, 0, 4)], None, r"legacy LD_ABS/LD_IND \(0x48\) at main\+0 is not supported"),
    ],
)
def test_errors_name_the_insn(insns: list[Insn], helpers: dict[int, int] | None, message: str) -> None:
    with pytest.raises(JitError, match=message) as err:
        jit_program(make_vp([("main", [*insns, exit_insn()])]), {}, helper_addrs=helpers)
    assert isinstance(err.value, BpfUnwindError)


def test_callee_regs_used_must_cover_the_code() -> None:
    insns = [mov64_reg(6, 1), mov64_reg(0, 6), exit_insn()]
    sp = Subprog("main", 0, 3, SubprogKind.MAIN, 0, (False, False, False, False))
    vp = VerifiedProgram("t", insns, [sp], [FdTab()], None, None, False)
    with pytest.raises(JitError, match="main uses R6"):
        jit_program(vp, {})


# ---------------------------------------------------------------- listing


def test_listing_marks_descriptors_and_names_targets() -> None:
    jp = jit_program(call_program(), {9: stub_address(3)})
    text = listing(jp)
    main, sub = jp.images
    assert text.startswith(f"main (main) at {main.address:#x}, {len(main.code)} bytes, stack 16, pushes: rbx")
    assert f"sub (static) at {sub.address:#x}" in text
    for key, desc in zip(main.fd_offsets, main.fd_descs, strict=True):
        assert f"<- frame desc pc={desc.pc} (ret+{key:#x})" in text
    assert "# sub" in text and "# kfunc stub 9" in text
    assert "pushq %rbp" in text and "leave" in text
    assert sum(line.startswith("; ") for line in text.splitlines()) == len(jp.verified.insns) - 1  # ld_imm64
