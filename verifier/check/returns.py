"""Return codes (`check_return_code`) and the BTF signature checks of global functions.

Return codes: at a frame-0 exit of main or of the exception callback, R0 must be a scalar
in the program type's return range; at the exit of any other global subprog it must be a
scalar. A `bpf_throw` with the default exception callback runs the same check on R1 (the
cookie becomes the program's return value) in whatever frame it is called from, so, as in
the kernel, only a throw from main's own frame is range checked.

Ranges (reference §4.4): fentry and fexit programs must return 0; tc and every other type
this model knows have no range. A scalar outside the range is reported with the kernel's
`verbose_invalid_scalar` text: "At program exit the register R1 has smin=64 smax=64 should
have been in [0, 0]" ("unknown scalar value" when both bounds are unknown).

Signatures (`btf_prepare_func_args`, when Program.func_protos has the function): a global
function returns a scalar or void, takes at most 5 arguments, each a scalar or the ctx
(other pointers are not modelled here); the exception callback returns a scalar and takes
exactly one scalar."""

from __future__ import annotations

from verifier.check.alu import check_reg_read
from verifier.check.env import Env
from verifier.check.precision import mark_regs_precise
from verifier.check.state import RegState, VerifierState
from verifier.program import FuncProto
from verifier.regtypes import SCALAR_VALUE, reg_type_str

S64_MIN, S64_MAX = -(1 << 63), (1 << 63) - 1
MAX_BPF_FUNC_REG_ARGS = 5
PROGRAM_EXIT = "At program exit"
# Program.prog_type -> the return range its main program (and exception callback) must keep.
RETURN_RANGES: dict[str, tuple[int, int]] = {"fentry": (0, 0), "fexit": (0, 0)}


def invalid_scalar_text(reg: RegState, rng: tuple[int, int], ctx: str, name: str) -> str:
    """`verbose_invalid_scalar`: "<ctx> the register <name> has smin=.. smax=.. should have
    been in [lo, hi]" (a bound at its type limit is left out; none: "unknown scalar value")."""
    smin, smax = reg.smin_value, reg.smax_value
    parts = ""
    if smin != S64_MIN:
        parts += f" smin={smin}"
    if smax != S64_MAX:
        parts += f" smax={smax}"
    what = parts or " unknown scalar value"
    return f"{ctx} the register {name} has{what} should have been in [{rng[0]}, {rng[1]}]"


def check_return_code(env: Env, state: VerifierState, regno: int) -> None:
    """`check_return_code(env, regno, "R<regno>")` for the current frame."""
    frame = state.cur
    in_exception_cb = env.subprogs[frame.subprogno].is_exception_cb
    reg = check_reg_read(env, state, regno)
    if frame.subprogno != 0 and not in_exception_cb:
        if reg.type != SCALAR_VALUE:
            env.reject(
                f"At subprogram exit the register R{regno} is not a scalar value "
                f"({reg_type_str(reg.type)})"
            )
        return
    rng = RETURN_RANGES.get(env.prog.prog_type)
    if rng is None:
        return  # no range: any value, a pointer too (a privileged program may leak addresses)
    if reg.type != SCALAR_VALUE:
        env.reject(f"{PROGRAM_EXIT} the register R{regno} is not a known value ({reg_type_str(reg.type)})")
    mark_regs_precise(env, state, [regno])
    smin, smax = reg.smin_value, reg.smax_value
    if not rng[0] <= smin <= smax <= rng[1]:
        env.reject(invalid_scalar_text(reg, rng, PROGRAM_EXIT, f"R{regno}"))


def returns_void(env: Env, idx: int) -> bool:
    """True for a global subprog whose BTF says it returns void (its R0 is never used)."""
    if idx == 0 or env.subprogs[idx].is_exception_cb:
        return False
    proto = env.prog.func_protos.get(env.subprogs[idx].name)
    return proto is not None and proto.ret == "void"


def unsupported_arg_text(name: str, argno: int) -> str:
    return (
        f"global function {name}() arg#{argno} is a pointer other than the ctx: "
        "not supported by bpf-unwind"
    )


def not_scalar_return_text(name: str) -> str:
    """Linux 6.18's words for a global function (or exception callback) whose BTF return
    type is not a scalar; `void` included (the live kernel refuses void globals)."""
    return f"Global function {name}() doesn't return scalar. Only those are supported."


def check_func_proto(env: Env, idx: int, proto: FuncProto) -> None:
    """The signature checks of global subprog `idx` (the exception callback included),
    made when it is verified; rejects with the kernel's message."""
    info = env.subprogs[idx]
    name = info.name
    env.insn_idx = info.start
    if info.is_exception_cb:
        if proto.ret == "void":
            env.reject("exception cb cannot return void")
        if proto.ret != "scalar":
            env.reject(not_scalar_return_text(name))
        if proto.args != ("scalar",):
            env.reject("exception cb only supports single integer argument")
        return
    if proto.ret != "scalar":
        env.reject(not_scalar_return_text(name))
    if len(proto.args) > MAX_BPF_FUNC_REG_ARGS:
        env.reject(f"Function {name}() with {len(proto.args)} > {MAX_BPF_FUNC_REG_ARGS} args not supported.")
    for i, kind in enumerate(proto.args):
        if kind not in ("scalar", "ctx"):
            env.reject(unsupported_arg_text(name, i))
