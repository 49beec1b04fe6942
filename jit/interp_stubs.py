"""The object kfuncs as the reference interpreter sees them: bpf_obj_new_impl and
bpf_obj_drop_impl over the interpreter's heap region.

This mirrors unwind.kernel's model of the same kfuncs (bump allocation from HEAP_BASE in
8-byte steps, never reused, so new objects are zeroed; NULL when the heap is exhausted;
dropping NULL is an error; freeing an address that is not live is recorded as a double
free, never raised) so that a program gives the same results on both engines. It lives in
jit/ only because the interpreter may not import unwind/ (data flows one way,
ARCHITECTURE.md); it keeps its own small record instead of unwind.ledger.Ledger.

A stub is `fn(interp) -> r0 | None` (None: void, r0 unchanged). It reads its arguments
from `interp.regs` and the call site from `interp.pc`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jit.layout import HEAP_BASE, HEAP_SIZE
from verifier.errors import BpfUnwindError
from verifier.kfuncs import KFUNCS_BY_NAME

if TYPE_CHECKING:
    from jit.interp import Interp

StubFn = Callable[["Interp"], "int | None"]

FREED_BY_DROP = "bpf_obj_drop"
FREED_BY_UNWIND = "unwind"
OBJ_NEW_ID = KFUNCS_BY_NAME["bpf_obj_new_impl"].btf_id
OBJ_DROP_ID = KFUNCS_BY_NAME["bpf_obj_drop_impl"].btf_id


class StubError(BpfUnwindError):
    """A stub was called in a way the verifier should have made impossible."""


@dataclass
class HeapObject:
    id: int  # 1-based, allocation order
    address: int
    size: int
    type_id: int
    alloc_pc: int
    freed_by: str | None = None
    free_pc: int | None = None

    @property
    def live(self) -> bool:
        return self.freed_by is None


class HeapModel:
    """Allocation record of one interpreter run."""

    def __init__(self) -> None:
        self.next = HEAP_BASE
        self.objects: list[HeapObject] = []
        self.double_freed: list[int] = []
        self._live: dict[int, HeapObject] = {}

    def obj_new(self, interp: Interp) -> int:
        size, type_id = interp.regs[1], interp.regs[2]
        rounded = (max(size, 1) + 7) & ~7
        if size > HEAP_SIZE or self.next + rounded > HEAP_BASE + HEAP_SIZE:
            return 0
        address = self.next
        self.next += rounded
        obj = HeapObject(len(self.objects) + 1, address, size, type_id, interp.pc)
        self.objects.append(obj)
        self._live[address] = obj
        return address

    def obj_drop(self, interp: Interp) -> None:
        ptr = interp.regs[1]
        if ptr == 0:
            raise StubError("bpf_obj_drop_impl(NULL)")
        self.free(ptr, FREED_BY_DROP, interp.pc)
        return None

    def free(self, address: int, by: str, pc: int) -> HeapObject | None:
        obj = self._live.pop(address, None)
        if obj is None:
            self.double_freed.append(address)
            return None
        obj.freed_by, obj.free_pc = by, pc
        return obj

    def leaked(self) -> list[HeapObject]:
        return [o for o in self.objects if o.live]

    def stubs(self) -> dict[int, StubFn]:
        """kfunc BTF id -> stub."""
        return {OBJ_NEW_ID: self.obj_new, OBJ_DROP_ID: self.obj_drop}
