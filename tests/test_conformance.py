"""bpf_conformance: the whole suite through both engines (0 failed, every skip reasoned),
the negative files with their exact outcome, the `.data` parser, the `%r` assembler's
error strings, and the `conformance` / `conformance-plugin` subcommands.

The data is read in place from ../shared/conformance (never copied into the repo)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from unwind.cli import conformance as conf
from verifier.asm.ubpf import UbpfAsmError, assemble_ubpf
from verifier.errors import DecodeError
from verifier.isa.insn import insns_to_bytes

SUITE = Path(__file__).resolve().parents[2] / "shared" / "conformance"
TESTS = SUITE / "tests"
NEGATIVE = SUITE / "negative"


@pytest.fixture(scope="module", params=conf.ENGINES)
def suite_report(request) -> tuple[str, conf.Report]:
    assert TESTS.is_dir(), f"the conformance suite is expected at {TESTS}"
    return request.param, conf.run_paths([TESTS], request.param)


def test_suite_passes_on_both_engines(suite_report):
    engine, report = suite_report
    assert [o.line() for o in report.outcomes if o.status == "fail"] == [], engine
    assert report.count("pass") == 312
    skips = [(Path(o.path).name, o.detail) for o in report.outcomes if o.status == "skip"]
    assert skips == [("callx.data", "callx (BPF_CALL|BPF_X): the kernel has no indirect call")]
    assert report.summary() == "312 passed, 0 failed, 1 skipped"


# ---------------------------------------------------------------- negative/

NEGATIVE_FAILS = {
    # the harness must report these as failures: the data is wrong on purpose
    "incorrect_return_value_high_bits.data": "expected 0x8977665544332211, got 0x8877665544332211",
    # uninitialised r0: only the full verifier rejects that, and the suite's programs bypass it
    "error.data": "expected error 'Invalid', got 0x",
    # assembler rejections of files that (wrongly) expect a result
    "invalid_imm32_dec_range.data": "Immediate out of 32-bit range: 2147483648",
    "invalid_imm32_hex_range.data": "Immediate out of 32-bit range: 0x100000000",
    "invalid_label.data": "Invalid label: NOT_A_LABEL",
    "invalid_mnemonic.data": "Invalid mnemonic: ldxq",
    "invalid_offset.data": "Failed to decode register and offset: %r1",
    "invalid_offset_range.data": "Offset out of 16-bit range: +0x10000",
    "invalid_operand_count.data": "Invalid number of operands: lddw takes 2, got 1",
    "empty_instructions.data": "got error: program has no instructions",
}
NEGATIVE_SKIPS = {
    "empty.data": "no result and no error section",
    "invalid_unknown_directive.data":
        "unknown directive '-- Unknown directive' (the suite's runner skips it)",
}


@pytest.mark.parametrize("engine", conf.ENGINES)
def test_negative_directory(engine):
    report = conf.run_paths([NEGATIVE], engine)
    by_name = {Path(o.path).name: o for o in report.outcomes}
    assert len(by_name) == 60
    for name, o in by_name.items():
        if name in NEGATIVE_FAILS:
            assert o.status == "fail" and NEGATIVE_FAILS[name] in o.detail, (name, o)
        elif name in NEGATIVE_SKIPS:
            assert (o.status, o.detail) == ("skip", NEGATIVE_SKIPS[name])
        else:  # rejected as the file's `-- error` section expects
            assert o.status == "pass", (name, o)
    assert report.summary() == "48 passed, 10 failed, 2 skipped"


@pytest.mark.parametrize("path", sorted(NEGATIVE.glob("unused-*.data")), ids=lambda p: p.stem)
def test_unused_fields_rejected_by_the_decoder(path):
    df = conf.parse_data(path.read_text(), path.name)
    assert df.raw is not None and len(df.raw) == 16  # the 8-byte-token raw form
    with pytest.raises(DecodeError, match=rf"{path.name}: insn 0 \(0x[0-9a-f]{{2}}\): .*must be"):
        conf.program_insns(df)


@pytest.mark.parametrize(
    ("name", "reason"),
    [("invalid_lock.data", "Invalid number of operands for lock"),
     ("invalid_lock2.data", "Invalid number of operands for lock"),
     ("invalid_register.data", "Invalid register")],
)
def test_expected_error_strings(name, reason):
    df = conf.parse_data((NEGATIVE / name).read_text(), name)
    assert df.error == reason
    with pytest.raises(UbpfAsmError) as info:
        conf.program_insns(df)
    assert info.value.reason == reason
    assert str(info.value).startswith(f"{name}:4: {reason}")


def test_unchecked_build_applies_the_kernel_div_mod_guards():
    vp = conf.build_asm("mov %r0, 7\nmov %r1, 0\ndiv %r0, %r1\nsmod32 %r0, %r1\ncall local f\nexit\n"
                        "f:\nmov %r0, 1\nexit")
    assert vp.stats["insns_patched"] == 2
    assert len(vp.insns) == 8 + 3 + 8  # div: jne/xor/ja + insn; smod32: 8 more
    assert [(sp.name, sp.kind, sp.stack_depth) for sp in vp.subprogs] == [
        ("conformance", "main", 512), ("f", "static", 512)]
    assert conf.run_interp(vp, b"") == conf.run_jit(vp, b"") == 1


# ---------------------------------------------------------------- parser and assembler


def test_parser_sections_and_raw_forms():
    df = conf.parse_data(
        "# c\n-- asm\nmov %r0, 1 # one\nexit\n-- mem\naa bb\n  cc\n-- raw\n0x00000001000000b7\n"
        "95 00 00 00 00 00 00 00\n-- no register offset\nfree text\n-- result\n0x10\n", "x.data")
    assert df.asm == "mov %r0, 1 # one\nexit" and df.asm_line == 3
    assert df.mem == b"\xaa\xbb\xcc"
    assert df.raw == bytes.fromhex("b700000001000000") + bytes.fromhex("9500000000000000")
    assert df.result == 16
    assert conf.parse_data("-- result\n17\n").result == 17
    assert conf.parse_data("-- error\n").error == ""


def test_raw_wins_over_asm():
    df = conf.parse_data((TESTS / "lddw.data").read_text(), "lddw.data")
    insns, _ = conf.program_insns(df)
    assert insns_to_bytes(insns) == df.raw


def test_assembler_encodings():
    text = ("movsx1664 %r1, %r2\nsdiv32 %r3, -4\nbswap32 %r4\nbe16 %r5\nle64 %r5\nldxsh %r0, [%r1-2]\n"
            "lock fetch xor32 [%r10-8], %r3\nlock cmpxchg [%r1], %r2\nja32 end\ncall local f\n"
            "call runtime 7\njsle32 %r1, %r2, -1\nend:\nexit\nf:\nexit")
    hexes = [i.to_bytes().hex() for i in assemble_ubpf(text).insns]
    assert hexes == [
        "bf21100000000000", "34030100fcffffff", "d704000020000000", "dc05000010000000",
        "d405000040000000", "8910feff00000000", "c33af8ffa1000000", "db210000f1000000",
        "0600000003000000", "8510000003000000", "8520000007000000", "de21ffff00000000",
        "9500000000000000", "9500000000000000",
    ]


@pytest.mark.parametrize(
    ("text", "reason"),
    [("mov32 %r0, 2147483648", "Immediate out of 32-bit range"),
     ("mov %r0, 0x100000000", "Immediate out of 32-bit range"),
     ("ja +40000", "Offset out of 16-bit range"),
     ("foo %r0", "Invalid mnemonic"),
     ("lock xchg [%r1]", "Invalid number of operands for lock"),
     ("lock nand [%r1], %r2", "Invalid atomic operation"),
     ("call other 5", "Invalid call mode"),
     ("a:\na:\nexit", "Duplicate label")],
)
def test_assembler_errors(text, reason):
    with pytest.raises(UbpfAsmError) as info:
        assemble_ubpf(text, "t")
    assert info.value.reason == reason


def test_first_exit_is_a_label():
    insns = assemble_ubpf("jeq %r1, 0, exit\nmov %r0, 1\nexit\nexit").insns
    assert insns[0].off == 1


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    conf.register(p.add_subparsers(dest="command", required=True))
    return p


@pytest.mark.parametrize("engine", conf.ENGINES)
def test_cli_conformance(capsys, engine):
    args = _parser().parse_args(["conformance", str(TESTS / "add.data"), str(NEGATIVE / "error.data"),
                                 str(TESTS / "callx.data"), "--engine", engine])
    assert args.func(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"FAIL {NEGATIVE / 'error.data'}: expected error 'Invalid', got 0x")
    assert out[1].startswith(f"SKIP {TESTS / 'callx.data'}: callx")
    assert out[-1] == "1 passed, 1 failed, 1 skipped"


@pytest.mark.parametrize("engine", conf.ENGINES)
def test_plugin_protocol(capsys, monkeypatch, engine):
    program = assemble_ubpf("ldxh %r0, [%r1+1]\nadd %r0, %r2\nmov %r1, %r0\ncall 5\nexit").insns
    hex_text = " ".join(f"{b:02x}" for b in insns_to_bytes(program))
    monkeypatch.setattr("sys.stdin", io.StringIO(hex_text + "\n"))
    args = _parser().parse_args(["conformance-plugin", "11  22  33  44", "--engine", engine])
    assert args.func(args) == 0
    assert int(capsys.readouterr().out, 16) == 0x3322 + 4


def test_plugin_errors_go_to_stderr(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("07 10 00 00 01 00 00 00 95 00 00 00 00 00 00 00"))
    args = _parser().parse_args(["conformance-plugin"])
    assert args.func(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "insn 0 (0x07): src must be 0" in captured.err
