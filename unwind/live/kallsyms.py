"""The running kernel's symbol table (`/proc/kallsyms`, real addresses as root): names the
call targets the kernel wrote into xlated code (`__bpf_call_base + imm`) and into JIT
images (`call rel32`, the return thunk), so that they compare with ours by name."""

from __future__ import annotations

import bisect
import functools
from pathlib import Path

KALLSYMS = Path("/proc/kallsyms")


@functools.cache
def _table() -> tuple[list[int], list[str], dict[str, int]]:
    addrs: list[tuple[int, str]] = []
    try:
        text = KALLSYMS.read_text()
    except OSError:
        return [], [], {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1].lower() in ("t", "w"):
            addr = int(parts[0], 16)
            if addr:
                addrs.append((addr, parts[2]))
    addrs.sort()
    return [a for a, _ in addrs], [n for _, n in addrs], {n: a for a, n in addrs}


def address_of(name: str) -> int | None:
    return _table()[2].get(name)


def name_at(addr: int) -> str | None:
    """The function starting exactly at `addr`, None if no text symbol starts there."""
    starts, names, _ = _table()
    i = bisect.bisect_left(starts, addr)
    return names[i] if i < len(starts) and starts[i] == addr else None


def call_imm_target(imm: int) -> str | None:
    """Name of a helper/kfunc call in xlated code: imm is relative to __bpf_call_base."""
    base = address_of("__bpf_call_base")
    return name_at((base + imm) & 0xFFFF_FFFF_FFFF_FFFF) if base is not None else None
