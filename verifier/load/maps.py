"""Maps of a BPF object: BTF-defined maps in `.maps` and global data sections as array maps.

Owns `MapDef` and `collect_maps(image, btf)`. A BTF-defined map is a variable of the
`.maps` DATASEC whose struct members say what the map is: `__uint(name, N)` members are
pointers to arrays of N elements (type, max_entries, key_size, value_size, map_flags...),
`__type(key|value, T)` members are pointers to T (the size is sizeof(T)). Each `.bss`,
`.data*` and `.rodata*` section becomes a one-element array map whose value is the
section, which is what an ld_imm64 of a global variable points into."""

from __future__ import annotations

from dataclasses import dataclass

from verifier.errors import LoadError, quoted, shown
from verifier.load.btf import (
    BTF_KIND_ARRAY,
    BTF_KIND_PTR,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPE_TAG,
    BTF_KIND_UNION,
    BTF_KIND_VAR,
    MAX_RESOLVE_DEPTH,
    MODIFIER_KINDS,
    Btf,
)
from verifier.load.elf_file import ElfImage, Section
from verifier.program import BPF_F_RDONLY_PROG, ProgMap

MAP_TYPES = {
    0: "unspec", 1: "hash", 2: "array", 3: "prog_array", 4: "perf_event_array", 5: "percpu_hash",
    6: "percpu_array", 7: "stack_trace", 8: "cgroup_array", 9: "lru_hash", 10: "lru_percpu_hash",
    11: "lpm_trie", 12: "array_of_maps", 13: "hash_of_maps", 14: "devmap", 15: "sockmap",
    16: "cpumap", 17: "xskmap", 18: "sockhash", 19: "cgroup_storage", 20: "reuseport_sockarray",
    21: "percpu_cgroup_storage", 22: "queue", 23: "stack", 24: "sk_storage", 25: "devmap_hash",
    26: "struct_ops", 27: "ringbuf", 28: "inode_storage", 29: "task_storage", 30: "bloom_filter",
    31: "user_ringbuf", 32: "cgrp_storage", 33: "arena",
}  # fmt: skip
BPF_MAP_TYPE_ARRAY = 2
_UINT_FIELDS = ("type", "max_entries", "key_size", "value_size", "map_flags", "numa_node", "pinning",
                "map_extra")  # fmt: skip
DATA_SECTION_PREFIXES = (".bss", ".data", ".rodata")
# Types the kernel gives a special meaning inside a map value (`btf_parse_fields`): the
# value's loads and stores must keep off them, which the verifier does not model.
SPECIAL_STRUCTS = frozenset({"bpf_spin_lock", "bpf_res_spin_lock", "bpf_timer", "bpf_wq", "bpf_list_head",
                             "bpf_list_node", "bpf_rb_root", "bpf_rb_node", "bpf_refcount",
                             "bpf_task_work", "bpf_workqueue"})  # fmt: skip
KPTR_TAGS = frozenset({"kptr", "kptr_untrusted", "percpu_kptr", "uptr"})


