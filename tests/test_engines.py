"""Whole runs on both engines: the JIT in Unicorn with unwind.jit_kernel (Pipeline.run) and the
reference interpreter with unwind.interp_kernel (run_interp) give the same RunResult for
the series' programs, and the interpreter kernel model's own edge cases.

Heap addresses are identical by construction (the same bump allocator from HEAP_BASE), so
released values and ledger objects are compared by address. Not compared: allocation
sites (the JIT derives them from return addresses), registers a frame never set (the JIT
sees the host's callee-saved canaries there, the interpreter zeros) and timings."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from jit.interp.engine import Interp
from jit.layout import HEAP_BASE
from unwind.cli import pipeline
from unwind.interp_kernel import InterpKernel, run_interp
from unwind.jit_kernel import KernelError
from unwind.kernel.ledger import FREED_BY_DROP, Ledger
from unwind.result import RunResult
from unwind.unwinder import UnwindError
from verifier.asm.ubpf import assemble_ubpf
from verifier.program import FdTab, Subprog, VerifiedProgram
from verifier.protos.kfuncs import KFUNCS_BY_NAME

E2E = Path(__file__).parent / "e2e"
PROGRAMS = ["demo", "four_frames.s", "no_throw.s", "derived_ptr.s", "empty_frame.s"]


def build(name: str) -> pipeline.Pipeline:
    if name == "demo":
        return pipeline.build_text(pipeline.demo_source(), "demo.s")
    return pipeline.build(pipeline.load_file(E2E / name))


def raw_vp(text: str, exception_cb: int | None = None) -> VerifiedProgram:
    insns = assemble_ubpf(text).insns
    sp = Subprog("main", 0, len(insns), "main", 512, (False,) * 4)
    return VerifiedProgram("raw", insns, [sp], [FdTab()], exception_cb, None, False)


def released(result: RunResult) -> list[tuple[str, Counter]]:
    return [(f.subprog, Counter(f.released)) for f in result.frames]


@pytest.fixture(scope="module", params=PROGRAMS)
def both(request) -> tuple[RunResult, RunResult]:
    built = build(request.param)
    return built.run(), run_interp(built.verified)


def test_same_outcome(both):
    jit, interp = both
    assert (interp.program, interp.retval, interp.threw, interp.cookie) == (
        jit.program, jit.retval, jit.threw, jit.cookie,
    )


def test_same_frames_and_releases(both):
    jit, interp = both
    assert [(f.subprog, f.index, f.kind, f.desc_pc) for f in interp.frames] == [
        (f.subprog, f.index, f.kind, f.desc_pc) for f in jit.frames
    ]
    assert released(interp) == released(jit)  # ids and values, order-insensitive per frame
    assert interp.released_count == jit.released_count


def test_same_ledger(both):
    jit, interp = both
    assert interp.ledger.summary() == jit.ledger.summary()
    def fates(ledger: Ledger) -> list[tuple]:
        return [(o.id, o.address, o.size, o.type_name, o.alloc_pc, o.freed_by) for o in ledger.objects]

    assert fates(interp.ledger) == fates(jit.ledger)
    assert interp.ledger.double_freed == jit.ledger.double_freed


def test_same_kfunc_counts(both):
    jit, interp = both
    calls = {k: v for k, v in jit.counters.items() if k.startswith("kfunc_calls")}
    assert {k: v for k, v in interp.counters.items() if k.startswith("kfunc_calls")} == calls


def test_the_demo_releases_all_four_objects_on_the_interpreter():
    result = run_interp(build("demo").verified)
    assert result.threw and result.retval == result.cookie == 0xEB9F
    assert result.released_count == 4 and not result.ledger.leaked()
    assert [f.subprog for f in result.frames] == ["__bpf_throw_tramp", "gsub", "s1", "main"]
    assert result.counters["steps"] > 0


def test_obj_new_and_drop_over_the_interpreter_heap():
    vp = raw_vp("mov %r1, 16\nmov %r2, 1\ncall runtime 10001\nmov %r6, %r0\nstdw [%r0+8], 5\n"
                "mov %r1, %r6\ncall runtime 10002\nmov %r0, %r6\nexit")
    kernel = InterpKernel(vp)
    it = Interp(vp, kfuncs=kernel.stubs())
    assert it.run() == HEAP_BASE
    assert it.mem.load(HEAP_BASE + 8, 8) == 5
    obj = kernel.ledger.objects[0]
    assert (obj.size, obj.type_name, obj.alloc_pc, obj.freed_by) == (16, "type#1", 2, FREED_BY_DROP)
    assert obj.free_site == "subprog 'main' insn 6"
    assert kernel.ledger.summary()["leaked"] == 0
    assert kernel.kfunc_calls["bpf_obj_new_impl"] == kernel.kfunc_calls["bpf_obj_drop_impl"] == 1


def test_drop_of_never_allocated_memory_is_a_bad_free_not_a_double_free():
    # bpf_obj_drop of the ctx (the verifier forbids it; the kernel model records it)
    result = run_interp(raw_vp("call runtime 10002\nmov %r0, 0\nexit"))
    assert result.ledger.bad_freed == result.ledger.double_freed != []
    assert result.ledger.freed_twice == [] and result.ledger.summary()["bad_freed"] == 1
    assert result.ledger.double_free_records[0].object_id is None


def test_double_drop_is_recorded_not_raised():
    vp = raw_vp("mov %r1, 8\nmov %r2, 0\ncall runtime 10001\nmov %r6, %r0\nmov %r1, %r6\n"
                "call runtime 10002\nmov %r1, %r6\ncall runtime 10002\nmov %r0, 0\nexit")
    result = run_interp(vp)
    assert result.ledger.double_freed == [HEAP_BASE]
    assert result.ledger.summary()["double_freed"] == 1


def test_kernel_misuse_is_one_line():
    with pytest.raises(KernelError, match=r"'raw': bpf_obj_drop_impl\(NULL\) at subprog 'main' insn 1"):
        run_interp(raw_vp("mov %r1, 0\ncall runtime 10002\nexit"))
    lock = KFUNCS_BY_NAME["bpf_rcu_read_lock"].btf_id
    with pytest.raises(KernelError, match="kfunc 'bpf_rcu_read_lock' is not modelled"):
        run_interp(raw_vp(f"call runtime {lock}\nexit"))
    throw = KFUNCS_BY_NAME["bpf_throw"].btf_id
    with pytest.raises(UnwindError, match="no exception callback"):
        run_interp(raw_vp(f"mov %r1, 1\ncall runtime {throw}\nexit"))


def test_ctx_is_written_at_ctx_base():
    result = run_interp(raw_vp("ldxw %r0, [%r1+0]\nexit"), ctx=b"\x01\x02\x03\x04")
    assert result.retval == 0x04030201 and not result.threw and result.frames == []
    assert run_interp(raw_vp("ldxw %r0, [%r1+0]\nexit")).retval == 74  # default_ctx: len = 74
