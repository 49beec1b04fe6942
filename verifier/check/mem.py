"""Loads and stores (`check_mem_access`): the stack with per-byte slot types and register
spill/fill (`check_stack_write_fixed_off` / `check_stack_read_fixed_off`), ctx reads (a
__sk_buff-like context: u8..u64 loads at constant offsets in [0, 192); `len` is at 0 and
`protocol` at 16; tracing programs' BTF-typed ctx is not modelled), and fields of
bpf_obj_new objects; plus ld_imm64. Maps and global data: verifier.check.map_value."""

from __future__ import annotations

from verifier.check.alu import check_reg_read, check_reg_write, signed_value
from verifier.check.env import Env
from verifier.check.map_value import check_map_mem_access, is_map_pointer, ld_imm64_map
from verifier.check.state import (
    BPF_REG_SIZE,
    STACK_INVALID,
    STACK_MISC,
    STACK_SPILL,
    STACK_ZERO,
    RegState,
    StackSlot,
    VerifierState,
    not_init,
    scalar,
)
from verifier.isa.insn import (
    BPF_ATOMIC,
    BPF_B,
    BPF_DW,
    BPF_H,
    BPF_IMM,
    BPF_LDX,
    BPF_MEM,
    BPF_MEMSX,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE,
    BPF_STX,
    BPF_W,
    MAX_BPF_STACK,
    Insn,
    ld_imm64_value,
)
from verifier.regtypes import PTR_TO_CTX, PTR_TO_STACK, SCALAR_VALUE, base_type, reg_type_str

SIZES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 8}
CTX_SIZE = 192  # sizeof(struct __sk_buff) in this model
# Program types whose ctx is the attach target's arguments, typed by its BTF (not modelled).
BTF_ARGS_CTX_TYPES = frozenset({"fentry", "fexit", "fmod_ret", "tracing", "lsm"})
LD_IMM64_KINDS = {BPF_PSEUDO_MAP_FD: "of a map ", BPF_PSEUDO_MAP_VALUE: "of a global variable (map value) "}


U32_CTX_FIELDS = (0, 16)  # __sk_buff.len and .protocol: u32, the kernel refuses 8-byte loads

