"""Link one program of an object: its function, the `.text` functions it reaches, relocations.

Owns `link_program(obj, main)` -> (Program, ProgramInfo) and `check_relocations(obj)`.
Relocations, as clang emits them for BPF:
  R_BPF_64_32 on a call (src BPF_PSEUDO_CALL, imm -1): against an undefined symbol it is a
    `__ksym` kfunc, resolved by name through `kfunc_btf_id` (src becomes
    BPF_PSEUDO_KFUNC_CALL, imm its BTF id); against a function or section symbol the target
    is `sym.value + (imm + 1) * 8` bytes into that section (a bpf2bpf call).
  R_BPF_64_64 on an ld_imm64: a `.maps` variable (src BPF_PSEUDO_MAP_FD, imm = map index),
    a global variable (src BPF_PSEUDO_MAP_VALUE, imm = map index, second imm = offset), or
    a function (src BPF_PSEUDO_FUNC, imm relative: a callback for bpf_loop, timers...).
Calls inside `.text` that clang resolved itself carry no relocation and are relative.
CO-RE relocations of kind TYPE_ID_LOCAL (`bpf_core_type_id_local()`) name the local struct
that `bpf_obj_new` allocates: Program.structs and Program.type_refs record it. Every map of
the object is in Program.maps (the ld_imm64 imm indexes it), Program.map_refs names the
ld_imm64s that load one. From BTF the program also gets every function's signature
(Program.func_protos), all its `exception_callback:` tags and the attach target its
section names, and the .BTF.ext line_info records of its functions at their insn indexes
in the program (Program.line_info)."""

from __future__ import annotations

from verifier.errors import LoadError, quoted, shown
from verifier.isa.decode import decode
from verifier.isa.insn import (
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_KFUNC_CALL,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE,
    Insn,
)
from verifier.load.btf import BTF_KIND_STRUCT, BTF_KIND_UNION
from verifier.load.btf_ext import BPF_CORE_TYPE_ID_LOCAL
from verifier.load.elf_file import Reloc, Symbol
from verifier.load.maps import is_data_section
from verifier.load.model import (
    CTX_STRUCTS,
    EXCEPTION_CB_TAG,
    FuncDef,
    LoadedObject,
    MapRef,
    ProgramInfo,
    kfunc_btf_id,
    prog_section_type,
)
from verifier.program import BPF_LINE_COL_BITS, FuncProto, FuncSym, LineInfo, Program, StructType

R_BPF_NONE, R_BPF_64_64, R_BPF_64_ABS64, R_BPF_64_ABS32, R_BPF_64_NODYLD32, R_BPF_64_32 = 0, 1, 2, 3, 4, 10
RELOC_NAMES = {
    R_BPF_NONE: "R_BPF_NONE", R_BPF_64_64: "R_BPF_64_64", R_BPF_64_ABS64: "R_BPF_64_ABS64",
    R_BPF_64_ABS32: "R_BPF_64_ABS32", R_BPF_64_NODYLD32: "R_BPF_64_NODYLD32", R_BPF_64_32: "R_BPF_64_32",
}  # fmt: skip


def reloc_name(rtype: int) -> str:
    return RELOC_NAMES.get(rtype, f"unknown relocation type {rtype}")


def check_relocations(obj: LoadedObject) -> None:
    """Object-wide checks of every relocation that patches code or allocated data."""
    image = obj.image
    for shndx, relocs in image.relocs.items():
        sec = image.sections[shndx]
        if not sec.is_alloc:
            continue  # .BTF, .BTF.ext and DWARF: addresses for tools, nothing to apply
        if not sec.is_exec:
            raise LoadError(f"{obj.path}: relocations in data section {quoted(sec.name)} are not supported")
        for r in relocs:
            where = f"{shown(sec.name)}+{r.offset:#x}"
            if r.type not in (R_BPF_64_64, R_BPF_64_32):
                raise LoadError(f"{obj.path}: {where}: {reloc_name(r.type)} is not supported in code")
            if r.offset % 8:
                raise LoadError(f"{obj.path}: {where}: relocation is not at an instruction boundary")
            sym = image.symbols[r.sym]
            if r.sym == 0 or (sym.shndx == 0 and not sym.name):
                raise LoadError(f"{obj.path}: {where}: relocation against unknown symbol #{r.sym}")


