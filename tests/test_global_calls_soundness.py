"""Issue 14, classes 3 and 4: global subprogs are verified once, on their own, so (3) every
call site must pass what the subprog was verified with, and (4) the call depth and the
combined stack of call paths through global calls, recursion included, are bounded after
symbolic execution (`check_max_stack_depth`). Messages are Linux 6.18's, as the live kernel
prints them for the same programs loaded with a BTF signature (text assembly has none: the
first call site fixes the argument kinds, see verifier.check.calls._check_global_args).

Data first: program, then verdict (None: accepted) and the log lines that lead to it."""

from __future__ import annotations

import pytest

from tests.live_kernel import require_live_kernel
from tests.verify_helpers import ok, raw_rejected, rejected
from unwind.cli.oracle import compare
from verifier.asm.assembler import assemble
from verifier.check.checker import check
from verifier.program import FuncProto

# Class 3, the fuzzer's shape: g is verified with R1 = ctx (its first call site); the second
# call passes whatever the static subprog s left in R1 (0x3039 at run time; NOT_INIT to the
# verifier), and g dereferenced it.
CTX_THEN_STALE = """.global g
main:
	r6 = r1
	call g
	call s
	call g
	r0 = 0
	exit
s:
	r1 = 0x3039
	r0 = 0
	exit
g:
	r0 = *(u32 *)(r1 + 16)
	exit
"""

# Two call sites of g: the first passes {first} in R1, the second {second}. g's code implies
# its signature (verifier.asm.signature, the BTF the kernel is given): G_CTX dereferences R1,
# so it takes the ctx; G_SCALAR reads R1 as a number, so it takes a u64.
TWO_SITES = """.global g
main:
	r6 = r1
	{first}
	call g
	r1 = r6
	{second}
	call g
	r0 = 0
	exit
g:
	{body}
	exit
"""
G_CTX, G_SCALAR = "r0 = *(u32 *)(r1 + 0)", "r0 = r1"

NOT_CTX = "variable ? access var_off=(0x0; 0xffffffffffffffff) disallowed"


def two_sites(first: str, second: str, body: str = G_CTX) -> str:
    return TWO_SITES.format(first=first, second=second, body=body)


ARGS = {
    "ctx_then_stale_r1": (CTX_THEN_STALE, NOT_CTX),
    "ctx_then_scalar": (two_sites("", "r1 = 0x3039"), "arg#0 expects pointer to ctx"),
    "ctx_then_modified_ctx": (two_sites("", "r1 += 8"),
                              "dereference of modified ctx ptr R1 off=8 disallowed"),
    "ctx_then_stack_ptr": (two_sites("", "r1 = r10"), "arg#0 expects pointer to ctx"),
    "scalar_then_ctx": (two_sites("r1 = 1", "", G_SCALAR), "R1 is not a scalar"),
    "stack_ptr_first": (two_sites("r1 = r10", "r1 = 1", G_SCALAR), "R1 is not a scalar"),
}


@pytest.mark.parametrize("name", ARGS)
def test_every_call_site_passes_what_the_global_takes(name):
    text, why = ARGS[name]
    err = rejected(text)
    func = 2 if "\ns:\n" in text and text.index("\ns:\n") < text.index("\ng:\n") else 1
    assert str(err) == f"Caller passes invalid args into func#{func} ('g')"
    assert err.log.rstrip().splitlines()[-2:] == [why, str(err)]


@pytest.mark.parametrize("text", [
    two_sites("r1 = 1", "r1 = 2", G_SCALAR),
    two_sites("", ""),  # the ctx twice
    two_sites("r1 = 1", "r1 = r10", "r0 = 0"),  # g takes nothing: any R1 will do
])
def test_consistent_call_sites_are_accepted(text):
    ok(text)


@pytest.mark.parametrize("text", [case[0] for case in ARGS.values()] + [
    two_sites("r1 = 1", "r1 = 2", G_SCALAR), two_sites("", ""), two_sites("r1 = 1", "r1 = r10", "r0 = 0")])
def test_the_live_kernel_agrees(text):
    """The same programs in the running kernel (with the BTF their code implies)."""
    require_live_kernel()
    c = compare(assemble(text, "test.s"), None, "test.s")
    assert c.outcome == "agree", (c.reason, c.kernel_msg, c.our_msg)


def _with_proto(text: str, **protos: FuncProto):
    prog = assemble(text, "test.s")
    prog.func_protos = dict(protos)
    return prog


