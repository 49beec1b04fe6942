"""Load one of our `Program`s into the running kernel and read back what it made of it.

`kernel_load(prog, obj)` builds the BPF_PROG_LOAD request the way a loader would:
- program BTF: the object's `.BTF` with the fix-ups of `unwind.live.btf_raw` or, for text
  assembly, BTF written for it (`unwind.live.asm_btf`); func_info for every subprog (so
  global subprogs and exception callbacks work) and line_info when .BTF.ext has it;
- maps created from their definitions, global data sections as one-element arrays filled
  with their initial data (`.rodata` frozen), their fds patched into the ld_imm64s;
- kfunc calls resolved by name to the running kernel's BTF ids;
- program type, expected attach type and attach target from the section name.
The result (`KernelProgram`) holds the kernel's verdict and log and, when accepted, the fd,
xlated and JIT-ed code per function, `jited_ksyms`, `jited_line_info` and
`verified_insns`. `close()` releases every fd the load opened, on every path."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from unwind.live.asm_btf import asm_program_btf
from unwind.live.bpf_sys import (
    Fd,
    LiveKernelError,
    MapSpec,
    ProgInfo,
    ProgLoad,
    btf_load,
    errno_text,
    map_create,
    map_freeze,
    map_update,
    prog_info,
    prog_load,
)
from unwind.live.btf_raw import fixup_object_btf
from unwind.live.vmlinux import func_id
from verifier.isa.insn import BPF_PSEUDO_KFUNC_CALL, Insn, insns_to_bytes, unpack_slot
from verifier.load.btf import BTF_KIND_PTR, BTF_KIND_VAR
from verifier.load.model import LoadedObject
from verifier.program import BPF_F_RDONLY_PROG, Program
from verifier.protos.kfuncs import KFUNCS_BY_ID

# Program.prog_type -> (BPF_PROG_TYPE_*, expected attach type)
PROG_TYPES: dict[str, tuple[int, int]] = {
    "socket_filter": (1, 0), "kprobe": (2, 0), "tc": (3, 0), "tracepoint": (5, 0), "xdp": (6, 0),
    "perf_event": (7, 0), "cgroup_skb": (8, 0), "raw_tracepoint": (17, 0), "flow_dissector": (22, 0),
    "sk_skb": (14, 0), "sk_msg": (16, 0), "fentry": (26, 24), "fexit": (26, 25), "fmod_ret": (26, 26),
    "tracing": (26, 23), "lsm": (29, 27), "syscall": (31, 0),
}  # fmt: skip
BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE = 1, 2
BPF_F_MMAPABLE = 1 << 10
RINGBUF_TYPES = (27, 31)  # BPF_MAP_TYPE_RINGBUF, BPF_MAP_TYPE_USER_RINGBUF
PAGE = 4096


class Unloadable(LiveKernelError):
    """The program cannot be handed to the kernel (a feature the loader lacks); one line."""


@dataclass
class KernelProgram:
    """The kernel's answer for one program."""

    name: str
    accepted: bool
    log: str
    errno: int = 0
    fd: Fd | None = None
    info: ProgInfo | None = None
    owned: list[Fd] = field(default_factory=list)  # BTF and map fds, closed with the program

    @property
    def error_line(self) -> str:
        """The verifier's error: the last log line before the statistics lines."""
        lines = [ln for ln in self.log.splitlines() if ln.strip()]
        while lines and (lines[-1].startswith(("processed ", "verification time", "stack depth"))):
            lines.pop()
        if len(lines) > 2 and lines[-2].startswith("cur state:") and lines[-1].startswith("old state:"):
            del lines[-2:]  # the states printed after "infinite loop detected"
        if lines and "processed " in lines[-1]:  # some messages lack their newline
            lines[-1] = lines[-1][: lines[-1].index("processed ")]
        if not lines and self.errno:
            return f"BPF_PROG_LOAD: {errno_text(self.errno)} (no verifier log)"
        return lines[-1] if lines else ""

    @property
    def xlated(self) -> list[Insn]:
        raw = self.info.xlated if self.info else b""
        return [unpack_slot(raw, i) for i in range(0, len(raw), 8)]

    def images(self) -> list[bytes]:
        """The JIT image of each function, split by jited_func_lens."""
        if self.info is None:
            return []
        out, pos = [], 0
        for n in self.info.jited_func_lens or (len(self.info.jited),):
            out.append(self.info.jited[pos : pos + n])
            pos += n
        return out

    def close(self) -> None:
        if self.fd is not None:
            self.fd.close()
        for fd in self.owned:
            fd.close()
        self.owned.clear()