@dataclass(frozen=True)
class MapDef:
    """One map of the object. `kind` is "map" (`.maps`) or "data" (a global data section);
    `offset` is the variable's offset in `.maps`; `data` the initial value of a data map."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int = 0
    kind: str = "map"
    section: str = ".maps"
    offset: int = 0
    value_type_id: int = 0
    data: bytes = b""
    special: str = ""  # a data map: the first BTF special field its value holds

    @property
    def type_name(self) -> str:
        return MAP_TYPES.get(self.type, f"type#{self.type}")

    def prog_map(self) -> ProgMap:
        """What a `Program` carries of this map (`Program.maps`)."""
        section = self.section if self.kind == "data" else ""
        return ProgMap(self.name, self.type, self.key_size, self.value_size, self.max_entries,
                       self.map_flags, section, self.data if self.kind == "data" else b"", self.special)


def is_data_section(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in DATA_SECTION_PREFIXES)


def _uint_field(btf: Btf, map_name: str, member: str, type_id: int, source: str) -> int:
    ptr = btf.skip_modifiers(type_id)
    arr = btf.skip_modifiers(ptr.type) if ptr.kind == BTF_KIND_PTR else ptr
    if ptr.kind != BTF_KIND_PTR or arr.kind != BTF_KIND_ARRAY:
        raise LoadError(f"{source}: map {quoted(map_name)}: member {quoted(member)} is not"
                        " declared with __uint()")
    return arr.array[2]


def _btf_map(btf: Btf, var_id: int, sec: Section, offsets: dict[str, int], source: str) -> MapDef:
    var = btf.get(var_id)
    if var.kind != BTF_KIND_VAR:
        raise LoadError(f"{source}: .maps entry [{var_id}] is a BTF {var.kind_name}, not a VAR")
    name = var.name
    if name not in offsets:
        raise LoadError(f"{source}: map {quoted(name)} has BTF but no symbol in {shown(sec.name)}")
    layout = btf.skip_modifiers(var.type)
    if layout.kind != BTF_KIND_STRUCT:
        raise LoadError(f"{source}: map {quoted(name)} is a {layout.kind_name}, not a struct definition")
    fields: dict[str, int] = {"key_size": 0, "value_size": 0, "max_entries": 0, "map_flags": 0}
    value_type = 0
    for m in layout.members:
        if m.name in _UINT_FIELDS:
            fields[m.name] = _uint_field(btf, name, m.name, m.type, source)
        elif m.name in ("key", "value"):
            ptr = btf.skip_modifiers(m.type)
            if ptr.kind != BTF_KIND_PTR:
                raise LoadError(f"{source}: map {quoted(name)}: member {quoted(m.name)} is not"
                                " declared with __type()")
            fields[f"{m.name}_size"] = btf.resolve_size(ptr.type)
            if m.name == "value":
                value_type = ptr.type
        elif m.name == "values":
            continue  # initial values of map-in-map / prog arrays: not modelled
        else:
            raise LoadError(f"{source}: map {quoted(name)}: unknown map definition member {quoted(m.name)}")
    if "type" not in fields:
        raise LoadError(f"{source}: map {quoted(name)} has no type")
    return MapDef(
        name,
        fields["type"],
        fields["key_size"],
        fields["value_size"],
        fields["max_entries"],
        fields["map_flags"],
        offset=offsets[name],
        value_type_id=value_type,
    )


def _special_in(btf: Btf, type_id: int, depth: int = 0) -> str:
    """The first special field (SPECIAL_STRUCTS, or a kptr) inside the type, "" if none."""
    t = btf.get(type_id)
    while t.kind in MODIFIER_KINDS and depth < MAX_RESOLVE_DEPTH:
        if t.kind == BTF_KIND_TYPE_TAG and t.name in KPTR_TAGS:
            return t.name
        t, depth = btf.get(t.type), depth + 1
    if depth >= MAX_RESOLVE_DEPTH:
        return ""
    if t.kind == BTF_KIND_PTR:
        tag = btf.get(t.type)
        return tag.name if tag.kind == BTF_KIND_TYPE_TAG and tag.name in KPTR_TAGS else ""
    if t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION) and t.name in SPECIAL_STRUCTS:
        return t.name
    inner: list[int] = [m.type for m in t.members] if t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION) else []
    if t.kind == BTF_KIND_ARRAY:
        inner = [t.array[0]]
    for sub in inner:
        found = _special_in(btf, sub, depth + 1)
        if found:
            return found
    return ""


def _data_special(btf: Btf | None, section: str) -> str:
    ds = btf.datasec(section) if btf is not None else None
    if btf is None or ds is None:
        return ""
    for m in ds.members:
        var = btf.get(m.type)
        found = _special_in(btf, var.type) if var.kind == BTF_KIND_VAR else ""
        if found:
            return found
    return ""


def collect_maps(image: ElfImage, btf: Btf | None) -> list[MapDef]:
    """All maps of the object in a stable order: `.maps` variables, then data sections."""
    source = image.path
    maps: list[MapDef] = []
    sec = image.section(".maps")
    if sec is not None:
        if btf is None:
            raise LoadError(f"{source}: section .maps needs .BTF to describe its maps")
        ds = btf.datasec(".maps")
        if ds is None:
            raise LoadError(f"{source}: .BTF has no DATASEC for section .maps")
        offsets = {s.name: s.value for s in image.symbols if s.shndx == sec.index and s.type == "OBJECT"}
        maps.extend(_btf_map(btf, m.type, sec, offsets, source) for m in ds.members)
        maps.sort(key=lambda m: m.offset)
    for s in image.sections:
        if s.is_alloc and not s.is_exec and is_data_section(s.name) and s.size:
            flags = BPF_F_RDONLY_PROG if s.name.startswith(".rodata") else 0
            maps.append(
                MapDef(s.name, BPF_MAP_TYPE_ARRAY, 4, s.size, 1, flags, kind="data", section=s.name,
                       data=s.data, special=_data_special(btf, s.name))
            )
    return maps
