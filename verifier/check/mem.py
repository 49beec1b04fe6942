"""Loads and stores (`check_mem_access`): dispatch by pointer kind to the stack
(verifier.check.stack), the ctx (`check_ctx_access`: a __sk_buff-like context, with
`data`/`data_end`/`data_meta` giving packet pointers in tc programs, or xdp's `xdp_md`;
tracing programs' BTF-typed ctx is not modelled), packet memory (`check_packet_access`
against the range a bounds check proved) and fields of bpf_obj_new objects; the load's
zero or sign extension (`coerce_reg_to_size[_sx]`); plus ld_imm64. Maps and
global data: verifier.check.map_value."""

from __future__ import annotations

from verifier.check.alu import assign_scalar_id_before_mov, check_reg_read, check_reg_write
from verifier.check.env import Env
from verifier.check.map_value import check_map_mem_access, is_map_pointer, ld_imm64_map
from verifier.check.scalar import coerce_reg_to_size, coerce_reg_to_size_sx
from verifier.check.stack import stack_read, stack_write
from verifier.check.state import U64_MASK, RegState, VerifierState, scalar
from verifier.check.tnum import tnum_is_const, tnum_str
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
    Insn,
    ld_imm64_value,
)
from verifier.regtypes import (
    PTR_TO_BTF_ID,
    PTR_TO_CTX,
    PTR_TO_PACKET,
    PTR_TO_PACKET_END,
    PTR_TO_PACKET_META,
    PTR_TO_STACK,
    SCALAR_VALUE,
    base_type,
    reg_type_str,
)

SIZES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 8}
CTX_SIZE = 192  # sizeof(struct __sk_buff) in this model
XDP_MD_SIZE = 24  # struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
# Program types whose ctx is the attach target's arguments, typed by its BTF (not modelled).
BTF_ARGS_CTX_TYPES = frozenset({"fentry", "fexit", "fmod_ret", "tracing", "lsm"})
LD_IMM64_KINDS = {BPF_PSEUDO_MAP_FD: "of a map ", BPF_PSEUDO_MAP_VALUE: "of a global variable (map value) "}
U32_CTX_FIELDS = (0, 16)  # __sk_buff.len and .protocol: u32, the kernel refuses 8-byte loads
# ctx offset -> the packet pointer a 4-byte load of it gives
SKB_PACKET_FIELDS = {76: PTR_TO_PACKET, 80: PTR_TO_PACKET_END, 140: PTR_TO_PACKET_META}
XDP_PACKET_FIELDS = {0: PTR_TO_PACKET, 4: PTR_TO_PACKET_END, 8: PTR_TO_PACKET_META}
PACKET_CTX_TYPES = frozenset({"tc"})
NO_MISMATCH_TYPES = frozenset({PTR_TO_CTX, PTR_TO_BTF_ID})  # `reg_type_mismatch_ok` is false


def check_mem_insn(env: Env, state: VerifierState, insn: Insn) -> tuple[int | None, tuple[int, int] | None]:
    """One LDX/ST/STX insn. Returns (register written, (frameno, spi) of the stack slot
    written), either None, for the level-2 log."""
    size = SIZES[insn.size]
    if insn.cls == BPF_LDX:
        if insn.mode not in (BPF_MEM, BPF_MEMSX):
            env.reject(f"unknown opcode {insn.code:02x}")
        check_reg_read(env, state, insn.src)
        check_reg_write(env, insn.dst)
        ptr = state.cur.regs[insn.src]
        val = check_mem_access(env, state, insn.src, insn.off, size, None)
        if val.type == SCALAR_VALUE and size < 8:
            if insn.mode == BPF_MEMSX:
                coerce_reg_to_size_sx(val, size)
            else:
                coerce_reg_to_size(val, size)
        elif insn.mode == BPF_MEMSX and val.type != SCALAR_VALUE:
            env.reject(f"R{insn.dst} sign-extending load of a pointer prohibited")
        state.cur.regs[insn.dst] = val
        save_aux_ptr_type(env, ptr.type)
        return insn.dst, _fixed_slot(env, ptr, insn.off)
    if insn.mode == BPF_ATOMIC:
        env.reject("BPF_ATOMIC is not supported by bpf-unwind")
    if insn.mode != BPF_MEM:
        env.reject(f"unknown opcode {insn.code:02x}")
    ptr = check_reg_read(env, state, insn.dst)
    if insn.cls == BPF_STX:
        value = check_reg_read(env, state, insn.src)
        imm = False
    else:
        value = scalar(insn.imm & U64_MASK)  # the kernel's fake register: the imm sign-extended
        imm = True
    check_mem_access(env, state, insn.dst, insn.off, size, (value, imm))
    save_aux_ptr_type(env, ptr.type)
    return None, _fixed_slot(env, ptr, insn.off)


def save_aux_ptr_type(env: Env, ptr_type: int) -> None:
    """`save_aux_ptr_type`: every path must access memory through the same kind of pointer
    when either is one whose accesses are rewritten (the ctx, a BTF object)."""
    prev = env.insn_ptr_types.setdefault(env.insn_idx, ptr_type)
    if prev != ptr_type and {base_type(prev), base_type(ptr_type)} & NO_MISMATCH_TYPES:
        env.reject("same insn cannot be used with different pointers")


