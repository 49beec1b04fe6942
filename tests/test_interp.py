"""jit.interp.engine as a pure engine: exact ISA v4 semantics (checked on both engines where the
result is r0), the interpreter's own edge cases without the verifier's guards, calls and
frames, the budget, faults, and the stub interface (arguments, void stubs, `Transfer`).
The kernel model behind it (object kfuncs, bpf_throw) is tested in tests/test_engines.py."""

from __future__ import annotations

import pytest

from jit.interp.engine import FRAME_SIZE, Interp, InterpError, Transfer, interp_run
from jit.layout import STACK_TOP
from unwind.cli.conformance import build_asm, run_interp, run_jit
from verifier.asm.ubpf import assemble_ubpf
from verifier.isa.insn import BPF_REG_0, Insn, exit_insn, mov64_imm
from verifier.program import FdTab, Subprog, VerifiedProgram

ENGINES = {"interp": run_interp, "jit": run_jit}


def asm(text: str) -> list[Insn]:
    return assemble_ubpf(text).insns


def raw_vp(insns: list[Insn]) -> VerifiedProgram:
    """One subprog, no rewrites: the interpreter's own semantics, without fixup guards."""
    sp = Subprog("main", 0, len(insns), "main", 512, (False,) * 4)
    return VerifiedProgram("raw", list(insns), [sp], [FdTab()], None, None, False)


