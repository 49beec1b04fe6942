"""Reference interpreter: runs a `VerifiedProgram` (final insns, subprogs) in Python, the
oracle for differential tests against the JIT and the baseline of the benchmarks. A pure
engine: it knows no kfunc or helper semantics (the kernel model behind them lives in
unwind/, see unwind.interp_kernel), it only calls the stubs its caller gives it.

Same guest memory layout as the Unicorn machine (jit.layout): ctx/input memory at CTX_BASE
(one page), the heap at HEAP_BASE, the stack region at STACK_BASE, and the value of every
global data map at its `map_addresses` address (exactly value_size bytes, filled with the
section's initial data whenever the memory is made: `Interp.reset_memory()` restores it).
BPF frames live on the stack going down from STACK_TOP, FRAME_SIZE (512) bytes each: main's
R10 is STACK_TOP, a callee's R10 is its caller's minus 512. Only these regions are
addressable; anything else is a one-line `InterpError` naming program, subprog and insn.

Calls: a bpf2bpf call saves the caller's R6-R9 and R10 in a `Frame` record (restored at the
callee's exit; R1-R5 are passed through as they are), at most MAX_CALL_FRAMES deep.

Stubs: helpers and kfuncs are `StubFn`s, `fn(interp) -> r0 | None` (None: void, r0 kept),
keyed by helper id / kfunc BTF id. A stub reads its arguments from `interp.regs`, the call
insn from `interp.pc`, the suspended callers from `interp.frames` (outermost first) and
guest memory through `interp.mem`. A stub that does not return (bpf_throw) raises
`Transfer(pc, regs, depth)`: the interpreter cuts its call stack to `depth` suspended
frames (0: main's frame), sets the given registers and R10 of that frame, and continues at
insn `pc`; the same as `jit.machine.Machine.resume_at` for the JIT. A call whose id has no
stub is an error.

Every run has an instruction budget; running out is an error naming subprog and insn."""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from jit.interp.alu import M64, Op, UnsupportedInsn
from jit.interp.ops import compile_op
from jit.layout import (
    CTX_BASE,
    CTX_SIZE,
    HEAP_BASE,
    HEAP_SIZE,
    STACK_BASE,
    STACK_SIZE,
    STACK_TOP,
    map_addresses,
)
from verifier.errors import BpfUnwindError
from verifier.isa.insn import MAX_BPF_STACK, MAX_CALL_FRAMES
from verifier.program import ProgMap, VerifiedProgram

FRAME_SIZE = MAX_BPF_STACK
DEFAULT_BUDGET = 10_000_000
EXIT = -1
_STRUCTS = {1: struct.Struct("<B"), 2: struct.Struct("<H"), 4: struct.Struct("<I"), 8: struct.Struct("<Q")}

__all__ = [
    "DEFAULT_BUDGET", "FRAME_SIZE", "Frame", "Interp", "InterpError", "Memory", "StubFn", "Transfer",
    "interp_run",
]


class InterpError(BpfUnwindError):
    """A fault, budget exhaustion or unsupported insn while interpreting a program."""


class MemFault(Exception):
    """An access outside every region; the run loop adds the location."""


class Transfer(Exception):  # noqa: N818 - a control transfer, not an error
    """Raised by a stub that does not return: continue at insn `pc` on the frame at call
    depth `depth` (0: main's; deeper frames are dropped) with `regs` ({regno: value}) set.
    R10 is that frame's and cannot be given."""

    def __init__(self, pc: int, regs: Mapping[int, int], depth: int = 0) -> None:
        super().__init__(pc, dict(regs), depth)
        self.pc = pc
        self.regs = dict(regs)
        self.depth = depth


StubFn = Callable[["Interp"], "int | None"]


