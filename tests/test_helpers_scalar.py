"""Helpers with scalar (or no) arguments and a scalar result (verifier.protos.helpers), end
to end: the verifier's verdicts and messages against the live kernel's, our engines'
return values against BPF_PROG_TEST_RUN's, the kernel model's deterministic values, and
the exceptions.o programs that call bpf_ktime_get_ns.

Every accepted tc program's return value must not depend on the values the helpers
return (the kernel's clock and random numbers are not ours), only on what is guaranteed:
clocks do not go backwards, get_prandom_u32 is 32 bits, the VM has one NUMA node."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.live_kernel import require_live_kernel
from unwind.cli import oracle, pipeline
from unwind.interp_kernel import run_interp
from unwind.kernel.run_state import FAKE_CLOCK_START_NS, FAKE_CLOCK_STEP_NS, INITIAL_JIFFIES
from unwind.live.load import kernel_load
from unwind.live.xlated import compare_xlated, kernel_dropped_dead_code
from verifier.errors import VerifierError
from verifier.isa.insn import Insn
from verifier.load.object import load_object
from verifier.program import VerifiedProgram
from verifier.protos import helpers
from verifier.protos.helpers import HELPERS, HelperArg, HelperProto

PROGS = Path(__file__).parent / "progs"
EXPECTED = json.loads((PROGS / "expected.json").read_text())["exceptions.o"]

# name -> (program type, body of main, outcome of `bpf-unwind kernel`, our message or None)
CASES: dict[str, tuple[str, str, str, str | None]] = {
    "ktime": ("tc", "call 5\n r0 = 0", "agree", None),
    "every_clock": ("tc", "call 5\n call 125\n call 160\n call 208\n r0 = 0", "agree", None),
    "clock_monotonic": ("tc", "call 5\n r6 = r0\n call 5\n r0 -= r6\n if r0 s< 0 goto +2\n r0 = 1\n exit\n"
                              " r0 = 2", "agree", None),
    "boot_after_mono": ("tc", "call 5\n r6 = r0\n call 125\n r0 -= r6\n r0 >>= 63", "agree", None),
    "tai_is_wall_clock": ("tc", "call 208\n r0 >>= 60", "agree", None),
    "prandom_is_u32": ("tc", "call 7\n r0 >>= 32", "agree", None),
    "numa_node": ("tc", "call 42", "agree", None),
    "jiffies_inlined": ("tc", "call 118\n r6 = r0\n call 118\n r0 = 7", "agree", None),
    "helper_in_subprog": ("tc", "call f\n exit\nf:\n call 5\n r0 = 3", "agree", None),
    "socket_filter": ("socket_filter", "call 160\n r0 = 0", "agree", None),
    "r1_clobbered": ("tc", "call 5\n r0 = r1", "agree", "R1 !read_ok"),
    "r5_clobbered": ("tc", "r5 = 1\n call 5\n r0 = r5", "agree", "R5 !read_ok"),
    "r0_is_scalar": ("tc", "call 5\n r0 = *(u8 *)(r0 + 0)", "agree", "R0 invalid mem access 'scalar'"),
    "coarse_in_kprobe": ("kprobe", "call 160\n r0 = 0", "agree",
                         "program of this type cannot use helper bpf_ktime_get_coarse_ns#160"),
    "unspec": ("tc", "call 0\n r0 = 0", "agree", "program of this type cannot use helper bpf_unspec#0"),
    "past_the_last_id": ("tc", "call 212\n r0 = 0", "agree", "invalid func unknown#212"),
    "map_helper": ("tc", "call 1\n r0 = 0", "unmodelled",
                   "helper call #1 is not supported by bpf-unwind yet"),
}  # fmt: skip


def source(prog_type: str, body: str) -> str:
    lines = "\n".join(f"\t{ln.strip()}" if not ln.strip().endswith(":") else ln.strip()
                      for ln in body.splitlines())  # fmt: skip
    return f".prog_type {prog_type}\nmain:\n{lines}\n\texit\n"


@pytest.mark.parametrize("name", CASES)
def test_verdicts_messages_and_retvals_agree_with_the_kernel(name):
    require_live_kernel()
    prog_type, body, outcome, message = CASES[name]
    c = oracle.compare(pipeline.load_text(source(prog_type, body), f"{name}.s"), None, f"{name}.s")
    assert c.outcome == outcome, (c.reason, c.kernel_msg, c.our_msg, c.xlated, c.jit)
    if message is None:
        assert c.ours == "accepted"
        if prog_type == "tc":
            assert c.retval_kernel is not None
    else:
        assert c.our_msg == message


def test_every_modelled_helper_is_what_the_kernel_allows_per_program_type():
    """The table's program types, measured: each modelled helper loads in each program type
    the table allows and is refused with the kernel's message elsewhere."""
    require_live_kernel()
    for proto in HELPERS:
        for prog_type in ("socket_filter", "kprobe", "tc", "tracepoint", "xdp", "cgroup_skb", "sk_skb"):
            prog = pipeline.load_text(source(prog_type, f"call {proto.func_id}\n r0 = 0"), "t.s")
            kp = kernel_load(prog, None)
            try:
                assert kp.accepted == proto.allowed(prog_type), (proto.name, prog_type, kp.error_line)
                if not kp.accepted:
                    with pytest.raises(VerifierError) as err:
                        pipeline.verify(prog)
                    assert str(err.value) == kp.error_line
            finally:
                kp.close()


