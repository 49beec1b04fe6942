"""The running kernel's own BTF (`/sys/kernel/btf/vmlinux`), read with our BTF parser: the
ids kfunc calls and tracing attach targets must name, and whether the live kernel is usable
at all (`probe`), with the exact reason when it is not."""

from __future__ import annotations

import errno
import functools
import os
import struct
from pathlib import Path

from unwind.live.bpf_sys import LiveKernelError, ProgLoad, errno_text, prog_load
from verifier.load.btf import BTF_KIND_FUNC, Btf, parse_btf

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")


@functools.cache
def vmlinux_btf() -> Btf:
    """Parsed once per process (about 2 s for the 5.5 MB blob)."""
    try:
        data = VMLINUX_BTF.read_bytes()
    except OSError as err:
        raise LiveKernelError(f"{VMLINUX_BTF}: cannot read: {err.strerror or err}") from None
    return parse_btf(data, str(VMLINUX_BTF))


@functools.cache
def _func_ids() -> dict[str, int]:
    return {t.name: t.id for t in vmlinux_btf().types if t is not None and t.kind == BTF_KIND_FUNC}


def func_id(name: str) -> int | None:
    """The vmlinux BTF id of function `name` (a kfunc or an attach target), None if absent."""
    return _func_ids().get(name)


@functools.cache
def probe() -> str | None:
    """None when bpf() works here; else one line saying exactly why the live kernel is not
    usable (not root, no bpf(), seccomp, no vmlinux BTF)."""
    if not VMLINUX_BTF.exists():
        return f"live kernel not usable: {VMLINUX_BTF} does not exist (kernel built without BTF)"
    insns = struct.pack("<BBhi", 0xB7, 0, 0, 0) + struct.pack("<BBhi", 0x95, 0, 0, 0)  # r0 = 0; exit
    try:
        res = prog_load(ProgLoad("probe", 3, insns, log_level=0))
    except LiveKernelError as err:
        return f"live kernel not usable: {err} (euid {os.geteuid()}; bpf() needs CAP_BPF or root)"
    if res.fd is None:
        why = ""
        if res.errno == errno.EPERM:
            why = " (bpf() needs CAP_BPF, or root in the initial user namespace)"
        return f"live kernel not usable: BPF_PROG_LOAD of 'r0 = 0; exit' failed: {errno_text(res.errno)}{why}"
    res.fd.close()
    return None
