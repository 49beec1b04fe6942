"""Fixed guest addresses of the emulated machine: where images, kfunc stubs, the host entry
stub, the kernel stack, the ctx (and a tc program's packet, in the ctx page: `packet_address`),
the object heap and the maps live. Shared by the JIT (which must know call targets when it
emits `call rel32`, and map addresses for ld_imm64), the machine (which maps them) and the
reference interpreter (same addresses)."""

from __future__ import annotations

from collections.abc import Sequence

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
# The ctx page's first CTX_HEAD bytes are the ctx and the hidden pointers the rewritten ctx
# loads read (verifier.rewrite.ctx_access); a tc test run's packet lies after them, ending
# exactly at the end of the page so that a read past its end faults on both engines.
CTX_HEAD = 0x100

HEAP_BASE = 0x0500_0000  # objects returned by bpf_obj_new
HEAP_SIZE = 0x0010_0000

MAP_BASE = 0x0600_0000  # maps: each one's value (global data) on its own pages, a guard page after
MAP_REGION_SIZE = 0x00F0_0000

STACK_BASE = 0x0700_0000  # the "kernel stack" all BPF frames live on, guard page below it
STACK_SIZE = 0x0001_0000
STACK_TOP = STACK_BASE + STACK_SIZE - 0x100  # initial rsp of the host stub (16-aligned)


def packet_address(length: int) -> int:
    """Where a packet of `length` bytes starts: it ends at the end of the ctx page."""
    if not 0 <= length <= CTX_SIZE - CTX_HEAD:
        raise ValueError(f"a packet of {length} bytes does not fit the ctx page")
    return CTX_BASE + CTX_SIZE - length


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


def map_span(value_size: int) -> int:
    """Bytes of whole pages that hold a map value of `value_size` bytes (at least one page)."""
    return max(1, (value_size + PAGE - 1) // PAGE) * PAGE


def map_addresses(value_sizes: Sequence[int]) -> tuple[int, ...]:
    """Guest address of each map, in order: where its value starts (a global data section's
    variables are at offsets from it); a map without a value still gets its own page, so
    that every map pointer is distinct. ValueError when they do not fit the map region."""
    out: list[int] = []
    address = MAP_BASE
    for size in value_sizes:
        out.append(address)
        address += map_span(size) + PAGE
    if address > MAP_BASE + MAP_REGION_SIZE:
        raise ValueError(f"{len(out)} maps need {address - MAP_BASE:#x} bytes, more than the map region")
    return tuple(out)
