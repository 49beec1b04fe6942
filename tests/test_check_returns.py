"""verifier.check.returns: return-code ranges by program type at a frame-0 exit, and the BTF
signature checks of global functions. Data first: program text + outcome."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.verify_helpers import CB, GLOBAL_CTX, ok, raw_rejected, rejected
from verifier.asm.assembler import assemble
from verifier.program import FuncProto, Program

# --- return codes by program type; BTF signatures of global functions ---------------------------

FENTRY, THROW = ".prog_type fentry\n", "\tcall bpf_throw\n\tr0 = 0\n\texit\n"
RANGE = "At program exit the register R{} has {} should have been in [0, 0]"
UNKNOWN = "unknown scalar value"
RETCODES = [  # (program, message or None for accepted)
    (FENTRY + "main:\n\tr0 = 0\n\texit\n", None),
    (FENTRY + "main:\n\tr0 = 1\n\texit\n", RANGE.format(0, "smin=1 smax=1")),
    (FENTRY + "main:\n\tr0 = -2\n\texit\n", RANGE.format(0, "smin=-2 smax=-2")),
    (".prog_type fexit\nmain:\n\tr0 = *(u64 *)(r10 - 8)\n\texit\n", RANGE.format(0, UNKNOWN)),
    ("main:\n\tr0 = 1\n\texit\n", None),  # tc: any value
    (FENTRY + "main:\n\tr1 = 64\n" + THROW, RANGE.format(1, "smin=64 smax=64")),
    (FENTRY + "main:\n\tr1 = 0\n" + THROW, None),
    # the kernel checks the cookie as the return value only in main's own frame
    (FENTRY + "main:\n\tcall s\n\tr0 = 0\n\texit\ns:\n\tr1 = 64\n" + THROW, None),
    (FENTRY + CB + "main:\n\tr1 = 64\n" + THROW + "cb:\n\tr0 = 0\n\texit\n", None),
    (FENTRY + CB + "main:\n\tr1 = 0\n" + THROW + "cb:\n\tr0 = r1\n\texit\n", RANGE.format(0, UNKNOWN)),
]  # fmt: skip


@pytest.mark.parametrize(("text", "msg"), RETCODES)
def test_return_code_ranges(text, msg):
    if msg is None:
        ok(text)
    else:
        assert str(rejected(text)) == msg


def with_btf(text: str, tags: tuple[str, ...] = (), **protos: FuncProto) -> Program:
    return replace(assemble(text, "t.s"), func_protos=protos, exception_cb_tags=tags)


def test_btf_signatures_of_globals_and_the_exception_callback():
    cb = CB + "main:\n\tr1 = 0\n" + THROW + "cb:\n\tr0 = 0\n\texit\n"
    not_scalar = "Global function cb() doesn't return scalar. Only those are supported."
    for proto, msg in [(FuncProto("ptr", ("scalar",)), not_scalar),
                       (FuncProto("void", ("scalar",)), "exception cb cannot return void"),
                       *[(FuncProto("scalar", a), "exception cb only supports single integer argument")
                         for a in ((), ("scalar", "scalar"), ("ctx",))]]:
        assert str(raw_rejected(with_btf(cb, cb=proto))) == msg
    multi = str(raw_rejected(with_btf(cb, ("cb", "other"))))
    assert multi == "multiple exception callback tags for main subprog"
    err = raw_rejected(with_btf(GLOBAL_CTX, g=FuncProto("scalar", ("scalar",))))
    assert str(err) == "Caller passes invalid args into func#1 ('g')" and "R1 is not a scalar" in err.log
    scalar_to_ctx = with_btf(GLOBAL_CTX.replace("\tcall g", "\tr1 = 1\n\tcall g"),
                             g=FuncProto("scalar", ("ctx",)))
    assert "arg#0 expects pointer to ctx" in raw_rejected(scalar_to_ctx).log
    ptr = str(raw_rejected(with_btf(GLOBAL_CTX, g=FuncProto("scalar", ("ptr",)))))
    assert ptr == "global function g() arg#0 is a pointer other than the ctx: not supported by bpf-unwind"
    void_g = ".global g\nmain:\n\tr1 = 1\n\tcall g\n\tr0 = 0\n\texit\ng:\n\tr2 = r1\n\texit\n"
    # Linux 6.18 refuses a void global at its call site (exceptions.o's throw_11 in the live kernel)
    err = raw_rejected(with_btf(void_g, g=FuncProto("void", ("scalar",))))
    assert str(err) == "Caller passes invalid args into func#1 ('g')"
    assert "Global function g() doesn't return scalar. Only those are supported." in err.log