def test_get_smp_processor_id_inlined_by_the_kernel_compares_as_the_call():
    """The kernel's x86-64 fixups inline it into a per-CPU load (which our JIT does not
    encode, so its images are not re-JITed here); the xlated code and the verdict agree."""
    require_live_kernel()
    prog = pipeline.load_text(source("tc", "call 8\n r6 = r0\n call 118\n r0 = r6"), "cpu.s")
    vp = pipeline.verify(prog)
    kp = kernel_load(prog, None)
    try:
        assert kp.accepted
        assert compare_xlated(vp, kp).equal
    finally:
        kp.close()
    assert pipeline.build(prog).run().retval == run_interp(vp).retval == 0


def test_scalar_argument_is_read_as_the_kernel_reads_it(monkeypatch):
    """An ARG_ANYTHING argument must be initialised (bpf_redirect(ifindex, flags), #23, as a
    verifier-only prototype: its run-time effect is not modelled); a pointer passes, since
    programs load privileged."""
    require_live_kernel()
    monkeypatch.setitem(helpers.HELPERS_BY_ID, 23, HelperProto(
        23, "redirect", (HelperArg.ANYTHING, HelperArg.ANYTHING), prog_types=frozenset({"tc"})))  # fmt: skip
    for body in ("r1 = 0\n call 23", "r2 = 0\n call 23", "r2 = r10\n r1 = 1\n call 23",
                 "r1 = 1\n r2 = 0\n call 23"):
        prog = pipeline.load_text(source("tc", body + "\n r0 = 0"), "redirect.s")
        kp = kernel_load(prog, None)
        try:
            try:
                pipeline.verify(prog)
                ours = ""
            except VerifierError as err:
                ours = str(err)
            assert (kp.accepted, "" if kp.accepted else kp.error_line) == (not ours, ours), body
        finally:
            kp.close()


def test_the_fake_clock_prng_and_cpu_are_the_same_on_both_engines_and_every_run():
    text = source("tc", "call 5\n r6 = r0\n call 125\n r0 -= r6\n r7 = r0\n call 7\n r8 = r0\n"
                        " call 7\n r0 ^= r8\n r0 <<= 32\n r0 |= r7\n r6 = r0\n call 8\n r0 += r6\n"
                        " r6 = r0\n call 118\n r0 -= r6")  # fmt: skip
    built = pipeline.build_text(text)
    first, second = built.run(), built.run()
    interp = run_interp(built.verified)
    assert first.retval == second.retval == interp.retval
    # boot - mono is one clock step; the jiffies read after two reads of the clock
    jiffies = INITIAL_JIFFIES + (FAKE_CLOCK_START_NS + 2 * FAKE_CLOCK_STEP_NS) * 250 // 1_000_000_000
    low = (jiffies - first.retval) & (2**64 - 1)
    assert low & 0xFFFF_FFFF == FAKE_CLOCK_STEP_NS
    assert low >> 32 != 0  # two draws of the PRNG differ
    assert first.counters["helper_calls.bpf_get_prandom_u32"] == 2
    ktime = "helper_calls.bpf_ktime_get_ns"
    assert first.counters[ktime] == interp.counters[ktime] == 1


def test_ktime_starts_at_the_fake_clock():
    built = pipeline.build_text(source("tc", "call 5\n r6 = r0\n call 160\n r0 -= r6\n r0 += r6"))
    assert built.run().retval == FAKE_CLOCK_START_NS + FAKE_CLOCK_STEP_NS
    built = pipeline.build_text(source("tc", "call 5"))
    assert built.run().retval == run_interp(built.verified).retval == FAKE_CLOCK_START_NS


RANGE_PROGRAMS = ("exception_assert_range", "exception_assert_range_with", "exception_bad_assert_range",
                  "exception_bad_assert_range_with")  # fmt: skip


@pytest.mark.parametrize("name", RANGE_PROGRAMS)
def test_exceptions_programs_calling_ktime_verify_and_return_what_the_kernel_returns(name):
    """bpf_assert_range on the time: both verdicts accept and the kernel, the JIT and the
    interpreter return the recorded value. The kernel's code drops the branches its scalar
    ranges prove dead; ours keeps them until the verifier tracks ranges: until then the
    outcome is `unmodelled` for that reason, and nothing else differs."""
    require_live_kernel()
    obj = load_object(PROGS / "exceptions.o")
    c = oracle.compare(obj.programs[name], obj, "exceptions.o")
    assert (c.kernel, c.ours) == ("accepted", "accepted")
    assert c.retval_kernel == c.retval_jit == c.retval_interp == EXPECTED[name]["retval"]
    assert c.outcome == "agree" or (c.outcome, c.reason) == ("unmodelled", oracle.RANGES_DEAD_CODE), c


def _vp(body: str) -> VerifiedProgram:
    return pipeline.verify(pipeline.load_text(source("tc", body), "t.s"))


def test_dead_code_explains_only_code_left_out():
    """kernel_dropped_dead_code: the kernel's insns must be ours minus some, jumps aside."""
    vp = _vp("r6 = *(u32 *)(r1 + 0)\n if r6 > 5 goto +1\n r6 = 2\n r0 = r6")
    final = list(vp.insns)
    dropped = [i for pc, i in enumerate(final) if pc not in (1, 2)]
    changed = [*dropped[:-2], Insn(0xB7, 0, 0, 0, 2), dropped[-1]]
    assert kernel_dropped_dead_code(vp, SimpleNamespace(xlated=dropped))
    assert not kernel_dropped_dead_code(vp, SimpleNamespace(xlated=changed))
    assert not kernel_dropped_dead_code(vp, SimpleNamespace(xlated=final))
