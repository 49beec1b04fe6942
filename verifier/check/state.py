"""The verifier's abstract state: `RegState`, `StackSlot`, `FuncState` (one call frame),
`RefState` (an acquired reference) and `VerifierState` (all frames of one path), plus the
copy and comparison helpers used by branch exploration and state pruning (`states_equal`).

Model (a subset of the kernel's `bpf_reg_state`): scalars carry the kernel's tnum and
bounds; pointers a constant offset plus a variable one (the same fields). Stack slots keep the
kernel's per-byte `slot_type[8]` with the kernel's byte order: the byte at fp-relative
address `a` is `stack[spi].slot_type[(-a - 1) % 8]` with `spi = (-a - 1) // 8`, so
`slot_type[7]` is the lowest-address byte of the slot."""

from __future__ import annotations

from dataclasses import dataclass, field

from verifier.check.scalar_bounds import mark_reg_known, mark_reg_unknown
from verifier.check.tnum import Tnum
from verifier.isa.insn import BPF_REG_10, MAX_BPF_REG
from verifier.program import ProgMap, SpillType
from verifier.regtypes import (
    MEM_ALLOC,
    NOT_INIT,
    PTR_MAYBE_NULL,
    PTR_TO_BTF_ID,
    PTR_TO_CTX,
    PTR_TO_STACK,
    SCALAR_VALUE,
    base_type,
)

BPF_REG_SIZE = 8
U64_MASK = (1 << 64) - 1

STACK_INVALID = int(SpillType.STACK_INVALID)
STACK_SPILL = int(SpillType.STACK_SPILL)
STACK_MISC = int(SpillType.STACK_MISC)
STACK_ZERO = int(SpillType.STACK_ZERO)
TNUM_ZERO = Tnum(0, 0)
BPF_ADD_CONST64 = 1 << 31  # flags on a scalar id: "linked, plus `off`", by a 64-bit add
BPF_ADD_CONST32 = 1 << 30  # ... by a 32-bit add (the delta applies to the low word)
BPF_ADD_CONST = BPF_ADD_CONST64 | BPF_ADD_CONST32


@dataclass(slots=True)
class RegState:
    """`struct bpf_reg_state`: `type` is a regtypes value with flags. A scalar's value is
    `var_off` (tnum) and the eight bounds (verifier.check.scalar_bounds); for a pointer they
    are its variable offset, added to the constant `off`."""

    type: int = NOT_INIT
    off: int = 0  # pointers: constant byte offset (fp-relative for PTR_TO_STACK); linked
    # scalars (id | BPF_ADD_CONST): the delta to the register they are linked to
    id: int = 0  # NULL-tracking id of maybe-NULL pointers; link id of equal scalars; the
    # packet pointer family a range check applies to
    ref_obj_id: int = 0  # acquired reference this pointer holds (0 = none)
    btf_id: int = 0  # PTR_TO_BTF_ID: local struct type id
    btf_name: str = ""  # PTR_TO_BTF_ID: struct name
    frameno: int = 0  # PTR_TO_STACK: frame whose stack this points into
    precise: bool = False  # SCALAR_VALUE: some continuation relies on the value (precision)
    range: int = 0  # PTR_TO_PACKET: bytes from off known to be inside the packet
    var_off: Tnum = TNUM_ZERO
    smin_value: int = 0
    smax_value: int = 0
    umin_value: int = 0
    umax_value: int = 0
    s32_min_value: int = 0
    s32_max_value: int = 0
    u32_min_value: int = 0
    u32_max_value: int = 0
    map: ProgMap | None = None  # PTR_TO_MAP_VALUE, CONST_PTR_TO_MAP: which map (`map_ptr`)

    def copy(self) -> RegState:
        return RegState(self.type, self.off, self.id, self.ref_obj_id, self.btf_id, self.btf_name,
                        self.frameno, self.precise, self.range, self.var_off, self.smin_value,
                        self.smax_value, self.umin_value, self.umax_value, self.s32_min_value,
                        self.s32_max_value, self.u32_min_value, self.u32_max_value, self.map)

    @property
    def value(self) -> int | None:
        """A scalar's value as a u64 when it is a known constant, else None."""
        if self.type == SCALAR_VALUE and not self.var_off.mask:
            return self.var_off.value
        return None

    @property
    def is_scalar(self) -> bool:
        return self.type == SCALAR_VALUE

    @property
    def is_const(self) -> bool:
        return self.type == SCALAR_VALUE and not self.var_off.mask

    @property
    def is_known_zero(self) -> bool:
        return self.type == SCALAR_VALUE and self.var_off == TNUM_ZERO

    @property
    def is_pointer(self) -> bool:
        return self.type not in (NOT_INIT, SCALAR_VALUE)

    @property
    def maybe_null(self) -> bool:
        return bool(self.type & PTR_MAYBE_NULL)

    @property
    def is_alloc_obj(self) -> bool:
        return base_type(self.type) == PTR_TO_BTF_ID and bool(self.type & MEM_ALLOC)


