"""The verifier log (`bpf_verifier_log`): levels, the kernel's line layout and the text of
register/stack state (a subset of `print_verifier_state`).

Level 0 keeps only error lines; level 1 adds every processed instruction (`%d: (%02x) ...`,
text from `verifier.asm.disasm.kernel_insn_text`), the Func#/frame_desc lines and the final
statistics and `from %d to %d:` with the full state when a branch is popped; level 2 adds
the state after each instruction (aligned on the insn line like `vlog_alignment`). The
source line of an instruction (verifier.check.linfo) comes before it at levels 1 and 2.
Bit 4 of the level (`BPF_LOG_STATS`) adds the verification time and stack depth lines
before the final statistics; alone it keeps only those and the error lines."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from verifier.asm.disasm import kernel_insn_text
from verifier.check.linfo import LinfoPrinter
from verifier.check.scalar_fmt import scalar_ranges_text, scalar_text, snum_text, unum_text
from verifier.check.state import (
    BPF_ADD_CONST,
    BPF_REG_SIZE,
    STACK_INVALID,
    STACK_MISC,
    STACK_SPILL,
    STACK_ZERO,
    FuncState,
    RegState,
    VerifierState,
)
from verifier.check.tnum import tnum_is_const, tnum_is_unknown, tnum_str
from verifier.isa.insn import Insn
from verifier.program import LineInfo
from verifier.regtypes import (
    NOT_INIT,
    PTR_TO_BTF_ID,
    PTR_TO_PACKET,
    PTR_TO_PACKET_META,
    PTR_TO_STACK,
    SCALAR_VALUE,
    base_type,
    reg_type_str,
)

SLOT_TYPE_CHAR = {STACK_INVALID: "?", STACK_SPILL: "r", STACK_MISC: "m", STACK_ZERO: "0"}


def reg_text(reg: RegState, frameno: int | None = None) -> str:
    """The value part of one register as `print_reg_state` prints it (`frameno`: the frame
    whose state is printed, for a pointer into another frame's stack)."""
    if reg.type == SCALAR_VALUE:
        link = reg.id & ~BPF_ADD_CONST
        add = reg.off if reg.id & BPF_ADD_CONST else None
        return scalar_text(reg, precise=reg.precise, id=link, add_const=add)
    base = base_type(reg.type)
    name = reg_type_str(reg.type)
    if base == PTR_TO_STACK:
        if frameno is not None and frameno != reg.frameno:
            name += f"[{reg.frameno}]"
        if tnum_is_const(reg.var_off):
            return name + snum_text(reg.var_off.value + reg.off)
    if base == PTR_TO_BTF_ID:
        name += reg.btf_name
    fields = []
    if reg.id:
        fields.append(f"id={reg.id}")
    if reg.ref_obj_id:
        fields.append(f"ref_obj_id={reg.ref_obj_id}")
    if reg.map is not None:  # map_ptr, map_value: `map=NAME,ks=K,vs=V`
        fields += [f"map={reg.map.log_name}"] if reg.map.log_name else []
        fields.append(f"ks={reg.map.key_size},vs={reg.map.value_size}")
    if reg.off:
        fields.append(f"off={snum_text(reg.off)}")
    if base in (PTR_TO_PACKET, PTR_TO_PACKET_META):  # the kernel's type_is_pkt_pointer
        fields.append(f"r={unum_text(reg.range & ((1 << 64) - 1))}")
    if tnum_is_const(reg.var_off):
        if reg.var_off.value:
            fields.append(f"imm={snum_text(reg.var_off.value)}")
    else:
        fields.extend(scalar_ranges_text(reg))
        if not tnum_is_unknown(reg.var_off):
            fields.append(f"var_off={tnum_str(reg.var_off)}")
    return f"{name}({','.join(fields)})"


def frame_state_text(
    state: VerifierState,
    frame: FuncState,
    regs: Iterable[int] | None = None,
    slots: Iterable[int] | None = None,
) -> str:
    """`print_verifier_state` for one frame: all of it (regs/slots None) or only the given
    registers and stack slot indexes (the ones the insn scratched, as Linux 6.18 prints)."""
    out: list[str] = []
    if frame.frameno:
        out.append(f" frame{frame.frameno}:")
    for regno in regs if regs is not None else range(len(frame.regs)):
        reg = frame.regs[regno]
        if reg.type == NOT_INIT:
            continue
        out.append(f" R{regno}={reg_text(reg, frame.frameno)}")
    for spi in slots if slots is not None else range(len(frame.stack)):
        if spi >= len(frame.stack):
            continue
        slot = frame.stack[spi]
        off = -(spi + 1) * BPF_REG_SIZE
        if slot.is_spill:
            text = reg_text(slot.spilled_ptr, frame.frameno)
            if slot.slot_type[0] != STACK_SPILL:  # a narrower spill: the other bytes first
                text = "".join(SLOT_TYPE_CHAR.get(t, "?") for t in slot.slot_type if t != STACK_SPILL) + text
            out.append(f" fp{off}={text}")
            continue
        chars = "".join(SLOT_TYPE_CHAR.get(t, "?") for t in slot.slot_type)
        if chars != "?" * BPF_REG_SIZE:
            out.append(f" fp{off}={chars}")
    if state.refs:
        out.append(" refs=" + ",".join(str(r.id) for r in state.refs))
    return "".join(out)


def vlog_alignment(pos: int) -> int:
    return ((max(pos + 4, 40) + 7) // 8) * 8 - pos - 1


class VLog:
    """Collects the log as lines; `lines[-1]` is what the kernel would print last."""

    def __init__(self, level: int, line_info: Sequence[LineInfo] = ()) -> None:
        self.level = level & 3  # BPF_LOG_LEVEL1 | BPF_LOG_LEVEL2
        self.stats = bool(level & 4)  # BPF_LOG_STATS
        self.enabled = level != 0
        self.linfo = LinfoPrinter(line_info) if line_info else None
        self.lines: list[str] = []
        self._insn_line = -1  # index of the last insn line still open for its state

    def verbose(self, msg: str) -> None:
        """A level-1 line (`verbose()` in the kernel)."""
        if self.level >= 1:
            self.lines.append(msg)

    def error(self, msg: str) -> None:
        """An error line: kept at every level, it is the message of the rejection."""
        self.lines.append(msg)

    def insn(self, insns: Sequence[Insn], pc: int) -> None:
        if self.level >= 1:
            if self.linfo is not None and (src := self.linfo.line_before(pc)) is not None:
                self.lines.append(src)
            self.lines.append(f"{pc}: {kernel_insn_text(insns, pc)}")
            self._insn_line = len(self.lines) - 1

    def insn_state(self, pc: int, text: str) -> None:
        """Level 2: the scratched state after insn `pc`, on the insn line when nothing else
        was logged in between (kernel `print_insn_state`)."""
        if self.level < 2 or not text:
            return
        if self._insn_line == len(self.lines) - 1:
            line = self.lines[-1]
            self.lines[-1] = line + " " * vlog_alignment(len(line) + 1) + ";" + text
        else:
            self.lines.append(f"{pc}:{text}")
        self._insn_line = -1

    def summary(self, msg: str) -> None:
        """The closing statistics lines: printed at every level but 0."""
        if self.enabled:
            self.lines.append(msg)

    def branch(self, prev_idx: int, idx: int, state_text: str) -> None:
        """After a branch is popped: the kernel prints this at level 1 too (do_print_state)."""
        if self.level >= 1:
            self.lines.append("")
            self.lines.append(f"from {prev_idx} to {idx}:{state_text}")

    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")