def _sym_value(obj: LoadedObject, section: str, name: str) -> int | None:
    sec = obj.image.section(section)
    if sec is None:
        return None
    for s in obj.image.symbols:
        if s.name == name and 0 < s.shndx < len(obj.image.sections) and obj.image.sections[s.shndx] is sec:
            return s.value
    return None


def _line_info(prog: Program) -> bytes:
    """The program's line_info (Program.line_info, already at its linked insn indexes) as
    BPF_PROG_LOAD takes it; the string offsets refer to the object's own .BTF."""
    return b"".join(struct.pack("<IIII", li.insn_off, li.file_name_off, li.line_off, li.line_col)
                    for li in prog.line_info)  # fmt: skip


def _patch_kfuncs(prog: Program, insns: list[Insn]) -> None:
    for pc, insn in enumerate(insns):
        if insn.code == 0x85 and insn.src == BPF_PSEUDO_KFUNC_CALL:
            proto = KFUNCS_BY_ID.get(insn.imm)
            name = proto.name if proto else f"btf_id {insn.imm}"
            kid = func_id(name) if proto else None
            if kid is None:
                raise Unloadable(
                    f"prog '{prog.name}': insn {pc}: kfunc {name} is not in the running kernel's BTF"
                )
            insns[pc] = Insn(insn.code, insn.dst, insn.src, 0, kid)


def _map_btf_ids(obj: LoadedObject, name: str, kind: str, section: str) -> tuple[int, int]:
    """(key, value) BTF type ids of a map, as a loader passes them to BPF_MAP_CREATE: for a
    `.maps` map the targets of its `key`/`value` members, for a data section its DATASEC."""
    btf = obj.btf
    if btf is None:
        return 0, 0
    if kind == "data":
        sec = btf.datasec(section)
        return 0, sec.id if sec is not None else 0
    var = next((v for v in btf.find(name, BTF_KIND_VAR)), None)
    if var is None:
        return 0, 0
    ids = {"key": 0, "value": 0}
    for m in btf.skip_modifiers(var.size_or_type).members:
        if m.name in ids:
            ptr = btf.get(m.type)
            ids[m.name] = ptr.size_or_type if ptr is not None and ptr.kind == BTF_KIND_PTR else 0
    return (ids["key"], ids["value"]) if ids["value"] else (0, 0)


def _ringbuf_size(max_entries: int) -> int:
    """A ring buffer's size must be a power of two and a multiple of the page size; loaders
    round the object's value up (libbpf does the same)."""
    size = PAGE
    while size < max_entries:
        size <<= 1
    return size


def _create_maps(kp: KernelProgram, prog: Program, obj: LoadedObject, insns: list[Insn], btf_fd: int) -> None:
    info = obj.infos.get(prog.name)
    if info is None:
        return
    fds: dict[str, Fd] = {}
    for pc, ref in sorted(info.map_refs.items()):
        if ref.map not in fds:
            m = obj.maps[obj.map_index(ref.map)]
            flags = m.map_flags
            if m.kind == "data":
                flags |= BPF_F_MMAPABLE | (BPF_F_RDONLY_PROG if m.section.startswith(".rodata") else 0)
            entries = _ringbuf_size(m.max_entries) if m.type in RINGBUF_TYPES else m.max_entries
            key_id, value_id = _map_btf_ids(obj, m.name, m.kind, m.section)
            spec = MapSpec(m.name[:15], m.type, m.key_size, m.value_size, entries, flags,
                           btf_fd if value_id else 0, key_id, value_id)  # fmt: skip
            fd = map_create(spec)
            kp.owned.append(fd)
            if m.kind == "data":
                map_update(fd, bytes(4), m.data.ljust(m.value_size, b"\0"))
                if m.section.startswith(".rodata"):
                    map_freeze(fd)
            fds[ref.map] = fd
        insn = insns[pc]
        src = BPF_PSEUDO_MAP_FD if ref.kind == "map" else BPF_PSEUDO_MAP_VALUE
        insns[pc] = Insn(insn.code, insn.dst, src, insn.off, fds[ref.map].fd)
        if ref.kind != "map":
            nxt = insns[pc + 1]
            insns[pc + 1] = Insn(nxt.code, nxt.dst, nxt.src, nxt.off, ref.offset)