def not_init() -> RegState:
    return RegState()


def scalar(value: int | None = None) -> RegState:
    """A known u64 constant, or (None) an unknown scalar."""
    reg = RegState(SCALAR_VALUE)
    if value is None:
        mark_reg_unknown(reg)
    else:
        mark_reg_known(reg, value & U64_MASK)
    return reg


def set_scalar(reg: RegState, value: int | None = None) -> None:
    """Turn `reg` in place into a fresh scalar (what `__mark_reg_unknown` /
    `__mark_reg_known` do to a register): no id, no pointer fields, not precise."""
    reg.type, reg.off, reg.id, reg.ref_obj_id, reg.btf_id, reg.btf_name = SCALAR_VALUE, 0, 0, 0, 0, ""
    reg.frameno, reg.precise, reg.range = 0, False, 0
    if value is None:
        mark_reg_unknown(reg)
    else:
        mark_reg_known(reg, value & U64_MASK)


def ctx_ptr() -> RegState:
    return RegState(PTR_TO_CTX)


def stack_ptr(frameno: int, off: int = 0) -> RegState:
    return RegState(PTR_TO_STACK, off=off, frameno=frameno)


def alloc_obj(btf_id: int, btf_name: str, ref_id: int) -> RegState:
    """What bpf_obj_new returns: `PTR_TO_BTF_ID | MEM_ALLOC | PTR_MAYBE_NULL`, referenced."""
    return RegState(PTR_TO_BTF_ID | MEM_ALLOC | PTR_MAYBE_NULL, id=ref_id, ref_obj_id=ref_id,
                    btf_id=btf_id, btf_name=btf_name)


@dataclass(slots=True)
class StackSlot:
    """`struct bpf_stack_state`: 8 byte types plus the spilled register (for STACK_SPILL)."""

    slot_type: list[int] = field(default_factory=lambda: [STACK_INVALID] * BPF_REG_SIZE)
    spilled_ptr: RegState = field(default_factory=RegState)

    def copy(self) -> StackSlot:
        return StackSlot(list(self.slot_type), self.spilled_ptr.copy())

    @property
    def is_spill(self) -> bool:
        """`is_spilled_reg`: decided by the lowest-address byte, like the kernel."""
        return self.slot_type[BPF_REG_SIZE - 1] == STACK_SPILL

    def all_bytes(self, stype: int) -> bool:
        return all(t == stype for t in self.slot_type)


@dataclass(slots=True)
class RefState:
    """`struct bpf_reference_state`: one acquired reference and where it was acquired."""

    id: int
    insn_idx: int


@dataclass(slots=True)
class FuncState:
    """`struct bpf_func_state`: one call frame."""

    frameno: int
    subprogno: int
    callsite: int  # call insn in the caller frame; -1 for frame 0
    regs: list[RegState]
    stack: list[StackSlot] = field(default_factory=list)  # index = spi; fp-8 is spi 0

    @property
    def allocated_stack(self) -> int:
        return len(self.stack) * BPF_REG_SIZE

    def grow_stack(self, size: int) -> None:
        """`grow_stack_state`: allocate slots down to fp-size (size rounded up to 8)."""
        want = (size + BPF_REG_SIZE - 1) // BPF_REG_SIZE
        while len(self.stack) < want:
            self.stack.append(StackSlot())

    def copy(self) -> FuncState:
        return FuncState(self.frameno, self.subprogno, self.callsite,
                         [r.copy() for r in self.regs], [s.copy() for s in self.stack])


