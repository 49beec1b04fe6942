"""`check_max_stack_depth`, run after symbolic execution as in `bpf_check`: every static call
path from main (and from the exception callback) over bpf2bpf calls of either linkage is
at most MAX_CALL_FRAMES frames deep, and the frames' stacks together fit in MAX_BPF_STACK.

Global subprogs are verified alone and their calls "assumed valid", so do_check never sees
a chain of global calls as one path: only this walk bounds it, and it is what rejects
recursion through global subprogs (a privileged program's CFG allows back-edges, so the
kernel too reports a recursion as a call stack that is too deep).

The kernel's walk (`check_max_stack_depth_subprog`) is an iterative DFS that rescans a
subprog at every call. Here a subprog whose subtree was fully walked keeps its height and
its deepest stack, and a call is skipped when that subtree cannot reach a limit from where
it is called; otherwise it is walked again, so the first violation found, and its message,
are the kernel's."""

from __future__ import annotations

from verifier.check.cfg import callees
from verifier.check.env import Env
from verifier.isa.insn import MAX_BPF_STACK, MAX_CALL_FRAMES


def round_up_stack_depth(depth: int) -> int:
    """The JIT's granularity (the kernel's `round_up_stack_depth` when the JIT is requested)."""
    return (depth + 15) & ~15


def check_max_stack_depth(env: Env) -> None:
    roots = [0] + ([env.exception_cb] if env.exception_cb is not None else [])
    done: dict[int, tuple[int, int]] = {}  # subprog -> (frames it spans, deepest stack)
    for root in roots:
        _walk(env, root, done)


def _walk(env: Env, root: int, done: dict[int, tuple[int, int]]) -> None:
    # one entry per frame: [subprog, its calls, next call to visit, frames below, stack below]
    def enter(idx: int, depth: int, frame: int, insn: int) -> list:
        depth += round_up_stack_depth(env.subprogs[idx].stack_depth)
        if depth > MAX_BPF_STACK:
            env.reject(f"combined stack size of {frame + 1} calls is {depth}. Too large", insn_idx=insn)
        return [idx, callees(env, idx), 0, 0, 0, depth]

    stack = [enter(root, 0, 0, env.subprogs[root].start)]
    while stack:
        top = stack[-1]
        idx, calls, k, height, deepest, depth = top
        frame = len(stack) - 1
        if k < len(calls):
            top[2] += 1
            insn, callee = calls[k]
            summary = done.get(callee)
            if summary is not None and frame + summary[0] < MAX_CALL_FRAMES \
                    and depth + summary[1] <= MAX_BPF_STACK:
                top[3], top[4] = max(height, summary[0]), max(deepest, summary[1])
                continue
            if frame + 1 >= MAX_CALL_FRAMES:
                env.reject(f"the call stack of {frame + 1} frames is too deep !", insn_idx=insn)
            stack.append(enter(callee, depth, frame + 1, insn))
            continue
        own = round_up_stack_depth(env.subprogs[idx].stack_depth)
        done[idx] = (height + 1, deepest + own)
        stack.pop()
        if stack:
            parent = stack[-1]
            parent[3], parent[4] = max(parent[3], height + 1), max(parent[4], deepest + own)
