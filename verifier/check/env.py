"""The verifier environment (`struct bpf_verifier_env` in spirit): the program, the log,
per-subprog records and frame-descriptor tables, id generation, statistics, and the one
way to reject a program (`Env.reject`). Every check_* module works on an `Env`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NoReturn

from verifier.check.vlog import VLog
from verifier.isa.insn import Insn
from verifier.program import FdTab, Program, SubprogInfo

BPF_COMPLEXITY_LIMIT_INSNS = 1_000_000


class Rejected(Exception):
    """Internal: raised by Env.reject, turned into VerifierError by verifier.check.checker.check."""

    def __init__(self, msg: str, insn_idx: int | None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.insn_idx = insn_idx


@dataclass
class Env:
    prog: Program
    log: VLog
    subprogs: list[SubprogInfo] = field(default_factory=list)
    fdtabs: list[FdTab] = field(default_factory=list)
    exception_cb: int | None = None
    seen_throw_insn: bool = False  # patch 01: some insn is a bpf_throw kfunc call
    seen_exception: bool = False  # a bpf_throw call was verified on some path
    seen_insns: set[int] = field(default_factory=set)
    id_gen: int = 0
    insn_idx: int = 0
    prev_insn_idx: int = -1
    # global subprog index -> arg regno -> "ctx" | "scalar", as passed by verified callers
    global_args: dict[int, dict[int, str]] = field(default_factory=dict)
    global_verified: set[int] = field(default_factory=set)
    global_called: list[int] = field(default_factory=list)  # in first-call order
    prune_points: set[int] = field(default_factory=set)
    live_regs: list[int] = field(default_factory=list)  # per insn, verifier.check.liveness
    # stack slot liveness (verifier.check.stack_liveness): accesses seen, per insn
    slot_reads: dict[int, int] = field(default_factory=dict)
    slot_kills: dict[int, int] = field(default_factory=dict)
    slot_version: int = 0
    slot_live_cache: dict[int, tuple[int, dict[int, int]]] = field(default_factory=dict)
    stack_foreign: set[int] = field(default_factory=set)  # subprogs whose frame others touched
    may_hold_refs: bool = True  # some call acquires a reference (the series' throw rules apply)
    bt_kinds: list[tuple[int, int, int]] = field(default_factory=list)  # per insn, check.precision
    insn_ptr_types: dict[int, int] = field(default_factory=dict)  # aux->ptr_type of each LDX/ST/STX
    ctx_packet_loads: set[int] = field(default_factory=set)  # ctx loads giving a packet pointer
    # statistics
    insn_processed: int = 0
    total_states: int = 0
    peak_states: int = 0
    cur_states: int = 0
    max_states_per_insn: int = 0
    jmps_processed: int = 0
    precision_walks: int = 0

    @property
    def insns(self) -> list[Insn]:
        return self.prog.insns

    def new_id(self) -> int:
        self.id_gen += 1
        return self.id_gen

    def reject(self, msg: str, extra: Iterable[str] = (), insn_idx: int | None = None) -> NoReturn:
        """Log `msg` (and detail lines after it) and abort verification; `msg` becomes the
        VerifierError message."""
        self.log.error(msg)
        for line in extra:
            self.log.error(line)
        raise Rejected(msg, self.insn_idx if insn_idx is None else insn_idx)

    def subprog_end(self, idx: int) -> int:
        if idx + 1 < len(self.subprogs):
            return self.subprogs[idx + 1].start
        return len(self.insns)

    def find_subprog(self, start: int) -> int | None:
        """`find_subprog`: the subprog starting exactly at `start`."""
        for i, sp in enumerate(self.subprogs):
            if sp.start == start:
                return i
        return None

    def subprog_of(self, pc: int) -> int:
        idx = 0
        for i, sp in enumerate(self.subprogs):
            if sp.start <= pc:
                idx = i
        return idx

    def is_global(self, idx: int) -> bool:
        return self.subprogs[idx].linkage == "global"
