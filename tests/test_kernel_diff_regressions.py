"""Disagreements the kernel-diff property (tests/test_kernel_diff.py) found, minimised, each
as data: the program text and what both sides must say. Our side is checked always; the live
kernel too when it is usable (in CI a missing kernel fails, locally it skips)."""

from __future__ import annotations

import pytest

from jit.x86.alu import emit_shiftx
from tests.live_kernel import require_live_kernel
from unwind.cli.oracle import compare, table
from verifier.asm.assembler import assemble
from verifier.check.checker import check
from verifier.errors import VerifierError
from verifier.isa.insn import BPF_ARSH, BPF_LSH, BPF_RSH

# (name, program text, None when accepted / the error line when rejected)
CASES = [
    # kernel: "misaligned stack access off 0+0+-1 size 2" (var_off printed as "0")
    ("misaligned_stack", "main:\n\tr0 = *(u16 *)(r10 - 1)\n\texit\n",
     "misaligned stack access off 0+0+-1 size 2"),
    # a global's signature is what its code implies: g() reads no argument, so passing the
    # stack pointer in R1 is no error; g(u64) reads R1, so it is
    ("global_no_args", ".global g\nmain:\n\tr1 = r10\n\tcall g\n\texit\ng:\n\tr0 = 0\n\texit\n", None),
    ("global_scalar_arg", ".global g\nmain:\n\tr1 = r10\n\tcall g\n\texit\ng:\n\tr0 = r1\n\texit\n",
     "Caller passes invalid args into func#1 ('g')"),
    ("global_ctx_into_u64", ".global g\nmain:\n\tcall g\n\tr0 = 0\n\texit\n"
     "g:\n\t*(u64 *)(r10 - 64) = r1\n\tr1 = 0\n\tcall bpf_throw\n\tr0 = 0\n\texit\n",
     "Caller passes invalid args into func#1 ('g')"),
    # __sk_buff.len is a u32: an 8-byte load of it is refused
    ("ctx_len_u64", "main:\n\tr0 = *(u64 *)(r1 + 0)\n\texit\n", "invalid bpf_context access off=0 size=8"),
    # the kernel's JIT on a BMI2 CPU shifts by a register with shrx (xlated and JIT compared)
    ("shift_by_reg", "main:\n\tr2 = *(u32 *)(r1 + 0)\n\tr3 = 7\n\tw2 >>= w3\n\tr2 <<= r3\n"
     "\tr2 s>>= r3\n\tr0 = r2\n\texit\n", None),
    # the kernel checks a source register before the destination: R1 is clobbered by the call
    ("src_before_dst",
     ".global g\nmain:\n\tcall g\n\tr10 = r1\n\tr0 = 0\n\texit\ng:\n\tr0 = 0\n\texit\n",
     "R1 !read_ok"),
    # the kernel computes no value for div/mod or a shift by the width or more, so it keeps
    # both sides of the branch (and the xlated code keeps the compare)
    ("div_result_unknown",
     "main:\n\tw1 = 84\n\tw1 /= 2\n\tif w1 != 42 goto +1\n\tr0 = 1\n\tr0 = 0\n\texit\n", None),
    ("wide_shift_unknown", "main:\n\tw1 = 1\n\tw4 = 40\n\tw1 <<= w4\n\tif w1 != 256 goto +1\n\tr0 = 1\n"
     "\tr0 = 0\n\texit\n", None),
    # globals are verified in passes over their indexes (f1 before f3), only if something
    # verified calls them: the first error is f1's call into f2, not f3's read of R0
    ("globals_in_index_order", ".global f1\n.global f2\n.global f3\nmain:\n\tr1 = 1\n\tr2 = 1\n\tr3 = 1\n"
     "\tcall f3\n\tcall f1\n\texit\nf1:\n\tr1 = 1\n\tcall f2\n\tr0 = 0\n\texit\n"
     "f2:\n\tr0 = *(u32 *)(r1 + 0)\n\texit\nf3:\n\tr2 = r0\n\tr0 = 12\n\texit\n",
     "Caller passes invalid args into func#2 ('f2')"),
    # narrow ctx loads: the kernel loads the whole sk_buff field, then shifts and masks
    # (extra insns the comparison aligns across, jumps included)
    ("narrow_ctx_load", "main:\n\tr0 = *(u16 *)(r1 + 0)\n\tr0 = 0\n\texit\n", None),
    ("narrow_ctx_loads_and_a_jump", "main:\n\tr2 = *(u8 *)(r1 + 1)\n\tif r2 > 3 goto +4\n"
     "\tr3 = *(u16 *)(r1 + 2)\n\tr0 = *(u16 *)(r1 + 16)\n\tr0 += r3\n\texit\n\tr0 = 1\n\texit\n", None),
    # root may read stack it never wrote: the kernel's stack holds an earlier run's bytes, so
    # the return value is not compared (found by the 10,000-program run: a shift count read
    # from uninitialised stack); the interpreter notices the read
    ("uninit_stack_read", "main:\n\tr0 = *(u8 *)(r10 - 63)\n\texit\n", None),
    # a global that only dead code calls is never verified, and removed with the dead code
    ("uncalled_global_is_dead", ".global g\nmain:\n\tr1 = 7\n\tcall bpf_throw\n\tcall g\n\tr0 = 0\n\texit\n"
     "g:\n\tr0 = r5\n\texit\n", None),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "msg"), CASES, ids=[c[0] for c in CASES])
def test_our_verdict(name: str, text: str, msg: str | None) -> None:
    if msg is None:
        check(assemble(text))
    else:
        with pytest.raises(VerifierError) as info:
            check(assemble(text))
        assert str(info.value) == msg


@pytest.mark.parametrize(("name", "text", "msg"), CASES, ids=[c[0] for c in CASES])
def test_kernel_agrees(name: str, text: str, msg: str | None) -> None:
    require_live_kernel()
    c = compare(assemble(text), None, name)
    assert c.outcome == "agree", table([c])


def test_shiftx_encoding() -> None:
    """BMI2 forms, as the kernel's JIT wrote them on this project's VMs (shrx edi, edi, r15d)."""
    assert emit_shiftx(BPF_RSH, False, 1, 9).hex() == "c4e203f7ff"
    assert emit_shiftx(BPF_LSH, True, 0, 1).hex() == "c4e2c1f7c0"  # shlx rax, rax, rdi
    assert emit_shiftx(BPF_ARSH, True, 9, 6).hex() == "c442e2f7ff"  # sarx r15, r15, rbx



def test_the_interpreter_notices_uninitialised_stack_reads() -> None:
    from unwind.cli import pipeline
    from unwind.interp_kernel import run_interp

    reads = pipeline.build_text("main:\n\tr0 = *(u8 *)(r10 - 63)\n\texit\n").verified
    text = "main:\n\tr2 = 7\n\t*(u64 *)(r10 - 64) = r2\n\tr0 = *(u8 *)(r10 - 63)\n\texit\n"
    written = pipeline.build_text(text).verified
    assert run_interp(reads, track_stack=True).counters["uninit_stack_read"] == 1
    assert run_interp(written, track_stack=True).counters["uninit_stack_read"] == 0
    assert "uninit_stack_read" not in run_interp(reads).counters
