"""The rewrite passes after do_check: `finalize(CheckResult) -> VerifiedProgram`.

Kernel order (bpf_check after do_check), privileged load:

1. opt_hard_wire_dead_code_branches, opt_remove_dead_code, opt_remove_nops: a conditional
   jump with one unseen side becomes `ja`, every unseen insn is removed (a subprog nobody
   reaches goes entirely, with its fdtab: a static one no live path calls, and a global one
   no verified code calls, which the checker never verifies, as the kernel; main and the
   exception callback never do, one whose insns were not marked seen is kept whole), then
   every `ja +0`.
1b. convert_ctx_accesses, its packet part only: a tc program's u32 loads of
   `__sk_buff.data`/`data_end`/`data_meta` become 64-bit loads of the real pointers
   (verifier.rewrite.ctx_access), one insn for one.
2. The do_misc_fixups loop over the program's own insns:
   - div/mod guards the JIT relies on (no division fault in the image): sdiv/smod by the
     constant -1, division and modulo by a register (mainline sequences, AX = BPF_REG_AX),
     and by the constant 0: the ISA's result (`dst = 0` / `dst = dst`, 32-bit
     zero-extending), the same the register guards give. The checker rejects a constant
     zero divisor ("div by zero", as the kernel does), so only unchecked builds (the
     conformance runner) reach that case; without it the JIT's `div` would fault (#DE)
     where the interpreter returns the ISA's value;
   - `call bpf_obj_new_impl` -> `r1 = size; r2 = meta ll; call`, `call bpf_obj_drop_impl`
     -> `r2 = meta ll; call`. Our meta is the struct's local type id. obj_new's struct is
     the constant R1 holds at the call on every path (`r1 = NAME ll`, Program.type_refs,
     or a type id; verifier.rewrite.consts), else the only struct any type_ref names; a
     struct that differs between paths is refused as not supported by bpf-unwind, anything
     else is an internal error. obj_drop's struct is not known per call without data flow,
     so meta is the type id when every obj_new of the program allocates the same struct
     (then every dropped object has that type) and 0 otherwise: the runtime knows an
     object's type from its allocation anyway.
3. Exceptions (only when seen_exception): the hidden default callback `r0 = r1; exit`
   (mainline returns the cookie) when there is no custom one, then the hidden throw
   trampoline `r6 = 0; r7 = 0; r8 = 0; r9 = 0; call bpf_throw` (no exit, all four callee
   regs forced used), and every other `call bpf_throw` becomes a pseudo call to it. The
   trampoline index is None when there is none: the series left `bpf_throw_tramp_subprog`
   at 0, flagging main as the trampoline of every non-throwing multi-subprog program.
4. The VerifiedProgram, with callee_regs_used computed by regusage.detect_reg_usage on the
   FINAL program (the series used the program as loaded, patch 08 [note]).

Descriptor pcs stay absolute and exact throughout (verifier.rewrite.patch) and are checked at the
end: each must sit on a call insn of its own subprog."""

from __future__ import annotations

from verifier.errors import VerifierError
from verifier.isa.insn import (
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_DIV,
    BPF_JEQ,
    BPF_JGT,
    BPF_JMP,
    BPF_JMP32,
    BPF_JNE,
    BPF_K,
    BPF_MOD,
    BPF_MOV,
    BPF_NEG,
    BPF_REG_1,
    BPF_REG_2,
    BPF_REG_AX,
    BPF_X,
    BPF_XOR,
    CALLEE_SAVED_REGS,
    Insn,
    call_kfunc,
    call_pseudo,
    exit_insn,
    ja,
    ld_imm64,
    mov32_imm,
    mov32_reg,
    mov64_imm,
    mov64_reg,
)
from verifier.program import CheckResult, FdTab, StructType, Subprog, SubprogKind, VerifiedProgram
from verifier.protos.kfuncs import BPF_THROW_BTF_ID, KFUNCS_BY_NAME, is_bpf_throw_kfunc
from verifier.rewrite.consts import RegState, constants_at
from verifier.rewrite.ctx_access import convert_ctx_accesses
from verifier.rewrite.patch import (
    Edit,
    PatchState,
    WorkSubprog,
    append_subprog,
    iter_insns,
    patch_edit,
)
from verifier.rewrite.regusage import detect_reg_usage

