""".BTF.ext line_info kept by the loader (Program.line_info), the `; <line> @ file:line`
lines of the verifier log (verifier.check.linfo) and the closing statistics lines
(verifier.check.summary), against the live kernel's log of the same programs.

The kernel's level-1 log keeps only the path that failed (it truncates every path that
ended well), so the comparison reads its level-2 log, which keeps every path, against our
level-1 log: both print the same insn lines and the same source lines before them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.live_kernel import require_live_kernel
from unwind.live.load import Unloadable, _line_info, kernel_load
from verifier.asm.assembler import assemble
from verifier.check.checker import check
from verifier.check.linfo import LinfoPrinter, linfo_text
from verifier.check.vlog import VLog
from verifier.errors import LoadError, VerifierError
from verifier.isa.insn import Insn
from verifier.load.btf import parse_btf
from verifier.load.btf_ext import parse_btf_ext
from verifier.load.object import load_object, load_object_bytes
from verifier.program import LineInfo

PROGS = Path(__file__).parent / "progs"
OBJECTS = sorted(p.name for p in PROGS.glob("*.o"))
INSN_LINE = re.compile(r"^(\d+): \(")


def li(off: int, line: str, num: int, file: str = "/src/prog.c", col: int = 1) -> LineInfo:
    return LineInfo(off, file, line, num, col)


# ---------------------------------------------------------------- the loader


def test_btf_ext_keeps_every_line_info_record():
    obj = load_object(PROGS / "basic.o")
    ext = obj.btf_ext
    recs = ext.line_info["tc"]
    assert ext.line_info_count == sum(len(r) for r in ext.line_info.values()) > 0
    assert all(r.file_name.endswith("basic.c") for r in recs)
    first = recs[0]
    assert first.insn_off == 0 and first.line_col >> 10 > 0
    assert obj.btf.strings[first.line_off:].split(b"\0", 1)[0].decode() == first.line


def test_program_line_info_is_at_the_linked_insn_indexes():
    prog = load_object(PROGS / "basic.o").program("basic_static_subprog")
    offs = [r.insn_off for r in prog.line_info]
    assert offs == sorted(offs) and offs[0] == 0 and max(offs) < len(prog.insns)
    # add_three lives in .text; it is appended after main, and its records moved with it
    sub = next(f for f in prog.funcs if f.name == "add_three")
    assert sub.start > 0 and sub.start in offs
    at_sub = next(r for r in prog.line_info if r.insn_off == sub.start)
    assert "add_three" in at_sub.line and at_sub.line_num == 34
    main_lines = {r.line_num for r in prog.line_info if r.insn_off < sub.start}
    assert 43 in main_lines and 34 not in main_lines


def test_every_function_of_every_program_starts_with_a_record():
    for name in OBJECTS:
        for prog in load_object(PROGS / name).programs.values():
            offs = {r.insn_off for r in prog.line_info}
            assert {f.start for f in prog.funcs} <= offs, (name, prog.name)


def test_line_info_serialised_for_the_kernel_as_records_of_16_bytes():
    prog = load_object(PROGS / "basic.o").program("basic_throw_static")
    raw = _line_info(prog)
    assert len(raw) == 16 * len(prog.line_info)
    first = prog.line_info[0]
    assert raw[:16] == (first.insn_off.to_bytes(4, "little") + first.file_name_off.to_bytes(4, "little")
                        + first.line_off.to_bytes(4, "little") + first.line_col.to_bytes(4, "little"))
    assert first.line_col == first.line_num << 10 | first.col


def test_line_info_with_a_bad_string_offset_is_one_load_error():
    data = (PROGS / "basic.o").read_bytes()
    obj = load_object(PROGS / "basic.o")
    ext_sec, btf_sec = obj.image.section(".BTF.ext"), obj.image.section(".BTF")
    btf = parse_btf(btf_sec.data, "basic.o")
    raw = bytearray(ext_sec.data)
    hdr_len, li_off = int.from_bytes(raw[4:8], "little"), int.from_bytes(raw[16:20], "little")
    first_rec = hdr_len + li_off + 4 + 8  # rec size, then the first block's header
    raw[first_rec + 8 : first_rec + 12] = (len(btf.strings) + 5).to_bytes(4, "little")  # line_off
    with pytest.raises(LoadError, match="line_info: string offset"):
        parse_btf_ext(bytes(raw), btf, "basic.o")
    assert load_object_bytes(data, "basic.o").programs  # the untouched object still loads


def test_text_assembly_has_no_line_info():
    prog = assemble("main:\n\tr0 = 0\n\texit\n", "<t>")
    assert prog.line_info == []
    assert not any(line.startswith(";") for line in check(prog).log)


# ---------------------------------------------------------------- the log lines


def test_linfo_text_trims_the_line_and_keeps_the_file_basename():
    assert linfo_text(li(0, "\t\treturn x + 3;", 36, "/home/u/src/basic.c")) == "; return x + 3; @ basic.c:36"
    assert linfo_text(li(0, "", 0, "x.c")) == ";  @ x.c:0"  # clang's line 0: the kernel prints it so


def test_the_covering_record_is_the_last_one_at_or_before_the_insn():
    p = LinfoPrinter([li(5, "b", 2), li(0, "a", 1), li(9, "c", 3)])
    assert [p.find(pc) for pc in (0, 4, 5, 8, 9, 50)] == [0, 0, 1, 1, 2, 2]
    assert LinfoPrinter([li(3, "x", 1)]).find(2) is None


def test_a_line_is_printed_once_until_another_line_is_printed():
    p = LinfoPrinter([li(0, "a", 1), li(2, "a", 1, col=7), li(4, "b", 2), li(6, "a", 1)])
    shown = [p.line_before(pc) for pc in (0, 1, 2, 3, 4, 5, 0, 6)]
    assert shown == ["; a @ prog.c:1", None, None, None, "; b @ prog.c:2", None, "; a @ prog.c:1", None]


def test_same_line_number_of_another_file_is_another_line():
    p = LinfoPrinter([li(0, "a", 1, "x.c"), li(1, "a", 1, "y.h")])
    assert [p.line_before(0), p.line_before(1)] == ["; a @ x.c:1", "; a @ y.h:1"]


def test_vlog_prints_the_line_before_the_insn_at_levels_1_and_2_only():
    insns = [Insn(0xB7, 0, 0, 0, 0), Insn(0x95, 0, 0, 0, 0)]
    for level, want in ((1, ["; r0 = 0; @ prog.c:3", "0: (b7) r0 = 0", "1: (95) exit"]),
                        (0, []), (4, [])):
        log = VLog(level, [li(0, "r0 = 0;", 3)])
        log.insn(insns, 0)
        log.insn(insns, 1)
        assert log.lines == want, level


def test_level_1_log_of_an_object_program_has_its_source_lines():
    prog = load_object(PROGS / "basic.o").program("basic_static_subprog")
    log = check(prog).log
    assert log[0] == "; return add_three(ctx->len); @ basic.c:43"
    i = log.index("; static __noinline int add_three(int x) @ basic.c:34")
    assert INSN_LINE.match(log[i + 1])


# ---------------------------------------------------------------- closing statistics


def test_stats_bit_adds_time_and_stack_depth_before_processed():
    res = check(assemble("main:\n\t*(u32 *)(r10 - 4) = 1\n\tr0 = 0\n\texit\n", "<t>"), log_level=5)
    assert re.fullmatch(r"verification time \d+ usec", res.log[-3])
    assert res.log[-2] == "stack depth 8"  # a 4-byte store grows the stack by a whole slot
    assert res.log[-1].startswith("processed 3 insns ")
    only = check(assemble("main:\n\tr0 = 0\n\texit\n", "<t>"), log_level=4).log
    assert len(only) == 3 and only[1] == "stack depth 0" and only[2].startswith("processed 2 insns")


def test_stack_depth_names_every_subprog_and_the_hidden_exception_callback():
    prog = load_object(PROGS / "exceptions.o").program("exception_throw_subprog")
    assert "stack depth 0+8+0+8+0+0" in check(prog, log_level=4).log


def test_rejection_keeps_its_reason_last_unless_stats_are_asked_for():
    text = "main:\n\texit\n"
    with pytest.raises(VerifierError) as plain:
        check(assemble(text, "<t>"), log_level=1)
    assert plain.value.log == "0: (95) exit\nR0 !read_ok\n"
    assert plain.value.stats["insn_processed"] == 1
    with pytest.raises(VerifierError) as stats:
        check(assemble(text, "<t>"), log_level=5)
    lines = stats.value.log.splitlines()
    assert lines[-4] == "R0 !read_ok" and lines[-2] == "stack depth 0"
    assert lines[-1].startswith("processed 1 ")


# ---------------------------------------------------------------- against the live kernel


def _insn_events(lines: list[str]) -> list[tuple[int, tuple[str, ...]]]:
    """Each insn line's index with the source lines printed just before it."""
    out, pending = [], []
    for line in lines:
        if line.startswith("; ") and " @ " in line:
            pending.append(line)
        elif m := INSN_LINE.match(line):
            out.append((int(m.group(1)), tuple(pending)))
            pending = []
    return out