class Memory:
    """The addressable guest memory: (base, bytes) regions, little-endian; `maps` are the
    program's maps (each global data map's value is a region holding its initial data)."""

    def __init__(self, maps: Sequence[ProgMap] = ()) -> None:
        self.regions: list[tuple[int, int, bytearray, str]] = []
        self.add(CTX_BASE, CTX_SIZE, "ctx")
        self.add(STACK_BASE, STACK_SIZE, "stack")
        self.add(HEAP_BASE, HEAP_SIZE, "heap")
        for address, m in zip(map_addresses([m.value_size for m in maps]), maps, strict=True):
            if m.is_data:
                self.add(address, m.value_size, m.name)
                self.write(address, m.initial_value())

    def add(self, base: int, size: int, name: str) -> None:
        self.regions.append((base, base + size, bytearray(size), name))

    def _find(self, addr: int, size: int, what: str) -> tuple[bytearray, int]:
        for base, end, buf, _ in self.regions:
            if base <= addr and addr + size <= end:
                return buf, addr - base
        raise MemFault(f"{what} of {size} bytes at {addr:#x} is outside every mapped region")

    def load(self, addr: int, size: int) -> int:
        for base, end, buf, _ in self.regions:
            if base <= addr and addr + size <= end:
                return _STRUCTS[size].unpack_from(buf, addr - base)[0]
        raise MemFault(f"load of {size} bytes at {addr:#x} is outside every mapped region")

    def store(self, addr: int, size: int, value: int) -> None:
        for base, end, buf, _ in self.regions:
            if base <= addr and addr + size <= end:
                _STRUCTS[size].pack_into(buf, addr - base, value)
                return
        raise MemFault(f"store of {size} bytes at {addr:#x} is outside every mapped region")

    def read(self, addr: int, size: int) -> bytes:
        buf, off = self._find(addr, size, "read")
        return bytes(buf[off : off + size])

    def write(self, addr: int, data: bytes) -> None:
        buf, off = self._find(addr, len(data), "write")
        buf[off : off + len(data)] = data


class StackTrackingMemory(Memory):
    """Memory that remembers which stack bytes this run wrote, and whether it ever loaded one
    it had not written: a privileged program may (the verifier allows uninitialised stack
    reads for root), and then its result depends on what an earlier user left there."""

    def __init__(self, maps: Sequence[ProgMap] = ()) -> None:
        super().__init__(maps)
        self.written = bytearray(STACK_SIZE)
        self.read_uninit = False

    def load(self, addr: int, size: int) -> int:
        off = addr - STACK_BASE
        if 0 <= off < STACK_SIZE and not all(self.written[off : off + size]):
            self.read_uninit = True
        return super().load(addr, size)

    def store(self, addr: int, size: int, value: int) -> None:
        off = addr - STACK_BASE
        if 0 <= off < STACK_SIZE:
            self.written[off : off + size] = b"\x01" * size
        super().store(addr, size, value)


@dataclass(frozen=True)
class Frame:
    """A caller suspended at a bpf2bpf call."""

    ret_pc: int
    call_pc: int
    saved: tuple[int, int, int, int]  # the caller's R6..R9 at the call
    fp: int  # the caller's R10


def _raising(message: str) -> Op:
    def op(regs: list[int]) -> int:
        raise UnsupportedInsn(message)

    return op


