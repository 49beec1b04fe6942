"""Issue 14, class 6: the command line's contract on inputs that used to produce internal
errors or multi-line messages. Exit 0 success; 1 rejected (verify) / leaked (run) / a
conformance test failed; 2 any other error, always exactly one `bpf-unwind: error:` line."""

from pathlib import Path

import pytest

from tests.elf_mutate import rename_section
from unwind.cli import pipeline
from unwind.cli.conformance_data import ConformanceError, parse_data
from unwind.cli.main import main
from verifier.asm.assembler import assemble
from verifier.asm.ubpf import UbpfAsmError, assemble_ubpf
from verifier.errors import AsmError, LoadError, quoted, shown
from verifier.load.object import load_object_bytes

PROGS = Path(__file__).parent / "progs"
HUGE = "1" * 4301  # one digit past Python's int() limit for decimal strings


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(code: int, err: str) -> str:
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bpf-unwind: error: "), err
    assert "internal error" not in err and "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- dead code and subprogs

DEAD_CALL = """\
main:
    r1 = 0
    call gsub
    r0 = 0
    exit
ssub:
    r0 = 1
    exit
.global gsub
gsub:
    r0 = 0
    if r0 == 0 goto .Lout
    call ssub
.Lout:
    r0 = 0
    exit
"""


def test_static_subprog_called_only_from_dead_code_is_removed_with_it(tmp_path, capsys):
    # It used to be "verifier internal error: insn 8 refers to a removed subprog": the
    # static subprog (laid out before its caller) was removed while the dead call still stood.
    vp = pipeline.verify(pipeline.load_text(DEAD_CALL, "dead.s"))
    assert [sp.name for sp in vp.subprogs] == ["main", "gsub"]
    assert vp.stats["dead_insns_removed"] == 3  # the dead call and the whole of ssub
    src = tmp_path / "dead.s"
    src.write_text(DEAD_CALL)
    code, out, err = run_cli(capsys, "run", str(src))
    assert code == 0 and err == "" and "retval: 0 (0x0)" in out


# ---------------------------------------------------------------- the conformance suite's files


def test_conformance_asm_line_of_only_a_comma_is_invalid_mnemonic():
    with pytest.raises(UbpfAsmError) as info:
        assemble_ubpf("mov %r0, 1\n,\nexit", "c.data", 2)
    assert info.value.reason == "Invalid mnemonic" and str(info.value) == "c.data:3: Invalid mnemonic: ,"


def test_conformance_cli_reports_the_comma_line_as_a_failed_test(tmp_path, capsys):
    data = tmp_path / "comma.data"
    data.write_text("-- asm\nmov %r0, 1\n,\nexit\n-- result\n0x1\n")
    code, out, err = run_cli(capsys, "conformance", str(data))
    assert code == 1 and err == ""
    assert "got error: line 3: Invalid mnemonic: ," in out


def test_conformance_file_that_does_not_parse_is_one_error_line_exit_2(tmp_path, capsys):
    data = tmp_path / "bigres.data"
    data.write_text(f"-- asm\nmov %r0, 1\nexit\n-- result\n{HUGE}\n")
    code, out, err = run_cli(capsys, "conformance", str(data))
    line = assert_one_error_line(code, err)
    assert "result '1111" in line and "(4301 characters)' is out of range" in line
    assert out.splitlines()[-1] == "0 passed, 0 failed, 1 unreadable"


@pytest.mark.parametrize("text", [f"-- result\n{HUGE}", f"-- result\n0x{HUGE}", f"-- mem\n{HUGE}",
                                  f"-- raw\n{HUGE}", "-- raw\n" + " ".join(["00"] * 7 + ["0x" + HUGE])])
def test_conformance_numbers_are_bounded_before_conversion(text):
    with pytest.raises(ConformanceError, match=r"\(4\d\d\d characters\)' is out of range$"):
        parse_data(text, "x.data")


# ---------------------------------------------------------------- 4,301-digit literals