# (name, program, expected r0). Programs go through build_unchecked (fixups included).
CASES = [
    ("add64 wraps", "lddw %r0, 0xffffffffffffffff\nadd %r0, 2\nexit", 1),
    ("sub64 wraps", "mov %r0, 0\nsub %r0, 1\nexit", 0xFFFF_FFFF_FFFF_FFFF),
    ("mul64 wraps", "lddw %r0, 0x8000000000000001\nmul %r0, 2\nexit", 2),
    ("alu32 zero-extends", "lddw %r0, 0xffffffffffffffff\nadd32 %r0, 1\nexit", 0),
    ("mov32 zero-extends", "lddw %r1, 0x1234567887654321\nmov32 %r0, %r1\nexit", 0x87654321),
    ("mov64 imm sign-extends", "mov %r0, -1\nexit", 0xFFFF_FFFF_FFFF_FFFF),
    ("mov32 imm does not", "mov32 %r0, -1\nexit", 0xFFFF_FFFF),
    ("lsh64 count masked", "mov %r0, 1\nmov %r1, 65\nlsh %r0, %r1\nexit", 2),
    ("lsh32 count masked", "mov %r0, 1\nmov %r1, 33\nlsh32 %r0, %r1\nexit", 2),
    ("rsh32 ignores high half", "lddw %r0, 0xffffffff00000010\nrsh32 %r0, 4\nexit", 1),
    ("arsh64", "mov %r0, -16\narsh %r0, 2\nexit", 0xFFFF_FFFF_FFFF_FFFC),
    ("arsh32", "mov32 %r0, 0x80000000\narsh32 %r0, 31\nexit", 0xFFFF_FFFF),
    ("neg32", "mov %r0, 1\nneg32 %r0\nexit", 0xFFFF_FFFF),
    ("div64 by zero reg", "mov %r0, 7\nmov %r1, 0\ndiv %r0, %r1\nexit", 0),
    ("mod64 by zero reg", "mov %r0, 7\nmov %r1, 0\nmod %r0, %r1\nexit", 7),
    ("mod32 by zero zero-extends", "lddw %r0, 0x100000007\nmov %r1, 0\nmod32 %r0, %r1\nexit", 7),
    ("div64 imm sign-extended", "mov %r0, -1\ndiv %r0, -1\nexit", 1),
    ("sdiv64 intmin/-1", "lddw %r0, 0x8000000000000000\nmov %r1, -1\nsdiv %r0, %r1\nexit", 1 << 63),
    ("smod64 intmin/-1", "lddw %r0, 0x8000000000000000\nmov %r1, -1\nsmod %r0, %r1\nexit", 0),
    ("sdiv32 intmin/-1 imm", "mov32 %r0, 0x80000000\nsdiv32 %r0, -1\nexit", 0x8000_0000),
    ("sdiv truncates", "mov %r0, -7\nsdiv %r0, 2\nexit", 0xFFFF_FFFF_FFFF_FFFD),
    ("smod sign of dividend", "mov %r0, -7\nmov %r1, 2\nsmod %r0, %r1\nexit", 0xFFFF_FFFF_FFFF_FFFF),
    ("smod32 by zero", "lddw %r0, 0x1fffffff9\nmov %r1, 0\nsmod32 %r0, %r1\nexit", 0xFFFF_FFF9),
    ("sdiv by zero", "mov %r0, -7\nmov %r1, 0\nsdiv %r0, %r1\nexit", 0),
    ("movsx8 to 64", "mov %r1, 0x80\nmovsx864 %r0, %r1\nexit", 0xFFFF_FFFF_FFFF_FF80),
    ("movsx16 to 32", "mov %r1, 0x8000\nmovsx1632 %r0, %r1\nexit", 0xFFFF_8000),
    ("movsx32 to 64", "mov32 %r1, 0x80000000\nmovsx3264 %r0, %r1\nexit", 0xFFFF_FFFF_8000_0000),
    ("be16", "lddw %r0, 0x1122334455667788\nbe16 %r0\nexit", 0x8877),
    ("be32", "lddw %r0, 0x1122334455667788\nbe32 %r0\nexit", 0x88776655),
    ("be64", "lddw %r0, 0x1122334455667788\nbe64 %r0\nexit", 0x8877665544332211),
    ("le16 truncates", "lddw %r0, 0x1122334455667788\nle16 %r0\nexit", 0x7788),
    ("le32 truncates", "lddw %r0, 0x1122334455667788\nle32 %r0\nexit", 0x55667788),
    ("bswap16", "lddw %r0, 0x1122334455667788\nbswap16 %r0\nexit", 0x8877),
    ("bswap64", "lddw %r0, 0x1122334455667788\nbswap64 %r0\nexit", 0x8877665544332211),
    ("ldxsb", "stb [%r10-1], 0x80\nldxsb %r0, [%r10-1]\nexit", 0xFFFF_FFFF_FFFF_FF80),
    ("ldxsh", "sth [%r10-2], 0x8001\nldxsh %r0, [%r10-2]\nexit", 0xFFFF_FFFF_FFFF_8001),
    ("ldxsw", "stw [%r10-4], -2\nldxsw %r0, [%r10-4]\nexit", 0xFFFF_FFFF_FFFF_FFFE),
    ("stdw sign-extends imm", "stdw [%r10-8], -1\nldxdw %r0, [%r10-8]\nexit", 0xFFFF_FFFF_FFFF_FFFF),
    ("jmp32 low half", "lddw %r1, 0x100000005\nmov %r0, 1\njeq32 %r1, 5, +1\nmov %r0, 0\nexit", 1),
    ("jmp64 high half", "lddw %r1, 0x100000005\nmov %r0, 1\njeq %r1, 5, +1\nmov %r0, 0\nexit", 0),
    ("jsgt32 signed", "mov32 %r1, -1\nmov %r0, 0\njsgt32 %r1, 0, +1\nmov %r0, 1\nexit", 1),
    ("jlt imm sign-extended", "mov %r1, 5\nmov %r0, 0\njlt %r1, -1, +1\nexit\nmov %r0, 1\nexit", 1),
    ("jset", "mov %r1, 6\nmov %r0, 0\njset %r1, 2, +1\nexit\nmov %r0, 1\nexit", 1),
    ("gotol", "mov %r0, 1\nja32 +1\nmov %r0, 2\nexit", 1),
    ("atomic add64", "stdw [%r10-8], 5\nmov %r1, 3\nlock add [%r10-8], %r1\nldxdw %r0, [%r10-8]\nexit", 8),
    ("atomic fetch add32", "stdw [%r10-8], -1\nmov %r1, 1\nlock fetch add32 [%r10-8], %r1\n"
     "mov %r0, %r1\nexit", 0xFFFF_FFFF),
    ("atomic fetch and", "stdw [%r10-8], 12\nmov %r1, 10\nlock fetch and [%r10-8], %r1\n"
     "ldxdw %r0, [%r10-8]\nlsh %r0, 8\nor %r0, %r1\nexit", 0x080C),
    ("atomic or32 keeps high word", "lddw %r2, 0x1100000000\nstxdw [%r10-8], %r2\nmov %r1, 2\n"
     "lock or32 [%r10-8], %r1\nldxdw %r0, [%r10-8]\nexit", 0x11_0000_0002),
    ("atomic fetch xor", "stdw [%r10-8], 3\nmov %r1, 5\nlock fetch xor [%r10-8], %r1\n"
     "ldxdw %r0, [%r10-8]\nmul %r0, 16\nadd %r0, %r1\nexit", 0x63),
    ("xchg", "stdw [%r10-8], 7\nmov %r1, 9\nlock xchg [%r10-8], %r1\nldxdw %r0, [%r10-8]\n"
     "mul %r0, 16\nadd %r0, %r1\nexit", 0x97),
    ("cmpxchg hit", "stdw [%r10-8], 7\nmov %r0, 7\nmov %r1, 9\nlock cmpxchg [%r10-8], %r1\n"
     "ldxdw %r1, [%r10-8]\nmul %r0, 16\nadd %r0, %r1\nexit", 0x79),
    ("cmpxchg miss", "stdw [%r10-8], 7\nmov %r0, 6\nmov %r1, 9\nlock cmpxchg [%r10-8], %r1\n"
     "ldxdw %r1, [%r10-8]\nmul %r0, 16\nadd %r0, %r1\nexit", 0x77),
    ("cmpxchg32 zero-extends r0", "stdw [%r10-8], 7\nlddw %r0, 0x500000007\nmov %r1, 9\n"
     "lock cmpxchg32 [%r10-8], %r1\nexit", 7),
    ("local call keeps r6-r9, fresh r10", "mov %r6, 6\nmov %r1, %r10\ncall local f\nadd %r0, %r6\nexit\n"
     "f:\nmov %r6, 100\nmov %r0, 0\nsub %r1, %r10\njlt %r1, 512, +1\nmov %r0, 1\nexit", 7),
    ("helper 5 returns r1", "mov %r1, 42\ncall 5\nexit", 42),
    ("mem in r1, length in r2", "ldxb %r0, [%r1+1]\nadd %r0, %r2\nexit", 0xBB + 3),
]


