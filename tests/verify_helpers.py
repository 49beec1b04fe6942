"""Helpers of the verifier tests: check a text program expecting acceptance (`ok`) or
rejection (`rejected`, `raw_rejected`), build the frame-descriptor entries tests compare
against, flatten insn lists, and the program fragments several test modules share."""

from __future__ import annotations

import pytest

from verifier.asm.assembler import assemble
from verifier.check.checker import check
from verifier.errors import VerifierError
from verifier.program import CheckResult, FdEntry, Program, SpillType
from verifier.regtypes import MEM_ALLOC, NOT_INIT, PTR_TO_BTF_ID

OBJ_T = PTR_TO_BTF_ID | MEM_ALLOC
REG = SpillType.STACK_INVALID  # spill_type of register entries
SPILL = SpillType.STACK_SPILL


def ok(text: str, level: int = 1) -> CheckResult:
    return check(assemble(text, "test.s"), log_level=level)


def rejected(text: str, level: int = 1) -> VerifierError:
    with pytest.raises(VerifierError) as info:
        check(assemble(text, "test.s"), log_level=level)
    return info.value


def obj(off: int, name: str = "foo", btf_id: int = 1) -> FdEntry:
    return FdEntry(OBJ_T, SPILL if off < 0 else REG, off, btf_id, name)


def poison(off: int) -> FdEntry:
    return FdEntry(NOT_INIT, SPILL if off < 0 else REG, off)


def desc(res: CheckResult, subprog: int, pc: int):
    d = res.fdtabs[subprog].find(pc)
    assert d is not None, [x.pc for x in res.fdtabs[subprog].descs]
    return d


NEW = "\tr1 = {t} ll\n\tr2 = 0\n\tcall bpf_obj_new_impl\n"


def raw_rejected(prog: Program) -> VerifierError:
    with pytest.raises(VerifierError) as info:
        check(prog)
    return info.value


GLOBAL_CTX = (".global g\nmain:\n\tcall g\n\texit\n"
              "g:\n\tr0 = *(u32 *)(r1 + 16)\n\texit\n")


CB = ".global cb\n.exception_callback cb\n"


def flat(*items):
    out = []
    for item in items:
        out.extend(item if isinstance(item, tuple) else [item])
    return out
