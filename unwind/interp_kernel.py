"""The kernel model behind the reference interpreter (jit.interp.engine): the object kfuncs over
the interpreter's heap, bpf_throw over its frame records, and `run_interp`, a whole run of
a `VerifiedProgram` returning the same `RunResult` as the JIT runner (unwind.runner).

It is unwind.jit_kernel + unwind.unwinder for the other engine, recording into the same
`unwind.kernel.ledger.Ledger` and producing the same `UnwoundFrame` / `Released` trace:

- bpf_obj_new_impl / bpf_obj_drop_impl: unwind.kernel.run_state, shared with the JIT's kernel
  model, so objects get the same addresses on both engines.
- bpf_throw: walks the interpreter's frames innermost first (the throwing frame, then the
  suspended callers in `interp.frames`), each at the insn pc of its call. Hidden subprogs
  (the throw trampoline) need no cleanup; every other frame needs the descriptor keyed
  by its call pc (unwind.kernel.cleanup releases its entries, as on the JIT). Stack entries are
  read at fp+off, R6-R9 entries take the value the frame had at its call (the interpreter
  saves them, no prologue pushes to recover); MEM_ALLOC objects are freed "by unwind". Then control moves
  to the exception callback on main's frame with R1 = cookie (`jit.interp.engine.Transfer`).
  An `UnwoundFrame` of this engine counts in insns: ip = the return pc (call pc + 1),
  ret_offset = ip - subprog start, sp = bp = the frame's R10.
- every other kfunc of verifier.protos.kfuncs.KFUNCS is a named "not modelled" `KernelError`;
- the scalar helpers of verifier.protos.helpers: unwind.kernel.run_state, as on the JIT.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from jit.interp.alu import M64
from jit.interp.engine import DEFAULT_BUDGET, Interp, StackTrackingMemory, StubFn, Transfer
from jit.layout import CTX_BASE, CTX_SIZE
from unwind.kernel.cleanup import (
    UnwindError,
    check_stack_entry,
    cleanup_entry,
    reg_entry_needs_cleanup,
    throw_error,
)
from unwind.kernel.ledger import Ledger
from unwind.kernel.run_state import KernelError, RunState
from unwind.result import RunResult, UnwoundFrame
from unwind.runner import default_ctx
from verifier.program import VerifiedProgram
from verifier.protos.helpers import HELPERS
from verifier.protos.kfuncs import KFUNCS

__all__ = ["InterpKernel", "run_interp"]


class InterpKernel(RunState):
    """The kernel-side state of interpreter runs of one program: `stubs()` are the kfunc
    stubs to give `Interp`; `reset` starts a new run (new ledger, empty heap: give it a fresh
    interpreter memory too, `Interp.reset_memory()`, so new objects read as zeroed)."""

    def __init__(self, vp: VerifiedProgram, ledger: Ledger | None = None) -> None:
        self.vp = vp
        super().__init__(vp.name, vp.structs, Ledger() if ledger is None else ledger)

    def stubs(self) -> dict[int, StubFn]:
        """kfunc BTF id -> stub, for every kfunc the verifier knows."""
        impls: dict[str, StubFn] = {
            "bpf_obj_new_impl": self._obj_new,
            "bpf_obj_drop_impl": self._obj_drop,
            "bpf_throw": self._throw,
        }
        return {
            p.btf_id: self.counted(p.name, impls.get(p.name) or self.unimplemented(p.name, self._site))
            for p in KFUNCS
        }

    def helper_stubs(self) -> dict[int, StubFn]:
        """helper id -> stub, for every helper the verifier models."""
        return {
            p.func_id: self.counted(p.func_name, self._helper(p.name), self.helper_calls) for p in HELPERS
        }

    def _helper(self, name: str) -> StubFn:
        return lambda it: self.helper(name)

    def _site(self, it: Interp) -> str:
        return f"subprog '{self.vp.subprogs[it.sub_of[it.pc]].name}' insn {it.pc}"

    # -- object kfuncs ---------------------------------------------------------------------

    def _obj_new(self, it: Interp) -> int:
        return self.obj_new(it.regs[1], it.regs[2], it.pc, self._site(it))

    def _obj_drop(self, it: Interp) -> None:
        self.obj_drop(it.regs[1], self._site(it))

    # -- bpf_throw ---------------------------------------------------------------------------

    def _err(self, msg: str) -> UnwindError:
        return throw_error(self.prog, msg)

    def _throw(self, it: Interp) -> None:
        vp = self.vp
        if vp.exception_cb is None:
            raise self._err("program has no exception callback")
        regs = it.regs
        cookie = regs[1]
        self.begin_throw(cookie)
        t0 = time.perf_counter()
        chain = [(it.pc, (regs[6], regs[7], regs[8], regs[9]), regs[10])]
        chain += [(f.call_pc, f.saved, f.fp) for f in reversed(it.frames)]
        if it.sub_of[chain[-1][0]] != 0:
            raise self._err("the outermost frame is not main")
        if not vp.exception_boundary:
            raise self._err(f"main subprog '{vp.subprogs[0].name}' is not an exception boundary")
        self.frames = [self._frame(it, call_pc, saved, fp) for call_pc, saved, fp in chain]
        self.unwind_us = (time.perf_counter() - t0) * 1e6
        raise Transfer(vp.subprogs[vp.exception_cb].start, {1: cookie}, depth=0)

    def _frame(self, it: Interp, call_pc: int, saved: tuple[int, int, int, int], fp: int) -> UnwoundFrame:
        idx = it.sub_of[call_pc]
        sp = self.vp.subprogs[idx]
        frame = UnwoundFrame(
            subprog=sp.name,
            index=idx,
            kind=sp.kind,
            ip=call_pc + 1,
            sp=fp,
            bp=fp,
            ret_offset=call_pc + 1 - sp.start,
            desc_pc=None,
            saved_regs=saved,
        )
        if sp.hidden:
            return frame
        # As on the JIT: every frame on a throw path has a descriptor, maybe empty.
        desc = self.vp.fdtabs[idx].find(call_pc)
        if desc is None:
            raise self._err(f"no frame descriptor for subprog '{sp.name}' at insn {call_pc}")
        frame.desc_pc = desc.pc
        site = f"subprog '{sp.name}' pc {desc.pc}"
        for e in desc.stack:
            check_stack_entry(self.prog, site, e)
            value = it.mem.load((fp + e.off) & M64, 8)
            frame.released.append(cleanup_entry(self.ledger, self.prog, site, e, "stack", value))
        for i, e in enumerate(desc.regs):
            if reg_entry_needs_cleanup(e):
                frame.released.append(cleanup_entry(self.ledger, self.prog, site, e, "reg", saved[i]))
        return frame


def run_interp(
    vp: VerifiedProgram,
    ctx: bytes | None = None,
    budget: int = DEFAULT_BUDGET,
    helpers: Mapping[int, StubFn] | None = None,
    track_stack: bool = False,
) -> RunResult:
    """Run main once in the reference interpreter with R1 = CTX_BASE holding `ctx`
    (default: unwind.runner.default_ctx()) and the kernel model; the interpreter's
    counterpart of unwind.runner.run_jit_program. Faults raise InterpError, kernel misuse
    KernelError, bad unwinds UnwindError."""
    data = default_ctx() if ctx is None else ctx
    if len(data) > CTX_SIZE:
        raise KernelError(f"prog '{vp.name}': ctx of {len(data)} bytes exceeds {CTX_SIZE}")
    kernel = InterpKernel(vp)
    interp = Interp(vp, helpers={**kernel.helper_stubs(), **(helpers or {})}, kfuncs=kernel.stubs(),
                    budget=budget)  # fmt: skip
    if track_stack:  # counters["uninit_stack_read"] says whether it read stack it never wrote
        interp.mem = StackTrackingMemory(vp.maps)
    interp.mem.write(CTX_BASE, data)
    t0 = time.perf_counter()
    retval = interp.run(CTX_BASE)
    elapsed_us = (time.perf_counter() - t0) * 1e6
    counters = {"steps": interp.steps, "time_us": round(elapsed_us, 1)}
    if isinstance(interp.mem, StackTrackingMemory):
        counters["uninit_stack_read"] = int(interp.mem.read_uninit)
    return kernel.result(retval, counters)