def new_frame(frameno: int, subprogno: int, callsite: int) -> FuncState:
    regs = [RegState() for _ in range(MAX_BPF_REG)]
    regs[BPF_REG_10] = stack_ptr(frameno)
    return FuncState(frameno, subprogno, callsite, regs)


# One processed insn of a path, for precision backtracking: (insn index, frame number,
# extra): extra is (frameno, spi) of the stack slot a spill or fill used, or for a jump the
# (frameno, 0 reg | 1 slot, number) of the scalars linked to its operands, or None.
HistRecord = tuple[int, int, "tuple | None"]


@dataclass(slots=True)
class VerifierState:
    """`struct bpf_verifier_state`: every frame of one path, the acquired references and the
    series' patch-02 flag. `parent` is the checkpoint this path descends from (branch
    counting for pruning and loop detection, precision backtracking) and `hist` the insns
    processed since it; neither is part of the abstract value."""

    frames: list[FuncState]
    refs: list[RefState] = field(default_factory=list)
    global_subprog_call_exception: bool = False
    parent: Checkpoint | None = None
    hist: list[HistRecord] = field(default_factory=list)

    @property
    def curframe(self) -> int:
        return len(self.frames) - 1

    @property
    def cur(self) -> FuncState:
        return self.frames[-1]

    def copy(self) -> VerifierState:
        """`copy_verifier_state` (copies the patch-02 flag too, as the series does)."""
        return VerifierState([f.copy() for f in self.frames],
                             [RefState(r.id, r.insn_idx) for r in self.refs],
                             self.global_subprog_call_exception, self.parent, list(self.hist))

    def all_regs(self) -> list[RegState]:
        """Every register and spilled register of every frame (`bpf_for_each_reg_in_vstate`)."""
        out: list[RegState] = []
        for f in self.frames:
            out.extend(f.regs)
            out.extend(s.spilled_ptr for s in f.stack if s.is_spill)
        return out

    def frame_insn_idx(self, frameno: int, insn_idx: int) -> int:
        """`frame_insn_idx`: where frame `frameno` stands, `insn_idx` for the current frame,
        the call it made for a caller frame."""
        return insn_idx if frameno == self.curframe else self.frames[frameno + 1].callsite

    def find_ref(self, ref_id: int) -> RefState | None:
        for r in self.refs:
            if r.id == ref_id:
                return r
        return None


@dataclass(eq=False)
class Checkpoint:
    """An explored state (`bpf_verifier_state_list` entry): the state as it was before its
    insn (its `hist` is the path segment that led to it), the checkpoint it descends from,
    the branch counter (0 once every path from it is explored), and the eviction counters."""

    state: VerifierState
    branches: int
    parent: Checkpoint | None
    hit: int = 0
    miss: int = 0
    cleaned: bool = False


# Reference and NULL tracking ----------------------------------------------------------------


def mark_reg_invalid(reg: RegState) -> None:
    """`mark_reg_invalid` for a privileged program: the register becomes an unknown scalar."""
    set_scalar(reg)


def release_reference(state: VerifierState, ref_obj_id: int) -> bool:
    """`release_reference`: drop the reference and invalidate every copy of the pointer in
    every frame (registers and spills). False if no such reference is held."""
    ref = state.find_ref(ref_obj_id)
    if ref is None:
        return False
    state.refs.remove(ref)
    for reg in state.all_regs():
        if reg.ref_obj_id == ref_obj_id:
            mark_reg_invalid(reg)
    return True


def mark_ptr_or_null_regs(state: VerifierState, reg_id: int, is_null: bool) -> None:
    """`mark_ptr_or_null_regs`: after `if rX == 0`, every copy sharing the id becomes a
    known-zero scalar (NULL branch) or loses PTR_MAYBE_NULL. A NULL referenced pointer
    releases its reference (the object was never allocated)."""
    ref_to_release = 0
    for reg in state.all_regs():
        if reg.id != reg_id or not reg.maybe_null:
            continue
        if is_null:
            if reg.ref_obj_id == reg_id:
                ref_to_release = reg_id
            set_scalar(reg, 0)
        else:
            reg.type &= ~PTR_MAYBE_NULL
            reg.id = 0  # no longer needed: NULL is ruled out (and pruning can match more)
    if ref_to_release:
        ref = state.find_ref(ref_to_release)
        if ref is not None:
            state.refs.remove(ref)