@pytest.mark.parametrize(("second", "why"), [
    ("call s", NOT_CTX),
    ("r1 += 8", "dereference of modified ctx ptr R1 off=8 disallowed"),
    ("r1 = 0", "arg#0 expects pointer to ctx"),
])
def test_btf_signature_is_checked_at_every_call_site(second, why):
    text = two_sites("", second, "r0 = 0") + "s:\n\tr0 = 0\n\texit\n"
    err = raw_rejected(_with_proto(text, g=FuncProto("scalar", ("ctx",))))
    assert err.log.rstrip().splitlines()[-2:] == [why, "Caller passes invalid args into func#1 ('g')"]


def test_btf_scalar_arg_left_uninitialised_is_not_a_scalar():
    text = "main:\n\tcall s\n\tcall g\n\tr0 = 0\n\texit\ns:\n\tr0 = 0\n\texit\ng:\n\tr0 = r1\n\texit\n"
    err = raw_rejected(_with_proto(".global g\n" + text, g=FuncProto("scalar", ("scalar",))))
    assert err.log.rstrip().splitlines()[-2:] == [
        "R1 is not a scalar", "Caller passes invalid args into func#2 ('g')"]


# Class 4 --------------------------------------------------------------------------------------


def chain(frames: int, linkage: str = "global", stacks: tuple[int, ...] = (), recurse: bool = False) -> str:
    """main -> g1 -> ... -> g<frames-1>, each passing a scalar in R1; frame i writes one byte
    at fp-stacks[i] (its stack depth); the last one calls itself if `recurse`."""
    names = ["main"] + [f"g{i}" for i in range(1, frames)]
    out = "".join(f".global {n}\n" for n in names[1:] if linkage == "global")
    for i, name in enumerate(names):
        out += f"{name}:\n"
        if i < len(stacks) and stacks[i]:
            out += f"\tr2 = 0\n\t*(u8 *)(r10 - {stacks[i]}) = r2\n"
        callee = names[i + 1] if i + 1 < len(names) else (name if recurse else None)
        if callee:
            out += f"\tr1 = 1\n\tcall {callee}\n"
        out += "\tr0 = 0\n\texit\n"
    return out


DEEP = "the call stack of 8 frames is too deep !"
MUTUAL = """.global g1
.global g2
main:
	r1 = 1
	call g1
	r0 = 0
	exit
g1:
	r1 = 1
	call g2
	r0 = 0
	exit
g2:
	r1 = 1
	call g1
	r0 = 0
	exit
"""
DEPTH = {
    # kernel: do_check descends static calls; global calls only check_max_stack_depth sees
    "8_global_frames": (chain(8), None),
    "9_global_frames": (chain(9), DEEP),
    "10_global_frames": (chain(10), DEEP),
    "8_static_frames": (chain(8, "static"), None),
    "9_static_frames": (chain(9, "static"), "the call stack of 9 frames is too deep"),
    "global_self_recursion": (chain(2, recurse=True), DEEP),
    "static_self_recursion": (chain(2, "static", recurse=True), "the call stack of 9 frames is too deep"),
    "global_mutual_recursion": (MUTUAL, DEEP),
    "global_static_mutual_recursion": (MUTUAL.replace(".global g2\n", ""), DEEP),
    # combined stack: each frame rounded up to 16 bytes
    "stacks_257_255": (chain(2, stacks=(257, 255)), "combined stack size of 2 calls is 528. Too large"),
    "stacks_257_255_static": (chain(2, "static", stacks=(257, 255)),
                              "combined stack size of 2 calls is 528. Too large"),
    "stacks_1_1_510": (chain(3, stacks=(1, 1, 510)), "combined stack size of 3 calls is 544. Too large"),
    "stacks_300_0_300": (chain(3, stacks=(300, 0, 300)), "combined stack size of 3 calls is 608. Too large"),
    "stacks_0_0_512": (chain(3, stacks=(0, 0, 512)), None),
    "stacks_7x1_400": (chain(8, stacks=(1,) * 7 + (400,)), None),
    "stacks_512_0": (chain(2, stacks=(512, 0)), None),
}


@pytest.mark.parametrize("name", DEPTH)
def test_call_depth_and_combined_stack_through_global_calls(name):
    text, msg = DEPTH[name]
    if msg is None:
        ok(text)
    else:
        err = rejected(text)
        assert str(err) == msg
        assert err.log.rstrip().splitlines()[-1] == msg


def test_the_depth_walk_does_not_rescan_what_it_walked():
    # 7 levels of subprogs each calling the next one 20 times: 20**6 call paths, one walk
    names = ["main"] + [f"g{i}" for i in range(1, 8)]
    text = "".join(f".global {n}\n" for n in names[1:])
    for i, name in enumerate(names):
        calls = "".join(f"\tr1 = {k}\n\tcall {names[i + 1]}\n" for k in range(20)) if i < 7 else ""
        text += f"{name}:\n{calls}\tr0 = 0\n\texit\n"
    res = check(assemble(text, "wide.s"), log_level=0)
    assert len(res.subprogs) == 8