@pytest.mark.parametrize("engine", sorted(ENGINES))
@pytest.mark.parametrize(("name", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_semantics(engine, name, text, expected):
    vp = build_asm(text, name.replace(" ", "_"))
    assert ENGINES[engine](vp, b"\xaa\xbb\xcc", 100_000) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mov %r0, 7\ndiv %r0, 0\nexit", 0),  # the verifier rejects these; the ISA defines them
        ("mov %r0, 7\nmod %r0, 0\nexit", 7),
        ("lddw %r0, 0x100000007\nmod32 %r0, 0\nexit", 7),
        ("lddw %r0, 0x8000000000000000\nsdiv %r0, -1\nexit", 1 << 63),
        ("lddw %r0, 0x8000000000000000\nsmod %r0, -1\nexit", 0),
        ("mov %r0, -7\nmov %r1, 0\nsmod %r0, %r1\nexit", (1 << 64) - 7),
    ],
)
def test_edge_cases_without_fixup_guards(text, expected):
    assert interp_run(raw_vp(asm(text))) == expected


def test_frames_live_below_stack_top():
    it = Interp(build_asm("mov %r0, %r10\ncall local f\nexit\nf:\nstdw [%r10-8], 1\nmov %r0, %r10\nexit"))
    assert it.run() == STACK_TOP - FRAME_SIZE
    assert it.mem.load(STACK_TOP - FRAME_SIZE - 8, 8) == 1


