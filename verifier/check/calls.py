"""Calls and exits: kfunc calls checked against verifier.protos.kfuncs prototypes
(`check_kfunc_call`), bpf2bpf calls (`check_func_call`: static callees get a new frame,
global callees are assumed valid and, if throw reachable, get the patch-02 exception branch)
and `BPF_EXIT` (`prepare_func_exit`, `check_return_code` (verifier.check.returns),
`check_reference_leak`)."""

from __future__ import annotations

from typing import NoReturn

from verifier.check.alu import check_reg_read
from verifier.check.env import Env
from verifier.check.exceptions import check_reference_leak
from verifier.check.precision import mark_regs_precise
from verifier.check.returns import (
    MAX_BPF_FUNC_REG_ARGS,
    check_return_code,
    not_scalar_return_text,
    returns_void,
    unsupported_arg_text,
)
from verifier.check.state import (
    RefState,
    RegState,
    VerifierState,
    alloc_obj,
    new_frame,
    not_init,
    release_reference,
    scalar,
)
from verifier.isa.insn import MAX_CALL_FRAMES, Insn
from verifier.program import FuncProto
from verifier.protos.helpers import BPF_FUNC_MAX_ID, HELPERS_BY_ID, HelperArg
from verifier.protos.kfuncs import KF, KFUNCS_BY_ID, ArgKind, KfuncProto, RetKind
from verifier.regtypes import NOT_INIT, PTR_TO_CTX, PTR_TO_STACK, SCALAR_VALUE, base_type

CALLER_SAVED = range(0, 6)  # R0-R5


def clear_caller_saved_regs(state: VerifierState) -> None:
    for regno in CALLER_SAVED:
        state.cur.regs[regno] = not_init()


def check_kfunc_call(env: Env, state: VerifierState, insn: Insn, idx: int) -> KfuncProto:
    proto = KFUNCS_BY_ID.get(insn.imm)
    if proto is None or insn.off != 0:
        env.reject(f"insn {idx}: kernel btf_id {insn.imm} is not a function")
    if not proto.modelled:
        env.reject(f"insn {idx}: kfunc {proto.name}#{proto.btf_id} is not supported by bpf-unwind yet")
    regs = state.cur.regs
    release_id = 0
    struct = None
    for i, kind in enumerate(proto.args):
        regno = i + 1
        if kind == ArgKind.IGNORED:
            continue
        reg = check_reg_read(env, state, regno)
        if kind == ArgKind.SCALAR:
            if reg.type != SCALAR_VALUE:
                env.reject(f"R{regno} is not a scalar")
        elif kind == ArgKind.CONST_TYPE_ID:
            if not reg.is_const:
                env.reject(f"R{regno} must be a known constant")
            mark_regs_precise(env, state, [regno])
            assert reg.value is not None
            struct = env.prog.struct_by_id(reg.value)
            if struct is None:
                env.reject(f"{proto.name.removesuffix('_impl')} type ID argument must be of a struct")
        elif kind == ArgKind.ALLOC_OBJ:
            if reg.maybe_null and reg.is_alloc_obj:
                env.reject(f"Possibly NULL pointer passed to trusted arg{i}")
            if not reg.is_alloc_obj:
                env.reject(f"arg#{i} expected pointer to allocated object")
            if not reg.ref_obj_id:
                env.reject("allocated object must be referenced")
            if reg.off:
                env.reject(f"R{regno} must have zero offset when passed to release func "
                           "or trusted arg to kfunc")
            if proto.flags & KF.RELEASE:
                release_id = reg.ref_obj_id
    if release_id and not release_reference(state, release_id):
        env.reject(f"verifier internal error: reference id={release_id} is not held")
    if proto.flags & KF.THROW:
        env.seen_exception = True
        if env.exception_cb is None:
            check_return_code(env, state, 1)  # the default callback returns the cookie
    clear_caller_saved_regs(state)
    if proto.ret == RetKind.ALLOC_OBJ:
        assert struct is not None
        ref_id = env.new_id()
        state.refs.append(RefState(ref_id, idx))
        regs[0] = alloc_obj(struct.type_id, struct.name, ref_id)
    return proto


def global_arg_mismatch(reg: RegState, regno: int, kind: str) -> str | None:
    """Why `reg` cannot be argument R`regno` of kind "scalar" or "ctx" of a global subprog
    (`btf_check_func_arg_match`, in Linux 6.18's words), None if it can."""
    if kind == "scalar":
        return None if reg.type == SCALAR_VALUE else f"R{regno} is not a scalar"
    if reg.type == NOT_INIT:
        # __check_ptr_off_reg on an uninitialised register: its var_off is unknown
        return "variable ? access var_off=(0x0; 0xffffffffffffffff) disallowed"
    if base_type(reg.type) == PTR_TO_CTX and reg.off:
        return f"dereference of modified ctx ptr R{regno} off={reg.off} disallowed"
    if base_type(reg.type) != PTR_TO_CTX:
        return f"arg#{regno - 1} expects pointer to ctx"
    return None


def _invalid_args(env: Env, callee: int, why: str) -> NoReturn:
    env.log.error(why)
    env.reject(f"Caller passes invalid args into func#{callee} ('{env.subprogs[callee].name}')")


def _check_global_args_btf(env: Env, state: VerifierState, callee: int, proto: FuncProto) -> None:
    """A global subprog with a BTF signature: at every call site each argument must be what
    BTF says (a scalar, or the unmodified ctx); a mismatch logs why, then "Caller passes
    invalid args"."""
    info = env.subprogs[callee]
    if proto.ret != "scalar":  # btf_prepare_func_args fails, so the call's args are invalid
        _invalid_args(env, callee, not_scalar_return_text(info.name))
    for i, kind in enumerate(proto.args[:MAX_BPF_FUNC_REG_ARGS]):
        if kind not in ("scalar", "ctx"):
            env.reject(unsupported_arg_text(info.name, i))
        why = global_arg_mismatch(state.cur.regs[i + 1], i + 1, kind)
        if why is not None:
            _invalid_args(env, callee, why)


