"""Disassemble the code sections of a BPF object exactly as `llvm-objdump -d -r
--no-show-raw-insn` prints them (LLVM 14 and later, whitespace aside).

Owns `disassemble_object(data, path, section=None)`. The text is that of the object as
clang wrote it, before the loader relocates anything: calls show their raw immediate
(`call -1`), ld_imm64 its raw 64-bit value in unsigned decimal (`r1 = 13 ll`), jumps their
offset plus the symbol at the target (`goto +2 <LBB0_2>`), and each relocation follows its
instruction as `OFFSET:  R_BPF_64_32  SYMBOL` (a section symbol shows the section name).
Instruction text comes from `verifier.asm.disasm.insn_text` except for those forms."""

from __future__ import annotations

import bisect

from verifier.asm.disasm import insn_text
from verifier.errors import LoadError, quoted, shown
from verifier.isa.decode import decode
from verifier.isa.insn import Insn, ld_imm64_value
from verifier.load.elf_file import ElfImage, Section, Symbol, read_elf
from verifier.load.link import reloc_name


def _label_symbols(image: ElfImage, sec: Section) -> list[Symbol]:
    """Symbols objdump prints as `ADDR <name>:` headers and uses for branch targets."""
    syms = [
        s for s in image.symbols if s.shndx == sec.index and s.type in ("FUNC", "NOTYPE", "OBJECT") and s.name
    ]
    return sorted(syms, key=lambda s: (s.value, s.index))


def _target_note(syms: list[Symbol], values: list[int], target: int) -> str:
    i = bisect.bisect_right(values, target) - 1
    if i < 0:
        return ""
    sym = syms[i]
    # objdump names the last symbol at that address when several share it.
    delta = target - sym.value
    return f" <{sym.name}>" if delta == 0 else f" <{sym.name}+0x{delta:x}>"


def objdump_insn_text(insns: list[Insn], pc: int) -> str:
    """One instruction in llvm-objdump's spelling of unrelocated object code."""
    insn = insns[pc]
    if insn.is_ld_imm64() and pc + 1 < len(insns):
        return f"r{insn.dst} = {ld_imm64_value(insn, insns[pc + 1])} ll"
    if insn.is_call():
        return f"call {insn.imm}"
    return insn_text(insns, pc)


def _section_text(image: ElfImage, sec: Section) -> list[str]:
    insns = decode(sec.data, f"{image.path}: {shown(sec.name)}")
    syms = _label_symbols(image, sec)
    last_at: dict[int, Symbol] = {}
    for s in syms:
        last_at[s.value] = s
    targets = sorted(last_at.values(), key=lambda s: s.value)
    values = [s.value for s in targets]
    relocs = sorted(image.relocs.get(sec.index, []), key=lambda r: r.offset)
    heads: dict[int, list[Symbol]] = {}
    for s in syms:
        heads.setdefault(s.value, []).append(s)
    out = ["", f"Disassembly of section {sec.name}:"]
    ri, pc = 0, 0
    while pc < len(insns):
        addr = pc * 8
        for s in heads.get(addr, ()):
            out += ["", f"{addr:016x} <{s.name}>:"]
        insn = insns[pc]
        text = objdump_insn_text(insns, pc)
        if insn.is_jump():
            text += _target_note(targets, values, (pc + insn.jump_offset() + 1) * 8)
        out.append(f"{pc:8d}:\t{text}")
        width = 16 if insn.is_ld_imm64() else 8
        while ri < len(relocs) and relocs[ri].offset < addr + width:
            r = relocs[ri]
            sym = image.symbols[r.sym]
            name = (
                image.sections[sym.shndx].name
                if sym.type == "SECTION" and sym.shndx < len(image.sections)
                else sym.name
            )
            out.append(f"\t\t{r.offset:016x}:  {reloc_name(r.type)}\t{name}")
            ri += 1
        pc += 2 if insn.is_ld_imm64() else 1
    return out


def disassemble_object(data: bytes, path: str, section: str | None = None) -> str:
    """The `llvm-objdump -d -r --no-show-raw-insn` listing of every code section (or one)."""
    image = read_elf(data, path)
    code = [s for s in image.sections if s.is_exec and s.size]  # objdump skips empty ones
    if section is not None:
        code = [s for s in code if s.name == section]
        if not code:
            names = ", ".join(s.name for s in image.sections if s.is_exec) or "none"
            raise LoadError(f"{path}: no code section {quoted(section)} (code sections: {names})")
    out = ["", f"{path}:\tfile format elf64-bpf"]
    for sec in code:
        if sec.size % 8:
            raise LoadError(f"{path}: section {shown(sec.name)} size {sec.size} is not a multiple of 8")
        out += _section_text(image, sec)
    return "\n".join(out) + "\n"
