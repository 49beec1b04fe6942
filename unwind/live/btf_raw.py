"""Raw BTF as the kernel's BPF_BTF_LOAD takes it: edit an object's `.BTF` in place, or build
a small one from nothing.

`RawBtf` keeps the type section as bytes with the byte offset of every type id, so fix-ups
patch fields where they are and new types and strings are appended (ids never move).
`fixup_object_btf` makes clang's output loadable, as a loader must (libbpf does the same
work; these are facts of the BTF format, written here from the format):
- DATASEC sizes and variable offsets: clang leaves them 0; they come from the ELF section
  sizes and the variables' symbol values;
- extern kfunc declarations (`__ksym`): FUNC linkage `extern` is refused by the kernel
  ("Invalid func linkage"), so such FUNCs become TYPEDEFs of their prototypes (same id and
  name), and the `.ksyms` DATASEC, whose members must be VARs, points at one dummy `int`
  VAR per entry.
`BtfBuilder` writes BTF for programs that have none (text assembly): ints, pointers,
structs, FUNC_PROTOs and FUNCs."""

from __future__ import annotations

import struct
from collections.abc import Callable

from verifier.errors import BpfUnwindError

BTF_MAGIC = 0xEB9F
HDR = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
TYPE = struct.Struct("<III")  # name_off, info, size/type

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD = 1, 2, 3, 4, 5, 6, 7
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO = 8, 9, 10, 11, 12, 13
KIND_VAR, KIND_DATASEC, KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 14, 15, 16, 17, 18, 19
FUNC_STATIC, FUNC_GLOBAL, FUNC_EXTERN = 0, 1, 2
VAR_GLOBAL_ALLOCATED = 1

# Bytes after the 12-byte common header, per kind: fixed part and per-vlen element.
_EXTRA: dict[int, tuple[int, int]] = {
    KIND_INT: (4, 0), KIND_ARRAY: (12, 0), KIND_STRUCT: (0, 12), KIND_UNION: (0, 12), KIND_ENUM: (0, 8),
    KIND_FUNC_PROTO: (0, 8), KIND_VAR: (4, 0), KIND_DATASEC: (0, 12), KIND_DECL_TAG: (4, 0),
    KIND_ENUM64: (0, 12),
}  # fmt: skip


class BtfFormatError(BpfUnwindError):
    """The blob is not BTF we can edit (the loader has already validated object BTF); one line."""


def info_word(kind: int, vlen: int = 0, kind_flag: bool = False) -> int:
    return (int(kind_flag) << 31) | (kind << 24) | vlen


