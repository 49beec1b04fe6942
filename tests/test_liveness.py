"""Register liveness against the live kernel: Linux 6.18 prints its `compute_live_registers`
result at log level 2 ("Live regs before insn:", one `.1.3......` column per register); ours,
without the series' throw rule, must be the same for every insn of every corpus program the
kernel loads. The throw rule itself (a throwing call reads R6-R9) is checked on its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.live_kernel import require_live_kernel
from unwind.cli import pipeline
from unwind.live.load import Unloadable, kernel_load
from verifier.check.cfg import check_cfg, setup_subprogs
from verifier.check.env import Env, Rejected
from verifier.check.exceptions import mark_exception_reachable_subprogs
from verifier.check.liveness import CALLEE_SAVED_MASK, compute_live_registers
from verifier.check.vlog import VLog
from verifier.load.model import LoadedObject
from verifier.load.object import load_object
from verifier.program import Program

ROOT = Path(__file__).resolve().parents[1]
LIVE_LINE = re.compile(r"^\s+(\d+): ([.0-9]{10}) \(")


def _ours(prog: Program, series: bool) -> list[int]:
    env = Env(prog, VLog(0))
    setup_subprogs(env)
    check_cfg(env)
    mark_exception_reachable_subprogs(env)
    return compute_live_registers(env, series=series)


def _kernel(prog: Program, obj: LoadedObject | None) -> tuple[bool, dict[int, int]]:
    """(accepted, the liveness table of the kernel's log)."""
    kp = kernel_load(prog, obj, log_level=2)
    try:
        out = {}
        for line in kp.log.splitlines():
            m = LIVE_LINE.match(line)
            if m:
                out[int(m[1])] = sum(1 << i for i, ch in enumerate(m[2]) if ch != ".")
        return kp.accepted, out
    finally:
        kp.close()


def _programs() -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for path in sorted((ROOT / "tests" / "progs").glob("*.o")):
        out += [(str(path), name) for name in load_object(str(path)).programs]
    for folder in ("e2e", "verifier_cases"):
        out += [(str(path), None) for path in sorted((ROOT / "tests" / folder).glob("*.s"))]
    return out


def _bits(mask: int) -> str:
    return f"{mask:010b}"[::-1]


@pytest.mark.parametrize("path,name", _programs(), ids=lambda v: Path(v).name if "/" in str(v) else v)
def test_live_registers_match_the_kernel(path: str, name: str | None) -> None:
    """Programs the kernel cannot load here (attach targets of the series) have no table;
    programs our CFG checks refuse must be refused by the kernel too."""
    require_live_kernel()
    obj = None if name is None else load_object(path, only=name)
    prog = pipeline.load_file(path) if obj is None or name is None else obj.programs[name]
    try:
        accepted, theirs = _kernel(prog, obj)
    except Unloadable as err:
        assert "bpf_cleanup_resource" in str(err)  # the series' own attach target
        return
    try:
        ours = _ours(prog, series=False)
    except Rejected:
        assert not accepted
        return
    if not theirs:  # refused before the analysis (e.g. a bad exception callback signature)
        assert not accepted
        return
    diffs = [(pc, _bits(ours[pc]), _bits(theirs[pc])) for pc in theirs if ours[pc] != theirs[pc]]
    assert diffs == [], f"(pc, ours, kernel) bits R0..R9: {diffs[:5]}"


def test_throwing_call_reads_callee_saved_registers() -> None:
    prog = pipeline.load_text(
        ".prog_type tc\nmain:\n\tr6 = 1\n\tr1 = 7\n\tcall bpf_throw\n\tr0 = 0\n\texit\n", "<t>")
    with_rule, without = _ours(prog, series=True), _ours(prog, series=False)
    assert with_rule[2] & CALLEE_SAVED_MASK == CALLEE_SAVED_MASK
    assert without[2] & CALLEE_SAVED_MASK == 0
    assert with_rule[1] & (1 << 6) and not without[1] & (1 << 6)


def test_stack_slot_liveness_from_the_accesses_seen() -> None:
    from verifier.check.checker import _check
    from verifier.check.stack_liveness import live_slots

    text = (".prog_type tc\nmain:\n\tr1 = 1\n\t*(u64 *)(r10 - 8) = r1\n\t*(u64 *)(r10 - 16) = r1\n"
            "\tr2 = *(u64 *)(r10 - 8)\n\t*(u64 *)(r10 - 8) = r1\n\tr0 = 0\n\texit\n")
    env = Env(pipeline.load_text(text, "<t>"), VLog(0))
    _check(env)
    live = live_slots(env, 0)
    assert live is not None
    assert live[3] == 0b01  # before the load: fp-8 is read next, fp-16 never
    assert live[4] == 0 and live[1] == 0  # after it, and before the store that fills fp-8
    # a variable-offset load reads every slot of its range
    var = (".prog_type tc\nmain:\n\tr2 = *(u32 *)(r1 + 0)\n\tr2 &= 8\n\tr3 = r10\n\tr3 += -24\n"
           "\tr3 += r2\n\tr0 = *(u64 *)(r3 + 0)\n\tr0 = 0\n\texit\n")
    env = Env(pipeline.load_text(var, "<t>"), VLog(0))
    _check(env)
    assert live_slots(env, 0)[5] == 0b110  # fp-24 and fp-16