def _fixed_slot(env: Env, ptr: RegState, off: int) -> tuple[int, int] | None:
    """(frameno, spi) of a stack access at a constant offset, for the level-2 log."""
    if env.log.level < 2 or base_type(ptr.type) != PTR_TO_STACK or not tnum_is_const(ptr.var_off):
        return None
    return ptr.frameno, (-(ptr.off + off + ptr.var_off.value) - 1) // 8


def check_mem_access(env: Env, state: VerifierState, regno: int, off: int, size: int,
                     write: tuple[RegState, bool] | None) -> RegState | None:
    """Access `size` bytes at reg+off; `write` is (value, from ST imm) for a store.
    Returns the loaded value (None for a store)."""
    reg = state.cur.regs[regno]
    base = base_type(reg.type)
    if reg.type == SCALAR_VALUE or reg.maybe_null:
        env.reject(f"R{regno} invalid mem access '{reg_type_str(reg.type)}'")
    if base == PTR_TO_STACK:
        if write is None:
            return stack_read(env, state, regno, reg, off, size)
        value, imm = write
        if value.type == SCALAR_VALUE and not imm:
            assign_scalar_id_before_mov(env, value)  # the spill and the register stay linked
        stack_write(env, state, regno, reg, off, size, value, imm)
        return None
    if is_map_pointer(reg):
        return check_map_mem_access(env, regno, reg, off, size, write is not None)
    if base == PTR_TO_CTX:
        return check_ctx_access(env, regno, reg, off, size, write is not None)
    if base in (PTR_TO_PACKET, PTR_TO_PACKET_META):
        check_packet_access(env, regno, reg, off, size, write is not None)
        return scalar() if write is None else None
    if reg.is_alloc_obj:
        st = env.prog.struct_by_id(reg.btf_id)
        if not tnum_is_const(reg.var_off) or reg.var_off.value:
            env.reject(f"R{regno} variable ptr_ access var_off={tnum_str(reg.var_off)} disallowed")
        total = reg.off + off
        if st is None or total < 0 or total + size > st.size:
            name = st.name if st else reg.btf_name
            env.reject(f"access beyond struct {name} at off {total} size {size}")
        return scalar() if write is None else None
    env.reject(f"R{regno} invalid mem access '{reg_type_str(reg.type)}'")


def check_ctx_access(env: Env, regno: int, reg: RegState, off: int, size: int,
                     write: bool) -> RegState | None:
    """`check_ptr_off_reg` (the ctx must be unmodified) and `check_ctx_access` of the
    program type's ctx; a load gives a scalar or, for the packet fields, a packet pointer."""
    prog_type = env.prog.prog_type
    if prog_type in BTF_ARGS_CTX_TYPES:
        env.reject(f"ctx access of {prog_type} programs (the attach target's BTF-typed "
                   "arguments) is not supported by bpf-unwind")
    if reg.off < 0:
        env.reject(f"negative offset ctx ptr R{regno} off={reg.off} disallowed")
    if reg.off:
        env.reject(f"dereference of modified ctx ptr R{regno} off={reg.off} disallowed")
    if not tnum_is_const(reg.var_off) or reg.var_off.value:
        env.reject(f"variable ctx access var_off={tnum_str(reg.var_off)} disallowed")
    total = off
    if prog_type == "xdp":
        bad = write or total < 0 or total + size > XDP_MD_SIZE or total % size or size != 4
        if bad:
            env.reject(f"invalid bpf_context access off={total} size={size}")
        kind = XDP_PACKET_FIELDS.get(total)
        return RegState(kind) if kind is not None else scalar()
    pkt = SKB_PACKET_FIELDS.get(total) if prog_type in PACKET_CTX_TYPES else None
    u32_field_too_wide = (total in U32_CTX_FIELDS or pkt is not None) and size > 4  # __sk_buff u32 fields
    if write or total < 0 or total + size > CTX_SIZE or total % size or u32_field_too_wide:
        env.reject(f"invalid bpf_context access off={total} size={size}")
    if pkt is not None:
        if size != 4:
            env.reject(f"invalid bpf_context access off={total} size={size}")
        env.ctx_packet_loads.add(env.insn_idx)  # converted by verifier.rewrite.ctx_access
        return RegState(pkt)
    return scalar()


def check_packet_access(env: Env, regno: int, reg: RegState, off: int, size: int, write: bool) -> None:
    """`check_packet_access`: within the range the last bounds check proved from `off`."""
    if write:
        env.reject("direct packet writes are not supported by bpf-unwind")
    if reg.smin_value < 0:
        env.reject(f"R{regno} min value is negative, either use unsigned index or do a if (index >=0) check.")
    total = reg.off + off
    if reg.range < 0 or total < 0 or total + size > reg.range:
        env.log.error(f"invalid access to packet, off={total} size={size}, "
                      f"R{regno}(id={reg.id},off={total},r={reg.range})")
        env.reject(f"R{regno} offset is outside of the packet")


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
    res = scalar(ld_imm64_value(insn, second))
    res.frameno = state.cur.regs[insn.dst].frameno  # `__mark_reg_known` keeps frameno
    state.cur.regs[insn.dst] = res