class RawBtf:
    """An editable BTF blob. Type ids start at 1; `offsets[tid]` is where type tid starts."""

    def __init__(self, data: bytes) -> None:
        if len(data) < HDR.size:
            raise BtfFormatError("BTF shorter than its header")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = HDR.unpack_from(data)
        if magic != BTF_MAGIC:
            raise BtfFormatError(f"bad BTF magic {magic:#x}")
        base = hdr_len
        self.types = bytearray(data[base + type_off : base + type_off + type_len])
        self.strings = bytearray(data[base + str_off : base + str_off + str_len])
        self.offsets = [0]
        pos = 0
        while pos < len(self.types):
            self.offsets.append(pos)
            pos += self._size_at(pos)
        if pos != len(self.types):
            raise BtfFormatError("type section does not end on a type boundary")

    def _size_at(self, pos: int) -> int:
        _name, info, _st = TYPE.unpack_from(self.types, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        fixed, per = _EXTRA.get(kind, (0, 0))
        return TYPE.size + fixed + per * vlen

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def header(self, tid: int) -> tuple[int, int, int, int]:
        """(name_off, kind, vlen, size_or_type) of type tid."""
        name_off, info, st = TYPE.unpack_from(self.types, self.offsets[tid])
        return name_off, (info >> 24) & 0x1F, info & 0xFFFF, st

    def name(self, tid: int) -> str:
        return self.string(self.header(tid)[0])

    def string(self, off: int) -> str:
        end = self.strings.index(0, off)
        return self.strings[off:end].decode(errors="replace")

    def set_info(self, tid: int, kind: int, vlen: int, kind_flag: bool = False) -> None:
        struct.pack_into("<I", self.types, self.offsets[tid] + 4, info_word(kind, vlen, kind_flag))

    def set_size_or_type(self, tid: int, value: int) -> None:
        struct.pack_into("<I", self.types, self.offsets[tid] + 8, value)

    def members_at(self, tid: int) -> int:
        """Byte offset of type tid's first vlen element."""
        _n, kind, _v, _s = self.header(tid)
        return self.offsets[tid] + TYPE.size + _EXTRA.get(kind, (0, 0))[0]

    def add_string(self, text: str) -> int:
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add_type(self, blob: bytes) -> int:
        self.offsets.append(len(self.types))
        self.types += blob
        return len(self)

    def find(self, pred: Callable[[int, int, str], bool]) -> int:
        """First type id for which pred(kind, size_or_type, name) holds, 0 if none."""
        for tid in range(1, len(self) + 1):
            _n, kind, _v, st = self.header(tid)
            if pred(kind, st, self.name(tid)):
                return tid
        return 0

    def to_bytes(self) -> bytes:
        hdr = HDR.pack(BTF_MAGIC, 1, 0, HDR.size, 0, len(self.types), len(self.types), len(self.strings))
        return hdr + bytes(self.types) + bytes(self.strings)


def fixup_object_btf(data: bytes, section_size: Callable[[str], int | None],
                     symbol_value: Callable[[str, str], int | None]) -> bytes:  # fmt: skip
    """The object's `.BTF` made loadable: DATASEC sizes and offsets from the ELF (callbacks
    give a section's size and a symbol's value in a section), extern FUNCs made static and
    `.ksyms` entries pointed at dummy VARs."""
    raw = RawBtf(data)
    dummy_var = 0
    for tid in range(1, len(raw) + 1):
        name_off, kind, vlen, _st = raw.header(tid)
        if kind == KIND_FUNC and vlen == FUNC_EXTERN:
            # A declaration, not a function of this program: a typedef of its prototype keeps
            # the name and the type id without the checks a defined FUNC gets (named args).
            raw.set_info(tid, KIND_TYPEDEF, 0)
        if kind != KIND_DATASEC:
            continue
        sec = raw.string(name_off)
        at = raw.members_at(tid)
        if sec == ".ksyms":
            if not dummy_var:
                int_id = raw.find(lambda k, size, _name: k == KIND_INT and size == 4)
                if not int_id:
                    int_id = raw.add_type(
                        TYPE.pack(raw.add_string("int"), info_word(KIND_INT), 4)
                        + struct.pack("<I", (1 << 24) | 32)
                    )  # signed, 32 bits
                var = TYPE.pack(raw.add_string("__bpf_unwind_ksym"), info_word(KIND_VAR), int_id)
                dummy_var = raw.add_type(var + struct.pack("<I", VAR_GLOBAL_ALLOCATED))
            for i in range(vlen):
                struct.pack_into("<III", raw.types, at + 12 * i, dummy_var, 4 * i, 4)
            raw.set_size_or_type(tid, 4 * vlen)
            continue
        size = section_size(sec)
        if size is None:
            continue
        raw.set_size_or_type(tid, size)
        for i in range(vlen):
            var_tid, off, vsize = struct.unpack_from("<III", raw.types, at + 12 * i)
            value = symbol_value(sec, raw.name(var_tid)) if 0 < var_tid <= len(raw) else None
            if value is not None:
                struct.pack_into("<III", raw.types, at + 12 * i, var_tid, value, vsize)
    return raw.to_bytes()


class BtfBuilder:
    """BTF written from nothing, for programs that come without (text assembly)."""

    def __init__(self) -> None:
        empty = HDR.pack(BTF_MAGIC, 1, 0, HDR.size, 0, 0, 0, 1) + b"\0"
        self.raw = RawBtf(empty)
        self._ints: dict[tuple[str, int], int] = {}

    def int_type(self, name: str = "int", size: int = 4, signed: bool = True) -> int:
        key = (name, size)
        if key not in self._ints:
            enc = (1 << 24) if signed else 0
            self._ints[key] = self.raw.add_type(
                TYPE.pack(self.raw.add_string(name), info_word(KIND_INT), size)
                + struct.pack("<I", enc | size * 8)
            )
        return self._ints[key]

    def ptr(self, target: int) -> int:
        return self.raw.add_type(TYPE.pack(0, info_word(KIND_PTR), target))

    def struct_type(self, name: str, size: int, members: list[tuple[str, int, int]] = ()) -> int:
        """members: (name, type id, bit offset)."""
        body = b"".join(struct.pack("<III", self.raw.add_string(m), t, bits) for m, t, bits in members)
        return self.raw.add_type(TYPE.pack(self.raw.add_string(name), info_word(KIND_STRUCT, len(members)),
                                           size) + body)  # fmt: skip

    def func(self, name: str, ret: int, args: list[tuple[str, int]], linkage: int) -> int:
        body = b"".join(struct.pack("<II", self.raw.add_string(a), t) for a, t in args)
        proto = self.raw.add_type(TYPE.pack(0, info_word(KIND_FUNC_PROTO, len(args)), ret) + body)
        return self.raw.add_type(TYPE.pack(self.raw.add_string(name), info_word(KIND_FUNC, linkage), proto))

    def to_bytes(self) -> bytes:
        return self.raw.to_bytes()