def test_memory_is_written_at_ctx_base():
    assert interp_run(raw_vp(asm("ldxw %r0, [%r1+0]\nexit")), memory=b"\x01\x02\x03\x04") == 0x04030201


def test_budget_exhaustion_names_subprog_and_insn():
    vp = build_asm("call local spin\nexit\nspin:\nmov %r0, 0\nja -2\nexit")
    with pytest.raises(InterpError, match=r"budget of 1000 exhausted in subprog 'spin' at insn [23]"):
        Interp(vp, budget=1000).run()


def test_bad_access_is_one_line():
    vp = raw_vp(asm("mov %r1, 16\nldxdw %r0, [%r1+0]\nexit"))
    with pytest.raises(InterpError, match=r"'raw': bad memory access: load of 8 bytes at 0x10 .* insn 1"):
        interp_run(vp)


def test_call_depth_limit():
    vp = build_asm("call local f\nexit\nf:\ncall local f\nexit")
    with pytest.raises(InterpError, match="deeper than 8 frames in subprog 'f' at insn 2"):
        interp_run(vp)


def test_unmodelled_helper_and_unsupported_insn():
    with pytest.raises(InterpError, match="helper 7 is not modelled"):
        interp_run(build_asm("call 7\nexit"))
    with pytest.raises(InterpError, match="callx"):
        interp_run(raw_vp([Insn(0x8D, 1), exit_insn()]))
    # an unsupported insn only fails when it runs
    assert interp_run(raw_vp([mov64_imm(BPF_REG_0, 3), exit_insn(), Insn(0x20)])) == 3


def test_budget_is_counted():
    it = Interp(build_asm("mov %r0, 0\nmov %r1, 10\nadd %r0, 1\nsub %r1, 1\njne %r1, 0, -3\nexit"))
    assert it.run() == 10
    assert it.steps == 2 + 3 * 10 + 1


def test_unmodelled_kfunc_is_one_line():
    msg = "kfunc with BTF id 10001 is not modelled in subprog 'main' at insn 0"
    with pytest.raises(InterpError, match=msg):
        interp_run(raw_vp(asm("call runtime 10001\nexit")))


def test_stubs_get_the_interpreter_and_the_call_site():
    seen: list[tuple[int, int, int]] = []

    def stub(it: Interp) -> int:
        seen.append((it.pc, it.regs[1], len(it.frames)))
        return it.regs[1] * 2

    vp = build_asm("call local f\nexit\nf:\nmov %r1, 21\ncall 5\nexit")
    assert interp_run(vp, helpers={5: stub}) == 42
    assert seen == [(3, 21, 1)]
    # None: a void stub leaves r0 alone
    assert interp_run(build_asm("mov %r0, 9\ncall 5\nexit"), helpers={5: lambda it: None}) == 9


def test_a_stub_that_does_not_return_transfers_control():
    """Transfer(pc, regs, depth): frames above `depth` dropped, regs set, R10 of that frame."""
    text = "mov %r6, 6\ncall local f\nmov %r0, 1\nexit\n" \
           "f:\ncall local g\nexit\n" \
           "g:\ncall runtime 77\nexit\n" \
           "h:\nmov %r0, %r10\nadd %r0, %r1\nadd %r0, %r6\nexit"
    insns = asm(text)
    h = next(i for i in range(len(insns)) if insns[i].code == 0xBF and insns[i].src == 10)

    def throw(it: Interp) -> None:
        assert [f.call_pc for f in it.frames] == [1, 4]
        raise Transfer(h, {1: 100}, depth=0)

    vp = raw_vp(insns)
    it = Interp(vp, kfuncs={77: throw})
    assert it.run() == STACK_TOP + 100 + 6  # main's R10, the given R1, R6 as it was
    assert not it.frames

    def bad(it: Interp) -> None:
        raise Transfer(h, {10: 0})

    with pytest.raises(InterpError, match=r"sets registers \[10\]"):
        Interp(vp, kfuncs={77: bad}).run()
