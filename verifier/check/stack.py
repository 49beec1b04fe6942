"""Stack accesses, as the kernel checks them for a privileged program: bounds and alignment
(`check_stack_access_within_bounds`, the strict alignment of stack pointers), register
spills of any size (`check_stack_write_fixed_off` / `save_register_state`: a scalar
stored at an 8-byte boundary keeps its value, a pointer needs all 8 bytes), fills
(`check_stack_read_fixed_off`), and accesses at a variable offset
(`check_stack_write_var_off` destroys spills in range; `check_stack_read_var_off` reads a
zero only if every byte in range is STACK_ZERO).

Stack slots keep the kernel's per-byte `slot_type[8]` and byte order: the byte at
fp-relative address `a` is `stack[spi].slot_type[(-a - 1) % 8]` with `spi = (-a - 1) // 8`."""

from __future__ import annotations

from verifier.check.alu import get_reg_width
from verifier.check.env import Env
from verifier.check.precision import mark_regs_precise
from verifier.check.scalar import coerce_reg_to_size
from verifier.check.stack_liveness import note_slot_access, slot_mask
from verifier.check.state import (
    BPF_REG_SIZE,
    STACK_INVALID,
    STACK_MISC,
    STACK_SPILL,
    STACK_ZERO,
    TNUM_ZERO,
    FuncState,
    RegState,
    StackSlot,
    VerifierState,
    not_init,
    scalar,
)
from verifier.check.tnum import tnum_add, tnum_const, tnum_is_aligned, tnum_is_const, tnum_str
from verifier.isa.insn import MAX_BPF_STACK
from verifier.regtypes import PTR_TO_STACK, SCALAR_VALUE, base_type

BPF_MAX_VAR_OFF = 1 << 29


def var_off_text(reg: RegState) -> str:
    """The var_off as the kernel prints it in alignment messages: a constant as `%#llx`-ish
    (`0`), else `(value; mask)`."""
    if tnum_is_const(reg.var_off):
        return f"{reg.var_off.value:#x}" if reg.var_off.value else "0"
    return tnum_str(reg.var_off)


def check_stack_alignment(env: Env, reg: RegState, off: int, size: int) -> None:
    """Stack accesses are always strictly aligned (spill tracking relies on it)."""
    if not tnum_is_aligned(tnum_add(reg.var_off, tnum_const((reg.off + off) & ((1 << 64) - 1))), size):
        env.reject(f"misaligned stack access off {var_off_text(reg)}+{reg.off}+{off} size {size}")


def stack_bounds(env: Env, regno: int, reg: RegState, off: int, size: int, write: bool) -> tuple[int, int]:
    """`check_stack_access_within_bounds`: (min_off, max_off) of the access, fp-relative."""
    total = reg.off + off
    what = " write to" if write else " read from"
    if tnum_is_const(reg.var_off):
        min_off = _s64(reg.var_off.value) + total
        max_off = min_off + size
    else:
        if reg.smax_value >= BPF_MAX_VAR_OFF or reg.smin_value <= -BPF_MAX_VAR_OFF:
            env.reject(f"invalid unbounded variable-offset{what} stack R{regno}")
        min_off = reg.smin_value + total
        max_off = reg.smax_value + total + size
    if min_off < -MAX_BPF_STACK or min_off > -1 or max_off > 0:
        if tnum_is_const(reg.var_off):
            env.reject(f"invalid{what} stack R{regno} off={total} size={size}")
        env.reject(f"invalid variable-offset{what} stack R{regno} var_off={tnum_str(reg.var_off)} "
                   f"off={total} size={size}")
    return min_off, max_off


def _s64(v: int) -> int:
    return v - (1 << 64) if v >> 63 else v


def _slot(frame: FuncState, addr: int) -> tuple[StackSlot, int, int]:
    """(slot, spi, slot_type index) of the byte at fp-relative address `addr`."""
    spi = (-addr - 1) // BPF_REG_SIZE
    return frame.stack[spi], spi, (-addr - 1) % BPF_REG_SIZE


def _note_stack_access(state: VerifierState, frameno: int, spi: int) -> None:
    """A spill or fill: the insn's history record names the slot (`INSN_F_STACK_ACCESS`),
    so precision backtracking follows the value through it."""
    idx, fr, _ = state.hist[-1]
    state.hist[-1] = (idx, fr, (frameno, spi))


def _touch(env: Env, frame: FuncState, min_off: int) -> None:
    frame.grow_stack(-min_off)
    info = env.subprogs[frame.subprogno]
    info.stack_depth = max(info.stack_depth, -min_off)


