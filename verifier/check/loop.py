"""The `do_check` main loop for one entry (main, or a global subprog verified alone):
instruction dispatch, the branch stack (`push_stack`/`pop_stack`), explored-state
checkpoints with branch counting (`is_state_visited`, `update_branch_counts`), infinite
loop detection, the complexity limits, and the two exceptional exits (bpf_throw and the
patch-02 exception branch of a throw-reachable global subprog call)."""

from __future__ import annotations

from verifier.check.alu import check_alu_op
from verifier.check.calls import check_func_call, check_helper_call, check_kfunc_call, process_exit
from verifier.check.cfg import is_throw
from verifier.check.env import BPF_COMPLEXITY_LIMIT_INSNS, Env
from verifier.check.exceptions import throw_exit
from verifier.check.jmp import check_cond_jmp_op
from verifier.check.liveness import clean_verifier_state, insn_use_def
from verifier.check.mem import check_ld_imm64, check_mem_insn
from verifier.check.precision import propagate_precision
from verifier.check.prune import states_equal
from verifier.check.stack_liveness import clean_dead_slots
from verifier.check.state import Checkpoint, VerifierState
from verifier.check.vlog import frame_state_text
from verifier.isa.insn import (
    BPF_ALU,
    BPF_ALU64,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_LD,
    BPF_LDX,
    BPF_ST,
    BPF_STX,
    Insn,
)

BPF_COMPLEXITY_LIMIT_JMP_SEQ = 8192


