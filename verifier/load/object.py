"""Load a clang-built BPF ELF object (`clang -O2 -g -target bpf`) into `Program`s.

Owns `load_object(path)` -> `LoadedObject` (the types are in `verifier.load.model`) with one `Program` per
function of a program section (`SEC("tc")`, `SEC("?tc")`, `SEC("syscall")`,
`SEC("fentry/...")`...), the object's maps (`verifier.load.maps`), its BTF and license.
Each program's insns are its own function followed by the `.text` functions it reaches
(calls, callback pointers and the exception callback named by an
`exception_callback:NAME` decl tag), in breadth-first order of first reference.
Relocation of those insns lives in `verifier.load.link`; the ELF container in
`verifier.load.elf_file`; BTF in `verifier.load.btf` / `verifier.load.btf_ext`.

Every problem is one `LoadError` naming the file (and the program, section, symbol or
kfunc at fault); bad instruction encodings surface as `DecodeError`."""

from __future__ import annotations

from pathlib import Path

from verifier.errors import LoadError, quoted, shown
from verifier.load.btf import BTF_KIND_FUNC, LINKAGE_NAMES, Btf, parse_btf
from verifier.load.btf_ext import BtfExt, parse_btf_ext
from verifier.load.elf_file import SHF_ALLOC, ElfImage, Section, read_elf
from verifier.load.link import check_relocations, link_program
from verifier.load.maps import collect_maps, is_data_section
from verifier.load.model import OTHER_ALLOC_SECTIONS, FuncDef, LoadedObject, prog_section_type


def _check_sections(image: ElfImage) -> None:
    for s in image.sections:
        if s.is_exec:
            if s.name != ".text" and prog_section_type(s.name) is None:
                raise LoadError(f"{image.path}: unknown program section {quoted(s.name)}")
            if s.size % 8:
                raise LoadError(f"{image.path}: section {shown(s.name)} size {s.size} is not a multiple of 8")
        elif s.flags & SHF_ALLOC and not (is_data_section(s.name) or s.name in OTHER_ALLOC_SECTIONS):
            raise LoadError(f"{image.path}: unknown allocated section {quoted(s.name)}")


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
            raise LoadError(f"{image.path}: function {quoted(sym.name)} is not in an executable section")
        if sym.value % 8 or sym.size % 8 or sym.size == 0 or sym.value + sym.size > sec.size:
            raise LoadError(
                f"{image.path}: function {quoted(sym.name)} ({sym.size} bytes at {sym.value:#x})"
                f" does not fit {shown(sec.name)}"
            )
        if sym.name in funcs:
            raise LoadError(f"{image.path}: function {quoted(sym.name)} is defined twice")
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
            progs = ", ".join(shown(f.name) for f in funcs.values() if f.section != ".text")
            raise LoadError(f"{path}: no program {quoted(only)} (programs: {progs})")
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
