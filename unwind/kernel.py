"""The kernel model behind the kfunc stubs: bpf_obj_new_impl, bpf_obj_drop_impl, bpf_throw.

Slot i of the stub region (jit.layout.stub_address(i)) is verifier.kfuncs.KFUNCS[i]; the
JIT is compiled against `kfunc_stub_addrs()` so its `call rel32` land on these stubs. Each
stub is a lone `ret` with a code hook bound to its address: the handler reads its
arguments from the BPF argument registers (R1 = rdi, R2 = rsi), sets rax, and the `ret`
returns to the program. bpf_throw never returns: it unwinds and continues in the
exception callback (unwind.unwinder), using the program's unwind table
(unwind.unwind_table), which the kernel model looks up once, when it is created."""

from __future__ import annotations

import time
from collections.abc import Callable

from jit.image import JitProgram
from jit.layout import HEAP_BASE, HEAP_SIZE, stub_address
from jit.machine import Machine
from unwind.ledger import FREED_BY_DROP, Ledger
from unwind.result import UnwoundFrame
from unwind.unwind_table import UnwindTable, table_for
from unwind.unwinder import UnwindError, bpf_throw
from verifier.errors import BpfUnwindError
from verifier.kfuncs import KFUNCS


class KernelError(BpfUnwindError):
    """A kfunc was called in a way the verifier should have made impossible."""


def kfunc_stub_addrs() -> dict[int, int]:
    """kfunc BTF id -> stub address; what the JIT must be compiled with."""
    return {proto.btf_id: stub_address(slot) for slot, proto in enumerate(KFUNCS)}


class Kernel:
    """Binds the kfunc stubs of `machine` and keeps the run's kernel-side state."""

    def __init__(self, machine: Machine, jp: JitProgram, ledger: Ledger) -> None:
        self.machine = machine
        self.jp = jp
        self.prog = jp.verified.name
        self.kfunc_calls: dict[str, int] = {}
        self._sites: dict[int, tuple[int | None, str]] = {}  # return address -> _call_site
        self.unwind_table: UnwindTable | None = None if jp.exception_cb is None else table_for(jp)
        self.reset(ledger)
        self._struct_names = {st.type_id: st.name for st in jp.verified.structs.values()}
        impls: dict[str, Callable[[Machine], None]] = {
            "bpf_obj_new_impl": self._obj_new,
            "bpf_obj_drop_impl": self._obj_drop,
            "bpf_throw": self._throw,
        }
        for slot, proto in enumerate(KFUNCS):
            impl = impls.get(proto.name, self._unimplemented(proto.name))
            machine.bind_stub(stub_address(slot), self._counted(proto.name, impl))

    def reset(self, ledger: Ledger) -> None:
        """Forget the previous run: new ledger, empty heap (re-zeroed), no throw, no counts."""
        used = getattr(self, "heap_next", HEAP_BASE) - HEAP_BASE
        if used:
            self.machine.write(HEAP_BASE, bytes(used))
        self.ledger = ledger
        self.heap_next = HEAP_BASE
        self.threw = False
        self.cookie: int | None = None
        self.frames: list[UnwoundFrame] = []
        self.unwind_us = 0.0
        for name in self.kfunc_calls:
            self.kfunc_calls[name] = 0
        self.kfunc_calls.update({proto.name: 0 for proto in KFUNCS})

    def _counted(self, name: str, impl: Callable[[Machine], None]) -> Callable[[Machine], None]:
        calls = self.kfunc_calls

        def handler(m: Machine) -> None:
            calls[name] += 1
            impl(m)

        return handler

    def _unimplemented(self, name: str) -> Callable[[Machine], None]:
        def handler(m: Machine) -> None:
            _, site = self._call_site(m)
            raise KernelError(f"prog '{self.prog}': kfunc '{name}' is not modelled (called at {site})")

        return handler

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

    def _obj_new(self, m: Machine) -> None:
        size = m.reg("rdi")
        type_id = m.reg("rsi")
        rounded = (max(size, 1) + 7) & ~7
        if size > HEAP_SIZE or self.heap_next + rounded > HEAP_BASE + HEAP_SIZE:
            m.set_reg("rax", 0)  # heap exhausted: bpf_obj_new returns NULL
            return
        address = self.heap_next
        self.heap_next += rounded  # bump allocator: memory is never reused, so still zeroed
        pc, site = self._call_site(m)
        type_name = self._struct_names.get(type_id, f"type#{type_id}")
        self.ledger.alloc(address, size, type_name, pc, site)
        m.set_reg("rax", address)

    def _obj_drop(self, m: Machine) -> None:
        ptr = m.reg("rdi")
        _, site = self._call_site(m)
        if ptr == 0:
            raise KernelError(f"prog '{self.prog}': bpf_obj_drop_impl(NULL) at {site}")
        self.ledger.free(ptr, FREED_BY_DROP, site)

    def _throw(self, m: Machine) -> None:
        if self.threw:
            raise UnwindError(f"prog '{self.prog}': bpf_throw called again after an exception")
        cookie = m.reg("rdi")
        self.threw = True
        self.cookie = cookie
        t0 = time.perf_counter()
        self.frames = bpf_throw(m, self.jp, self.ledger, cookie, self.unwind_table)
        self.unwind_us = (time.perf_counter() - t0) * 1e6
