"""Human-readable listing of a JitProgram: capstone disassembly (AT&T syntax, like the
kernel's `__jited` selftest expectations) of every image, each BPF instruction's text above
its x86 instructions, call targets named (images, kfunc stubs, helper stubs), and every
frame-descriptor key (return-address offset) marked."""

from __future__ import annotations

from collections.abc import Sequence

import capstone

from jit.image import JitImage, JitProgram
from verifier.asm.disasm import insn_text
from verifier.isa.insn import Insn
from verifier.protos.kfuncs import KFUNCS_BY_ID

_PUSH_NAMES = ("rbx", "r13", "r14", "r15")


def _raw_insn_text(insns: Sequence[Insn], pc: int) -> str:
    """Raw fields, for an instruction the disassembler cannot print."""
    i = insns[pc]
    return f"code=0x{i.code:02x} dst=r{i.dst} src=r{i.src} off={i.off} imm={i.imm}"


def _pushes(img: JitImage) -> str:
    regs = (["r12"] if img.exception_boundary else []) + [
        n for n, used in zip(_PUSH_NAMES, img.callee_regs_used, strict=True) if used
    ]
    return " ".join(regs) if regs else "none"


def _header(img: JitImage) -> str:
    flags = [img.kind] + (["hidden"] if img.hidden else [])
    if img.exception_boundary:
        flags.append("exception boundary")
    return (
        f"{img.name} ({', '.join(flags)}) at {img.address:#x}, {len(img.code)} bytes, "
        f"stack {img.stack_depth}, pushes: {_pushes(img)}"
    )


class _Lister:
    def __init__(self, jp: JitProgram) -> None:
        self.jp = jp
        self.md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
        self.md.syntax = capstone.CS_OPT_SYNTAX_ATT
        self.call_names = {sp.start: sp.name for sp in jp.verified.subprogs}
        self.names: dict[int, str] = {img.address: img.name for img in jp.images}
        for btf_id, addr in jp.stub_addrs.items():
            proto = KFUNCS_BY_ID.get(btf_id)
            self.names.setdefault(addr, f"kfunc {proto.name}" if proto else f"kfunc stub {btf_id}")

    def _text(self, pc: int) -> str:
        try:
            return insn_text(self.jp.verified.insns, pc, call_names=self.call_names)
        except Exception:  # a listing must never fail on an odd insn
            return _raw_insn_text(self.jp.verified.insns, pc)

    def _x86(self, img: JitImage, lo: int, hi: int, out: list[str], call_name: str | None = None) -> None:
        keys = dict(zip(img.fd_offsets, img.fd_descs, strict=True))
        for ins in self.md.disasm(img.code[lo:hi], img.address + lo):
            off = ins.address - img.address
            raw = ins.bytes.hex(" ")
            line = f"  {off:5x}:  {raw:<30} {ins.mnemonic} {ins.op_str}".rstrip()
            if ins.mnemonic.startswith("call"):
                target = int(ins.op_str, 16) if ins.op_str.startswith("0x") else None
                name = self.names.get(target, call_name) if target is not None else None
                if name is not None:
                    line += f"    # {name}"
            end = off + ins.size
            if end in keys:
                line += f"    <- frame desc pc={keys[end].pc} (ret+{end:#x})"
            out.append(line)

    def image(self, img: JitImage, out: list[str]) -> None:
        out.append(_header(img))
        self._x86(img, 0, img.addrs[0], out)
        insns = self.jp.verified.insns
        n = len(img.addrs) - 1
        k = 0
        while k < n:
            slots = 2 if insns[img.start + k].is_ld_imm64() else 1
            pc = img.start + k
            out.append(f"; {pc}: {self._text(pc)}")
            insn = insns[pc]
            helper = f"helper {insn.imm} stub" if insn.is_helper_call() else None
            self._x86(img, img.addrs[k], img.addrs[k + slots], out, helper)
            k += slots


def listing(jp: JitProgram) -> str:
    """The whole program, image by image, separated by blank lines."""
    lister = _Lister(jp)
    out: list[str] = []
    for img in jp.images:
        if out:
            out.append("")
        lister.image(img, out)
    return "\n".join(out) + "\n"
