"""End to end: text assembly through verifier, JIT, Unicorn and the unwinder, as users run it."""

from __future__ import annotations

import json
from pathlib import Path

import capstone
import pytest

from unwind.cli import pipeline
from unwind.cli.main import main as cli_main

E2E = Path(__file__).parent / "e2e"
DEMO = Path(pipeline.__file__).parent / "demo.s"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_releases_four_objects_and_returns_the_cookie(capsys):
    code, out, _ = run_cli(capsys, "run", str(DEMO), "--json")
    doc = json.loads(out)
    assert code == 0
    assert doc["threw"] is True
    assert doc["cookie"] == 0xEB9F
    assert doc["retval"] == 0xEB9F
    assert [f["subprog"] for f in doc["frames"]] == ["__bpf_throw_tramp", "gsub", "s1", "main"]
    assert doc["released"] == 4
    assert doc["released_by_unwind"] == 4
    assert doc["leaked"] == 0
    assert doc["double_freed"] == 0


def test_make_run_demo_prints_the_unwind(capsys):
    code, out, err = run_cli(capsys, "demo")
    assert code == 0, err
    assert "retval: 60319 (0xeb9f)" in out
    assert "4 released (4 by unwind), 0 leaked, 0 double freed" in out


def test_four_frame_example_recovers_every_frames_callee_saved_registers():
    result = pipeline.build(pipeline.load_file(E2E / "four_frames.s")).run()
    assert result.threw and result.retval == 42
    names = [f.subprog for f in result.frames]
    assert names == ["__bpf_throw_tramp", "s2", "s1", "main"]
    objs = [o.address for o in result.ledger.objects]
    assert len(objs) == 8
    a, b, c, d, e, f, g, h = objs
    by_name = {fr.subprog: fr for fr in result.frames}
    # Each frame's R6-R9 as they were at its call instruction.
    assert by_name["s2"].saved_regs == (e, f, g, h)
    assert by_name["s1"].saved_regs == (e, f, c, d)
    assert by_name["main"].saved_regs == (a, b, c, d)
    released = {
        fr.subprog: sorted(r.value for r in fr.released if r.resource_id is not None)
        for fr in result.frames
    }
    assert released == {
        "__bpf_throw_tramp": [],
        "s2": sorted([g, h]),
        "s1": sorted([e, f]),
        "main": sorted([a, b, c, d]),
    }
    assert not result.ledger.leaked()
    assert not result.ledger.double_freed


def test_normal_return_runs_the_program_and_frees_through_obj_drop():
    result = pipeline.build(pipeline.load_file(E2E / "no_throw.s")).run()
    assert not result.threw
    assert result.retval == 42
    assert result.frames == []
    assert len(result.ledger.objects) == 1
    assert not result.ledger.leaked()


def test_every_descriptor_key_is_just_past_a_call_in_the_image():
    built = pipeline.build(pipeline.load_file(E2E / "four_frames.s"))
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    keys = 0
    for img in built.jitted.images:
        ends = {i.address + i.size: i.mnemonic for i in md.disasm(img.code, 0)}
        for off in img.fd_offsets:
            assert ends.get(off) == "call", (img.name, off)
            keys += 1
    assert keys == 3  # s2's throw, s1's call of s2, main's call of s1


def test_verify_shows_the_global_exception_path_and_descriptors(capsys):
    code, out, _ = run_cli(capsys, "verify", str(DEMO))
    assert code == 0
    assert "Func#2 ('gsub') may throw exception, exploring program path where exception is thrown" in out
    assert "frame desc pc=" in out or "frame desc pc " in out
    assert out.rstrip().endswith("accepted")


def test_verify_rejects_a_reference_only_in_a_caller_saved_register(capsys):
    code, out, _ = run_cli(capsys, "verify", str(E2E / "leak_in_r0.s"))
    assert code == 1
    last = out.rstrip().splitlines()[-1]
    assert "Unreleased reference id=" in last


def test_jit_listing_marks_descriptor_keys(capsys):
    code, out, _ = run_cli(capsys, "jit", str(DEMO))
    assert code == 0
    assert out.count("frame desc") >= 3


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("main:\n\tr0 = 1\n\tbogus r1\n\texit\n", ":3:"),
        ("main:\n\tr11 = 1\n\texit\n", ":2:"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, text, needle):
    src = tmp_path / "bad.s"
    src.write_text(text)
    code, out, err = run_cli(capsys, "run", str(src))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert needle in err and "Traceback" not in err


def test_missing_file_is_one_line_exit_2(capsys):
    code, _, err = run_cli(capsys, "verify", "/nonexistent/prog.s")
    assert code == 2
    assert err.startswith("bpf-unwind: error:") and len(err.strip().splitlines()) == 1


