"""The object model a loaded BPF ELF object is made of: program section names and the
program type each means, the ctx struct of each program type, function symbols (`FuncDef`),
map references (`MapRef`), what the loader knows of a program beyond `Program`
(`ProgramInfo`) and the object itself (`LoadedObject`). Shared by the loader
(verifier.load.object) and the linker (verifier.load.link), which both build on it.

Every problem is one `LoadError` naming the file."""

from __future__ import annotations

from dataclasses import dataclass, field

from verifier.errors import LoadError, quoted, shown
from verifier.load.btf import Btf
from verifier.load.btf_ext import BtfExt
from verifier.load.elf_file import ElfImage
from verifier.load.maps import MapDef
from verifier.program import Program
from verifier.protos.kfuncs import KFUNCS_BY_NAME

EXCEPTION_CB_TAG = "exception_callback:"
# Program section name (or prefix ending in "/") -> Program.prog_type. A leading "?" only
# turns off autoload (libbpf's convention), so "?tc" is a tc program loaded on demand.
PROG_SECTIONS: dict[str, str] = {
    "tc": "tc", "classifier": "tc", "tcx/ingress": "tc", "tcx/egress": "tc", "action": "tc",
    "syscall": "syscall", "xdp": "xdp", "socket": "socket_filter", "perf_event": "perf_event",
    "struct_ops": "struct_ops", "sk_skb": "sk_skb", "sk_msg": "sk_msg", "flow_dissector": "flow_dissector",
    "fentry/": "fentry", "fexit/": "fexit", "fmod_ret/": "fmod_ret", "freplace/": "ext",
    "kprobe/": "kprobe", "kretprobe/": "kprobe", "tracepoint/": "tracepoint", "tp/": "tracepoint",
    "raw_tp/": "raw_tracepoint", "raw_tracepoint/": "raw_tracepoint", "tp_btf/": "tracing",
    "lsm/": "lsm", "iter/": "tracing", "struct_ops/": "struct_ops", "cgroup_skb/": "cgroup_skb",
}  # fmt: skip
# Program type -> the struct its context pointer points to (what a `struct X *` argument
# of a global function must name to be the ctx). Tracing, syscall... programs have none.
CTX_STRUCTS: dict[str, str] = {
    "tc": "__sk_buff", "socket_filter": "__sk_buff", "cgroup_skb": "__sk_buff", "sk_skb": "__sk_buff",
    "flow_dissector": "__sk_buff", "xdp": "xdp_md", "sk_msg": "sk_msg_md", "kprobe": "pt_regs",
    "perf_event": "bpf_perf_event_data",
}  # fmt: skip
OTHER_ALLOC_SECTIONS = frozenset({".maps", "license", "version", ".ksyms", ".kconfig"})


@dataclass(frozen=True)
class FuncDef:
    """A function symbol of an executable section."""

    name: str
    section: str
    shndx: int
    offset: int  # bytes into the section
    size: int  # bytes
    linkage: str  # "global" | "static" (BTF FUNC linkage when present, else symbol binding)
    btf_id: int = 0

    @property
    def slots(self) -> int:
        return self.size // 8


@dataclass(frozen=True)
class MapRef:
    """An ld_imm64 of a map (kind "map": src BPF_PSEUDO_MAP_FD) or of a global variable
    (kind "map_value": src BPF_PSEUDO_MAP_VALUE, `offset` into the data section)."""

    map: str
    kind: str
    offset: int = 0


@dataclass
class ProgramInfo:
    """What the loader knows about a program beyond `Program` (pcs index Program.insns).

    map_refs: ld_imm64 pcs of maps and global data, with imm = the map's index in
    `LoadedObject.maps`; kfunc_calls: call pc -> kfunc name (imm = its BTF id);
    helper_calls: call pc -> helper id; func_refs: ld_imm64 (BPF_PSEUDO_FUNC) pc -> callback
    name; decl_tags: every DECL_TAG value on the main function; exception_cb_tags: the
    `exception_callback:` ones (more than one is for the verifier to reject)."""

    name: str
    section: str
    prog_type: str
    attach_to: str | None
    autoload: bool
    kfunc_calls: dict[int, str] = field(default_factory=dict)
    helper_calls: dict[int, int] = field(default_factory=dict)
    map_refs: dict[int, MapRef] = field(default_factory=dict)
    func_refs: dict[int, str] = field(default_factory=dict)
    decl_tags: list[str] = field(default_factory=list)
    exception_cb_tags: list[str] = field(default_factory=list)


@dataclass
class LoadedObject:
    path: str
    programs: dict[str, Program]
    infos: dict[str, ProgramInfo]
    maps: list[MapDef]
    functions: dict[str, FuncDef]
    license: str
    btf: Btf | None
    btf_ext: BtfExt | None
    image: ElfImage

    def map_index(self, name: str) -> int:
        for i, m in enumerate(self.maps):
            if m.name == name:
                return i
        raise KeyError(name)

    def program(self, name: str | None = None) -> Program:
        """The program called `name`; without a name, the object's only program."""
        if name is None:
            if len(self.programs) != 1:
                names = ", ".join(map(shown, self.programs)) or "none"
                raise LoadError(
                    f"{self.path}: has {len(self.programs)} programs ({names}); choose one with --prog"
                )
            return next(iter(self.programs.values()))
        if name not in self.programs:
            names = ", ".join(map(shown, self.programs)) or "none"
            raise LoadError(f"{self.path}: no program {quoted(name)} (programs: {names})")
        return self.programs[name]


def kfunc_btf_id(name: str) -> int | None:
    """Our BTF id of kfunc `name` (verifier.protos.kfuncs table), None if the table has no such kfunc."""
    proto = KFUNCS_BY_NAME.get(name)
    return proto.btf_id if proto else None


def prog_section_type(name: str) -> tuple[str, str | None] | None:
    """(prog_type, attach target) of a program section name, None if it is not one."""
    bare = name.removeprefix("?")
    if bare in PROG_SECTIONS and not bare.endswith("/"):
        return PROG_SECTIONS[bare], None
    for prefix, ptype in PROG_SECTIONS.items():
        if prefix.endswith("/") and bare.startswith(prefix) and len(bare) > len(prefix):
            return ptype, bare[len(prefix) :]
    return None
