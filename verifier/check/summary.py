"""The closing lines of the verifier log and the statistics they report
(`print_verification_stats`), checked against the running kernel:

    verification time 291 usec            only with BPF_LOG_STATS (log level bit 4)
    stack depth 0+16+0+0                  same; one number per subprog, '+' between
    processed 29 insns (limit 1000000) max_states_per_insn 0 total_states 2 peak_states 2 mark_read 0

The kernel prints the first two before `processed`, and all three on rejection too. Here
a rejection adds them only with BPF_LOG_STATS, so at levels 1 and 2 the reason stays the
log's last line. `stack depth` is each subprog's `stack_depth` in index order, rounded up
to whole 8-byte slots as the kernel grows a stack (a `*(u32 *)(r10 -4)` store makes it
8); an accepted program that throws without an exception callback of its own gets the
hidden default callback (stack 0) appended, as mainline adds it before printing."""

from __future__ import annotations

from verifier.check.env import BPF_COMPLEXITY_LIMIT_INSNS, Env
from verifier.check.state import BPF_REG_SIZE


def check_stats(env: Env) -> dict[str, int]:
    """The counters of `CheckResult.stats` (and of a rejection's VerifierError.stats)."""
    return {
        "insn_processed": env.insn_processed,
        "total_states": env.total_states,
        "peak_states": env.peak_states,
        "max_states_per_insn": env.max_states_per_insn,
    }


def stack_depths(env: Env, accepted: bool) -> list[int]:
    depths = [(sp.stack_depth + BPF_REG_SIZE - 1) // BPF_REG_SIZE * BPF_REG_SIZE for sp in env.subprogs]
    if accepted and env.seen_exception and env.exception_cb is None:
        depths.append(0)  # the hidden default exception callback
    return depths


def finish_log(env: Env, elapsed_ns: int, accepted: bool) -> None:
    """Append the closing lines to env.log (see the module docstring)."""
    log = env.log
    if log.stats:
        log.summary(f"verification time {elapsed_ns // 1000} usec")
        log.summary("stack depth " + "+".join(str(d) for d in stack_depths(env, accepted)))
    if accepted or log.stats:
        log.summary(
            f"processed {env.insn_processed} insns (limit {BPF_COMPLEXITY_LIMIT_INSNS}) "
            f"max_states_per_insn {env.max_states_per_insn} total_states {env.total_states} "
            f"peak_states {env.peak_states} mark_read 0"
        )
