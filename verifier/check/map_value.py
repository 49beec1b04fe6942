"""Maps and global data in the verifier: the ld_imm64 of a map (src BPF_PSEUDO_MAP_FD: a
`CONST_PTR_TO_MAP`, `map_ptr` in the log) or of a global variable (src BPF_PSEUDO_MAP_VALUE:
a `PTR_TO_MAP_VALUE` at the variable's offset into its section's one-element array), and
loads and stores through a map value pointer (`check_map_access_type`, `check_map_access`).

Model: offsets are constants (verifier.check.alu moves pointers by constants only), so an
access is in bounds when `[reg.off + off, + size)` lies within `[0, value_size)`, and the
kernel's `check_mem_region_access` fails on its minimum first. Misaligned accesses are
allowed (privileged, x86). A load from a read-only frozen map (`.rodata`) at a constant
offset reads the value itself (`bpf_map_direct_read`): the register becomes that constant.
Storing a pointer into a map value is allowed (privileged: `allow_ptr_leaks`); loading it
back gives an unknown scalar. Refused as not modelled: global data whose value holds a BTF
special field (bpf_spin_lock, timers, kptrs, list and rbtree roots: `ProgMap.special`), a
map's own fields through a `map_ptr`, and helpers taking maps (verifier.check.calls
refuses every helper)."""

from __future__ import annotations

from verifier.check.env import Env
from verifier.check.scalar_bounds import S32_MAX, S32_MIN, S64_MIN
from verifier.check.state import RegState, scalar
from verifier.check.tnum import tnum_is_const
from verifier.isa.insn import BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, Insn
from verifier.program import BPF_F_WRONLY_PROG, ProgMap
from verifier.regtypes import BaseType, base_type

CONST_PTR_TO_MAP = int(BaseType.CONST_PTR_TO_MAP)
PTR_TO_MAP_VALUE = int(BaseType.PTR_TO_MAP_VALUE)

__all__ = ["check_map_mem_access", "is_map_pointer", "ld_imm64_map"]


def is_map_pointer(reg: RegState) -> bool:
    """`type_is_map_ptr` minus map keys: the register names a map (`reg.map`)."""
    return base_type(reg.type) in (CONST_PTR_TO_MAP, PTR_TO_MAP_VALUE) and reg.map is not None


def _map_of(env: Env, insn: Insn) -> ProgMap:
    """The map an ld_imm64 names (`resolve_pseudo_ldimm64` looks the fd up first)."""
    if not 0 <= insn.imm < len(env.prog.maps):
        env.reject(f"fd {insn.imm} is not pointing to valid bpf_map")
    return env.prog.maps[insn.imm]


def ld_imm64_map(env: Env, insn: Insn, second: Insn) -> RegState:
    """The register an ld_imm64 with src BPF_PSEUDO_MAP_FD or BPF_PSEUDO_MAP_VALUE loads."""
    m = _map_of(env, insn)
    if insn.src == BPF_PSEUDO_MAP_FD:
        return RegState(CONST_PTR_TO_MAP, map=m)
    assert insn.src == BPF_PSEUDO_MAP_VALUE
    if not m.is_data:
        env.reject(f"direct value access of map '{m.log_name}' (type {m.type}) is not supported by "
                   "bpf-unwind (only global data sections)")
    if m.special:
        env.reject(f"global data holding a {m.special} ({m.log_name}) is not supported by bpf-unwind")
    off = second.imm & 0xFFFF_FFFF
    if off >= m.value_size:
        env.reject(f"invalid access to map value pointer, value_size={m.value_size} off={off}")
    return RegState(PTR_TO_MAP_VALUE, off=off, map=m)


def check_map_mem_access(env: Env, regno: int, reg: RegState, off: int, size: int, write: bool) -> RegState:
    """`check_mem_access` for a map pointer, a load or (`write`) a store of `size` bytes at
    reg+off. Returns the loaded value (an unknown scalar for a store)."""
    m = reg.map
    if base_type(reg.type) == CONST_PTR_TO_MAP or m is None:
        env.reject(f"R{regno} access to a map's own fields (struct bpf_map through map_ptr) is not "
                   "supported by bpf-unwind")
    total = reg.off + off
    _check_map_access_type(env, m, total, size, write)
    check_mem_region_access(env, regno, reg, total, size, m.value_size)
    if not write and m.rdonly_prog and m.is_data and tnum_is_const(reg.var_off):
        total += reg.var_off.value
        # `bpf_map_is_rdonly`: the loader froze the map, so its bytes are the value
        return scalar(int.from_bytes(m.initial_value()[total : total + size], "little"))
    return scalar()


def _check_map_access_type(env: Env, m: ProgMap, total: int, size: int, write: bool) -> None:
    if write and m.rdonly_prog:
        env.reject(f"write into map forbidden, value_size={m.value_size} off={total} size={size}")
    if not write and m.map_flags & BPF_F_WRONLY_PROG:
        env.reject(f"read from map forbidden, value_size={m.value_size} off={total} size={size}")


def check_mem_region_access(env: Env, regno: int, reg: RegState, off: int, size: int, mem_size: int) -> None:
    """`check_mem_region_access`: the access is in bounds at both ends of the register's
    variable offset (`off` is the constant part)."""
    smin = reg.smin_value
    if smin < 0 and (smin == S64_MIN or not S32_MIN <= off + smin <= S32_MAX or smin + off < 0):
        env.reject(f"R{regno} min value is negative, either use unsigned index or do a if (index >=0) check.")
    lo = smin + off
    if lo < 0 or lo + size > mem_size:
        env.log.error(f"invalid access to map value, value_size={mem_size} off={lo} size={size}")
        env.reject(f"R{regno} min value is outside of the allowed memory range")
    if reg.umax_value >= BPF_MAX_VAR_OFF:
        env.reject(f"R{regno} unbounded memory access, make sure to bounds check any such access")
    hi = reg.umax_value + off
    if hi < 0 or hi + size > mem_size:
        env.log.error(f"invalid access to map value, value_size={mem_size} off={hi} size={size}")
        env.reject(f"R{regno} max value is outside of the allowed memory range")


BPF_MAX_VAR_OFF = 1 << 29
