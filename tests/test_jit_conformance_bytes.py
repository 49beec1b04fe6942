"""The JIT's bytes for the whole bpf_conformance corpus are well-formed x86-64: capstone
decodes every image completely, and every BPF instruction's code starts and ends on an
x86 instruction boundary (addrs[] never splits an instruction)."""

from __future__ import annotations

from pathlib import Path

import capstone
import pytest

from jit.compile import jit_program
from unwind.cli.conformance import build_unchecked, helper_stub_addrs, parse_data, program_insns
from unwind.jit_kernel import kfunc_stub_addrs
from verifier.errors import BpfUnwindError

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "tests"
FILES = sorted(CORPUS.glob("*.data"))
MD = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)


def test_the_corpus_is_there():
    assert len(FILES) > 300


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_jit_image_decodes_whole_and_insn_boundaries_align(path):
    df = parse_data(path.read_text(), str(path))
    insns, names = program_insns(df)
    try:
        vp = build_unchecked(insns, path.stem, names)
        jp = jit_program(vp, kfunc_stub_addrs(), helper_addrs=helper_stub_addrs())
    except BpfUnwindError as err:
        # The only program the kernel's JIT cannot take is an indirect call.
        assert path.name == "callx.data", f"{path.name}: {err}"
        return
    for img in jp.images:
        decoded = list(MD.disasm(img.code, 0))
        assert sum(i.size for i in decoded) == len(img.code), f"{img.name}: undecodable bytes"
        starts = {i.address for i in decoded} | {len(img.code)}
        assert list(img.addrs) == sorted(img.addrs), f"{img.name}: addrs[] is not non-decreasing"
        for k, off in enumerate(img.addrs):
            assert off in starts, f"{img.name}: addrs[{k}]={off:#x} splits an x86 instruction"