def check_mem_insn(env: Env, state: VerifierState, insn: Insn) -> tuple[int | None, tuple[int, int] | None]:
    """One LDX/ST/STX insn. Returns (register written, (frameno, spi) of the stack slot
    written), either None, for the level-2 log."""
    size = SIZES[insn.size]
    if insn.cls == BPF_LDX:
        if insn.mode not in (BPF_MEM, BPF_MEMSX):
            env.reject(f"unknown opcode {insn.code:02x}")
        check_reg_read(env, state, insn.src)
        check_reg_write(env, insn.dst)
        val = check_mem_access(env, state, insn.src, insn.off, size, None)
        if insn.mode == BPF_MEMSX:
            if val.type != SCALAR_VALUE:
                env.reject(f"R{insn.dst} sign-extending load of a pointer prohibited")
            val = scalar(None if val.value is None else signed_value(val.value, size * 8))
        state.cur.regs[insn.dst] = val
        return insn.dst, None
    if insn.mode == BPF_ATOMIC:
        env.reject("BPF_ATOMIC is not supported by bpf-unwind")
    if insn.mode != BPF_MEM:
        env.reject(f"unknown opcode {insn.code:02x}")
    ptr = check_reg_read(env, state, insn.dst)
    if insn.cls == BPF_STX:
        value = check_reg_read(env, state, insn.src).copy()
        imm = False
    else:
        value = scalar(insn.imm & ((1 << (8 * size)) - 1) if size < 8 else insn.imm)
        imm = True
    slot = None
    if base_type(ptr.type) == PTR_TO_STACK:
        slot = (ptr.frameno, (-(ptr.off + insn.off) - 1) // BPF_REG_SIZE)
    check_mem_access(env, state, insn.dst, insn.off, size, (value, imm))
    return None, slot


def check_mem_access(env: Env, state: VerifierState, regno: int, off: int, size: int,
                     write: tuple[RegState, bool] | None) -> RegState:
    """Access `size` bytes at reg+off; `write` is (value, from ST imm) for a store.
    Returns the loaded value (an unknown scalar for stores)."""
    reg = state.cur.regs[regno]
    base = base_type(reg.type)
    if reg.type == SCALAR_VALUE or reg.maybe_null:
        env.reject(f"R{regno} invalid mem access '{reg_type_str(reg.type)}'")
    if base == PTR_TO_STACK:
        return _stack_access(env, state, regno, reg, off, size, write)
    if is_map_pointer(reg):
        return check_map_mem_access(env, regno, reg, off, size, write is not None)
    if base == PTR_TO_CTX:
        if env.prog.prog_type in BTF_ARGS_CTX_TYPES:
            env.reject(f"ctx access of {env.prog.prog_type} programs (the attach target's BTF-typed "
                       "arguments) is not supported by bpf-unwind")
        total = reg.off + off
        if reg.off:
            env.reject(f"dereference of modified ctx ptr R{regno} off={reg.off} disallowed")
        u32_field_too_wide = total in U32_CTX_FIELDS and size > 4  # __sk_buff len, protocol
        if write is not None or total < 0 or total + size > CTX_SIZE or total % size or u32_field_too_wide:
            env.reject(f"invalid bpf_context access off={total} size={size}")
        return scalar()
    if reg.is_alloc_obj:
        st = env.prog.struct_by_id(reg.btf_id)
        total = reg.off + off
        if st is None or total < 0 or total + size > st.size:
            name = st.name if st else reg.btf_name
            env.reject(f"access beyond struct {name} at off {total} size {size}")
        return scalar()
    env.reject(f"R{regno} invalid mem access '{reg_type_str(reg.type)}'")


def _stack_access(env: Env, state: VerifierState, regno: int, reg: RegState, off: int, size: int,
                  write: tuple[RegState, bool] | None) -> RegState:
    total = reg.off + off
    if total % size:
        # the kernel prints var_off with tnum_strn (a constant as %#llx: "0"), then +off+off
        env.reject(f"misaligned stack access off 0+{reg.off}+{off} size {size}")
    if total >= 0 or total < -MAX_BPF_STACK or total + size > 0:
        what = "write to" if write is not None else "read from"
        env.reject(f"invalid {what} stack R{regno} off={total} size={size}")
    frame = state.frames[reg.frameno]
    frame.grow_stack(-total)
    info = env.subprogs[frame.subprogno]
    info.stack_depth = max(info.stack_depth, -total)
    spi = (-total - 1) // BPF_REG_SIZE
    slot = frame.stack[spi]
    first = (-total - 1) % BPF_REG_SIZE  # slot_type index of the lowest-address byte
    idxs = [first - i for i in range(size)]
    if write is None:
        if slot.is_spill:
            _note_stack_access(state, reg.frameno, spi)
        return _stack_read(env, slot, idxs, size)
    value, imm = write
    if value.is_pointer and reg.frameno != state.curframe and base_type(value.type) == PTR_TO_STACK:
        env.reject("cannot spill pointers to stack into stack frame of the caller")
    _stack_write(env, slot, idxs, size, value, imm)
    if slot.is_spill:
        _note_stack_access(state, reg.frameno, spi)
    return scalar()


def _note_stack_access(state: VerifierState, frameno: int, spi: int) -> None:
    """A spill or fill: the insn's history record names the slot (`INSN_F_STACK_ACCESS`),
    so precision backtracking follows the value through it."""
    idx, fr, _ = state.hist[-1]
    state.hist[-1] = (idx, fr, (frameno, spi))


def _stack_write(env: Env, slot: StackSlot, idxs: list[int], size: int, value: RegState, imm: bool) -> None:
    if size == BPF_REG_SIZE and not (imm and value.is_known_zero):
        # An 8-byte store: a register spill (pointers and scalars keep their state); an ST
        # of a non-zero immediate is the spill of that constant.
        slot.slot_type = [STACK_SPILL] * BPF_REG_SIZE
        slot.spilled_ptr = value.copy()
        return
    if value.is_pointer:
        env.reject("invalid size of register spill")
    if slot.is_spill or STACK_SPILL in slot.slot_type:
        # a partial write destroys the spilled register: the rest of it becomes data
        slot.slot_type = [STACK_MISC if t == STACK_SPILL else t for t in slot.slot_type]
        slot.spilled_ptr = not_init()
    stype = STACK_ZERO if value.is_known_zero else STACK_MISC
    for i in idxs:
        slot.slot_type[i] = stype


def _stack_read(env: Env, slot: StackSlot, idxs: list[int], size: int) -> RegState:
    if slot.is_spill:
        spilled = slot.spilled_ptr
        if size == BPF_REG_SIZE:
            return spilled.copy()
        if spilled.type != SCALAR_VALUE:
            env.reject("invalid size of register fill")
        if spilled.value is None:
            return scalar()
        shift = 8 * (BPF_REG_SIZE - 1 - idxs[0])  # little-endian byte offset in the slot
        return scalar((spilled.value >> shift) & ((1 << (8 * size)) - 1))
    types = [slot.slot_type[i] for i in idxs]
    if all(t == STACK_ZERO for t in types):
        return scalar(0)
    # STACK_MISC, a mix with zeroes, or STACK_INVALID (allowed: privileged allow_uninit_stack)
    assert all(t in (STACK_MISC, STACK_ZERO, STACK_INVALID) for t in types)
    return scalar()


def check_ld_imm64(env: Env, state: VerifierState, insn: Insn, second: Insn) -> None:
    if insn.mode != BPF_IMM:
        env.reject("BPF_LD_[ABS|IND] are not supported by bpf-unwind")
    check_reg_write(env, insn.dst)
    if insn.src == BPF_PSEUDO_FUNC:
        env.reject("callbacks (ld_imm64 of a function) are not supported by bpf-unwind")
    if insn.src in (BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE):
        state.cur.regs[insn.dst] = ld_imm64_map(env, insn, second)
        return
    if insn.src != 0:
        what = LD_IMM64_KINDS.get(insn.src, "")
        env.reject(f"ld_imm64 {what}with src_reg {insn.src} is not supported by bpf-unwind")
    state.cur.regs[insn.dst] = scalar(ld_imm64_value(insn, second))