class DoCheck:
    def __init__(self, env: Env) -> None:
        self.env = env
        self.stack: list[tuple[VerifierState, int, int]] = []
        self.explored: dict[int, list[Checkpoint]] = {}
        self.prev_jmps = 0
        self.prev_insns = 0
        self.print_state = True  # log the whole state before the next insn (level 2)
        self.returned: int | None = None  # the exit insn just returned from (level 2)

    # Branches and checkpoints --------------------------------------------------------------

    def push_stack(self, state: VerifierState, idx: int, prev: int) -> None:
        """Queue `state` (already a copy) to be explored from insn idx later."""
        if state.parent is not None:
            state.parent.branches += 1
        self.stack.append((state, idx, prev))
        if len(self.stack) > BPF_COMPLEXITY_LIMIT_JMP_SEQ:
            self.env.reject(f"The sequence of {len(self.stack)} jumps is too complex.")

    @staticmethod
    def update_branch_counts(cp: Checkpoint | None) -> None:
        while cp is not None:
            cp.branches -= 1
            if cp.branches > 0:
                return
            cp = cp.parent

    def is_state_visited(self, state: VerifierState, idx: int) -> bool:
        """True if the state can be pruned at this prune point."""
        env = self.env
        if state.global_subprog_call_exception:
            # PATCH 02: the exception branch is never pruned. deviation: nor is it stored as
            # an explored state (v1 does store it, the flag copied along).
            return False
        # the kernel adds a checkpoint only after >= 2 jumps and >= 8 insns since the last one,
        # and inside a loop (an explored state here is still in progress) after 20 and 100
        jmps, insns = env.jmps_processed - self.prev_jmps, env.insn_processed - self.prev_insns
        add_new = jmps >= 2 and insns >= 8
        lst = self.explored.setdefault(idx, [])
        for cp in list(lst):
            if cp.branches > 0:
                if states_equal(cp.state, state, exact=True):
                    env.reject(f"infinite loop detected at insn {idx}", extra=(
                        "cur state:" + frame_state_text(state, state.cur),
                        "old state:" + frame_state_text(cp.state, cp.state.frames[state.curframe])))
                if jmps < 20 and insns < 100:
                    add_new = False
            else:
                if not cp.cleaned:  # `clean_live_states`: once every path from it is done
                    clean_verifier_state(cp.state, env.live_regs, idx)
                    clean_dead_slots(env, cp.state, idx)
                    cp.cleaned = True
                if states_equal(cp.state, state):
                    cp.hit += 1
                    propagate_precision(env, cp.state, state)
                    return True
            if add_new:  # a miss counts only when a state is about to be added
                cp.miss += 1
            if cp.miss > cp.hit * 3 + 3:  # the kernel's eviction heuristic
                lst.remove(cp)
                env.cur_states -= 1
        if not add_new:
            return False
        self.prev_jmps, self.prev_insns = env.jmps_processed, env.insn_processed
        snap = state.copy()  # with the segment that led here, for backtracking
        cp = Checkpoint(snap, 1, state.parent)
        snap.parent = cp.parent
        state.parent = cp
        state.hist = []
        lst.append(cp)
        env.total_states += 1
        env.cur_states += 1
        env.peak_states = max(env.peak_states, env.cur_states)
        env.max_states_per_insn = max(env.max_states_per_insn, len(lst))
        return False

    # The loop ------------------------------------------------------------------------------

    def run(self, state: VerifierState, idx: int) -> None:
        env, log = self.env, self.env.log
        prev = -1
        popped = False
        while True:
            env.insn_processed += 1  # before the prune check, as the kernel counts: a pruned insn counts
            if env.insn_processed > BPF_COMPLEXITY_LIMIT_INSNS:
                env.reject(f"BPF program is too large. Processed {env.insn_processed} insn")
            if idx in env.prune_points and self.is_state_visited(state, idx):
                if popped:
                    log.verbose("")
                    log.verbose(f"from {prev} to {idx}: safe")
                else:
                    log.verbose(f"{idx}: safe")
                nxt = self.end_path(state)
            else:
                if popped and log.level >= 1:
                    log.branch(prev, idx, frame_state_text(state, state.cur))
                if self.returned is not None and log.level >= 2:
                    log.verbose("")
                    log.verbose(f"from {self.returned} to {idx}:{frame_state_text(state, state.cur)}")
                elif self.print_state and log.level >= 2:
                    log.verbose(f"{idx}:{frame_state_text(state, state.cur)}")
                self.print_state, self.returned = False, None
                env.insn_idx, env.prev_insn_idx = idx, prev
                nxt_idx = self.step(state, idx)
                if nxt_idx is not None:
                    prev, idx, popped = idx, nxt_idx, False
                    continue
                nxt = self.end_path(state)
            if nxt is None:
                return
            state, idx, prev = nxt
            popped = self.print_state = True

    def end_path(self, state: VerifierState) -> tuple[VerifierState, int, int] | None:
        self.update_branch_counts(state.parent)
        return self.stack.pop() if self.stack else None

    def step(self, state: VerifierState, idx: int) -> int | None:
        """Process insns[idx]; the next insn, or None when the path ends here."""
        env = self.env
        insns = env.insns
        insn = insns[idx]
        state.hist.append((idx, state.curframe, None))
        env.seen_insns.add(idx)
        env.log.insn(insns, idx)
        cls = insn.cls
        if cls in (BPF_ALU, BPF_ALU64):
            fork = check_alu_op(env, state, insn)
            if fork is not None:
                self.push_stack(fork, idx, idx)
            self.log_state(state, idx + 1, touched=idx)
            return idx + 1
        if cls in (BPF_LDX, BPF_ST, BPF_STX):
            _, slot = check_mem_insn(env, state, insn)
            self.log_state(state, idx + 1, touched=idx, slot=slot)
            return idx + 1
        if cls == BPF_LD:
            if not insn.is_ld_imm64():
                env.reject("BPF_LD_[ABS|IND] are not supported by bpf-unwind")
            env.seen_insns.add(idx + 1)
            check_ld_imm64(env, state, insn, insns[idx + 1])
            self.log_state(state, idx + 2, touched=idx)
            return idx + 2
        if cls not in (BPF_JMP, BPF_JMP32):
            env.reject(f"unknown insn class {cls}")
        env.jmps_processed += 1  # every JMP-class insn, calls and exits included
        if insn.is_call():
            return self.do_call(state, insn, idx)
        if insn.is_exit():
            return self.do_exit(state, idx)
        if insn.op == BPF_JA:
            return idx + insn.jump_offset() + 1
        taken, fall, refine = check_cond_jmp_op(env, state, insn)
        target = idx + insn.off + 1
        if taken and fall:
            other = state.copy()
            refine(other, True)
            refine(state, False)
            self.push_stack(other, target, idx)
        self.log_state(state, idx, touched=idx)
        return target if taken and not fall else idx + 1

    def do_exit(self, state: VerifierState, idx: int) -> int | None:
        log = self.env.log
        callee = frame_state_text(state, state.cur) if log.level >= 2 and state.curframe else ""
        nxt = process_exit(self.env, state)
        if nxt is not None and log.level >= 2:  # back in the caller: both frames, as the kernel
            log.verbose("returning from callee:")
            log.verbose(callee)
            log.verbose(f"to caller at {nxt}:")
            log.verbose(frame_state_text(state, state.cur))
            self.returned = idx
        return nxt

    def do_call(self, state: VerifierState, insn: Insn, idx: int) -> int | None:
        env = self.env
        if insn.is_helper_call():
            check_helper_call(env, state, insn)
            self.log_state(state, idx + 1, regs=[0])
            return idx + 1
        if insn.is_kfunc_call():
            check_kfunc_call(env, state, insn, idx)
            if is_throw(insn):
                throw_exit(env, state, idx)
                return None
            self.log_state(state, idx + 1, regs=[0])
            return idx + 1
        if not insn.is_pseudo_call():
            env.reject(f"unknown call src_reg {insn.src}")
        flagged = state.global_subprog_call_exception
        nxt, branch = check_func_call(env, state, insn, idx)
        if branch is not None:
            self.push_stack(branch, idx, env.prev_insn_idx)
        if flagged:
            callee = env.find_subprog(idx + insn.imm + 1)
            assert callee is not None
            env.log.verbose(f"Func#{callee} ('{env.subprogs[callee].name}') may throw exception, "
                            "exploring program path where exception is thrown")
            state.global_subprog_call_exception = False
            throw_exit(env, state, idx)
            return None
        if nxt == idx + 1:
            self.log_state(state, idx + 1, regs=[0])
        elif self.env.log.level >= 2:  # entered a static callee: both frames, as the kernel
            log = self.env.log
            log.verbose("caller:")
            log.verbose(frame_state_text(state, state.frames[-2]))
            log.verbose("callee:")
            log.verbose(frame_state_text(state, state.cur))
            self.print_state = True
        return nxt

    def log_state(self, state: VerifierState, idx: int, regs: list[int] | None = None,
                  slot: tuple[int, int] | None = None, touched: int | None = None) -> None:
        """Level 2: the registers (`regs`, or those insn `touched` reads or writes) and the
        slot the insn touched, or with neither the whole state (a callee entered); `idx`
        labels them when they go on a line of their own (the kernel's insn_idx after it)."""
        log = self.env.log
        if log.level < 2:
            return
        frame = state.cur
        if touched is not None:
            use, defs = insn_use_def(self.env, touched, series=False)
            regs = [r for r in range(11) if (use | defs) >> r & 1]
        if regs is None:
            log.insn_state(idx, frame_state_text(state, frame))
            return
        slots = [slot[1]] if slot is not None and slot[0] == frame.frameno else []
        log.insn_state(idx, frame_state_text(state, frame, regs=regs, slots=slots))