DEFAULT_CB_NAME = "__exception_cb_default"
THROW_TRAMP_NAME = "__bpf_throw_tramp"
OBJ_NEW_ID = KFUNCS_BY_NAME["bpf_obj_new_impl"].btf_id
OBJ_DROP_ID = KFUNCS_BY_NAME["bpf_obj_drop_impl"].btf_id
NOP = ja(0)


def _internal(msg: str, result: CheckResult, pc: int | None = None) -> VerifierError:
    return VerifierError(f"verifier internal error: {msg}", "\n".join(result.log), pc)


def finalize(result: CheckResult) -> VerifiedProgram:
    """Rewrite a checked program into what the JIT compiles (see the module docstring)."""
    state = _initial_state(result)
    stats = dict(result.stats)
    _hard_wire_dead_code_branches(state)
    stats["dead_insns_removed"] = _remove_dead_code(state)
    stats["nops_removed"] = _remove_nops(state)
    try:
        stats["ctx_loads_converted"] = convert_ctx_accesses(state, result.ctx_packet_loads)
    except ValueError as err:
        raise _internal(str(err), result) from None
    stats["insns_patched"] = _misc_fixups(state, result)
    stats["throws_redirected"] = _exception_fixups(state, result)
    _check_descriptors(state, result)
    stats["relink_passes"] = state.relink_passes
    stats["insns_relinked"] = state.insns_relinked
    return _build(state, result, stats)


def _initial_state(result: CheckResult) -> PatchState:
    prog = result.program
    if len(result.fdtabs) != len(result.subprogs):
        raise _internal("one fdtab per subprog expected", result)
    seen = set(result.seen_insns)
    subs: list[WorkSubprog] = []
    for i, info in enumerate(result.subprogs):
        is_cb = info.is_exception_cb or result.exception_cb == i
        if i == 0:
            kind = SubprogKind.MAIN
        elif is_cb:
            kind = SubprogKind.EXCEPTION_CB
        else:
            kind = SubprogKind.GLOBAL if info.linkage == "global" else SubprogKind.STATIC
        subs.append(WorkSubprog(info.name, info.start, kind, info.linkage, info.stack_depth,
                                fdtab=result.fdtabs[i]))
        end = result.subprogs[i + 1].start if i + 1 < len(result.subprogs) else len(prog.insns)
        body = range(info.start, end)
        if kind in (SubprogKind.MAIN, SubprogKind.EXCEPTION_CB) and not any(pc in seen for pc in body):
            seen.update(body)  # always verified, never removed: keep it whole
    return PatchState.build(prog.insns, subs, seen, prog.type_refs)


# 1. Dead code -----------------------------------------------------------------------------


def _hard_wire_dead_code_branches(state: PatchState) -> None:
    """A seen conditional jump one side of which was never explored becomes a `ja`."""
    n = len(state.insns)
    for pc, insn in iter_insns(state.insns):
        if not state.aux[pc].seen or not insn.is_cond_jump():
            continue
        target = pc + insn.off + 1
        if pc + 1 < n and not state.aux[pc + 1].seen:
            state.insns[pc] = ja(insn.off)
        elif 0 <= target < n and not state.aux[target].seen:
            state.insns[pc] = NOP


def _remove_dead_code(state: PatchState) -> int:
    """Remove every unseen insn in one batch (`opt_remove_dead_code`): a static subprog
    reached only from another subprog's dead code goes with the code that called it."""
    edits: list[Edit] = []
    n, pc = len(state.insns), 0
    while pc < n:
        if state.aux[pc].seen:
            pc += 1
            continue
        end = pc
        while end < n and not state.aux[end].seen:
            end += 1
        edits.append(Edit(pc, end - pc))
        pc = end
    state.apply(edits)
    return sum(e.old_len for e in edits)


def _remove_nops(state: PatchState) -> int:
    """Remove every `ja +0` in one batch (`opt_remove_nops`)."""
    edits = [Edit(pc, 1) for pc, insn in iter_insns(state.insns) if insn == NOP]
    state.apply(edits)
    return len(edits)


# 2. do_misc_fixups: div/mod guards, object kfuncs -----------------------------------------


