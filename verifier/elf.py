"""Load a clang-built BPF ELF object (`clang -O2 -g -target bpf`) into `Program`s.

Owns the object-level model: `load_object(path)` -> `LoadedObject` with one `Program` per
function of a program section (`SEC("tc")`, `SEC("?tc")`, `SEC("syscall")`,
`SEC("fentry/...")`...), the object's maps (`verifier.elf_maps`), its BTF and license.
Each program's insns are its own function followed by the `.text` functions it reaches
(calls, callback pointers and the exception callback named by an
`exception_callback:NAME` decl tag), in breadth-first order of first reference.
Relocation of those insns lives in `verifier.elf_link`; the ELF container in
`verifier.elf_file`; BTF in `verifier.btf` / `verifier.btf_ext`.

Every problem is one `LoadError` naming the file (and the program, section, symbol or
kfunc at fault); bad instruction encodings surface as `DecodeError`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from verifier.btf import BTF_KIND_FUNC, LINKAGE_NAMES, Btf, parse_btf
from verifier.btf_ext import BtfExt, parse_btf_ext
from verifier.elf_file import SHF_ALLOC, ElfImage, Section, read_elf
from verifier.elf_maps import MapDef, collect_maps, is_data_section
from verifier.errors import LoadError
from verifier.kfuncs import KFUNCS_BY_NAME
from verifier.program import Program

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
                names = ", ".join(self.programs) or "none"
                raise LoadError(
                    f"{self.path}: has {len(self.programs)} programs ({names}); choose one with --prog"
                )
            return next(iter(self.programs.values()))
        if name not in self.programs:
            raise LoadError(
                f"{self.path}: no program '{name}' (programs: {', '.join(self.programs) or 'none'})"
            )
        return self.programs[name]


def kfunc_btf_id(name: str) -> int | None:
    """Our BTF id of kfunc `name` (verifier.kfuncs table), None if the table has no such kfunc."""
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


def _check_sections(image: ElfImage) -> None:
    for s in image.sections:
        if s.is_exec:
            if s.name != ".text" and prog_section_type(s.name) is None:
                raise LoadError(f"{image.path}: unknown program section '{s.name}'")
            if s.size % 8:
                raise LoadError(f"{image.path}: section {s.name} size {s.size} is not a multiple of 8")
        elif s.flags & SHF_ALLOC and not (is_data_section(s.name) or s.name in OTHER_ALLOC_SECTIONS):
            raise LoadError(f"{image.path}: unknown allocated section '{s.name}'")


def _license(image: ElfImage) -> str:
    sec = image.section("license")
    if sec is None:
        return ""
    raw = sec.data.split(b"\0", 1)[0]
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise LoadError(f"{image.path}: license section is not text") from None


def _functions(image: ElfImage, btf: Btf | None, ext: BtfExt | None) -> dict[str, FuncDef]:
    funcs: dict[str, FuncDef] = {}
    info_ids: dict[tuple[str, int], int] = {}
    for sec_name, records in ext.func_info.items() if ext else ():
        for rec in records:
            info_ids[(sec_name, rec.insn_off)] = rec.type_id
    for sym in image.symbols:
        if sym.type != "FUNC" or sym.shndx == 0:
            continue
        sec: Section | None = image.sections[sym.shndx] if sym.shndx < len(image.sections) else None
        if sec is None or not sec.is_exec:
            raise LoadError(f"{image.path}: function '{sym.name}' is not in an executable section")
        if sym.value % 8 or sym.size % 8 or sym.size == 0 or sym.value + sym.size > sec.size:
            raise LoadError(
                f"{image.path}: function '{sym.name}' ({sym.size} bytes at {sym.value:#x})"
                f" does not fit {sec.name}"
            )
        if sym.name in funcs:
            raise LoadError(f"{image.path}: function '{sym.name}' is defined twice")
        linkage = "static" if sym.bind == "LOCAL" else "global"
        btf_id = info_ids.get((sec.name, sym.value), 0)
        if btf is not None:
            t = btf.get(btf_id) if btf_id else None
            if t is None or t.kind != BTF_KIND_FUNC or t.name != sym.name:
                found = btf.find(sym.name, BTF_KIND_FUNC)
                t = found[0] if found else None
            if t is not None:
                btf_id = t.id
                linkage = LINKAGE_NAMES.get(t.linkage, linkage)
        funcs[sym.name] = FuncDef(sym.name, sec.name, sym.shndx, sym.value, sym.size, linkage, btf_id)
    return funcs


def load_object_bytes(data: bytes, path: str, only: str | None = None) -> LoadedObject:
    """Load an object from its bytes; `path` is used in messages. With `only`, link just
    that program (others may use kfuncs the table lacks without failing this load)."""
    from verifier.elf_link import check_relocations, link_program  # elf_link imports this module's types

    image = read_elf(data, path)
    _check_sections(image)
    btf_sec, ext_sec = image.section(".BTF"), image.section(".BTF.ext")
    btf = parse_btf(btf_sec.data, f"{path}: .BTF") if btf_sec is not None else None
    ext = None
    if ext_sec is not None:
        if btf is None:
            raise LoadError(f"{path}: has .BTF.ext but no .BTF section")
        ext = parse_btf_ext(ext_sec.data, btf, f"{path}: .BTF.ext")
    license_ = _license(image)
    maps = collect_maps(image, btf)
    funcs = _functions(image, btf, ext)
    obj = LoadedObject(path, {}, {}, maps, funcs, license_, btf, ext, image)
    check_relocations(obj)
    mains = [f for f in funcs.values() if f.section != ".text"]
    if not mains:
        raise LoadError(f"{path}: no program sections (only .text functions)")
    if only is not None:
        mains = [f for f in mains if f.name == only]
        if not mains:
            progs = ", ".join(f.name for f in funcs.values() if f.section != ".text")
            raise LoadError(f"{path}: no program '{only}' (programs: {progs})")
    for main in sorted(mains, key=lambda f: (f.shndx, f.offset)):
        prog, info = link_program(obj, main)
        obj.programs[main.name] = prog
        obj.infos[main.name] = info
    return obj


def load_object(path: str | Path, only: str | None = None) -> LoadedObject:
    """Read and load the ELF object at `path` (all programs, or just `only`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise LoadError(f"{path}: cannot read: {err.strerror or err}") from None
    return load_object_bytes(data, str(path), only)