LLVM_LITERALS = [
    f"r0 = {HUGE}", f"r0 = -{HUGE}", f"r0 = 0x{HUGE}", f"goto +{HUGE}", f"gotol -{HUGE}",
    f"if r0 > {HUGE} goto +1", f"r0 = *(u64 *)(r1 + {HUGE})", f"r{HUGE} = 1", f"r0 = {HUGE} ll",
    f"ld_pseudo r1, {HUGE}, 1", f"r0 = be{HUGE} r0", f"call {HUGE}", f"call pc+{HUGE}",
    f"call kfunc({HUGE})", f"*(u32 *)(r10 - 8) = {HUGE}",
]


@pytest.mark.parametrize("line", LLVM_LITERALS, ids=lambda s: s.replace(HUGE, "N"))
def test_huge_literal_in_llvm_syntax_is_out_of_range(line):
    with pytest.raises(AsmError) as info:
        assemble(f"{line}\nexit", "x.s")
    msg = str(info.value)
    assert msg.startswith("x.s:1: ") and "out of range" in msg or "invalid register" in msg
    assert "\n" not in msg and len(msg) < 200


IMM32, IMM64 = "Immediate out of 32-bit range", "Immediate out of 64-bit range"
OFF16 = "Offset out of 16-bit range"
UBPF_LITERALS = [
    (f"mov %r0, {HUGE}", IMM32), (f"lddw %r0, {HUGE}", IMM64), (f"ja +{HUGE}", OFF16),
    (f"ja32 -{HUGE}", IMM32), (f"jeq %r0, 0, +{HUGE}", OFF16), (f"ldxw %r0, [%r1+{HUGE}]", OFF16),
    (f"mov %r{HUGE}, 1", "Invalid register"), (f"call local +{HUGE}", IMM32),
    (f"stw [%r10-8], 0x{HUGE}", IMM32),
]


@pytest.mark.parametrize(("line", "reason"), UBPF_LITERALS, ids=lambda s: s.replace(HUGE, "N")[:30])
def test_huge_literal_in_the_conformance_dialect_is_out_of_range(line, reason):
    with pytest.raises(UbpfAsmError) as info:
        assemble_ubpf(f"{line}\nexit", "x.data")
    assert info.value.reason == reason
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_huge_literal_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    src = tmp_path / "big.s"
    src.write_text(f"r0 = {HUGE}\nexit\n")
    line = assert_one_error_line(*run_cli(capsys, "verify", str(src))[::2])
    assert "immediate '1111" in line and "out of range" in line


# ---------------------------------------------------------------- names from the input


def test_section_name_with_a_newline_is_escaped(tmp_path, capsys):
    obj = tmp_path / "nl.o"
    obj.write_bytes(rename_section((PROGS / "basic.o").read_bytes(), "tc", b"t\n"))
    line = assert_one_error_line(*run_cli(capsys, "verify", str(obj), "--prog", "basic_throw")[::2])
    assert line.endswith("unknown program section 't\\n'")


def test_allocated_section_name_with_control_characters_is_escaped():
    data = rename_section((PROGS / "basic.o").read_bytes(), "license", b"l\x1b\r\xc2\x85ee")
    with pytest.raises(LoadError) as info:
        load_object_bytes(data, "x.o")
    assert str(info.value) == "x.o: unknown allocated section 'l\\x1b\\r\\x85ee'"


def test_every_error_is_one_line_whatever_its_message_embeds():
    # The last guard: a site that forgot `quoted` still cannot print two lines.
    assert str(LoadError("a\nb\u2028c")) == "a\\nb\\u2028c"
    assert shown("tab\there é \\") == "tab\\there é \\" and quoted("x\n") == "'x\\n'"


def test_label_and_function_names_in_asm_errors_are_quoted():
    with pytest.raises(AsmError) as info:
        assemble("main:\n  .global f\x0bg\n  exit", "x.s")
    assert "\n" not in str(info.value) and "\x0b" not in str(info.value)