def _check_global_args(env: Env, state: VerifierState, callee: int) -> None:
    """Global subprogs are verified once, so every call site must pass what the subprog is
    verified with. With a BTF signature (Program.func_protos) that is what BTF says; without
    one (text assembly) the first call site fixes each of R1-R5: "ctx" if it passes the
    unmodified ctx, else "scalar" (an uninitialised register too: the callee then sees some
    value it may only use as a scalar). Every later call site must pass the same kind; for a
    "scalar" an uninitialised register still does. An arg first seen after the subprog was
    verified (as a scalar) cannot become a ctx; a pointer other than the ctx is never an
    arg."""
    info = env.subprogs[callee]
    proto = env.prog.func_protos.get(info.name)
    if proto is not None:
        _check_global_args_btf(env, state, callee, proto)
        return
    kinds = env.global_args.setdefault(callee, {})
    for regno in range(1, 6):
        reg = state.cur.regs[regno]
        known = kinds.get(regno)
        if known is None:
            if base_type(reg.type) == PTR_TO_CTX and reg.off == 0 and callee not in env.global_verified:
                kinds[regno] = "ctx"
            elif reg.type in (SCALAR_VALUE, NOT_INIT):
                kinds[regno] = "scalar"
            else:
                _invalid_args(env, callee, global_arg_mismatch(reg, regno, "scalar") or "")
            continue
        if known == "scalar" and reg.type == NOT_INIT:
            continue
        why = global_arg_mismatch(reg, regno, known)
        if why is not None:
            _invalid_args(env, callee, why)


def check_func_call(env: Env, state: VerifierState, insn: Insn, idx: int) -> tuple[int, VerifierState | None]:
    """A bpf2bpf call. Returns (next insn, the patch-02 exception branch to push or None)."""
    callee = env.find_subprog(idx + insn.imm + 1)
    assert callee is not None  # check_cfg verified every call target
    info = env.subprogs[callee]
    if env.is_global(callee):
        _check_global_args(env, state, callee)
        if callee not in env.global_called:
            env.global_called.append(callee)
        env.log.verbose(f"Func#{callee} ('{info.name}') is global and assumed valid.")
        branch = None
        if info.is_throw_reachable and not state.global_subprog_call_exception:
            branch = state.copy()
            branch.global_subprog_call_exception = True
        clear_caller_saved_regs(state)
        state.cur.regs[0] = scalar()  # all global functions return a 64-bit scalar
        return idx + 1, branch
    if state.curframe + 1 >= MAX_CALL_FRAMES:
        # do_check's message (no " !", unlike check_max_stack_depth's), as Linux 6.18 prints it
        env.reject(f"the call stack of {state.curframe + 2} frames is too deep")
    caller = state.cur
    frame = new_frame(state.curframe + 1, callee, idx)
    for regno in range(1, 6):
        frame.regs[regno] = caller.regs[regno].copy()
    clear_caller_saved_regs(state)
    state.frames.append(frame)
    return info.start, None


def process_exit(env: Env, state: VerifierState) -> int | None:
    """BPF_EXIT: returns the insn to continue at (callsite + 1), or None at the end of the
    path. Order as process_bpf_exit_full: leak check first, then the frame exit."""
    check_reference_leak(env, state, exception_exit=False)
    if state.curframe > 0:
        # prepare_func_exit: a static subprog's R0 goes to the caller as it is, even
        # NOT_INIT (clang drops return values callers never use); reading it is checked
        # where the caller reads it.
        r0 = state.cur.regs[0]
        if base_type(r0.type) == PTR_TO_STACK and r0.frameno == state.curframe:
            env.reject("cannot return stack pointer to the caller frame")
        callee = state.frames.pop()
        state.cur.regs[0] = r0.copy()
        return callee.callsite + 1
    if not returns_void(env, state.cur.subprogno):
        check_return_code(env, state, 0)
    return None


def check_helper_call(env: Env, state: VerifierState, insn: Insn) -> None:
    """A helper call (verifier.protos.helpers): the id must name a helper the program type
    may call; each argument register is read as `check_func_arg` reads it (an
    uninitialised one is "R<n> !read_ok"); R0-R5 are clobbered and R0 becomes the
    unknown scalar the helper returns. A helper the table does not model is refused as
    unsupported by bpf-unwind (never blaming a correct program)."""
    func_id = insn.imm
    if not 0 <= func_id < BPF_FUNC_MAX_ID:
        env.reject(f"invalid func unknown#{func_id}")
    if func_id == 0:  # BPF_FUNC_unspec has no prototype in any program type
        env.reject("program of this type cannot use helper bpf_unspec#0")
    proto = HELPERS_BY_ID.get(func_id)
    if proto is None:
        env.reject(f"helper call #{func_id} is not supported by bpf-unwind yet")
    if not proto.allowed(env.prog.prog_type):
        env.reject(f"program of this type cannot use helper {proto.func_name}#{func_id}")
    for i, kind in enumerate(proto.args):
        if kind == HelperArg.ANYTHING:  # privileged: any initialised value, pointers too
            check_reg_read(env, state, i + 1)
    clear_caller_saved_regs(state)
    # RET_INTEGER; a refined bound is kept only when it pins the value (no ranges here)
    state.cur.regs[0] = scalar(0 if proto.ret_umax == 0 else None)
