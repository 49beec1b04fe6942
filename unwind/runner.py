"""Run a `JitProgram` once: machine + kernel model + ledger, ctx set up, result collected.

The JIT must have been compiled with `unwind.kernel.kfunc_stub_addrs()`; a program whose
`stub_addrs` disagree is refused before it runs (its calls would land on the wrong stubs)."""

from __future__ import annotations

import struct
import time

from jit.image import JitProgram
from jit.layout import CTX_BASE, CTX_SIZE
from jit.machine import Machine, MachineError
from unwind.kernel import Kernel, kfunc_stub_addrs
from unwind.ledger import Ledger
from unwind.result import RunResult

CTX_LEN = 192  # a __sk_buff-like buffer
DEFAULT_PKT_LEN = 74
ETH_P_IP = 0x0800


def default_ctx() -> bytes:
    """len = 74 at offset 0, protocol = htons(ETH_P_IP) at 16 (reads as 8 little-endian)."""
    buf = bytearray(CTX_LEN)
    struct.pack_into("<I", buf, 0, DEFAULT_PKT_LEN)
    struct.pack_into(">H", buf, 16, ETH_P_IP)  # network order in a zeroed u32
    return bytes(buf)


def run_jit_program(jp: JitProgram, ctx: bytes | None = None, budget: int = 10_000_000) -> RunResult:
    """Run main with R1 = CTX_BASE; raise MachineError / UnwindError on faults and bad unwinds."""
    expected = kfunc_stub_addrs()
    if jp.stub_addrs and jp.stub_addrs != expected:
        raise MachineError(
            f"prog '{jp.verified.name}': JIT was compiled with kfunc stubs {jp.stub_addrs}, "
            f"the kernel model provides {expected}"
        )
    data = default_ctx() if ctx is None else ctx
    if len(data) > CTX_SIZE:
        raise MachineError(f"prog '{jp.verified.name}': ctx of {len(data)} bytes exceeds {CTX_SIZE}")
    machine = Machine(jp, budget)
    ledger = Ledger()
    kernel = Kernel(machine, jp, ledger)
    machine.write(CTX_BASE, data)
    t0 = time.perf_counter()
    retval = machine.run(jp.main, CTX_BASE)
    elapsed_us = (time.perf_counter() - t0) * 1e6
    counters: dict[str, float] = {
        "kfunc_calls": sum(kernel.kfunc_calls.values()),
        "emu_starts": machine.emu_starts,
        "time_us": round(elapsed_us, 1),
    }
    for name, n in kernel.kfunc_calls.items():
        counters[f"kfunc_calls.{name}"] = n
    return RunResult(
        program=jp.verified.name,
        retval=retval,
        threw=kernel.threw,
        cookie=kernel.cookie,
        frames=kernel.frames,
        ledger=ledger,
        counters=counters,
    )
