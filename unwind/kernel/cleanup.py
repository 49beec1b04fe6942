"""`bpf_cleanup_resource` of this kernel model (series §3.8, §3.10): what releasing one
frame-descriptor entry means, shared by the Unicorn unwinder (unwind.unwinder, through the
plans of unwind.unwind_table) and the interpreter's kernel model (unwind.interp_kernel) so
both engines release alike.

Dispatch by entry type (`release_action`, decided once per entry): PTR_TO_BTF_ID |
MEM_ALLOC objects (bpf_obj_new) are dropped through the ledger ("freed by unwind"); NULL
values, SCALAR and NOT_INIT (poison) entries release nothing; every other type has no
destructor here and is an error. Stack entries must be register spills (dynptr and iterator
slots are not modelled yet)."""

from __future__ import annotations

from functools import cache

from unwind.kernel.ledger import FREED_BY_UNWIND, Ledger
from unwind.result import Released
from verifier.errors import BpfUnwindError
from verifier.program import FdEntry, SpillType
from verifier.regtypes import (
    MEM_ALLOC,
    NOT_INIT,
    PTR_TO_BTF_ID,
    SCALAR_VALUE,
    TypeFlag,
    base_type,
    reg_type_str,
)

_MEM_PERCPU = int(TypeFlag.MEM_PERCPU)  # plain ints: IntFlag arithmetic costs ~1 us per op
_NO_CLEANUP = (NOT_INIT, SCALAR_VALUE)
_SPILLS = (SpillType.STACK_SPILL, SpillType.STACK_INVALID)
type_str = cache(reg_type_str)

# What releasing an entry does (release_action): nothing at all, drop the object through
# the ledger when the value is not NULL, or fail ("no destructor") when it is not NULL.
KEEP = 0
FREE = 1
NO_DESTRUCTOR = 2


class UnwindError(BpfUnwindError):
    """The stack or the descriptors do not allow a correct unwind."""


def throw_error(prog: str, msg: str) -> UnwindError:
    return UnwindError(f"prog '{prog}': bpf_throw: {msg}")


def reg_entry_needs_cleanup(e: FdEntry | None) -> bool:
    """R6-R9 entries: empty, SCALAR and NOT_INIT ones are skipped (not even reported)."""
    return e is not None and base_type(e.type) not in _NO_CLEANUP


def stack_entry_supported(e: FdEntry) -> bool:
    """Only register spills are modelled."""
    return e.spill_type in _SPILLS


def unsupported_entry_error(prog: str, site: str, e: FdEntry) -> UnwindError:
    return throw_error(prog, f"{site}: unsupported frame desc entry {e.describe()}")


def no_destructor_error(prog: str, site: str, e: FdEntry) -> UnwindError:
    return throw_error(prog, f"{site}: no destructor for frame desc entry {e.describe()}")


def check_stack_entry(prog: str, site: str, e: FdEntry) -> None:
    """Before its slot is read: only register spills are modelled."""
    if not stack_entry_supported(e):
        raise unsupported_entry_error(prog, site, e)


def release_action(e: FdEntry) -> int:
    """KEEP, FREE or NO_DESTRUCTOR: what `cleanup_entry` does with a non-NULL value."""
    base = base_type(e.type)
    if base in _NO_CLEANUP:
        return KEEP
    if base != PTR_TO_BTF_ID or not e.type & MEM_ALLOC or e.type & _MEM_PERCPU:
        return NO_DESTRUCTOR
    return FREE


def cleanup_entry(ledger: Ledger, prog: str, site: str, e: FdEntry, where: str, value: int) -> Released:
    """Release what entry `e` says lives in `value` (found at its stack slot or register)."""
    rid: int | None = None
    if value != 0:
        action = release_action(e)
        if action == NO_DESTRUCTOR:
            raise no_destructor_error(prog, site, e)
        if action == FREE:
            obj = ledger.free(value - e.ptr_off, FREED_BY_UNWIND, site)  # the object's start
            rid = None if obj is None else obj.id
    return Released(where, e.off, type_str(e.type), e.btf_name, value, rid)