def test_runaway_program_hits_the_budget(tmp_path, capsys):
    src = tmp_path / "spin.s"
    # A loop the verifier accepts (bounded by a constant) but longer than a tiny budget.
    src.write_text("main:\n\tr0 = 0\n.Lloop:\n\tr0 += 1\n\tif r0 < 20000 goto .Lloop\n\texit\n")
    built = pipeline.build(pipeline.load_file(src), log_level=0)
    from verifier.errors import BpfUnwindError

    with pytest.raises(BpfUnwindError, match="budget"):
        built.run(budget=1000)


def test_repeated_runs_on_one_machine_start_from_a_clean_kernel_state():
    built = pipeline.build(pipeline.load_file(DEMO), log_level=0)
    first, second = built.run(), built.run()
    for result in (first, second):
        assert result.retval == 0xEB9F and result.released_count == 4
        assert len(result.ledger.objects) == 4 and not result.ledger.leaked()
    assert [o.address for o in first.ledger.objects] == [o.address for o in second.ledger.objects]
    assert second.counters["kfunc_calls.bpf_obj_new_impl"] == 4
    assert second.counters["unwind_us"] > 0


PROGS = Path(__file__).parent / "progs"


def test_run_a_program_of_a_clang_object(capsys):
    obj = str(PROGS / "basic.o")
    code, out, err = run_cli(capsys, "run", obj, "--prog", "basic_throw_releases_obj", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["threw"] and doc["retval"] == 0xEB9F
    assert doc["released_by_unwind"] == 1 and doc["leaked"] == 0


def test_disasm_of_a_truncated_object_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "trunc.o"
    bad.write_bytes((PROGS / "basic.o").read_bytes()[:300])
    code, out, err = run_cli(capsys, "disasm", str(bad))
    assert code == 2
    assert err.startswith("bpf-unwind: error:") and str(bad) in err
    assert len(err.strip().splitlines()) == 1


def test_prog_option_is_refused_for_text_assembly(capsys):
    code, _, err = run_cli(capsys, "verify", str(DEMO), "--prog", "main")
    assert code == 2 and "--prog" in err


CONFORMANCE = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "tests"


@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_conformance_command_closing_line(capsys, engine):
    files = [str(CONFORMANCE / n) for n in ("add.data", "div64-by-zero-reg.data", "callx.data")]
    code, out, _ = run_cli(capsys, "conformance", "--engine", engine, *files)
    assert code == 0
    assert out.rstrip().splitlines()[-1] == "2 passed, 0 failed, 1 skipped"


def test_ledger_names_the_allocating_call_of_every_object():
    result = pipeline.build(pipeline.load_file(E2E / "four_frames.s")).run()
    # Each bpf_obj_new_impl call follows `r1 = obj ll` (2 slots) and `r2 = 0`; after the
    # obj_new fixup (3 more insns) the calls sit at 6, 15, 24, 33 in main.
    main_pcs = [o.alloc_pc for o in result.ledger.objects[:4]]
    vp = pipeline.verify(pipeline.load_file(E2E / "four_frames.s"), log_level=0)
    assert all(vp.insns[pc].is_kfunc_call() for pc in main_pcs)
    assert main_pcs == [6, 15, 24, 33]


@pytest.mark.parametrize(("pkt_len", "released"), [(0, 1), (74, 0)])
def test_a_frame_holding_nothing_still_has_a_descriptor(pkt_len, released):
    built = pipeline.build(pipeline.load_file(E2E / "empty_frame.s"), log_level=0)
    main = built.verified.fdtabs[0]
    # every location of a frame is described on every path: here all NULL
    assert len(main.descs) == 2 and any(all(e.is_null for e in d.entries()) for d in main.descs)
    ctx = bytearray(192)
    ctx[0] = pkt_len
    result = built.run(ctx=bytes(ctx))
    assert result.threw and result.retval == 3
    assert result.released_count == released and not result.ledger.leaked()


def test_a_derived_pointer_releases_the_object_at_its_start():
    built = pipeline.build(pipeline.load_file(E2E / "derived_ptr.s"), log_level=0)
    (desc,) = [d for d in built.verified.fdtabs[0].descs if d.regs[0] is not None]
    assert desc.regs[0].ptr_off == 8 and desc.regs[0].describe() == "R6: ptr_obj+8"
    result = built.run()
    (obj,) = result.ledger.objects
    (released,) = [r for f in result.frames for r in f.released if r.resource_id is not None]
    assert released.value == obj.address + 8 and released.resource_id == obj.id
    assert not result.ledger.leaked() and not result.ledger.double_freed


def test_run_on_the_interpreter_engine_gives_the_same_outcome(capsys):
    results = {}
    for engine in ("jit", "interp"):
        code, out, err = run_cli(capsys, "run", str(DEMO), "--json", "--engine", engine)
        assert code == 0, err
        doc = json.loads(out)
        frames = [f["subprog"] for f in doc["frames"]]
        results[engine] = (doc["retval"], doc["threw"], frames, doc["released"])
    expected = (0xEB9F, True, ["__bpf_throw_tramp", "gsub", "s1", "main"], 4)
    assert results["jit"] == results["interp"] == expected