def _request(prog: Program, obj: LoadedObject | None, kp: KernelProgram, log_level: int) -> ProgLoad:
    if prog.prog_type not in PROG_TYPES:
        raise Unloadable(
            f"prog '{prog.name}': program type {prog.prog_type} is not supported by bpf-unwind's loader"
        )
    ptype, attach_type = PROG_TYPES[prog.prog_type]
    attach_btf_id = 0
    if ptype in (26, 29):
        attach_btf_id = func_id(prog.attach_to) or 0
        if not attach_btf_id:
            raise Unloadable(f"prog '{prog.name}': attach target '{prog.attach_to}' is not in vmlinux BTF")
    insns = list(prog.insns)
    _patch_kfuncs(prog, insns)
    if obj is not None:
        sec = obj.image.section(".BTF")
        if sec is None:
            raise Unloadable(f"prog '{prog.name}': object has no .BTF section")
        blob = fixup_object_btf(sec.data, lambda s: (x.size if (x := obj.image.section(s)) else None),
                                lambda s, v: _sym_value(obj, s, v))  # fmt: skip
        func_info = b"".join(struct.pack("<II", f.start, obj.functions[f.name].btf_id) for f in prog.funcs)
        line_info = _line_info(prog)
    else:
        blob, func_info, type_ids = asm_program_btf(prog)
        for pc, name in prog.type_refs.items():
            i = insns[pc]
            insns[pc] = Insn(i.code, i.dst, i.src, i.off, type_ids[name])
        line_info = b""
    btf_fd = btf_load(blob)
    kp.owned.append(btf_fd)
    if obj is not None:
        _create_maps(kp, prog, obj, insns, btf_fd.fd)
    return ProgLoad(prog.name, ptype, insns_to_bytes(insns), prog.license or "GPL", attach_type, btf_fd.fd,
                    func_info, line_info, attach_btf_id, log_level)  # fmt: skip


def kernel_load(prog: Program, obj: LoadedObject | None = None, log_level: int = 1) -> KernelProgram:
    """Load `prog` (linked from `obj` when it came from an ELF object) into the live kernel.
    A verifier rejection is a KernelProgram with accepted False; loader failures raise a
    one-line LiveKernelError. Every fd opened is closed on failure; on success the caller
    closes the result."""
    kp = KernelProgram(prog.name, False, "")
    try:
        req = _request(prog, obj, kp, log_level)
        res = prog_load(req)
        kp.log, kp.errno = res.log, res.errno
        if res.fd is not None:
            kp.fd, kp.accepted = res.fd, True
            kp.info = prog_info(res.fd)
    except BaseException:
        kp.close()
        raise
    return kp


def trivial_load_refused(prog: Program) -> str | None:
    """Whether the live kernel refuses even `r0 = 0; exit` of this program's type and
    attach target: the errno text when it does (e.g. a kernel without fentry trampolines
    answers EPERM for every tracing program), None when it loads."""
    ptype, attach_type = PROG_TYPES.get(prog.prog_type, (0, 0))
    attach_btf_id = (func_id(prog.attach_to) or 0) if ptype in (26, 29) else 0
    insns = insns_to_bytes([Insn(0xB7, 0, 0, 0, 0), Insn(0x95, 0, 0, 0, 0)])
    res = prog_load(ProgLoad("probe", ptype, insns, "GPL", attach_type, 0, b"", b"", attach_btf_id, 0))
    if res.fd is not None:
        res.fd.close()
        return None
    return errno_text(res.errno)
