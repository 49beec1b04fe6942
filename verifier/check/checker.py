"""The verifier's entry point, `check(prog, log_level) -> CheckResult` (`bpf_check` up to and
including `check_max_stack_depth`): subprog table and CFG checks, the series' throw
reachability pass, symbolic execution of main, then of every global subprog (the exception
callback included) on its own, then the call depth and combined stack of every call path.
Rewrites are not done here: verifier.rewrite.fixups consumes the result.

On rejection raises VerifierError(message, log=the whole log, insn_idx=the insn at fault);
the message is the line stating the reason (the last log line, except for a merge failure,
which is followed by the two entries that failed to merge)."""

from __future__ import annotations

import time

from verifier.check.cfg import check_cfg, setup_subprogs
from verifier.check.env import Env, Rejected
from verifier.check.exceptions import mark_exception_reachable_subprogs
from verifier.check.liveness import compute_live_registers, program_acquires
from verifier.check.loop import DoCheck
from verifier.check.precision import bt_kinds
from verifier.check.returns import check_func_proto
from verifier.check.stack_depth import check_max_stack_depth
from verifier.check.state import VerifierState, ctx_ptr, new_frame, scalar
from verifier.check.summary import check_stats, finish_log
from verifier.check.vlog import VLog
from verifier.errors import VerifierError
from verifier.isa.insn import BPF_REG_1
from verifier.program import CheckResult, Program


def check(prog: Program, log_level: int = 1) -> CheckResult:
    """Verify `prog`; see the module docstring."""
    env = Env(prog, VLog(log_level, prog.line_info))
    start = time.perf_counter_ns()
    try:
        _check(env)
    except Rejected as rej:
        finish_log(env, time.perf_counter_ns() - start, accepted=False)
        err = VerifierError(rej.msg, log=env.log.text(), insn_idx=rej.insn_idx)
        err.stats = check_stats(env)  # the counters up to the rejection, for `bpf-unwind stats`
        raise err from None
    finish_log(env, time.perf_counter_ns() - start, accepted=True)
    return CheckResult(
        program=prog,
        subprogs=env.subprogs,
        fdtabs=env.fdtabs,
        seen_exception=env.seen_exception,
        exception_cb=env.exception_cb,
        seen_insns=env.seen_insns,
        log=list(env.log.lines),
        stats=check_stats(env),
        ctx_packet_loads=frozenset(env.ctx_packet_loads),
    )


def _check(env: Env) -> None:
    setup_subprogs(env)
    check_cfg(env)
    mark_exception_reachable_subprogs(env)
    env.may_hold_refs = program_acquires(env)
    env.live_regs = compute_live_registers(env, series=env.may_hold_refs)
    env.bt_kinds = bt_kinds(env)
    _do_check_main(env)
    _do_check_subprogs(env)
    check_max_stack_depth(env)


def _do_check_main(env: Env) -> None:
    state = VerifierState([new_frame(0, 0, -1)])
    state.cur.regs[BPF_REG_1] = ctx_ptr()
    DoCheck(env).run(state, env.subprogs[0].start)


def _do_check_subprogs(env: Env) -> None:
    """Global subprogs, each on its own, as the kernel's do_check_subprogs: only those that
    verified code calls, in passes over the subprog indexes, repeated while a pass verified
    one (so the first error met is the kernel's); a global nothing calls is never verified,
    so its insns stay unseen and the dead-code pass removes it. The exception callback (one
    scalar argument) comes after the globals main reaches, then whatever it calls. A subprog
    with a BTF signature (Program.func_protos) gets its arguments from it, after its
    signature is checked; one without gets the kinds its callers passed."""
    done: set[int] = set()
    cb = env.exception_cb
    while True:  # passes in index order, again while a pass verified something
        progress = False
        for idx in range(1, len(env.subprogs)):
            if idx in env.global_called and idx not in done and idx != cb:
                done.add(idx)
                _do_check_global(env, idx)
                progress = True
        if not progress and cb is not None and cb not in done:
            done.add(cb)  # then the globals only the callback calls
            _do_check_global(env, cb)
            progress = True
        if not progress:
            break


def _do_check_global(env: Env, idx: int) -> None:
    info = env.subprogs[idx]
    env.log.verbose(f"Validating {info.name}() func#{idx}...")
    proto = env.prog.func_protos.get(info.name)
    if proto is not None:
        check_func_proto(env, idx, proto)
    state = VerifierState([new_frame(0, idx, -1)])
    regs = state.cur.regs
    if info.is_exception_cb:
        regs[BPF_REG_1] = scalar()
    elif proto is not None:
        for i, kind in enumerate(proto.args):
            regs[BPF_REG_1 + i] = ctx_ptr() if kind == "ctx" else scalar()
    else:
        kinds = env.global_args.get(idx, {})
        for regno in range(1, 6):
            regs[regno] = ctx_ptr() if kinds.get(regno) == "ctx" else scalar()
    env.global_verified.add(idx)
    DoCheck(env).run(state, info.start)
