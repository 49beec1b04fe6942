"""Fixed guest addresses of the emulated machine: where images, kfunc stubs, the host entry
stub, the kernel stack, the ctx and the object heap live. Shared by the JIT (which must
know call targets when it emits `call rel32`) and the machine (which maps them)."""

from __future__ import annotations

PAGE = 0x1000

HOST_STUB_BASE = 0x0010_0000  # host entry stub: `call`s the main image, then `hlt`
HOST_STUB_SIZE = PAGE

STUB_BASE = 0x0020_0000  # kfunc/helper stubs, STUB_STRIDE bytes apart, each a lone `ret`
STUB_STRIDE = 16
STUB_REGION_SIZE = 0x1_0000

CODE_BASE = 0x0100_0000  # JIT images, each page-aligned with an unmapped guard page after
CODE_REGION_SIZE = 0x0100_0000

CTX_BASE = 0x0400_0000  # program context (a __sk_buff-like buffer)
CTX_SIZE = PAGE

HEAP_BASE = 0x0500_0000  # objects returned by bpf_obj_new
HEAP_SIZE = 0x0010_0000

STACK_BASE = 0x0700_0000  # the "kernel stack" all BPF frames live on, guard page below it
STACK_SIZE = 0x0001_0000
STACK_TOP = STACK_BASE + STACK_SIZE - 0x100  # initial rsp of the host stub (16-aligned)


def stub_address(slot: int) -> int:
    """Address of the `slot`-th call stub."""
    return STUB_BASE + slot * STUB_STRIDE


HELPER_STUB_SLOT = 64  # stub slots below are kfuncs (table order), from here helpers by id


def helper_stub_address(func_id: int) -> int:
    """Address of helper `func_id`'s call stub."""
    return stub_address(HELPER_STUB_SLOT + func_id)


def image_address(previous_end: int) -> int:
    """Next page-aligned load address leaving one unmapped guard page after `previous_end`."""
    return ((previous_end + PAGE - 1) // PAGE + 1) * PAGE
