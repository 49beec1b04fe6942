"""The Unicorn machine a `JitProgram` runs on: memory map, kfunc and helper stubs, entry/exit,
faults.

Layout (all from jit.layout): the host entry stub page, the kfunc stub region (a lone `ret`
at every `stub_address(slot)`, int3 everywhere else), every image at its load address on
its own pages (unmapped guard pages in between), ctx, heap, the value of every global data
map at the address the JIT compiled in (`JitProgram.map_addrs`, its own pages with an
unmapped page after them, filled with the section's initial data by `load_maps`), and the
kernel stack with an unmapped guard page below it.

Design rules taken from the measured Unicorn costs and traps (shared/reference/unicorn-costs.md):

- Entry is `call r11; hlt` at HOST_STUB_BASE; a run is finished when rip is just past that
  `hlt`. `until` is an address of the host stub page that is never executed.
- Every `emu_start` uses `count=budget` (one mode per Uc: mixing count and no-count runs
  flushes the whole translation cache). Unicorn does not report how many instructions a
  stopped run executed, so each segment of a run (entry, then one per control transfer,
  at most MAX_SEGMENTS) gets the full budget.
- kfunc stubs are `UC_HOOK_CODE` hooks bound to exactly the stub address; handlers use raw
  ctypes register access (`reg` / `set_reg`, ~0.8 us instead of 2.6 us via the binding).
- A handler that must transfer control (bpf_throw -> exception callback) calls
  `resume_at`, which records the continuation and stops emulation; the run loop restarts
  emulation there (one extra `emu_start`, ~1.5 us).
- Faults and budget exhaustion become one-line `MachineError`s naming program, subprog
  and BPF insn.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterable, Mapping

import unicorn.unicorn_const as ucc
from unicorn import UC_ARCH_X86, UC_HOOK_CODE, UC_HOOK_MEM_UNMAPPED, UC_MODE_64, Uc, UcError
from unicorn import x86_const as x86
from unicorn.unicorn_py3.unicorn import uclib

from jit.image import JitImage, JitProgram
from jit.layout import (
    CTX_BASE,
    CTX_SIZE,
    HEAP_BASE,
    HEAP_SIZE,
    HELPER_STUB_SLOT,
    HOST_STUB_BASE,
    HOST_STUB_SIZE,
    PAGE,
    STACK_BASE,
    STACK_SIZE,
    STACK_TOP,
    STUB_BASE,
    STUB_REGION_SIZE,
    STUB_STRIDE,
    map_span,
    stub_address,
)
from verifier.errors import BpfUnwindError
from verifier.program import ProgMap
from verifier.protos.helpers import HELPERS_BY_ID
from verifier.protos.kfuncs import KFUNCS

REG_IDS: dict[str, int] = {
    "rax": x86.UC_X86_REG_RAX,
    "rdi": x86.UC_X86_REG_RDI,
    "rsi": x86.UC_X86_REG_RSI,
    "rdx": x86.UC_X86_REG_RDX,
    "rcx": x86.UC_X86_REG_RCX,
    "r8": x86.UC_X86_REG_R8,
    "r9": x86.UC_X86_REG_R9,
    "r10": x86.UC_X86_REG_R10,
    "r11": x86.UC_X86_REG_R11,
    "rbx": x86.UC_X86_REG_RBX,
    "r12": x86.UC_X86_REG_R12,
    "r13": x86.UC_X86_REG_R13,
    "r14": x86.UC_X86_REG_R14,
    "r15": x86.UC_X86_REG_R15,
    "rbp": x86.UC_X86_REG_RBP,
    "rsp": x86.UC_X86_REG_RSP,
    "rip": x86.UC_X86_REG_RIP,
}

# Host stub: `call r11` (41 FF D3) then `hlt` (F4). A finished run leaves rip at HOST_EXIT.
HOST_ENTRY_CODE = b"\x41\xff\xd3\xf4"
HOST_EXIT = HOST_STUB_BASE + len(HOST_ENTRY_CODE)
# `until`: inside the mapped host stub page, never executed (trap 2 of unicorn-costs.md).
UNTIL = HOST_STUB_BASE + HOST_STUB_SIZE - 0x10
STACK_END = STACK_BASE + STACK_SIZE

# Recognisable values of the kernel caller's callee-saved registers (checked after a run).
CALLEE_SAVED_CANARIES: dict[str, int] = {
    "rbx": 0xCA11_0000_0000_00B6,
    "rbp": 0xCA11_0000_0000_00BB,
    "r12": 0xCA11_0000_0000_0012,
    "r13": 0xCA11_0000_0000_0013,
    "r14": 0xCA11_0000_0000_0014,
    "r15": 0xCA11_0000_0000_0015,
}

MAX_SEGMENTS = 16  # emu_start calls per run (1 + control transfers such as bpf_throw)

_UC_ERR_NAMES = {getattr(ucc, n): n for n in dir(ucc) if n.startswith("UC_ERR_")}

StubHandler = Callable[["Machine"], None]


class MachineError(BpfUnwindError):
    """A fault, budget exhaustion or broken calling contract while running a program."""


def _page_runs(pages: Iterable[int]) -> list[tuple[int, int]]:
    """Contiguous (start, size) runs of a set of page addresses."""
    runs: list[tuple[int, int]] = []
    for p in sorted(set(pages)):
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1] = (runs[-1][0], runs[-1][1] + PAGE)
        else:
            runs.append((p, PAGE))
    return runs


class Machine:
    """One emulated x86-64 CPU with the images of `jp` mapped; single use per run."""

    def __init__(self, jp: JitProgram, budget: int = 10_000_000) -> None:
        if budget <= 0:
            raise ValueError("budget must be positive")
        self.jp = jp
        self.budget = budget
        self.name = jp.verified.name
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self._uch = self.uc._uch
        self._val = ctypes.c_uint64()
        self._ref = ctypes.byref(self._val)
        self._stack_buf = bytearray(STACK_SIZE)
        self._stack_cbuf = (ctypes.c_char * STACK_SIZE).from_buffer(self._stack_buf)
        self._u64_cbuf = (ctypes.c_char * 8)()
        self._continuation: tuple[int, dict[str, int]] | None = None
        self._bad_access: tuple[int, int] | None = None
        self._handlers: dict[int, StubHandler] = {}
        self.emu_starts = 0
        self._map_memory()
        self.uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped)

    # -- memory map -------------------------------------------------------------------

    def _map_memory(self) -> None:
        uc = self.uc
        uc.mem_map(HOST_STUB_BASE, HOST_STUB_SIZE)
        uc.mem_write(HOST_STUB_BASE, b"\xcc" * HOST_STUB_SIZE)
        uc.mem_write(HOST_STUB_BASE, HOST_ENTRY_CODE)
        uc.mem_map(STUB_BASE, STUB_REGION_SIZE)
        uc.mem_write(STUB_BASE, b"\xcc" * STUB_REGION_SIZE)  # unbound slots trap
        for slot in range(len(KFUNCS)):
            uc.mem_write(stub_address(slot), b"\xc3")
        fixed = [
            (HOST_STUB_BASE, HOST_STUB_SIZE),
            (STUB_BASE, STUB_REGION_SIZE),
            (CTX_BASE, CTX_SIZE),
            (HEAP_BASE, HEAP_SIZE),
            (STACK_BASE, STACK_SIZE),
        ]
        pages: list[int] = []
        for img in self.jp.images:
            if not img.code:
                continue
            first = img.address & ~(PAGE - 1)
            last = (img.end + PAGE - 1) & ~(PAGE - 1)
            for base, size in fixed:
                if first < base + size and base < last:
                    raise MachineError(
                        f"prog '{self.name}': image '{img.name}' at {img.address:#x} overlaps a fixed region"
                    )
            pages.extend(range(first, last, PAGE))
        for start, size in _page_runs(pages):
            uc.mem_map(start, size)
        for img in self.jp.images:
            if img.code:
                uc.mem_write(img.address, img.code)
        uc.mem_map(CTX_BASE, CTX_SIZE)
        uc.mem_map(HEAP_BASE, HEAP_SIZE)
        uc.mem_map(STACK_BASE, STACK_SIZE)  # STACK_BASE - PAGE stays unmapped: guard page
        for address, m in self._data_maps():
            uc.mem_map(address, map_span(m.value_size))
        self.load_maps()

    def _data_maps(self) -> list[tuple[int, ProgMap]]:
        maps = self.jp.verified.maps
        return [(a, m) for a, m in zip(self.jp.map_addrs, maps, strict=False) if m.is_data]

    def load_maps(self) -> None:
        """(Re)write every global data map's value with its section's initial data."""
        for address, m in self._data_maps():
            self.uc.mem_write(address, m.initial_value().ljust(map_span(m.value_size), b"\0"))

    def _on_unmapped(self, uc: Uc, access: int, address: int, size: int, value: int, data: object) -> bool:
        self._bad_access = (access, address)
        return False

    # -- register and memory access (raw ctypes) ---------------------------------------

    def reg(self, name: str) -> int:
        uclib.uc_reg_read(self._uch, REG_IDS[name], self._ref)
        return self._val.value

    def set_reg(self, name: str, value: int) -> None:
        self._val.value = value & 0xFFFF_FFFF_FFFF_FFFF
        uclib.uc_reg_write(self._uch, REG_IDS[name], self._ref)

    def read_u64(self, address: int) -> int:
        if uclib.uc_mem_read(self._uch, address, self._u64_cbuf, 8) != ucc.UC_ERR_OK:
            raise MachineError(f"prog '{self.name}': cannot read 8 bytes at {address:#x}")
        return int.from_bytes(self._u64_cbuf.raw, "little")

    def read(self, address: int, size: int) -> bytes:
        return bytes(self.uc.mem_read(address, size))

    def write(self, address: int, data: bytes) -> None:
        self.uc.mem_write(address, data)

    def read_stack(self, sp: int) -> memoryview:
        """[sp, stack end) in one read. The view aliases a buffer reused by the next call."""
        if not STACK_BASE <= sp <= STACK_END:
            raise MachineError(f"prog '{self.name}': stack pointer {sp:#x} outside the stack")
        n = STACK_END - sp
        if n and uclib.uc_mem_read(self._uch, sp, self._stack_cbuf, n) != ucc.UC_ERR_OK:
            raise MachineError(f"prog '{self.name}': cannot read the stack at {sp:#x}")
        return memoryview(self._stack_buf)[:n]

    # -- stubs and control transfer ----------------------------------------------------

    def bind_stub(self, address: int, handler: StubHandler) -> None:
        """Run `handler(machine)` whenever `address` (a lone `ret` stub) is about to execute."""
        if address in self._handlers:
            raise MachineError(f"prog '{self.name}': stub {address:#x} bound twice")
        if STUB_BASE <= address < STUB_BASE + STUB_REGION_SIZE:
            self.uc.mem_write(address, b"\xc3")
        self._handlers[address] = handler

        def hook(uc: Uc, addr: int, size: int, data: object) -> None:
            handler(self)

        self.uc.hook_add(UC_HOOK_CODE, hook, begin=address, end=address)

    def resume_at(self, address: int, regs: Mapping[str, int]) -> None:
        """From inside a stub handler: stop here and continue at `address` with `regs` set."""
        self._continuation = (address, dict(regs))
        self.uc.emu_stop()

    # -- running -----------------------------------------------------------------------

    def run(self, entry: JitImage, r1: int) -> int:
        """Call `entry(r1)` as the kernel would; return rax (u64) after it returns."""
        self.set_reg("rsp", STACK_TOP)
        self.set_reg("rdi", r1)
        self.set_reg("r11", entry.address)
        self.set_reg("rax", 0)
        for name, value in CALLEE_SAVED_CANARIES.items():
            self.set_reg(name, value)
        begin = HOST_STUB_BASE
        for _ in range(MAX_SEGMENTS):
            self._continuation = None
            self._bad_access = None
            self.emu_starts += 1
            try:
                self.uc.emu_start(begin, UNTIL, count=self.budget)
            except UcError as err:
                raise MachineError(self._fault_message(err)) from None
            if self._continuation is not None:
                begin, regs = self._continuation
                for name, value in regs.items():
                    self.set_reg(name, value)
                continue
            rip = self.reg("rip")
            if rip != HOST_EXIT:
                raise MachineError(
                    f"prog '{self.name}': instruction budget of {self.budget} exhausted in {self.where(rip)}"
                )
            self._check_callee_saved()
            return self.reg("rax")
        raise MachineError(f"prog '{self.name}': more than {MAX_SEGMENTS} control transfers in one run")

    def _check_callee_saved(self) -> None:
        bad = [
            f"{name}={self.reg(name):#x} (expected {value:#x})"
            for name, value in CALLEE_SAVED_CANARIES.items()
            if self.reg(name) != value
        ]
        if self.reg("rsp") != STACK_TOP:
            bad.append(f"rsp={self.reg('rsp'):#x} (expected {STACK_TOP:#x})")
        if bad:
            raise MachineError(f"prog '{self.name}': callee-saved registers not restored: {', '.join(bad)}")

    def where(self, rip: int) -> str:
        """Human location of `rip`: subprog and BPF insn, a stub, or nowhere known."""
        img = self.jp.image_at(rip)
        if img is not None:
            insn = img.insn_at(rip - img.address)
            if insn is None:
                return f"subprog '{img.name}' prologue"
            return f"subprog '{img.name}' at insn {insn}"
        if STUB_BASE <= rip < STUB_BASE + STUB_REGION_SIZE:
            slot = (rip - STUB_BASE) // STUB_STRIDE
            if slot >= HELPER_STUB_SLOT:
                helper = HELPERS_BY_ID.get(slot - HELPER_STUB_SLOT)
                return f"helper stub '{helper.func_name if helper else slot - HELPER_STUB_SLOT}'"
            name = KFUNCS[slot].name if slot < len(KFUNCS) else f"slot {slot}"
            return f"kfunc stub '{name}'"
        if HOST_STUB_BASE <= rip < HOST_STUB_BASE + HOST_STUB_SIZE:
            return "host entry stub"
        return "code outside every image"

    def _fault_message(self, err: UcError) -> str:
        rip = self.reg("rip")
        what = _UC_ERR_NAMES.get(err.errno, str(err))
        if self._bad_access is not None:
            address = self._bad_access[1]
            what += f" at {address:#x}"
            if STACK_BASE - PAGE <= address < STACK_BASE:
                what += " (stack guard page: stack overflow)"
        return f"prog '{self.name}': fault in {self.where(rip)} (rip={rip:#x}): {what}"
