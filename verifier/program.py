"""The hand-off types of verifier/: what a loader produces (`Program`), what the verifier
produces (`VerifiedProgram`, `Subprog`) and the series' frame descriptors (`FdEntry`,
`FrameDesc`, `FdTab`).

Everything here is plain data. pcs are slot indexes; descriptor pcs are absolute insn
indexes of the final program (the JIT converts them to return-address offsets once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from verifier.isa.insn import Insn
from verifier.regtypes import NOT_INIT, SCALAR_VALUE, reg_type_str


@dataclass(frozen=True)
class FuncSym:
    """A function symbol of the input: the first one is the main program."""

    name: str
    start: int
    linkage: str = "static"  # "global" | "static"


@dataclass(frozen=True)
class StructType:
    """A program-local object type (what `bpf_obj_new` allocates); type_id is its local BTF id."""

    name: str
    size: int
    type_id: int


@dataclass(frozen=True)
class FuncProto:
    """What BTF says of a function's signature (`FUNC_PROTO`), in the verifier's terms:
    each of `ret` and `args` is "void", "scalar" (ints, enums, bool), "ctx" (pointer to the
    program type's context struct) or "ptr" (any other pointer)."""

    ret: str
    args: tuple[str, ...]


BPF_LINE_COL_BITS = 10  # bpf_line_info.line_col = line << 10 | column


@dataclass(frozen=True)
class LineInfo:
    """`struct bpf_line_info` of a loaded program: the source line of the insns from
    `insn_off` (an index into Program.insns) up to the next record. The BTF string offsets
    are kept so the record can be handed to the kernel as it came."""

    insn_off: int
    file_name: str
    line: str  # the source line's text
    line_num: int
    col: int
    file_name_off: int = 0
    line_off: int = 0

    @property
    def line_col(self) -> int:
        return self.line_num << BPF_LINE_COL_BITS | self.col


BPF_F_RDONLY_PROG = 1 << 7  # the program may only read the map (.rodata)
BPF_F_WRONLY_PROG = 1 << 8


@dataclass(frozen=True)
class ProgMap:
    """A map the program uses, as the loader would create it: an ld_imm64 of a map (src
    BPF_PSEUDO_MAP_FD) or of a global variable (src BPF_PSEUDO_MAP_VALUE, second imm = the
    variable's offset in the value) names it by its index in `Program.maps`. A global data
    section (`.bss`, `.data*`, `.rodata*`) is a one-element array whose value is the section:
    `section` names it and `data` is its initial value (zero-filled up to value_size)."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int = 0
    section: str = ""  # the global data section, "" for a map of `.maps`
    data: bytes = b""
    special: str = ""  # a BTF special field in the value (bpf_spin_lock, kptr...): not modelled

    @property
    def is_data(self) -> bool:
        return bool(self.section)

    @property
    def rdonly_prog(self) -> bool:
        """BPF_F_RDONLY_PROG: the program may not write the value (the loader also freezes
        a `.rodata` map, so its contents are known constants to the verifier)."""
        return bool(self.map_flags & BPF_F_RDONLY_PROG)

    @property
    def log_name(self) -> str:
        """The name the kernel knows it by (`bpf_map.name`, BPF_OBJ_NAME_LEN - 1 chars)."""
        return self.name[:15]

    def initial_value(self) -> bytes:
        return self.data[: self.value_size].ljust(self.value_size, b"\0")


@dataclass
class Program:
    """A loaded, not yet verified, BPF program: one main function plus its subprograms."""

    name: str
    insns: list[Insn]
    funcs: list[FuncSym]
    prog_type: str = "tc"
    exception_cb: str | None = None
    structs: dict[str, StructType] = field(default_factory=dict)
    type_refs: dict[int, str] = field(default_factory=dict)  # ld_imm64 pc -> struct name
    source: str = ""  # file the program came from, for messages
    license: str = "GPL"
    # From BTF, when the program has it (ELF objects; text assembly has none):
    func_protos: dict[str, FuncProto] = field(default_factory=dict)  # function name -> proto
    exception_cb_tags: tuple[str, ...] = ()  # every `exception_callback:NAME` tag of main
    attach_to: str = ""  # fentry/fexit/freplace target named by the section
    line_info: list[LineInfo] = field(default_factory=list)  # sorted by insn_off (ELF objects)


    # Maps and global data sections (ELF objects; text assembly has none): an ld_imm64 with
    # src 1 or 2 names one by its index here; map_refs lists those ld_imm64 pcs -> index.
    maps: tuple[ProgMap, ...] = ()
    map_refs: dict[int, int] = field(default_factory=dict)

    def struct_by_id(self, type_id: int) -> StructType | None:
        for st in self.structs.values():
            if st.type_id == type_id:
                return st
        return None

    def func_at(self, pc: int) -> FuncSym | None:
        for f in self.funcs:
            if f.start == pc:
                return f
        return None


class SpillType(IntEnum):
    """`enum bpf_stack_slot_type`; frame-desc entries use INVALID for register entries."""

    STACK_INVALID = 0
    STACK_SPILL = 1
    STACK_MISC = 2
    STACK_ZERO = 3
    STACK_DYNPTR = 4
    STACK_ITER = 5


SPILL_TYPE_NAMES = {
    SpillType.STACK_INVALID: "<unknown>",
    SpillType.STACK_SPILL: "reg",
    SpillType.STACK_DYNPTR: "dynptr",
    SpillType.STACK_ITER: "iter",
}


@dataclass(frozen=True)
class FdEntry:
    """`struct bpf_frame_desc_reg_entry`: off < 0 is a stack slot (fp-relative start of the
    slot), 6..9 is a callee-saved register. `type` has PTR_MAYBE_NULL cleared."""

    type: int
    spill_type: SpillType
    off: int
    btf_id: int = 0
    btf_name: str = ""  # struct name for PTR_TO_BTF_ID entries
    # deviation: the kernel's entry has no such field, so a pointer derived from an object
    # (obj + 8) held at a throw would be "released" at the derived address. The constant
    # offset of the pointer from the object's start is kept, and cleanup subtracts it.
    ptr_off: int = 0

    @property
    def is_reg(self) -> bool:
        return self.off > 0

    @property
    def is_poison(self) -> bool:
        return self.type == NOT_INIT

    @property
    def is_null(self) -> bool:
        """A location provably NULL on every path: releases nothing, merges with a pointer."""
        return self.type == SCALAR_VALUE

    def describe(self) -> str:
        """`fp-8: ptr_obj (STACK_SPILL)`, `R6: ptr_obj`, `R7: NOT_INIT (poison)`."""
        where = f"R{self.off}" if self.is_reg else f"fp{self.off}"
        if self.is_poison:
            return f"{where}: NOT_INIT (poison)"
        if self.is_null:
            return f"{where}: NULL"
        what = f"{reg_type_str(self.type)}{self.btf_name}" + (f"{self.ptr_off:+d}" if self.ptr_off else "")
        return f"{where}: {what}" if self.is_reg else f"{where}: {what} ({self.spill_type.name})"


@dataclass
class FrameDesc:
    """`struct bpf_exception_frame_desc`: what to release when unwinding through `pc`."""

    pc: int
    regs: list[FdEntry | None] = field(default_factory=lambda: [None, None, None, None])
    stack: list[FdEntry] = field(default_factory=list)

    def entries(self) -> list[FdEntry]:
        """Stack entries in table order, then R6..R9: the runtime's cleanup order."""
        return [*self.stack, *(r for r in self.regs if r is not None)]


@dataclass
class FdTab:
    """`struct bpf_exception_frame_desc_tab`: the descriptors of one subprog, unique by pc."""

    descs: list[FrameDesc] = field(default_factory=list)

    def find(self, pc: int) -> FrameDesc | None:
        for d in self.descs:
            if d.pc == pc:
                return d
        return None

    def __len__(self) -> int:
        return len(self.descs)


class SubprogKind:
    MAIN = "main"
    STATIC = "static"
    GLOBAL = "global"
    EXCEPTION_CB = "exception_cb"
    THROW_TRAMP = "throw_tramp"


@dataclass(frozen=True)
class Subprog:
    """One function of the final program: insns [start, end)."""

    name: str
    start: int
    end: int
    kind: str
    stack_depth: int
    callee_regs_used: tuple[bool, bool, bool, bool]
    hidden: bool = False  # added by the verifier (default exception cb, throw trampoline)


@dataclass
class VerifiedProgram:
    """What the verifier hands to the JIT: the final (rewritten) program and its descriptors."""

    name: str
    insns: list[Insn]
    subprogs: list[Subprog]
    fdtabs: list[FdTab]  # one per subprog, pcs absolute insn indexes into `insns`
    exception_cb: int | None  # subprog index of the exception callback
    throw_tramp: int | None  # subprog index of the hidden throw trampoline
    exception_boundary: bool  # main program uses bpf_throw (seen_exception)
    structs: dict[str, StructType] = field(default_factory=dict)
    log: str = ""
    stats: dict[str, int] = field(default_factory=dict)
    prog_type: str = "tc"
    maps: tuple[ProgMap, ...] = ()  # Program.maps: ld_imm64 src 1/2 imm indexes it

    def subprog_of(self, pc: int) -> int:
        for i, sp in enumerate(self.subprogs):
            if sp.start <= pc < sp.end:
                return i
        raise ValueError(f"pc {pc} is outside every subprog")


@dataclass
class SubprogInfo:
    """The verifier's mutable per-subprog record while checking (`bpf_subprog_info`)."""

    name: str
    start: int
    linkage: str = "static"  # "global" | "static"
    stack_depth: int = 0
    is_throw_reachable: bool = False
    is_exception_cb: bool = False


@dataclass
class CheckResult:
    """What `do_check` hands to the rewrite passes (verifier.rewrite.fixups.finalize).

    pcs (fdtab pcs, seen_insns, subprog starts) index `program.insns`, i.e. the program as
    loaded, before any rewrite."""

    program: Program
    subprogs: list[SubprogInfo]  # ordered by start; index 0 is main
    fdtabs: list[FdTab]  # parallel to subprogs
    seen_exception: bool  # some reachable path calls bpf_throw
    exception_cb: int | None  # subprog index of a custom exception callback
    seen_insns: set[int]  # insns reached by do_check (the rest is dead code)
    log: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    # pcs of ctx loads of __sk_buff data/data_end/data_meta (verifier.rewrite.ctx_access)
    ctx_packet_loads: frozenset[int] = frozenset()