class _Linker:
    def __init__(self, obj: LoadedObject, main: FuncDef) -> None:
        self.obj, self.main, self.image = obj, main, obj.image
        ptype, attach = prog_section_type(main.section) or ("tc", None)
        self.info = ProgramInfo(main.name, main.section, ptype, attach, not main.section.startswith("?"))
        self.insns: list[Insn] = []
        self.funcs: list[FuncSym] = []
        self.placed: dict[str, int] = {}
        self.queue: list[tuple[FuncDef, int]] = []  # placed functions; [:done] are relocated
        self.done = 0
        self.structs: dict[str, StructType] = {}
        self.type_refs: dict[int, str] = {}
        self.line_info: list[LineInfo] = []
        self.by_start = {(f.shndx, f.offset): f for f in obj.functions.values()}
        self.relocs = {k: {r.offset: r for r in v} for k, v in self.image.relocs.items()}

    def err(self, msg: str) -> LoadError:
        return LoadError(f"{self.obj.path}: program {quoted(self.main.name)}: {msg}")

    def place(self, f: FuncDef) -> int:
        """Start pc of `f` in this program, appending its insns the first time it is reached."""
        if f.name in self.placed:
            return self.placed[f.name]
        sec = self.image.sections[f.shndx]
        start = len(self.insns)
        where = f"{self.obj.path}: {shown(sec.name)}:{shown(f.name)}"
        self.insns.extend(decode(sec.data[f.offset : f.offset + f.size], where))
        self.placed[f.name] = start
        self.funcs.append(FuncSym(f.name, start, f.linkage))
        self.queue.append((f, start))
        return start

    def link(self) -> tuple[Program, ProgramInfo]:
        self.place(self.main)
        self._drain()
        cb_tags = self._exception_callbacks()
        self._drain()
        prog = Program(
            name=self.main.name,
            insns=self.insns,
            funcs=self.funcs,
            prog_type=self.info.prog_type,
            exception_cb=cb_tags[0] if cb_tags else None,
            structs=self.structs,
            type_refs=self.type_refs,
            source=self.obj.path,
            license=self.obj.license,
            func_protos=self._func_protos(),
            exception_cb_tags=tuple(cb_tags),
            attach_to=self.info.attach_to or "",
            line_info=sorted(self.line_info, key=lambda li: li.insn_off),
            maps=tuple(m.prog_map() for m in self.obj.maps),
            map_refs={pc: self.obj.map_index(ref.map) for pc, ref in sorted(self.info.map_refs.items())},
        )
        return prog, self.info

    def _func_protos(self) -> dict[str, FuncProto]:
        """BTF's signature of every function of the program (those that have a BTF FUNC)."""
        btf = self.obj.btf
        if btf is None:
            return {}
        ctx_struct = CTX_STRUCTS.get(self.info.prog_type)
        out: dict[str, FuncProto] = {}
        for f in self.funcs:
            btf_id = self.obj.functions[f.name].btf_id
            if btf_id:
                ret, args = btf.func_proto_kinds(btf_id, ctx_struct)
                out[f.name] = FuncProto(ret, args)
        return out

    def _drain(self) -> None:
        while self.done < len(self.queue):
            f, start = self.queue[self.done]
            self.done += 1
            self._relocate(f, start)
            self._core_relos(f, start)
            self._line_info(f, start)

    def _exception_callbacks(self) -> list[str]:
        btf = self.obj.btf
        if btf is None or not self.main.btf_id:
            return []
        self.info.decl_tags = btf.decl_tags(self.main.btf_id)
        names = [t[len(EXCEPTION_CB_TAG) :] for t in self.info.decl_tags if t.startswith(EXCEPTION_CB_TAG)]
        self.info.exception_cb_tags = names
        for name in names:
            cb = self.obj.functions.get(name)
            if cb is None or cb.section != ".text":
                raise self.err(f"exception callback {quoted(name)} named by its decl tag is not a"
                               " .text function")
            self.place(cb)
        return names

    def _relocate(self, f: FuncDef, start: int) -> None:
        relocs = self.relocs.get(f.shndx, {})
        slot = 0
        while slot < f.slots:
            pc, byte = start + slot, f.offset + slot * 8
            insn, r = self.insns[pc], relocs.get(byte)
            if insn.is_call() and insn.src == BPF_PSEUDO_CALL:
                self._call(f, pc, byte, r)
            elif insn.is_ld_imm64():
                if relocs.get(byte + 8) is not None:
                    raise self.err(
                        f"relocation at {shown(f.section)}+{byte + 8:#x} patches the second half"
                        " of an ld_imm64"
                    )
                if r is not None:
                    self._ld_imm64(f, pc, r)
                slot += 1
            elif r is not None:
                raise self.err(
                    f"{reloc_name(r.type)} at {shown(f.section)}+{byte:#x} (insn {pc}) applies to"
                    " neither a call "
                    "nor an ld_imm64"
                )
            elif insn.is_helper_call():
                self.info.helper_calls[pc] = insn.imm
            slot += 1

    def _symbol(self, r: Reloc) -> Symbol:
        return self.image.symbols[r.sym]

    def _func_at(self, shndx: int, off: int, pc: int, what: str) -> FuncDef:
        g = self.by_start.get((shndx, off))
        sec = self.image.sections[shndx].name if 0 < shndx < len(self.image.sections) else f"#{shndx}"
        if g is None:
            raise self.err(
                f"{what} at insn {pc} targets {shown(sec)}+{off:#x}, which is not the start of a function"
            )
        if g.section != ".text":
            raise self.err(f"{what} at insn {pc} targets {quoted(g.name)} in program section"
                           f" {quoted(sec)} (only .text)")
        return g

    def _call(self, f: FuncDef, pc: int, byte: int, r: Reloc | None) -> None:
        insn = self.insns[pc]
        if r is None:
            shndx, target = f.shndx, byte + (insn.imm + 1) * 8
        else:
            if r.type != R_BPF_64_32:
                raise self.err(f"{reloc_name(r.type)} on the call at insn {pc} (expected R_BPF_64_32)")
            sym = self._symbol(r)
            if sym.shndx == 0:
                btf_id = kfunc_btf_id(sym.name)
                if btf_id is None:
                    raise self.err(f"unknown kfunc {quoted(sym.name)} (called at insn {pc})")
                self.insns[pc] = insn.replace(src=BPF_PSEUDO_KFUNC_CALL, imm=btf_id, off=0)
                self.info.kfunc_calls[pc] = sym.name
                return
            shndx, target = sym.shndx, sym.value + (insn.imm + 1) * 8
        g = self._func_at(shndx, target, pc, "call")
        self.insns[pc] = insn.replace(imm=self.place(g) - pc - 1)

    def _ld_imm64(self, f: FuncDef, pc: int, r: Reloc) -> None:
        insn, second = self.insns[pc], self.insns[pc + 1]
        if r.type != R_BPF_64_64:
            raise self.err(f"{reloc_name(r.type)} on the ld_imm64 at insn {pc} (expected R_BPF_64_64)")
        sym = self._symbol(r)
        if sym.shndx == 0:
            raise self.err(
                f"ld_imm64 at insn {pc} refers to extern {quoted(sym.name)} (only __ksym kfuncs"
                " are supported)"
            )
        if sym.shndx >= len(self.image.sections):
            raise self.err(f"ld_imm64 at insn {pc} refers to {quoted(sym.name)} outside every section")
        tsec = self.image.sections[sym.shndx]
        off = sym.value + insn.imm
        if tsec.is_exec:
            g = self._func_at(sym.shndx, off, pc, "ld_imm64 of a function")
            self.insns[pc] = insn.replace(src=BPF_PSEUDO_FUNC, imm=self.place(g) - pc - 1)
            self.insns[pc + 1] = second.replace(imm=0)
            self.info.func_refs[pc] = g.name
        elif tsec.name == ".maps":
            found = [i for i, m in enumerate(self.obj.maps) if m.kind == "map" and m.offset == off]
            if not found:
                raise self.err(
                    f"ld_imm64 at insn {pc} refers to .maps+{off:#x} ({quoted(sym.name)}), which is no map"
                )
            self.insns[pc] = insn.replace(src=BPF_PSEUDO_MAP_FD, imm=found[0])
            self.insns[pc + 1] = second.replace(imm=0)
            self.info.map_refs[pc] = MapRef(self.obj.maps[found[0]].name, "map")
        elif is_data_section(tsec.name):
            found = [i for i, m in enumerate(self.obj.maps) if m.kind == "data" and m.section == tsec.name]
            if not found or not 0 <= off < tsec.size:
                raise self.err(f"ld_imm64 at insn {pc} refers to {shown(tsec.name)}+{off:#x},"
                               " outside the section")
            self.insns[pc] = insn.replace(src=BPF_PSEUDO_MAP_VALUE, imm=found[0])
            self.insns[pc + 1] = second.replace(imm=off)
            self.info.map_refs[pc] = MapRef(tsec.name, "map_value", off)
        else:
            raise self.err(f"ld_imm64 at insn {pc} refers to {quoted(sym.name)} in section"
                           f" {quoted(tsec.name)}")

    def _line_info(self, f: FuncDef, start: int) -> None:
        """The line_info records that fall in `f`, at the insn indexes `f` got here."""
        ext = self.obj.btf_ext
        for rec in ext.line_info.get(f.section, ()) if ext is not None else ():
            if not f.offset <= rec.insn_off < f.offset + f.size:
                continue
            if rec.insn_off % 8:
                raise self.err(f"line_info at {shown(f.section)}+{rec.insn_off:#x} is not at an instruction")
            line_num, col = rec.line_col >> BPF_LINE_COL_BITS, rec.line_col & ((1 << BPF_LINE_COL_BITS) - 1)
            pc = start + (rec.insn_off - f.offset) // 8
            self.line_info.append(LineInfo(pc, rec.file_name, rec.line, line_num, col,
                                           rec.file_name_off, rec.line_off))

    def _core_relos(self, f: FuncDef, start: int) -> None:
        ext, btf = self.obj.btf_ext, self.obj.btf
        if ext is None or btf is None:
            return
        for cr in ext.core_relos.get(f.section, ()):
            if not f.offset <= cr.insn_off < f.offset + f.size:
                continue
            pc = start + (cr.insn_off - f.offset) // 8
            if cr.insn_off % 8:
                raise self.err(f"CO-RE relocation at {shown(f.section)}+{cr.insn_off:#x} is not at"
                               " an instruction")
            if cr.kind != BPF_CORE_TYPE_ID_LOCAL:
                raise self.err(
                    f"CO-RE relocation {cr.kind_name} at insn {pc} is not supported (only type_id_local)"
                )
            insn = self.insns[pc]
            if not insn.is_ld_imm64():
                raise self.err(f"CO-RE type_id_local relocation at insn {pc} is not on an ld_imm64")
            self.insns[pc] = insn.replace(imm=cr.type_id)
            self.insns[pc + 1] = self.insns[pc + 1].replace(imm=0)
            t = btf.get(cr.type_id)
            if t.kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
                name = t.name or f"anon_{t.id}"
                self.structs[name] = StructType(name, t.size_or_type, t.id)
                self.type_refs[pc] = name


def link_program(obj: LoadedObject, main: FuncDef) -> tuple[Program, ProgramInfo]:
    return _Linker(obj, main).link()
