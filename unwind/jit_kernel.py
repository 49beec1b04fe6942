"""The kernel model behind the kfunc stubs (bpf_obj_new_impl, bpf_obj_drop_impl, bpf_throw)
and the helper stubs (the scalar helpers of verifier.protos.helpers, unwind.kernel.run_state).

Slot i of the stub region (jit.layout.stub_address(i)) is verifier.protos.kfuncs.KFUNCS[i]; the
JIT is compiled against `kfunc_stub_addrs()` so its `call rel32` land on these stubs. Each
stub is a lone `ret` with a code hook bound to its address: the handler reads its
arguments from the BPF argument registers (R1 = rdi, R2 = rsi), sets rax, and the `ret`
returns to the program. bpf_throw never returns: it unwinds and continues in the
exception callback (unwind.unwinder), using the program's unwind table
(unwind.unwind_table), which the kernel model looks up once, when it is created. Helper
`id`'s stub is at jit.layout.helper_stub_address(id) (`helper_stub_addrs()`, the JIT's
`helper_addrs`), bound the same way."""

from __future__ import annotations

import time
from collections.abc import Callable

from jit.image import JitProgram
from jit.layout import HEAP_BASE, HELPER_STUB_SLOT, helper_stub_address, stub_address
from jit.machine import Machine
from unwind.kernel.ledger import Ledger
from unwind.kernel.run_state import KernelError, RunState
from unwind.unwind_table import UnwindTable, table_for
from unwind.unwinder import bpf_throw
from verifier.protos.helpers import HELPERS
from verifier.protos.kfuncs import KFUNCS

__all__ = ["Kernel", "KernelError", "helper_stub_addrs", "kfunc_stub_addrs"]
assert len(KFUNCS) <= HELPER_STUB_SLOT, "kfunc stub slots run into the helper slots"


def kfunc_stub_addrs() -> dict[int, int]:
    """kfunc BTF id -> stub address; what the JIT must be compiled with."""
    return {proto.btf_id: stub_address(slot) for slot, proto in enumerate(KFUNCS)}


def helper_stub_addrs() -> dict[int, int]:
    """helper id -> stub address, for every modelled helper; the JIT's `helper_addrs`."""
    return {proto.func_id: helper_stub_address(proto.func_id) for proto in HELPERS}


class Kernel(RunState):
    """Binds the kfunc stubs of `machine`; the run's state is the RunState it extends."""

    def __init__(self, machine: Machine, jp: JitProgram, ledger: Ledger) -> None:
        self.machine = machine
        self.jp = jp
        super().__init__(jp.verified.name, jp.verified.structs, ledger)
        self._sites: dict[int, tuple[int | None, str]] = {}  # return address -> _call_site
        self.unwind_table: UnwindTable | None = None if jp.exception_cb is None else table_for(jp)
        impls: dict[str, Callable[[Machine], None]] = {
            "bpf_obj_new_impl": self._obj_new,
            "bpf_obj_drop_impl": self._obj_drop,
            "bpf_throw": self._throw,
        }
        for slot, proto in enumerate(KFUNCS):
            impl = impls.get(proto.name) or self.unimplemented(proto.name, self._site)
            machine.bind_stub(stub_address(slot), self.counted(proto.name, impl))
        for helper in HELPERS:
            machine.bind_stub(helper_stub_address(helper.func_id),
                              self.counted(helper.func_name, self._helper(helper.name), self.helper_calls))

    def reset(self, ledger: Ledger) -> int:
        """Next run: also re-zero the heap the previous run used in guest memory."""
        used = super().reset(ledger)
        if used:
            self.machine.write(HEAP_BASE, bytes(used))
        return used

    def _call_site(self, m: Machine) -> tuple[int | None, str]:
        """BPF pc and text of the call that entered the current stub ([rsp] = return address)."""
        ret = m.read_u64(m.reg("rsp"))
        site = self._sites.get(ret)
        if site is None:
            img = self.jp.image_at(ret - 1)
            if img is None:
                return None, f"return address {ret:#x}"
            pc = img.insn_at(ret - img.address - 1)
            site = self._sites[ret] = (pc, f"subprog '{img.name}' insn {pc}")
        return site

    def _helper(self, name: str) -> Callable[[Machine], None]:
        def stub(m: Machine) -> None:
            m.set_reg("rax", self.helper(name))

        return stub

    def _site(self, m: Machine) -> str:
        return self._call_site(m)[1]

    def _obj_new(self, m: Machine) -> None:
        pc, site = self._call_site(m)
        m.set_reg("rax", self.obj_new(m.reg("rdi"), m.reg("rsi"), pc, site))

    def _obj_drop(self, m: Machine) -> None:
        self.obj_drop(m.reg("rdi"), self._site(m))

    def _throw(self, m: Machine) -> None:
        cookie = m.reg("rdi")
        self.begin_throw(cookie)
        t0 = time.perf_counter()
        self.frames = bpf_throw(m, self.jp, self.ledger, cookie, self.unwind_table)
        self.unwind_us = (time.perf_counter() - t0) * 1e6
