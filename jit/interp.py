"""Reference interpreter: runs a `VerifiedProgram` (final insns, subprogs, fdtabs) in Python,
the oracle for differential tests against the JIT and the baseline of the benchmarks.

Same guest memory layout as the Unicorn machine (jit.layout): ctx/input memory at CTX_BASE
(one page), the heap at HEAP_BASE, the stack region at STACK_BASE. BPF frames live on that
stack going down from STACK_TOP, FRAME_SIZE (512) bytes each: main's R10 is STACK_TOP, a
callee's R10 is its caller's minus 512. Only these regions are addressable; anything else
is a one-line `InterpError` naming program, subprog and insn.

Calls: a bpf2bpf call saves the caller's R6-R9 and R10 in a frame record (restored at the
callee's exit; R1-R5 are passed through as they are), at most MAX_CALL_FRAMES deep.
Helpers and kfuncs are `StubFn`s (jit.interp_stubs) keyed by helper id / BTF id; the
object kfuncs default to a `HeapModel`. `bpf_throw` unwinds the interpreter's own frame
list with the program's fdtabs (keyed by the insn pc of each frame's call): stack entries
are read at fp+off, R6-R9 entries take the value the frame had at its call, allocated
objects are released, then the exception callback runs on main's frame with R1 = cookie.

Every run has an instruction budget; running out is an error naming subprog and insn."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from jit.interp_alu import M64, Op, UnsupportedInsn
from jit.interp_ops import compile_op
from jit.interp_stubs import FREED_BY_UNWIND, HeapModel, StubError, StubFn
from jit.layout import CTX_BASE, CTX_SIZE, HEAP_BASE, HEAP_SIZE, STACK_BASE, STACK_SIZE, STACK_TOP
from verifier.errors import BpfUnwindError
from verifier.insn import MAX_BPF_STACK, MAX_CALL_FRAMES
from verifier.kfuncs import BPF_THROW_BTF_ID, KFUNCS_BY_ID
from verifier.program import FdEntry, SpillType, VerifiedProgram
from verifier.regtypes import MEM_ALLOC, NOT_INIT, PTR_TO_BTF_ID, SCALAR_VALUE, TypeFlag, base_type

FRAME_SIZE = MAX_BPF_STACK
DEFAULT_BUDGET = 10_000_000
EXIT = -1
_STRUCTS = {1: struct.Struct("<B"), 2: struct.Struct("<H"), 4: struct.Struct("<I"), 8: struct.Struct("<Q")}
_MEM_PERCPU = int(TypeFlag.MEM_PERCPU)

__all__ = ["FRAME_SIZE", "Interp", "InterpError", "Memory", "interp_run"]


class InterpError(BpfUnwindError):
    """A fault, budget exhaustion or unsupported insn while interpreting a program."""


class MemFault(Exception):
    """An access outside every region; the run loop adds the location."""


class Memory:
    """The addressable guest memory: (base, bytes) regions, little-endian."""

    def __init__(self) -> None:
        self.regions: list[tuple[int, int, bytearray, str]] = []
        self.add(CTX_BASE, CTX_SIZE, "ctx")
        self.add(STACK_BASE, STACK_SIZE, "stack")
        self.add(HEAP_BASE, HEAP_SIZE, "heap")

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


@dataclass(frozen=True)
class Frame:
    """A caller suspended at a bpf2bpf call."""

    ret_pc: int
    call_pc: int
    saved: tuple[int, int, int, int]  # the caller's R6..R9 at the call
    fp: int  # the caller's R10


@dataclass
class UnwoundStep:
    """One frame bpf_throw walked, innermost first."""

    subprog: str
    call_pc: int
    desc_pc: int | None
    released: list[tuple[str, int, int]] = field(default_factory=list)  # (stack|reg, off/regno, value)


def _raising(message: str) -> Op:
    def op(regs: list[int]) -> int:
        raise UnsupportedInsn(message)

    return op


class Interp:
    """One program, runnable many times; `run` resets registers, frames and the budget
    (memory and the heap model persist across runs unless `reset_memory()` is called)."""

    def __init__(
        self,
        vp: VerifiedProgram,
        helpers: Mapping[int, StubFn] | None = None,
        kfuncs: Mapping[int, StubFn] | None = None,
        heap: HeapModel | None = None,
        budget: int = DEFAULT_BUDGET,
    ) -> None:
        if budget <= 0:
            raise ValueError("budget must be positive")
        self.vp = vp
        self.name = vp.name
        self.budget = budget
        self.helpers = dict(helpers or {})
        self.heap = heap if heap is not None else HeapModel()
        self.kfuncs: dict[int, StubFn] = {**self.heap.stubs(), **(kfuncs or {})}
        self.mem = Memory()
        self.regs = [0] * 12
        self.frames: list[Frame] = []
        self.pc = 0
        self.steps = 0
        self.threw = False
        self.cookie: int | None = None
        self.unwound: list[UnwoundStep] = []
        self.sub_of = [0] * len(vp.insns)
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
        self.mem = Memory()
        self.heap = HeapModel()
        self.kfuncs.update(self.heap.stubs())

    def where(self, pc: int) -> str:
        if 0 <= pc < len(self.sub_of):
            return f"subprog '{self.vp.subprogs[self.sub_of[pc]].name}' at insn {pc}"
        return f"insn {pc} (outside the program)"

    def _error(self, pc: int, what: str) -> InterpError:
        return InterpError(f"prog '{self.name}': {what} in {self.where(pc)}")

    # -- running -------------------------------------------------------------------------

    def run(self, r1: int = CTX_BASE, r2: int = 0) -> int:
        """Call main(r1, r2); return r0 (u64) after main's exit (or the exception callback's)."""
        regs = self.regs
        regs[:] = [0] * 12
        regs[1], regs[2], regs[10] = r1 & M64, r2 & M64, STACK_TOP
        self.frames.clear()
        self.threw, self.cookie, self.unwound = False, None, []
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
        except (UnsupportedInsn, StubError) as exc:
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
        fn = self.helpers.get(helper_id)
        if fn is None:
            raise UnsupportedInsn(f"helper {helper_id} is not modelled")
        self.pc = pc
        ret = fn(self)
        if ret is not None:
            regs[0] = ret & M64
        return pc + 1

    def call_kfunc(self, regs: list[int], pc: int, btf_id: int) -> int:
        if btf_id == BPF_THROW_BTF_ID and btf_id not in self.kfuncs:
            return self._throw(regs, pc)
        fn = self.kfuncs.get(btf_id)
        if fn is None:
            proto = KFUNCS_BY_ID.get(btf_id)
            raise UnsupportedInsn(f"kfunc '{proto.name if proto else btf_id}' is not modelled")
        self.pc = pc
        ret = fn(self)
        if ret is not None:
            regs[0] = ret & M64
        return pc + 1

    # -- bpf_throw ---------------------------------------------------------------------------

    def _throw(self, regs: list[int], pc: int) -> int:
        vp = self.vp
        if self.threw:
            raise StubError("bpf_throw called again after an exception")
        if vp.exception_cb is None:
            raise StubError("bpf_throw: program has no exception callback")
        cookie = regs[1]
        chain = [(pc, (regs[6], regs[7], regs[8], regs[9]), regs[10])]
        chain += [(f.call_pc, f.saved, f.fp) for f in reversed(self.frames)]
        for call_pc, saved, fp in chain:
            self.unwound.append(self._unwind_frame(call_pc, saved, fp))
        if self.sub_of[chain[-1][0]] != 0:
            raise StubError("bpf_throw: the outermost frame is not main")
        self.threw, self.cookie = True, cookie
        self.frames.clear()
        regs[1], regs[10] = cookie, STACK_TOP
        return vp.subprogs[vp.exception_cb].start

    def _unwind_frame(self, call_pc: int, saved: tuple[int, int, int, int], fp: int) -> UnwoundStep:
        idx = self.sub_of[call_pc]
        sp = self.vp.subprogs[idx]
        fdtab = self.vp.fdtabs[idx] if idx < len(self.vp.fdtabs) else None
        step = UnwoundStep(sp.name, call_pc, None)
        if sp.hidden or fdtab is None or not len(fdtab):
            return step
        desc = fdtab.find(call_pc)
        if desc is None:
            raise StubError(f"bpf_throw: no frame descriptor for subprog '{sp.name}' at insn {call_pc}")
        step.desc_pc = desc.pc
        for e in desc.stack:
            if e.spill_type not in (SpillType.STACK_SPILL, SpillType.STACK_INVALID):
                raise StubError(f"bpf_throw: unsupported frame desc entry {e.describe()} at insn {call_pc}")
            value = self.mem.load((fp + e.off) & M64, 8)
            step.released.append(("stack", e.off, self._release(e, value, call_pc)))
        for i, e in enumerate(desc.regs):
            if e is None or base_type(e.type) in (NOT_INIT, SCALAR_VALUE):
                continue
            step.released.append(("reg", 6 + i, self._release(e, saved[i], call_pc)))
        return step

    def _release(self, e: FdEntry, value: int, pc: int) -> int:
        base = base_type(e.type)
        if base in (NOT_INIT, SCALAR_VALUE) or value == 0:
            return value
        if base != PTR_TO_BTF_ID or not e.type & MEM_ALLOC or e.type & _MEM_PERCPU:
            raise StubError(f"bpf_throw: no destructor for frame desc entry {e.describe()}")
        self.heap.free(value, FREED_BY_UNWIND, pc)
        return value


def interp_run(
    vp: VerifiedProgram,
    r1: int = CTX_BASE,
    r2: int = 0,
    memory: bytes | None = None,
    helpers: Mapping[int, StubFn] | None = None,
    budget: int = DEFAULT_BUDGET,
) -> int:
    """Interpret `vp` once: `memory` (if given) is written at CTX_BASE first; returns r0."""
    interp = Interp(vp, helpers=helpers, budget=budget)
    if memory:
        interp.mem.write(CTX_BASE, memory)
    return interp.run(r1, r2)
