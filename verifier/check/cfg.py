"""Subprog table and control-flow checks run before symbolic execution (`check_subprogs`,
the structural part of `check_cfg`, and the exception-callback checks of
`check_max_stack_depth_subprog`): subprog layout from Program.funcs, jump and call targets,
no fall-through off a subprog, the custom exception callback (one tag, global linkage, never
called directly, no bpf_throw reachable from it), `seen_throw_insn` and the prune points."""

from __future__ import annotations

from verifier.check.env import Env
from verifier.isa.insn import BPF_JA, BPF_JMP, BPF_JMP32, Insn
from verifier.program import FdTab, SubprogInfo
from verifier.protos.kfuncs import is_bpf_throw_kfunc


def is_throw(insn: Insn) -> bool:
    return is_bpf_throw_kfunc(insn.code, insn.src, insn.off, insn.imm)


def setup_subprogs(env: Env) -> None:
    """Subprogs from the function symbols, sorted by start; index 0 is the main program."""
    prog = env.prog
    funcs = sorted(prog.funcs, key=lambda f: f.start)
    if not prog.insns:
        env.reject("the program has no instructions", insn_idx=0)
    if not funcs or funcs[0].start != 0:
        env.reject("the main function must start at insn 0", insn_idx=0)
    for a, b in zip(funcs, funcs[1:], strict=False):
        if a.start == b.start:
            env.reject(f"functions '{a.name}' and '{b.name}' start at the same insn {a.start}",
                       insn_idx=a.start)
    for f in funcs:
        if not 0 <= f.start < len(prog.insns):
            env.reject(f"function '{f.name}' starts outside the program (insn {f.start})",
                       insn_idx=f.start)
    env.subprogs = [SubprogInfo(f.name, f.start, f.linkage) for f in funcs]
    env.fdtabs = [FdTab() for _ in funcs]
    if len(prog.exception_cb_tags) > 1:
        env.reject("multiple exception callback tags for main subprog", insn_idx=0)
    if prog.exception_cb is not None:
        names = [f.name for f in funcs]
        if prog.exception_cb not in names:
            env.reject(f"exception callback '{prog.exception_cb}' could not be found in BTF", insn_idx=0)
        idx = names.index(prog.exception_cb)
        if idx == 0:
            env.reject("invalid exception callback insn_off in func_info: 0", insn_idx=0)
        if funcs[idx].linkage != "global":
            env.reject(f"exception callback '{prog.exception_cb}' must have global linkage",
                       insn_idx=funcs[idx].start)
        env.exception_cb = idx
        env.subprogs[idx].is_exception_cb = True


def check_cfg(env: Env) -> None:
    """Jump/call targets, ld_imm64 pairs, last insns, prune points, seen_throw_insn."""
    insns = env.insns
    ld_second: set[int] = set()
    for idx in range(len(env.subprogs)):
        start, end = env.subprogs[idx].start, env.subprog_end(idx)
        i = start
        while i < end:
            insn = insns[i]
            env.insn_idx = i
            if insn.is_ld_imm64():
                if i + 1 >= end:
                    env.reject("invalid BPF_LD_IMM insn")
                ld_second.add(i + 1)
                i += 2
                continue
            if insn.is_jump():
                target = i + insn.jump_offset() + 1
                if not start <= target < end:
                    env.reject(f"jump out of range from insn {i} to {target}")
                env.prune_points.add(target)  # push_insn: a branch target
                if insn.is_cond_jump():
                    env.prune_points.add(i)  # visit_insn: the conditional jump itself
            elif insn.is_pseudo_call():
                target = i + insn.imm + 1
                callee = env.find_subprog(target)
                if not 0 <= target < len(insns):
                    env.reject("call to invalid destination")
                if callee is None:
                    env.reject(f"insn {i}: call target {target} is not the start of a function")
                if callee == env.exception_cb:
                    env.reject(f"insn {i} cannot call exception cb directly")
                env.prune_points.update((i, target))  # the call and the callee's entry
            elif is_throw(insn):
                env.seen_throw_insn = True
            if insn.is_call():
                env.prune_points.add(i + 1)  # visit_func_call_insn: where the call returns
            i += 1
        last = insns[end - 1]
        if end - 1 in ld_second or last.code not in (BPF_JMP | 0x90, BPF_JMP | BPF_JA, BPF_JMP32 | BPF_JA):
            env.insn_idx = end - 1
            env.reject("last insn is not an exit or jmp")
    for i, insn in enumerate(insns):
        if insn.is_jump() and i + insn.jump_offset() + 1 in ld_second:
            env.insn_idx = i
            env.reject(f"jump into the middle of ldimm64 insn {i + insn.jump_offset()}")
    if env.exception_cb is not None:
        check_exception_cb_throw(env, env.exception_cb)


def _callees(env: Env, idx: int) -> list[tuple[int, int]]:
    """(insn, callee subprog) for every bpf2bpf call or callback reference in subprog idx."""
    out: list[tuple[int, int]] = []
    for i in range(env.subprogs[idx].start, env.subprog_end(idx)):
        insn = env.insns[i]
        if insn.is_pseudo_call() or insn.is_pseudo_func():
            callee = env.find_subprog(i + insn.imm + 1)
            if callee is not None:
                out.append((i, callee))
    return out


def check_exception_cb_throw(env: Env, cb: int) -> None:
    """`check_max_stack_depth_subprog`'s rule: no bpf_throw in the exception callback or in
    anything it calls ("bpf_throw kfunc (insn %d) cannot be called from callback subprog %d",
    %d being the subprog that contains the throw)."""
    seen: set[int] = set()
    todo = [cb]
    while todo:
        idx = todo.pop()
        if idx in seen:
            continue
        seen.add(idx)
        for i in range(env.subprogs[idx].start, env.subprog_end(idx)):
            if is_throw(env.insns[i]):
                env.insn_idx = i
                env.reject(f"bpf_throw kfunc (insn {i}) cannot be called from callback subprog {idx}")
        todo.extend(callee for _, callee in reversed(_callees(env, idx)))


callees = _callees