class Interp:
    """One program, runnable many times; `run` resets registers, frames and the budget
    (memory persists across runs unless `reset_memory()` is called; so does whatever state
    the stubs keep)."""

    def __init__(
        self,
        vp: VerifiedProgram,
        helpers: Mapping[int, StubFn] | None = None,
        kfuncs: Mapping[int, StubFn] | None = None,
        budget: int = DEFAULT_BUDGET,
    ) -> None:
        if budget <= 0:
            raise ValueError("budget must be positive")
        self.vp = vp
        self.name = vp.name
        self.budget = budget
        self.helpers = dict(helpers or {})
        self.kfuncs = dict(kfuncs or {})
        self.map_addrs = map_addresses([m.value_size for m in vp.maps])
        self.mem = Memory(vp.maps)
        self.regs = [0] * 12
        self.frames: list[Frame] = []
        self.pc = 0
        self.steps = 0
        self.sub_of = [0] * len(vp.insns)  # insn pc -> subprog index
        for i, sp in enumerate(vp.subprogs):
            for pc in range(sp.start, min(sp.end, len(vp.insns))):
                self.sub_of[pc] = i
        self.ops = self._compile()

    def _compile(self) -> list[Op]:
        insns = self.vp.insns
        ops: list[Op] = []
        pc = 0
        while pc < len(insns):
            try:
                op = compile_op(self, insns, pc)
            except UnsupportedInsn as exc:
                op = _raising(f"unsupported insn ({insns[pc].code:#04x}): {exc}")
            ops.append(op)
            if insns[pc].is_ld_imm64():
                ops.append(_raising("jump into the second slot of ld_imm64"))
                pc += 1
            pc += 1
        ops.append(_raising("fell off the end of the program"))
        return ops

    def reset_memory(self) -> None:
        self.mem = Memory(self.vp.maps)

    def map_address(self, index: int) -> int:
        """Where map `index` of the program (its value, for global data) is."""
        if not 0 <= index < len(self.map_addrs):
            raise UnsupportedInsn(f"ld_imm64 of map #{index}, which the program does not have")
        return self.map_addrs[index]

    def where(self, pc: int) -> str:
        if 0 <= pc < len(self.sub_of):
            return f"subprog '{self.vp.subprogs[self.sub_of[pc]].name}' at insn {pc}"
        return f"insn {pc} (outside the program)"

    def _error(self, pc: int, what: str) -> InterpError:
        return InterpError(f"prog '{self.name}': {what} in {self.where(pc)}")

    # -- running -------------------------------------------------------------------------

    def run(self, r1: int = CTX_BASE, r2: int = 0) -> int:
        """Call main(r1, r2); return r0 (u64) after main's exit (or, after a `Transfer`, the
        exit of the code it continued in)."""
        regs = self.regs
        regs[:] = [0] * 12
        regs[1], regs[2], regs[10] = r1 & M64, r2 & M64, STACK_TOP
        self.frames.clear()
        ops = self.ops
        pc = self.vp.subprogs[0].start
        steps = 0
        try:
            for steps in range(1, self.budget + 1):  # noqa: B007 - steps is read after the loop
                pc = ops[pc](regs)
                if pc < 0:
                    self.steps = steps
                    return regs[0]
        except MemFault as exc:
            raise self._error(pc, f"bad memory access: {exc}") from None
        except UnsupportedInsn as exc:
            raise self._error(pc, str(exc)) from None
        except IndexError:
            raise self._error(pc, "jump outside the program") from None
        self.steps = steps
        raise self._error(pc, f"instruction budget of {self.budget} exhausted")

    # -- Core: memory, calls, exit ---------------------------------------------------------

    def load(self, addr: int, size: int) -> int:
        return self.mem.load(addr, size)

    def store(self, addr: int, size: int, value: int) -> None:
        self.mem.store(addr, size, value)

    def call_local(self, regs: list[int], pc: int, target: int) -> int:
        if len(self.frames) + 1 >= MAX_CALL_FRAMES:
            raise UnsupportedInsn(f"call stack deeper than {MAX_CALL_FRAMES} frames")
        self.frames.append(Frame(pc + 1, pc, (regs[6], regs[7], regs[8], regs[9]), regs[10]))
        regs[10] -= FRAME_SIZE
        return target

    def exit(self, regs: list[int]) -> int:
        if not self.frames:
            return EXIT
        f = self.frames.pop()
        regs[6], regs[7], regs[8], regs[9] = f.saved
        regs[10] = f.fp
        return f.ret_pc

    def call_helper(self, regs: list[int], pc: int, helper_id: int) -> int:
        return self._call_stub(regs, pc, self.helpers.get(helper_id), f"helper {helper_id}")

    def call_kfunc(self, regs: list[int], pc: int, btf_id: int) -> int:
        return self._call_stub(regs, pc, self.kfuncs.get(btf_id), f"kfunc with BTF id {btf_id}")

    def _call_stub(self, regs: list[int], pc: int, fn: StubFn | None, what: str) -> int:
        """Run a helper/kfunc stub: its return value (if any) is R0; a Transfer moves on."""
        if fn is None:
            raise UnsupportedInsn(f"{what} is not modelled")
        self.pc = pc
        try:
            ret = fn(self)
        except Transfer as t:
            return self._transfer(regs, t)
        if ret is not None:
            regs[0] = ret & M64
        return pc + 1

    def _transfer(self, regs: list[int], t: Transfer) -> int:
        if not 0 <= t.depth <= len(self.frames):
            raise UnsupportedInsn(f"stub transfer to call depth {t.depth} of {len(self.frames)}")
        if any(not 0 <= r < 10 for r in t.regs):
            raise UnsupportedInsn(f"stub transfer sets registers {sorted(t.regs)} (R0-R9 only)")
        del self.frames[t.depth :]
        for r, value in t.regs.items():
            regs[r] = value & M64
        regs[10] = STACK_TOP - FRAME_SIZE * t.depth
        return t.pc


def interp_run(
    vp: VerifiedProgram,
    r1: int = CTX_BASE,
    r2: int = 0,
    memory: bytes | None = None,
    helpers: Mapping[int, StubFn] | None = None,
    kfuncs: Mapping[int, StubFn] | None = None,
    budget: int = DEFAULT_BUDGET,
) -> int:
    """Interpret `vp` once: `memory` (if given) is written at CTX_BASE first; returns r0."""
    interp = Interp(vp, helpers=helpers, kfuncs=kfuncs, budget=budget)
    if memory:
        interp.mem.write(CTX_BASE, memory)
    return interp.run(r1, r2)
