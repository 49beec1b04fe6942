"""A small, complete parser of the BPF Type Format (`.BTF` of a clang-built object).

Owns `parse_btf(data, source)` -> `Btf`: the header, every type record of all 19 kinds
(INT .. ENUM64) with its kind-specific tail, the string table, and the queries the ELF
loader needs: names, resolved sizes, FUNC linkage and prototypes (in the verifier's terms:
`func_proto_kinds`), DECL_TAG values attached to a function, DATASEC contents and the
member layout of structs (BTF-defined maps).

Everything read from the file is bounds-checked: a record that runs past the type section,
a string offset outside the string table, a type id that does not exist, or a reference
chain that loops all raise one `LoadError` naming the source and the type at fault.
Loops are bounded by counts already checked against the section length."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from verifier.errors import LoadError, quoted

BTF_MAGIC = 0xEB9F
BTF_VERSION = 1

KIND_NAMES = (
    "UNKN", "INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD", "TYPEDEF", "VOLATILE",
    "CONST", "RESTRICT", "FUNC", "FUNC_PROTO", "VAR", "DATASEC", "FLOAT", "DECL_TAG",
    "TYPE_TAG", "ENUM64",
)  # fmt: skip
(
    BTF_KIND_UNKN, BTF_KIND_INT, BTF_KIND_PTR, BTF_KIND_ARRAY, BTF_KIND_STRUCT, BTF_KIND_UNION,
    BTF_KIND_ENUM, BTF_KIND_FWD, BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST,
    BTF_KIND_RESTRICT, BTF_KIND_FUNC, BTF_KIND_FUNC_PROTO, BTF_KIND_VAR, BTF_KIND_DATASEC,
    BTF_KIND_FLOAT, BTF_KIND_DECL_TAG, BTF_KIND_TYPE_TAG, BTF_KIND_ENUM64,
) = range(20)  # fmt: skip
MODIFIER_KINDS = frozenset({BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT,
                            BTF_KIND_TYPE_TAG})  # fmt: skip
# FUNC linkage (vlen of a FUNC) and VAR linkage.
BTF_FUNC_STATIC, BTF_FUNC_GLOBAL, BTF_FUNC_EXTERN = 0, 1, 2
LINKAGE_NAMES = {BTF_FUNC_STATIC: "static", BTF_FUNC_GLOBAL: "global", BTF_FUNC_EXTERN: "extern"}
MAX_RESOLVE_DEPTH = 32  # the kernel's MAX_RESOLVE_DEPTH
_HDR = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_TRIPLE = struct.Struct("<III")
_PAIR = struct.Struct("<II")
_ENUM = struct.Struct("<Ii")


@dataclass(frozen=True)
class Member:
    """A struct/union member, an enum value, a FUNC_PROTO parameter or a DATASEC variable.

    `type` is 0 for enum values; `offset` is the bit offset (members), the byte offset
    (DATASEC) or unused; `value` is the enum value; `size` the DATASEC entry size."""

    name: str
    type: int = 0
    offset: int = 0
    bitfield_size: int = 0
    value: int = 0
    size: int = 0


@dataclass(frozen=True)
class BtfType:
    """One type record. `size_or_type` is the size for INT/STRUCT/UNION/ENUM/DATASEC/FLOAT
    and the referenced type id otherwise; `vlen` is the FUNC linkage for FUNC records."""

    id: int
    kind: int
    name: str
    vlen: int
    kind_flag: bool
    size_or_type: int
    members: tuple[Member, ...] = ()
    int_encoding: int = 0  # INT: encoding bits (signed 1, char 2, bool 4)
    int_bits: int = 0
    int_offset: int = 0
    array: tuple[int, int, int] = (0, 0, 0)  # ARRAY: (elem type, index type, nelems)
    linkage: int = 0  # VAR linkage / FUNC linkage
    component_idx: int = -1  # DECL_TAG

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]

    @property
    def type(self) -> int:
        return self.size_or_type


@dataclass
class Btf:
    """A parsed `.BTF`: types[0] is the implicit `void`."""

    source: str
    types: list[BtfType]
    strings: bytes
    flags: int = 0
    _by_name: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for t in self.types[1:]:
            if t.name:
                self._by_name.setdefault(t.name, []).append(t.id)

    def __len__(self) -> int:
        return len(self.types)

    def get(self, type_id: int) -> BtfType:
        if not 0 <= type_id < len(self.types):
            raise LoadError(f"{self.source}: BTF type id {type_id} does not exist ({len(self.types)} types)")
        return self.types[type_id]

    def find(self, name: str, kind: int | None = None) -> list[BtfType]:
        ids = self._by_name.get(name, [])
        return [self.types[i] for i in ids if kind is None or self.types[i].kind == kind]

    def skip_modifiers(self, type_id: int) -> BtfType:
        """Follow typedef/const/volatile/restrict/type_tag to the underlying type."""
        t = self.get(type_id)
        for _ in range(MAX_RESOLVE_DEPTH):
            if t.kind not in MODIFIER_KINDS:
                return t
            t = self.get(t.type)
        raise LoadError(f"{self.source}: BTF type [{type_id}] modifier chain is too long or loops")

    def resolve_size(self, type_id: int) -> int:
        """Byte size of a type (`btf__resolve_size`): arrays multiply, modifiers pass through."""
        t = self.get(type_id)
        mult = 1
        for _ in range(MAX_RESOLVE_DEPTH):
            if t.kind in (BTF_KIND_INT, BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_ENUM,
                          BTF_KIND_ENUM64, BTF_KIND_DATASEC, BTF_KIND_FLOAT):  # fmt: skip
                return mult * t.size_or_type
            if t.kind == BTF_KIND_PTR:
                return mult * 8
            if t.kind == BTF_KIND_ARRAY:
                mult *= t.array[2]
                t = self.get(t.array[0])
            elif t.kind in MODIFIER_KINDS or t.kind == BTF_KIND_VAR:
                t = self.get(t.type)
            else:
                raise LoadError(f"{self.source}: BTF type [{type_id}] {t.kind_name} has no size")
        raise LoadError(f"{self.source}: BTF type [{type_id}] reference chain is too long or loops")

    def func_linkage(self, name: str) -> str | None:
        funcs = self.find(name, BTF_KIND_FUNC)
        return LINKAGE_NAMES.get(funcs[0].linkage) if funcs else None

    def value_kind(self, type_id: int, ctx_struct: str | None) -> str:
        """What a function's return or argument type is to the verifier: "void", "scalar"
        (int, bool, enum), "ctx" (pointer to the struct named `ctx_struct`) or "ptr" (any
        other pointer; also types no BPF function can take by value, e.g. structs)."""
        t = self.skip_modifiers(type_id)
        if t.id == 0:
            return "void"
        if t.kind in (BTF_KIND_INT, BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return "scalar"
        if t.kind == BTF_KIND_PTR and ctx_struct:
            target = self.skip_modifiers(t.type)
            if target.kind in (BTF_KIND_STRUCT, BTF_KIND_FWD) and target.name == ctx_struct:
                return "ctx"
        return "ptr"

    def func_proto_kinds(self, func_id: int, ctx_struct: str | None) -> tuple[str, tuple[str, ...]]:
        """(return kind, argument kinds) of FUNC `func_id` via its FUNC_PROTO (see value_kind)."""
        func = self.get(func_id)
        if func.kind != BTF_KIND_FUNC:
            raise LoadError(f"{self.source}: BTF type [{func_id}] is a {func.kind_name}, not a FUNC")
        proto = self.get(func.type)
        ret = self.value_kind(proto.type, ctx_struct)
        return ret, tuple(self.value_kind(m.type, ctx_struct) for m in proto.members)

    def decl_tags(self, type_id: int, component_idx: int = -1) -> list[str]:
        """Values of the DECL_TAGs attached to `type_id` (itself, or one of its members)."""
        return [
            t.name
            for t in self.types
            if t.kind == BTF_KIND_DECL_TAG and t.type == type_id and t.component_idx == component_idx
        ]

    def datasec(self, name: str) -> BtfType | None:
        secs = self.find(name, BTF_KIND_DATASEC)
        return secs[0] if secs else None

    def type_name(self, type_id: int) -> str:
        """A C-like name for messages: `struct foo`, `int`, `void *`..."""
        t = self.get(type_id)
        for _ in range(MAX_RESOLVE_DEPTH):
            if t.kind == BTF_KIND_PTR:
                return self.type_name(t.type) + " *" if t.type != type_id else "void *"
            if t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_ENUM, BTF_KIND_ENUM64, BTF_KIND_FWD):
                word = {BTF_KIND_UNION: "union", BTF_KIND_ENUM: "enum", BTF_KIND_ENUM64: "enum"}
                return f"{word.get(t.kind, 'struct')} {t.name or '(anon)'}"
            if t.name or t.id == 0:
                return t.name or "void"
            t = self.get(t.type)
        return "?"


class _Reader:
    def __init__(self, data: bytes, source: str, start: int, end: int) -> None:
        self.data, self.source, self.pos, self.end = data, source, start, end

    def take(self, st: struct.Struct, what: str) -> tuple[int, ...]:
        if self.pos + st.size > self.end:
            raise LoadError(f"{self.source}: BTF {what} runs past the end of the type section")
        values = st.unpack_from(self.data, self.pos)
        self.pos += st.size
        return values


def _string(data: bytes, base: int, length: int, off: int, source: str, what: str) -> str:
    if off >= length:
        raise LoadError(
            f"{source}: BTF {what}: name offset {off} is outside the string table ({length} bytes)"
        )
    end = data.find(b"\0", base + off, base + length)
    if end < 0:
        raise LoadError(f"{source}: BTF string table is not NUL-terminated")
    try:
        return data[base + off : end].decode()
    except UnicodeDecodeError:
        raise LoadError(f"{source}: BTF {what}: name at offset {off} is not UTF-8") from None


def parse_btf(data: bytes, source: str = "<btf>") -> Btf:
    """Parse a raw `.BTF` section; raise LoadError on anything malformed."""
    if len(data) < _HDR.size:
        raise LoadError(f"{source}: .BTF is {len(data)} bytes, shorter than its header")
    magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = _HDR.unpack_from(data)
    if magic != BTF_MAGIC:
        raise LoadError(f"{source}: .BTF has bad magic {magic:#06x} (expected {BTF_MAGIC:#06x})")
    if version != BTF_VERSION:
        raise LoadError(f"{source}: .BTF version {version} is not supported")
    if hdr_len < _HDR.size or hdr_len > len(data):
        raise LoadError(f"{source}: .BTF header length {hdr_len} is invalid")
    t_start, s_start = hdr_len + type_off, hdr_len + str_off
    if t_start + type_len > len(data) or s_start + str_len > len(data) or type_off % 4:
        raise LoadError(f"{source}: .BTF type or string section lies outside the section data")
    if str_len == 0 or data[s_start] != 0:
        raise LoadError(f"{source}: .BTF string table must start with an empty string")
    reader = _Reader(data, source, t_start, t_start + type_len)
    types = [BtfType(0, BTF_KIND_UNKN, "void", 0, False, 0)]
    while reader.pos < reader.end:
        types.append(_parse_type(reader, len(types), data, s_start, str_len))
    btf = Btf(source, types, bytes(data[s_start : s_start + str_len]), flags)
    _check_refs(btf)
    return btf


def _parse_type(r: _Reader, tid: int, data: bytes, s_start: int, s_len: int) -> BtfType:
    name_off, info, size_or_type = r.take(_TYPE, f"type [{tid}]")
    kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
    what = f"type [{tid}]"
    if kind == BTF_KIND_UNKN or kind >= len(KIND_NAMES):
        raise LoadError(f"{r.source}: BTF {what} has unknown kind {kind}")
    name = _string(data, s_start, s_len, name_off, r.source, what)

    def sname(off: int) -> str:
        return _string(data, s_start, s_len, off, r.source, what)

    extra: dict = {}
    if kind == BTF_KIND_INT:
        (word,) = r.take(_U32, what)
        extra = {
            "int_encoding": (word >> 24) & 0xF,
            "int_offset": (word >> 16) & 0xFF,
            "int_bits": word & 0xFF,
        }
    elif kind == BTF_KIND_ARRAY:
        extra = {"array": r.take(_TRIPLE, what)}
    elif kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
        members = []
        for _ in range(vlen):
            m_name, m_type, m_off = r.take(_TRIPLE, what)
            bits = (m_off >> 24) if kflag else 0
            members.append(Member(sname(m_name), m_type, m_off & 0xFFFFFF if kflag else m_off, bits))
        extra = {"members": tuple(members)}
    elif kind == BTF_KIND_ENUM:
        extra = {
            "members": tuple(Member(sname(n), value=v) for n, v in (r.take(_ENUM, what) for _ in range(vlen)))
        }
    elif kind == BTF_KIND_ENUM64:
        vals = []
        for _ in range(vlen):
            n, lo, hi = r.take(_TRIPLE, what)
            v = (hi << 32) | lo
            vals.append(Member(sname(n), value=v - (1 << 64) if kflag and v >> 63 else v))
        extra = {"members": tuple(vals)}
    elif kind == BTF_KIND_FUNC_PROTO:
        extra = {"members": tuple(Member(sname(n), t) for n, t in (r.take(_PAIR, what) for _ in range(vlen)))}
    elif kind == BTF_KIND_VAR:
        extra = {"linkage": r.take(_U32, what)[0]}
    elif kind == BTF_KIND_DATASEC:
        extra = {
            "members": tuple(
                Member("", t, o, size=s) for t, o, s in (r.take(_TRIPLE, what) for _ in range(vlen))
            )
        }
    elif kind == BTF_KIND_DECL_TAG:
        extra = {"component_idx": r.take(_I32, what)[0]}
    elif kind == BTF_KIND_FUNC:
        extra = {"linkage": vlen}
    return BtfType(tid, kind, name, vlen, kflag, size_or_type, **extra)


def _check_refs(btf: Btf) -> None:
    """Every referenced type id must exist; FUNCs point at FUNC_PROTOs; tags at something."""
    n = len(btf.types)

    def need(t: BtfType, ref: int, what: str) -> None:
        if not 0 <= ref < n:
            raise LoadError(
                f"{btf.source}: BTF type [{t.id}] {t.kind_name} {quoted(t.name)}: {what} [{ref}]"
                " does not exist"
            )

    for t in btf.types[1:]:
        if t.kind in MODIFIER_KINDS or t.kind in (
            BTF_KIND_PTR,
            BTF_KIND_FUNC,
            BTF_KIND_VAR,
            BTF_KIND_DECL_TAG,
        ):
            need(t, t.type, "referenced type")
        if t.kind == BTF_KIND_FUNC and btf.types[t.type].kind != BTF_KIND_FUNC_PROTO:
            raise LoadError(f"{btf.source}: BTF FUNC [{t.id}] {quoted(t.name)} does not point to a"
                            " FUNC_PROTO")
        if t.kind == BTF_KIND_FUNC_PROTO:
            need(t, t.type, "return type")
        if t.kind == BTF_KIND_ARRAY:
            need(t, t.array[0], "element type")
            need(t, t.array[1], "index type")
        if t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION, BTF_KIND_FUNC_PROTO, BTF_KIND_DATASEC):
            for m in t.members:
                need(t, m.type, f"member {quoted(m.name)} type")
        if t.kind == BTF_KIND_DECL_TAG and t.component_idx < -1:
            raise LoadError(f"{btf.source}: BTF DECL_TAG [{t.id}] has component_idx {t.component_idx}")
