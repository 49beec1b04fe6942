"""Execution speed: the JIT in Unicorn against the reference interpreter on loop-heavy
programs, measured in one run.

Each program is built once (`%r` assembly, unchecked build with the fixups' guards, as the
conformance runner does) and run `--repeats` times on each engine; the table gives medians,
the interpreter/JIT time ratio, and emulated BPF instructions per second (the count is the
interpreter's step count, which the JIT executes as well). JIT compilation and creating
the Unicorn machine are outside the timed region and reported once per program.

    .venv/bin/python benchmarks/exec_speed.py [--repeats 7] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jit.compile import jit_program  # noqa: E402
from jit.interp.engine import Interp  # noqa: E402
from jit.layout import CTX_BASE  # noqa: E402
from jit.machine import Machine  # noqa: E402
from unwind.cli.conformance import HELPER_RETURN_R1, build_asm, helper_stub_addrs  # noqa: E402
from unwind.jit_kernel import kfunc_stub_addrs  # noqa: E402
from verifier.program import VerifiedProgram  # noqa: E402

MEM = bytes((i * 37 + 11) & 0xFF for i in range(256))


def sum_loop(n: int) -> str:
    """ALU and one backward branch: r0 = sum of i*i for i < n (mod 2**64)."""
    return f"""
mov %r0, 0
mov %r1, 0
loop:
mov %r2, %r1
mul %r2, %r1
add %r0, %r2
add %r1, 1
jlt %r1, {n}, loop
exit
"""


def checksum(rounds: int) -> str:
    """Byte loads over 256 bytes of input, a 32-bit rolling hash kept on the stack."""
    return f"""
mov %r6, %r1
mov %r7, {rounds}
stdw [%r10-8], 0
outer:
mov %r3, 0
inner:
mov %r4, %r6
add %r4, %r3
ldxb %r5, [%r4+0]
ldxdw %r0, [%r10-8]
mul32 %r0, 31
add32 %r0, %r5
stxdw [%r10-8], %r0
add %r3, 1
jlt %r3, 256, inner
sub %r7, 1
jne %r7, 0, outer
ldxdw %r0, [%r10-8]
exit
"""


def primes(limit: int) -> str:
    """Trial division with mod by register (guarded by the fixups): count primes < limit."""
    return f"""
mov %r0, 0
mov %r1, 2
next:
mov %r2, 2
try:
mov %r3, %r2
mul %r3, %r2
jgt %r3, %r1, prime
mov %r4, %r1
mod %r4, %r2
jeq %r4, 0, composite
add %r2, 1
ja try
prime:
add %r0, 1
composite:
add %r1, 1
jlt %r1, {limit}, next
exit
"""


def calls(n: int) -> str:
    """A bpf2bpf call and a helper call per iteration; R6-R9 live across both."""
    return f"""
mov %r6, 0
mov %r7, {n}
loop:
mov %r1, %r7
call local f
add %r6, %r0
mov %r1, %r6
call {HELPER_RETURN_R1}
sub %r7, 1
jne %r7, 0, loop
mov %r0, %r6
exit
f:
mov %r0, %r1
lsh %r0, 3
xor %r0, %r1
exit
"""


def programs(scale: float) -> list[tuple[str, str]]:
    s = max(scale, 0.01)
    return [
        ("sum_loop", sum_loop(int(240_000 * s))),
        ("checksum", checksum(int(160 * s) or 1)),
        ("primes", primes(int(10_000 * s) or 3)),
        ("calls", calls(int(40_000 * s) or 1)),
    ]


def time_interp(vp: VerifiedProgram, repeats: int) -> tuple[float, int, int]:
    """Median seconds, BPF insns executed, r0."""
    interp = Interp(vp, helpers={HELPER_RETURN_R1: lambda it: it.regs[1]}, budget=100_000_000)
    interp.mem.write(CTX_BASE, MEM)
    times = []
    r0 = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        r0 = interp.run(CTX_BASE, len(MEM))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), interp.steps, r0


def time_jit(vp: VerifiedProgram, repeats: int) -> tuple[float, float, int]:
    """Median run seconds, compile + machine setup seconds (once), r0."""
    helpers = helper_stub_addrs()
    t0 = time.perf_counter()
    jp = jit_program(vp, kfunc_stub_addrs(), helper_addrs=helpers)
    setup = time.perf_counter() - t0
    times = []
    r0 = 0
    for _ in range(repeats):
        machine = Machine(jp, budget=1_000_000_000)
        machine.bind_stub(helpers[HELPER_RETURN_R1], lambda m: m.set_reg("rax", m.reg("rdi")))
        machine.write(CTX_BASE, MEM)
        machine.set_reg("rsi", len(MEM))
        t0 = time.perf_counter()
        r0 = machine.run(jp.main, CTX_BASE)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), setup, r0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every loop count")
    args = ap.parse_args(argv)
    header = (f"{'program':<10} {'BPF insns':>10} {'interp ms':>10} {'jit ms':>9} {'ratio':>7} "
              f"{'interp Minsn/s':>15} {'jit Minsn/s':>12} {'jit compile ms':>15}")
    print(f"medians over {args.repeats} runs; ratio = interpreter time / JIT time")
    print(header)
    print("-" * len(header))
    for name, text in programs(args.scale):
        vp = build_asm(text, name)
        t_interp, steps, r0_interp = time_interp(vp, args.repeats)
        t_jit, setup, r0_jit = time_jit(vp, args.repeats)
        if r0_interp != r0_jit:
            print(f"{name}: engines disagree: interp r0={r0_interp:#x}, jit r0={r0_jit:#x}", file=sys.stderr)
            return 1
        print(f"{name:<10} {steps:>10} {t_interp * 1e3:>10.1f} {t_jit * 1e3:>9.2f} {t_interp / t_jit:>6.0f}x "
              f"{steps / t_interp / 1e6:>15.2f} {steps / t_jit / 1e6:>12.1f} {setup * 1e3:>15.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