def _ours(prog, level: int) -> tuple[bool, list[str]]:
    try:
        return True, check(prog, log_level=level).log
    except VerifierError as err:
        return False, err.log.splitlines()


def _kernel(prog, obj, level: int) -> tuple[bool, list[str]] | None:
    try:
        kp = kernel_load(prog, obj, log_level=level)
    except Unloadable:
        return None  # an attach target this kernel lacks: no log to compare
    try:
        return kp.accepted, kp.log.splitlines()
    finally:
        kp.close()


@pytest.mark.parametrize("name", OBJECTS)
def test_source_lines_equal_the_kernels_while_both_walk_the_same_insns(name):
    require_live_kernel()
    obj = load_object(PROGS / name)
    compared = whole = lines = 0
    for prog in obj.programs.values():
        k = _kernel(prog, obj, 2)
        if k is None:
            continue
        ours, theirs = _insn_events(_ours(prog, 1)[1]), _insn_events(k[1])
        n = 0
        for a, b in zip(ours, theirs, strict=False):
            if a[0] != b[0]:
                break  # the walks part (a feature modelled otherwise, the series' paths)
            assert a[1] == b[1], f"{prog.name}: before insn {a[0]}: ours {a[1]}, kernel {b[1]}"
            n += 1
            lines += len(a[1])
        if ours and theirs:
            assert n > 0 and ours[0][1], f"{prog.name}: the first insn has no source line"
        compared += 1
        whole += ours == theirs and bool(ours)
    assert compared and lines >= compared
    assert whole >= {"basic.o": 6, "exceptions.o": 7}.get(name, 0)


@pytest.mark.parametrize("name", ["basic.o", "exceptions.o"])
def test_stack_depth_line_equals_the_kernels_for_programs_both_accept(name):
    require_live_kernel()
    obj = load_object(PROGS / name)
    both = 0
    for prog in obj.programs.values():
        k = _kernel(prog, obj, 4)
        accepted, ours = _ours(prog, 4)
        if k is None or not (accepted and k[0]):
            continue
        want = [line for line in k[1] if line.startswith(("stack depth", "verification time"))]
        got = [line for line in ours if line.startswith(("stack depth", "verification time"))]
        assert got[1] == want[1], prog.name
        assert [g.split()[:2] for g in got] == [w.split()[:2] for w in want]
        assert ours.index(got[1]) == len(ours) - 2  # just before `processed`, as the kernel has it
        both += 1
    assert both >= 3
