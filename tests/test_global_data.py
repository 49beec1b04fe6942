"""Global data end to end: `.bss`, `.data*` and `.rodata*` variables of clang-built objects
(tests/progs/global_data.c, exceptions_cleanup.c) from the loader's `Program.maps` through
the verifier's PTR_TO_MAP_VALUE, to both engines' memory, against the live kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from jit.layout import PAGE, map_addresses
from tests.live_kernel import require_live_kernel
from unwind.cli import pipeline
from unwind.cli.oracle import compare_file
from unwind.interp_kernel import run_interp
from unwind.live.load import kernel_load
from verifier.check.checker import check
from verifier.check.prune import _IdMap, regsafe
from verifier.check.state import RegState
from verifier.errors import VerifierError
from verifier.isa.insn import (
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE,
    BPF_W,
    exit_insn,
    ld_imm64,
    ldx_mem,
    mov64_imm,
)
from verifier.load.object import load_object
from verifier.program import BPF_F_RDONLY_PROG, FuncSym, ProgMap, Program
from verifier.regtypes import BaseType

PROGS = Path(__file__).parent / "progs"
GLOBAL_DATA = PROGS / "global_data.o"
CLEANUP = PROGS / "exceptions_cleanup.o"
GLOBAL_VAR_UNSUPPORTED = "ld_imm64 of a global variable (map value) with src_reg 2 is not supported"

# program -> (the kernel's last error line, the line before it)
REJECTIONS = {
    "global_oob_past_end": ("R1 min value is outside of the allowed memory range",
                            "invalid access to map value, value_size=16 off=16 size=4"),
    "global_oob_straddle": ("R1 min value is outside of the allowed memory range",
                            "invalid access to map value, value_size=16 off=12 size=8"),
    "global_oob_negative": ("R1 min value is outside of the allowed memory range",
                            "invalid access to map value, value_size=16 off=-4 size=4"),
    "global_rodata_write": ("write into map forbidden, value_size=5 off=0 size=4", None),
}  # fmt: skip
# program -> return value with the default ctx (len 74)
RETVALS = {
    "global_bss_counter": 3,
    "global_data_sum": 95,
    "global_data_write_read": 223,
    "global_rodata_branch": 2,
    "global_ptr_to_subprog": 84,
    "global_throw_sees_data": 77,
    "global_misaligned_read": 0,
    "global_map_ptr": 0,
}


def _program(name: str, path: Path = GLOBAL_DATA) -> Program:
    return load_object(path, only=name).programs[name]


def _reject(prog: Program, log_level: int = 1) -> VerifierError:
    with pytest.raises(VerifierError) as info:
        check(prog, log_level=log_level)
    return info.value


# ---- the loader hands the maps to the Program -----------------------------------------------


def test_program_carries_every_map_with_its_initial_data():
    prog = _program("global_data_sum")
    maps = {m.name: m for m in prog.maps}
    assert set(maps) == {"array", ".bss", ".data", ".data.A", ".rodata"}
    assert not maps["array"].is_data and maps["array"].value_size == 8 and maps["array"].max_entries == 4
    assert maps[".bss"].value_size == 16 and maps[".bss"].initial_value() == bytes(16)
    assert maps[".data"].initial_value() == (7).to_bytes(4, "little")
    assert maps[".data.A"].initial_value() == (9).to_bytes(4, "little")
    assert maps[".rodata"].rdonly_prog
    assert maps[".rodata"].initial_value() == (5).to_bytes(4, "little") + b"\0"
    assert not maps[".bss"].rdonly_prog and maps[".bss"].key_size == 4 and maps[".bss"].max_entries == 1
    loaded = {prog.maps[i].name for i in prog.map_refs.values()}
    assert loaded == {".data", ".data.A", ".rodata"}
    for pc, idx in prog.map_refs.items():
        insn = prog.insns[pc]
        assert insn.is_ld_imm64() and insn.src == BPF_PSEUDO_MAP_VALUE and insn.imm == idx


# ---- verifier: the kernel's verdicts and messages --------------------------------------------


@pytest.mark.parametrize("name", sorted(REJECTIONS))
def test_bad_accesses_are_rejected_with_the_kernels_lines(name):
    last, before = REJECTIONS[name]
    err = _reject(_program(name))
    assert str(err) == last
    lines = err.log.splitlines()
    assert lines[-1] == last
    if before is not None:
        assert lines[-2] == before


@pytest.mark.parametrize("name", sorted(RETVALS))
def test_good_programs_verify(name):
    check(_program(name))


def test_log_names_the_map_as_the_kernel_prints_it():
    log = "\n".join(check(_program("global_bss_counter"), log_level=2).log)
    assert "=map_value(map=.bss,ks=4,vs=16)" in log
    err = _reject(_program("global_oob_negative"), log_level=2)
    assert "=map_value(map=.bss,ks=4,vs=16,off=-4)" in err.log
    log = "\n".join(check(_program("global_map_ptr"), log_level=2).log)
    assert "=map_ptr(map=array,ks=4,vs=8)" in log


def test_rodata_loads_are_known_constants():
    lines = check(_program("global_rodata_branch"), log_level=2).log
    load = next(line for line in lines if line.startswith("2: (71) r1 = *(u8 *)(r1 +0)"))
    assert load.endswith("; R1=0")  # ro_flag = false, read from the frozen .rodata
    assert "map_value(map=.rodata,ks=4,vs=5,off=4)" in next(ln for ln in lines if ln.startswith("0: ("))
    assert not [line for line in lines if line.startswith("5:")]  # `return 1` is never explored


def _hand_program(insns: list, maps: tuple[ProgMap, ...]) -> Program:
    return Program("hand", list(insns), [FuncSym("hand", 0, "global")], maps=maps)


HASH = ProgMap("hash", 1, 4, 8, 16)
RODATA_BYTES = (0x1122334455667788).to_bytes(8, "little")
RODATA = ProgMap(".rodata", 2, 4, 8, 1, BPF_F_RDONLY_PROG, ".rodata", RODATA_BYTES)


def test_ld_imm64_of_a_map_the_program_lacks_is_the_kernels_bad_fd():
    prog = _hand_program([*ld_imm64(1, 3, src=BPF_PSEUDO_MAP_VALUE), mov64_imm(0, 0), exit_insn()], ())
    assert str(_reject(prog)) == "fd 3 is not pointing to valid bpf_map"


def test_a_map_pointer_is_not_dereferenced():
    insns = [*ld_imm64(1, 0, src=BPF_PSEUDO_MAP_FD), ldx_mem(BPF_W, 0, 1, 0), exit_insn()]
    msg = str(_reject(_hand_program(insns, (HASH,))))
    assert msg.startswith("R1 access to a map's own fields") and "not supported by bpf-unwind" in msg


def test_a_rodata_load_reads_the_bytes_at_its_offset():
    # r1 = &.rodata + 2; r0 = *(u32 *)(r1 + 1): bytes 3..6 of the value
    insns = [*ld_imm64(1, 2 << 32, src=BPF_PSEUDO_MAP_VALUE), ldx_mem(BPF_W, 0, 1, 1), exit_insn()]
    log = "\n".join(check(_hand_program(insns, (RODATA,)), log_level=2).log)
    assert f"R0={0x22334455:#x}" in log


def test_pruning_tells_maps_apart():
    bss = ProgMap(".bss", 2, 4, 8, 1, 0, ".bss")
    data = ProgMap(".data", 2, 4, 8, 1, 0, ".data")
    value = int(BaseType.PTR_TO_MAP_VALUE)
    old = RegState(value, map=bss)
    assert regsafe(old, old.copy(), _IdMap(), exact=False)
    assert not regsafe(old, RegState(value, map=data), _IdMap(), exact=False)
    assert not regsafe(old, RegState(value, off=4, map=bss), _IdMap(), exact=False)


# ---- both engines: memory initialised from the object, fresh on every run --------------------


@pytest.mark.parametrize("name", sorted(RETVALS))
def test_both_engines_return_the_expected_value(name):
    built = pipeline.build(_program(name))
    assert built.run().retval == RETVALS[name]
    assert run_interp(built.verified).retval == RETVALS[name]


def test_every_run_starts_from_the_objects_data():
    built = pipeline.build(_program("global_bss_counter"))
    assert [built.run().retval for _ in range(3)] == [3, 3, 3]
    assert [run_interp(built.verified).retval for _ in range(2)] == [3, 3]


def test_maps_sit_at_their_layout_addresses_on_their_own_pages():
    built = pipeline.build(_program("global_data_sum"))
    maps = built.verified.maps
    addrs = map_addresses([m.value_size for m in maps])
    assert built.jitted.map_addrs == addrs
    assert all(b - a >= 2 * PAGE for a, b in zip(addrs, addrs[1:], strict=False))  # a guard page between


def test_loop_iterations_verifies_and_releases_fifty_objects():
    prog = _program("exceptions_cleanup_loop_iterations", CLEANUP)
    built = pipeline.build(prog)
    result = built.run()
    assert (result.retval, result.threw, result.released_count) == (0xEB9F, True, 50)
    assert not result.ledger.leaked() and not result.ledger.double_freed
    interp = run_interp(built.verified)
    assert (interp.retval, interp.released_count) == (0xEB9F, 50)


# ---- the live kernel as the oracle --------------------------------------------------------


def test_global_data_agrees_with_the_kernel():
    require_live_kernel()
    rows = compare_file(str(GLOBAL_DATA), all_progs=True)
    assert {r.prog for r in rows} == set(RETVALS) | set(REJECTIONS)
    bad = [(r.prog, r.outcome, r.reason) for r in rows if r.outcome != "agree"]
    assert not bad
    for r in rows:
        if r.prog in RETVALS:
            assert r.retval_kernel == r.retval_jit == r.retval_interp == RETVALS[r.prog], r.prog
            assert r.xlated == "equal" and r.jit.startswith("equal"), r.prog
        else:
            assert r.kernel_msg == r.our_msg == REJECTIONS[r.prog][0]


def test_kernel_prints_the_lines_we_print():
    require_live_kernel()
    for name, (last, before) in REJECTIONS.items():
        kp = kernel_load(_program(name), load_object(GLOBAL_DATA, only=name), log_level=1)
        try:
            assert not kp.accepted and kp.error_line == last
            assert before is None or before in kp.log
        finally:
            kp.close()
    kp = kernel_load(_program("global_oob_negative"), load_object(GLOBAL_DATA, only="global_oob_negative"), 2)
    try:
        assert "=map_value(map=.bss,ks=4,vs=16,off=-4)" in kp.log
    finally:
        kp.close()


CLEANUP_PROGS = ("exceptions_cleanup_loop_iterations", "exceptions_cleanup_check",
                 "exceptions_cleanup_callee_saved_noopt")  # fmt: skip


def test_cleanup_corpus_gets_past_global_variables():
    require_live_kernel()
    rows = {r.prog: r for r in compare_file(str(CLEANUP), all_progs=True)}
    assert not [(p, r.reason) for p, r in rows.items() if r.outcome == "DISAGREE"]
    for name in CLEANUP_PROGS:
        assert GLOBAL_VAR_UNSUPPORTED not in rows[name].our_msg, name
    loop = rows["exceptions_cleanup_loop_iterations"]
    assert (loop.ours, loop.outcome) == ("accepted", "series")  # mainline: "reference leak" at the throw


def test_global_data_with_a_spin_lock_is_refused_as_unmodelled():
    # exceptions_fail.c: `private(A) struct bpf_spin_lock lock;` (the kernel keeps loads and
    # stores off the lock; this verifier does not model the value's BTF fields)
    prog = _program("reject_with_lock", PROGS / "exceptions_fail.o")
    locked = [m for m in prog.maps if m.special]
    assert [(m.name, m.special) for m in locked] == [(".data.A", "bpf_spin_lock")]
    msg = "global data holding a bpf_spin_lock (.data.A) is not supported by bpf-unwind"
    assert str(_reject(prog)) == msg
    assert not [m for m in _program("global_data_sum").maps if m.special]
