"""The verifier log (`bpf_verifier_log`): levels, the kernel's line layout and the text of
register/stack state (a subset of `print_verifier_state`).

Level 0 keeps only error lines; level 1 adds every processed instruction (`%d: (%02x) ...`,
text from `verifier.asm.disasm.kernel_insn_text`), the Func#/frame_desc lines and the final
statistics and `from %d to %d:` with the full state when a branch is popped; level 2 adds
the state after each instruction (aligned on the insn line like `vlog_alignment`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from verifier.asm.disasm import kernel_insn_text
from verifier.check.state import (
    BPF_REG_SIZE,
    STACK_INVALID,
    STACK_MISC,
    STACK_SPILL,
    STACK_ZERO,
    FuncState,
    RegState,
    VerifierState,
)
from verifier.isa.insn import Insn
from verifier.regtypes import (
    NOT_INIT,
    PTR_TO_BTF_ID,
    PTR_TO_STACK,
    SCALAR_VALUE,
    base_type,
    reg_type_str,
)

SLOT_TYPE_CHAR = {STACK_INVALID: "?", STACK_SPILL: "r", STACK_MISC: "m", STACK_ZERO: "0"}


def snum(value: int) -> str:
    """`verbose_snum` (v6.8+): small signed values in decimal, the rest in hex."""
    s = value - (1 << 64) if value & (1 << 63) else value
    if -32768 <= s <= 32767:
        return str(s)
    return f"{s & ((1 << 64) - 1):#x}"


def reg_text(reg: RegState) -> str:
    """The value part of one register as `print_reg_state` prints it."""
    if reg.type == SCALAR_VALUE:
        return snum(reg.value) if reg.value is not None else "scalar()"
    base = base_type(reg.type)
    if base == PTR_TO_STACK:
        return f"fp{reg.off}"
    name = reg_type_str(reg.type)
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
        fields.append(f"off={reg.off}")
    return f"{name}({','.join(fields)})"


def frame_state_text(
    state: VerifierState,
    frame: FuncState,
    regs: Iterable[int] | None = None,
    slots: Iterable[int] | None = None,
    written: frozenset[int] = frozenset(),
) -> str:
    """`print_verifier_state` for one frame: all of it (regs/slots None) or only the given
    registers and stack slot indexes; registers in `written` get the `_w` mark."""
    out: list[str] = []
    if frame.frameno:
        out.append(f" frame{frame.frameno}:")
    for regno in regs if regs is not None else range(len(frame.regs)):
        reg = frame.regs[regno]
        if reg.type == NOT_INIT:
            continue
        mark = "_w" if regno in written else ""
        out.append(f" R{regno}{mark}={reg_text(reg)}")
    for spi in slots if slots is not None else range(len(frame.stack)):
        if spi >= len(frame.stack):
            continue
        slot = frame.stack[spi]
        off = -(spi + 1) * BPF_REG_SIZE
        mark = "_w" if slots is not None else ""
        if slot.is_spill:
            out.append(f" fp{off}{mark}={reg_text(slot.spilled_ptr)}")
            continue
        chars = "".join(SLOT_TYPE_CHAR.get(t, "?") for t in slot.slot_type)
        if chars != "?" * BPF_REG_SIZE:
            out.append(f" fp{off}{mark}={chars}")
    if regs is None and state.refs:
        out.append(" refs=" + ",".join(str(r.id) for r in state.refs))
    return "".join(out)


def vlog_alignment(pos: int) -> int:
    return ((max(pos + 4, 40) + 7) // 8) * 8 - pos - 1


class VLog:
    """Collects the log as lines; `lines[-1]` is what the kernel would print last."""

    def __init__(self, level: int) -> None:
        self.level = level
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

    def branch(self, prev_idx: int, idx: int, state_text: str) -> None:
        """After a branch is popped: the kernel prints this at level 1 too (do_print_state)."""
        if self.level >= 1:
            self.lines.append("")
            self.lines.append(f"from {prev_idx} to {idx}:{state_text}")

    def text(self) -> str:
        return "\n".join(self.lines) + ("\n" if self.lines else "")