def div_mod_patch(insn: Insn) -> tuple[list[Insn], int] | None:
    """The mainline guard sequence for a div/mod insn, and the index of the insn in it."""
    if insn.cls not in (BPF_ALU, BPF_ALU64) or insn.op not in (BPF_DIV, BPF_MOD):
        return None
    is64 = insn.cls == BPF_ALU64
    alu = BPF_ALU64 if is64 else BPF_ALU
    jmp = BPF_JMP if is64 else BPF_JMP32
    isdiv = insn.op == BPF_DIV
    d, s = insn.dst, insn.src
    if not insn.uses_reg_src:
        if insn.imm == 0:  # x / 0 -> 0, x % 0 -> x (zero-extended for 32-bit); signed alike
            return [Insn(alu | BPF_MOV | BPF_K, d) if isdiv else Insn(alu | BPF_MOV | BPF_X, d, d)], 0
        if insn.off == 1 and insn.imm == -1:  # sdiv -> neg, smod -> 0
            return ([Insn(alu | BPF_NEG | BPF_K, d)] if isdiv else [mov32_imm(d, 0)]), 0
        return None
    zext = [] if is64 else [ja(1), mov32_reg(d, d)]
    if insn.off == 0 and isdiv:  # x / 0 -> 0
        return [Insn(jmp | BPF_JNE | BPF_K, s, 0, 2), Insn(BPF_ALU | BPF_XOR | BPF_X, d, d), ja(1), insn], 3
    if insn.off == 0:  # x % 0 -> x
        return [Insn(jmp | BPF_JEQ | BPF_K, s, 0, 1 if is64 else 2), insn, *zext], 1
    ax = BPF_REG_AX
    head = [mov64_reg(ax, s), Insn(alu | BPF_ADD | BPF_K, ax, 0, 0, 1)]
    if isdiv:  # x s/ 0 -> 0, x s/ -1 -> -x
        return [*head, Insn(jmp | BPF_JGT | BPF_K, ax, 0, 4, 1), Insn(jmp | BPF_JEQ | BPF_K, ax, 0, 1, 0),
                Insn(alu | BPF_MOV | BPF_K, d), Insn(alu | BPF_NEG | BPF_K, d), ja(1), insn], 7
    # x s% 0 -> x, x s% -1 -> 0
    return [*head, Insn(jmp | BPF_JGT | BPF_K, ax, 0, 3, 1),
            Insn(jmp | BPF_JEQ | BPF_K, ax, 0, 3 if is64 else 4, 1), mov32_imm(d, 0), ja(1), insn, *zext], 6


def _is_kfunc(insn: Insn, btf_id: int) -> bool:
    return insn.is_kfunc_call() and insn.off == 0 and insn.imm == btf_id


def _misc_fixups(state: PatchState, result: CheckResult) -> int:
    """Patch every insn that needs it in one batch (one relink). Returns the count."""
    pcs = [pc for pc, _ in iter_insns(state.insns)]
    allocs = _obj_new_structs(state, [pc for pc in pcs if _is_kfunc(state.insns[pc], OBJ_NEW_ID)], result)
    alloc_ids = {st.type_id for st in allocs.values()}
    drop_meta = alloc_ids.pop() if len(alloc_ids) == 1 else 0
    edits: list[Edit] = []
    for pc in pcs:
        insn = state.insns[pc]
        if pc in allocs:
            st = allocs[pc]
            patch, anchor = [mov64_imm(BPF_REG_1, st.size), *ld_imm64(BPF_REG_2, st.type_id), insn], 3
        elif _is_kfunc(insn, OBJ_DROP_ID):
            patch, anchor = [*ld_imm64(BPF_REG_2, drop_meta), insn], 2
        else:
            found = div_mod_patch(insn)
            if found is None:
                continue
            patch, anchor = found
        edits.append(patch_edit(state, pc, patch, anchor))
    state.apply(edits)
    return len(edits)