def stack_write(env: Env, state: VerifierState, regno: int, reg: RegState, off: int, size: int,
                value: RegState, imm: bool) -> None:
    """A store of `value` (from ST: `imm`)."""
    check_stack_alignment(env, reg, off, size)
    min_off, max_off = stack_bounds(env, regno, reg, off, size, write=True)
    frame = state.frames[reg.frameno]
    _touch(env, frame, min_off)
    exact = tnum_is_const(reg.var_off) and size == BPF_REG_SIZE and min_off % BPF_REG_SIZE == 0
    note_slot_access(env, state, reg.frameno, 0, slot_mask(min_off, max_off) if exact else 0)
    if value.is_pointer and reg.frameno != state.curframe and base_type(value.type) == PTR_TO_STACK:
        env.reject("cannot spill pointers to stack into stack frame of the caller")
    if not tnum_is_const(reg.var_off):
        _write_var_off(env, state, frame, min_off, max_off, value, imm)
        return
    slot, spi, first = _slot(frame, min_off)
    aligned = min_off % BPF_REG_SIZE == 0
    if aligned and (imm or value.type == SCALAR_VALUE) or value.is_pointer:
        if value.is_pointer and size != BPF_REG_SIZE:
            env.reject("invalid size of register spill")
        keep_id = value.is_pointer or (not imm and get_reg_width(value) <= 8 * size)
        _save_register_state(slot, value, size, keep_id)
        _note_stack_access(state, reg.frameno, spi)
    else:
        slot.spilled_ptr = not_init()
        if STACK_SPILL in slot.slot_type:
            slot.slot_type = [STACK_MISC if t == STACK_SPILL else t for t in slot.slot_type]
        stype = STACK_ZERO if value.is_known_zero else STACK_MISC
        if stype == STACK_ZERO and not imm:
            # the zero is kept as slot types, which backtracking does not follow: the
            # stored register is relied on (`check_stack_write_fixed_off`)
            mark_regs_precise(env, state, [env.insns[env.insn_idx].src])
        for i in range(size):
            slot.slot_type[first - i] = stype


def _save_register_state(slot: StackSlot, value: RegState, size: int, keep_id: bool) -> None:
    """`save_register_state`: the spilled register and STACK_SPILL for its `size` low-address
    bytes; the other bytes become MISC (an INVALID or ZERO byte stays what it was)."""
    slot.spilled_ptr = value.copy()
    if not keep_id:
        slot.spilled_ptr.id, slot.spilled_ptr.off = 0, 0
    for i in range(BPF_REG_SIZE):
        if i >= BPF_REG_SIZE - size:
            slot.slot_type[i] = STACK_SPILL
        elif slot.slot_type[i] not in (STACK_ZERO, STACK_INVALID):
            slot.slot_type[i] = STACK_MISC


def _write_var_off(env: Env, state: VerifierState, frame: FuncState, min_off: int, max_off: int,
                   value: RegState, imm: bool) -> None:
    """`check_stack_write_var_off` (privileged): every byte in range may be written, so
    spills in range are destroyed; a zero written over zeroes keeps them zero."""
    writing_zero = value.is_known_zero
    zero_used = False
    destroyed: list[StackSlot] = []
    for addr in range(min_off, max_off):
        slot, _, i = _slot(frame, addr)
        stype = slot.slot_type[i]
        if writing_zero and stype == STACK_SPILL and slot.spilled_ptr.type == SCALAR_VALUE \
                and slot.spilled_ptr.var_off == TNUM_ZERO:
            zero_used = True
            continue
        if STACK_SPILL in slot.slot_type:
            destroyed.append(slot)
        slot.spilled_ptr = not_init()
        new = STACK_MISC
        if writing_zero and stype == STACK_ZERO:
            new, zero_used = STACK_ZERO, True
        slot.slot_type[i] = new
    for slot in destroyed:  # the spilled register is gone: the rest of its bytes are data
        slot.slot_type = [STACK_MISC if t == STACK_SPILL else t for t in slot.slot_type]
    if zero_used and not imm:
        regno = env.insns[env.insn_idx].src
        mark_regs_precise(env, state, [regno])


def stack_read(env: Env, state: VerifierState, regno: int, reg: RegState, off: int,
               size: int) -> RegState:
    """A load of `size` bytes; the value read (before the load's own zero/sign extension)."""
    check_stack_alignment(env, reg, off, size)
    min_off, max_off = stack_bounds(env, regno, reg, off, size, write=False)
    frame = state.frames[reg.frameno]
    _touch(env, frame, min_off)
    note_slot_access(env, state, reg.frameno, slot_mask(min_off, max_off), 0)
    if not tnum_is_const(reg.var_off):
        return _read_var_off(frame, min_off, max_off)
    slot, spi, first = _slot(frame, min_off)
    idxs = [first - i for i in range(size)]
    if slot.is_spill:
        spill_size = 1
        while spill_size < BPF_REG_SIZE and slot.slot_type[BPF_REG_SIZE - 1 - spill_size] == STACK_SPILL:
            spill_size += 1
        spilled = slot.spilled_ptr
        if size == BPF_REG_SIZE and spill_size == BPF_REG_SIZE:
            _note_stack_access(state, reg.frameno, spi)
            out = spilled.copy()
            out.precise = False
            return out
        if spilled.type != SCALAR_VALUE:
            env.reject("invalid size of register fill")
        if size <= spill_size and min_off % BPF_REG_SIZE == 0:
            out = spilled.copy()
            out.precise = False
            if get_reg_width(spilled) > size * 8:
                out.id, out.off = 0, 0
            _note_stack_access(state, reg.frameno, spi)
            return out
        types = [slot.slot_type[i] for i in idxs]
        if all(t == STACK_SPILL for t in types) and spilled.var_off == TNUM_ZERO:
            _note_stack_access(state, reg.frameno, spi)
            return scalar(0)
        return scalar(0) if all(t == STACK_ZERO for t in types) else scalar()
    types = [slot.slot_type[i] for i in idxs]
    return scalar(0) if all(t == STACK_ZERO for t in types) else scalar()


def _read_var_off(frame: FuncState, min_off: int, max_off: int) -> RegState:
    """`mark_reg_stack_read` over every byte the access may touch (privileged: any byte
    may be read, spilled pointers included)."""
    for addr in range(min_off, max_off):
        slot, _, i = _slot(frame, addr)
        if slot.slot_type[i] != STACK_ZERO:
            return scalar()
    return scalar(0)


__all__ = ["coerce_reg_to_size", "stack_read", "stack_write"]