def _obj_new_structs(state: PatchState, calls: list[int], result: CheckResult) -> dict[int, StructType]:
    """The struct each `bpf_obj_new_impl` call allocates: the constant R1 holds there on
    every path (verifier.rewrite.consts), named by its `r1 = NAME ll` or by its type id;
    else the only struct any type_ref names. The checker accepted a known struct id in R1,
    so anything else is an internal error."""
    prog = result.program
    type_refs = {pc: a.type_ref for pc, a in enumerate(state.aux) if a.type_ref is not None}
    only = set(type_refs.values())
    by_subprog: dict[int, dict[int, RegState]] = {}
    out: dict[int, StructType] = {}
    for pc in calls:
        idx = state.subprog_of(pc)
        if idx not in by_subprog:
            start, end = state.subprogs[idx].start, state.subprog_end(idx)
            by_subprog[idx] = constants_at(state.insns, start, end, type_refs)
        regs = by_subprog[idx].get(pc)
        r1 = regs[BPF_REG_1] if regs is not None else None
        name = None
        if r1 is not None:
            st = prog.struct_by_id(r1[0])
            name = r1[1] or (st.name if st is not None else None)
        if name is None and len(only) == 1:
            name = next(iter(only))
        if name is None and regs is not None and len(prog.structs) > 1:
            why = "the struct it allocates differs between paths (not supported by bpf-unwind)"
            raise VerifierError(f"bpf_obj_new_impl at insn {pc}: {why}", "\n".join(result.log), pc)
        if name is None or name not in prog.structs:
            raise _internal(f"cannot tell which struct bpf_obj_new_impl allocates at insn {pc}", result, pc)
        out[pc] = prog.structs[name]
    return out


# 3. Exceptions: default callback, throw trampoline ----------------------------------------


def _exception_fixups(state: PatchState, result: CheckResult) -> int:
    if not result.seen_exception:
        return 0
    if not any(sp.kind == SubprogKind.EXCEPTION_CB for sp in state.subprogs):
        cb = [mov64_reg(0, BPF_REG_1), exit_insn()]
        append_subprog(state, DEFAULT_CB_NAME, cb, SubprogKind.EXCEPTION_CB)
    tramp_body = [*(mov64_imm(r, 0) for r in CALLEE_SAVED_REGS), call_kfunc(BPF_THROW_BTF_ID)]
    tramp = append_subprog(state, THROW_TRAMP_NAME, tramp_body, SubprogKind.THROW_TRAMP)
    tstart = state.subprogs[tramp].start
    redirected = 0
    for pc, insn in iter_insns(state.insns, 0, tstart):
        if is_bpf_throw_kfunc(insn.code, insn.src, insn.off, insn.imm):
            state.insns[pc] = call_pseudo(tstart - pc - 1)
            redirected += 1
    return redirected


def _check_descriptors(state: PatchState, result: CheckResult) -> None:
    for i, sp in enumerate(state.subprogs):
        end = state.subprog_end(i)
        for desc in sp.fdtab.descs:
            if not (sp.start <= desc.pc < end and state.insns[desc.pc].is_call()):
                raise _internal(f"frame descriptor pc {desc.pc} of {sp.name} is not a call", result, desc.pc)


# 4. The VerifiedProgram --------------------------------------------------------------------


def _build(state: PatchState, result: CheckResult, stats: dict[str, int]) -> VerifiedProgram:
    subprogs: list[Subprog] = []
    for i, sp in enumerate(state.subprogs):
        end = state.subprog_end(i)
        if sp.kind == SubprogKind.THROW_TRAMP:
            regs = (True, True, True, True)
        else:
            regs = detect_reg_usage(state.insns, sp.start, end)
        subprogs.append(Subprog(sp.name, sp.start, end, sp.kind, sp.stack_depth, regs, sp.hidden))
    kinds = [sp.kind for sp in state.subprogs]
    cb = kinds.index(SubprogKind.EXCEPTION_CB) if SubprogKind.EXCEPTION_CB in kinds else None
    tramp = kinds.index(SubprogKind.THROW_TRAMP) if SubprogKind.THROW_TRAMP in kinds else None
    prog = result.program
    return VerifiedProgram(
        name=prog.name,
        insns=list(state.insns),
        subprogs=subprogs,
        fdtabs=[FdTab(sorted(sp.fdtab.descs, key=lambda d: d.pc)) for sp in state.subprogs],
        exception_cb=cb,
        throw_tramp=tramp,
        exception_boundary=result.seen_exception,
        structs=dict(prog.structs),
        log="\n".join(result.log),
        stats=stats,
        prog_type=prog.prog_type,
        maps=prog.maps,
    )


__all__ = ["DEFAULT_CB_NAME", "THROW_TRAMP_NAME", "div_mod_patch", "finalize"]
