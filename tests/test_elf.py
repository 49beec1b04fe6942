"""The ELF loader and the object disassembler: objdump-identical listings, relocation of
calls, kfuncs, maps, global data and callbacks, and one clear error per kind of bad input."""

from __future__ import annotations

import argparse
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from unwind.cli import objcmd
from verifier.errors import DecodeError, LoadError
from verifier.isa.insn import (
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_KFUNC_CALL,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE,
)
from verifier.load.maps import BPF_F_RDONLY_PROG
from verifier.load.model import kfunc_btf_id, prog_section_type
from verifier.load.object import load_object, load_object_bytes
from verifier.program import FuncProto
from verifier.protos.kfuncs import KFUNCS_BY_NAME

PROGS = Path(__file__).parent / "progs"
OBJECTS = sorted(PROGS.glob("*.o"))
BASIC = PROGS / "basic.o"


def objdump() -> str:
    for name in ("llvm-objdump", "llvm-objdump-14", "llvm-objdump-16"):
        path = shutil.which(name)
        if path:
            return path
    raise AssertionError("llvm-objdump is required (install LLVM's tools; see .ci/run)")


def _words(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda p: p.name)
def test_disasm_matches_llvm_objdump_line_for_line(obj):
    ref = subprocess.run(
        [objdump(), "-d", "-r", "--no-show-raw-insn", str(obj)], capture_output=True, text=True, check=True
    ).stdout
    ours = objcmd.disasm_text(str(obj))
    assert _words(ours) == _words(ref)


def test_disasm_section_filter_and_cli_registration(capsys):
    parser = argparse.ArgumentParser()
    objcmd.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["disasm", str(BASIC), "--section", ".text"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "Disassembly of section .text:" in out and "section tc" not in out
    assert "R_BPF_64_32\tbpf_throw" in out
    with pytest.raises(LoadError, match="no code section 'nope'.*code sections: .text, tc"):
        objcmd.disasm_text(str(BASIC), "nope")


def test_programs_by_section_with_prog_type_and_autoload():
    assert prog_section_type("tc") == ("tc", None)
    assert prog_section_type("?tc") == ("tc", None)
    assert prog_section_type("syscall") == ("syscall", None)
    assert prog_section_type("fentry/bpf_cleanup_resource") == ("fentry", "bpf_cleanup_resource")
    assert prog_section_type("fentry/") is None and prog_section_type("bogus") is None
    obj = load_object(PROGS / "exceptions_fail.o", only="reject_set_exception_cb_bad_ret2")
    info = obj.infos["reject_set_exception_cb_bad_ret2"]
    assert (info.section, info.prog_type, info.attach_to, info.autoload) == (
        "?fentry/bpf_check",
        "fentry",
        "bpf_check",
        False,
    )
    assert load_object(BASIC).infos["basic_throw"].autoload
    prog = obj.programs["reject_set_exception_cb_bad_ret2"]
    assert (prog.prog_type, prog.attach_to) == ("fentry", "bpf_check")
    assert load_object(BASIC).programs["basic_throw"].attach_to == ""


def test_btf_signatures_exception_callback_tags_and_ctx_args():
    def protos(obj: str, name: str) -> dict[str, FuncProto]:
        return load_object(PROGS / obj, only=name).programs[name].func_protos

    multi = load_object(PROGS / "exceptions_fail.o", only="reject_multiple_exception_cb")
    tags = multi.programs["reject_multiple_exception_cb"].exception_cb_tags
    assert tags == ("exception_cb_first", "exception_cb_second")  # all of them, in BTF order
    p1 = protos("exceptions_fail.o", "reject_exception_cb_type_1")
    assert p1["reject_exception_cb_type_1"] == FuncProto("scalar", ("ctx",))  # struct __sk_buff *
    assert p1["exception_cb_bad_ret_type"] == FuncProto("ptr", ("scalar",))  # void *(u64: a typedef)
    p3 = protos("exceptions_fail.o", "reject_exception_cb_type_3")
    assert p3["exception_cb_bad_arg_2"].args == ("scalar", "scalar")
    assert protos("exceptions_fail.o", "reject_async_callback_throw")["timer_cb"].args == ("ptr",) * 3
    fentry = protos("exceptions_fail.o", "reject_set_exception_cb_bad_ret1")
    assert fentry["reject_set_exception_cb_bad_ret1"].args == ("ptr",)  # fentry has no ctx struct
    void_global = protos("exceptions.o", "exception_throw_from_void_global")
    assert void_global["throw_11"] == FuncProto("void", ())
    assert load_object(BASIC).programs["basic_ctx_len"].exception_cb_tags == ()


def test_text_functions_are_appended_and_calls_relocated():
    prog = load_object(BASIC).program("basic_throw_static")
    assert [(f.name, f.linkage) for f in prog.funcs] == [
        ("basic_throw_static", "global"),
        ("static_throws", "static"),
    ]
    calls = [(pc, i) for pc, i in enumerate(prog.insns) if i.is_call() and i.src == BPF_PSEUDO_CALL]
    assert len(calls) == 1
    pc, call = calls[0]
    assert pc + call.imm + 1 == prog.funcs[1].start
    assert prog.source == str(BASIC) and prog.license == "GPL" and prog.prog_type == "tc"


def test_calls_inside_text_resolved_by_clang_are_relinked():
    # static2global -> global2static -> static_func: the .text call has no relocation.
    prog = load_object(PROGS / "exceptions.o", only="exception_throw_unwind_1").program(
        "exception_throw_unwind_1"
    )
    starts = {f.name: f.start for f in prog.funcs}
    targets = {pc + i.imm + 1 for pc, i in enumerate(prog.insns) if i.is_pseudo_call()}
    assert targets == {starts["static2global"], starts["global2static"], starts["static_func"]}


def test_kfunc_calls_resolved_by_name_to_the_table():
    obj = load_object(BASIC)
    prog, info = obj.programs["basic_obj_new_drop"], obj.infos["basic_obj_new_drop"]
    assert sorted(info.kfunc_calls.values()) == ["bpf_obj_drop_impl", "bpf_obj_new_impl"]
    for pc, name in info.kfunc_calls.items():
        insn = prog.insns[pc]
        assert insn.src == BPF_PSEUDO_KFUNC_CALL and insn.imm == KFUNCS_BY_NAME[name].btf_id and insn.off == 0
    assert kfunc_btf_id("bpf_throw") == KFUNCS_BY_NAME["bpf_throw"].btf_id
    assert kfunc_btf_id("bpf_no_such_kfunc") is None


def test_bpf_obj_new_type_comes_from_the_type_id_local_relocation():
    prog = load_object(BASIC).program("basic_obj_new_drop")
    node = prog.structs["node"]
    assert node.size == 16
    (pc,) = prog.type_refs
    assert (
        prog.type_refs[pc] == "node" and prog.insns[pc].is_ld_imm64() and prog.insns[pc].imm == node.type_id
    )
    assert prog.struct_by_id(node.type_id) is node


def test_maps_and_global_data_become_map_references():
    obj = load_object(PROGS / "exceptions_cleanup.o", only="exceptions_cleanup_check")
    by_name = {m.name: m for m in obj.maps}
    ringbuf, hashmap, bss = by_name["ringbuf"], by_name["hashmap"], by_name[".bss"]
    assert (ringbuf.type_name, ringbuf.max_entries) == ("ringbuf", 8)
    assert (hashmap.type_name, hashmap.key_size, hashmap.value_size, hashmap.max_entries) == (
        "hash",
        4,
        4,
        1024,
    )
    assert (bss.type_name, bss.kind, bss.key_size, bss.max_entries, bss.value_size) == (
        "array",
        "data",
        4,
        1,
        8,
    )
    assert by_name[".rodata"].map_flags == BPF_F_RDONLY_PROG
    prog, info = obj.programs["exceptions_cleanup_check"], obj.infos["exceptions_cleanup_check"]
    for pc, ref in info.map_refs.items():
        insn, second = prog.insns[pc], prog.insns[pc + 1]
        assert obj.maps[insn.imm].name == ref.map
        if ref.kind == "map":
            assert insn.src == BPF_PSEUDO_MAP_FD and second.imm == 0
        else:
            assert insn.src == BPF_PSEUDO_MAP_VALUE and second.imm == ref.offset
    assert {(r.map, r.kind) for r in info.map_refs.values()} == {("hashmap", "map"), (".bss", "map_value")}
    assert {r.offset for r in info.map_refs.values() if r.map == ".bss"} <= {0, 4}


def test_callback_pointers_become_pseudo_func_loads():
    obj = load_object(PROGS / "exceptions_cleanup.o", only="exceptions_cleanup_check")
    prog, info = obj.programs["exceptions_cleanup_check"], obj.infos["exceptions_cleanup_check"]
    ((pc, name),) = info.func_refs.items()
    assert name == "count_elem" and prog.insns[pc].src == BPF_PSEUDO_FUNC
    assert pc + prog.insns[pc].imm + 1 == prog.func_at(pc + prog.insns[pc].imm + 1).start
    assert prog.func_at(pc + prog.insns[pc].imm + 1).name == "count_elem"
    assert info.helper_calls and 164 in info.helper_calls.values()  # bpf_for_each_map_elem


def test_exception_callback_from_decl_tag():
    obj = load_object(BASIC)
    prog = obj.programs["basic_exception_cb"]
    assert prog.exception_cb == "basic_cb"
    assert [(f.name, f.linkage) for f in prog.funcs] == [
        ("basic_exception_cb", "global"),
        ("basic_cb", "global"),
    ]
    assert obj.infos["basic_exception_cb"].exception_cb_tags == ["basic_cb"]
    assert obj.programs["basic_throw"].exception_cb is None


def test_load_program_helper_and_program_selection():
    assert objcmd.load_program(str(BASIC), "basic_ctx_len").name == "basic_ctx_len"
    assert objcmd.is_elf_file(str(BASIC)) and not objcmd.is_elf_file(str(PROGS / "basic.c"))
    with pytest.raises(LoadError, match="has 8 programs .*choose one with --prog"):
        load_object(BASIC).program(None)
    with pytest.raises(LoadError, match="no program 'nope'"):
        objcmd.load_program(str(BASIC), "nope")
    with pytest.raises(LoadError, match="cannot read"):
        objcmd.load_program(str(PROGS / "missing.o"), None)


# ---- bad input: one LoadError naming the file and the thing at fault ----------------------


def _section_offsets(data: bytes, name: str) -> tuple[int, int]:
    import io

    sec = ELFFile(io.BytesIO(data)).get_section_by_name(name)
    return sec["sh_offset"], sec["sh_size"]


def _patched(data: bytes, off: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, off, value)
    return bytes(out)


def _load_bad(data: bytes) -> str:
    with pytest.raises(LoadError) as info:
        load_object_bytes(data, "bad.o")
    msg = str(info.value)
    assert msg.startswith("bad.o: ") and "\n" not in msg
    return msg


def test_truncated_and_non_elf_input():
    data = BASIC.read_bytes()
    assert "not an ELF file" in _load_bad(b"hello")
    assert "not an ELF file" in _load_bad(b"\x7fELF")
    assert "lies outside the file" in _load_bad(data[: len(data) // 2])


def test_wrong_class_endianness_machine_and_type():
    data = BASIC.read_bytes()
    assert "not ELFCLASS64" in _load_bad(_patched(data, 4, "<B", 1))
    assert "not little-endian" in _load_bad(_patched(data, 5, "<B", 2))
    assert "not EM_BPF" in _load_bad(_patched(data, 18, "<H", 62))  # EM_X86_64
    assert "not a relocatable object" in _load_bad(_patched(data, 16, "<H", 2))  # ET_EXEC


def test_unknown_sections():
    data = PROGS.joinpath("exceptions_fail.o").read_bytes()
    assert "unknown program section '?tx'" in _load_bad(data.replace(b"?tc\0", b"?tx\0"))
    data = BASIC.read_bytes()
    assert "unknown allocated section 'licenze'" in _load_bad(data.replace(b"license\0", b"licenze\0"))


def test_missing_sections():
    data = BASIC.read_bytes()
    # No symbol table: turn .symtab into a plain PROGBITS section.
    import io

    elf = ELFFile(io.BytesIO(data))
    idx = next(i for i, s in enumerate(elf.iter_sections()) if s.name == ".symtab")
    hdr = elf["e_shoff"] + idx * elf["e_shentsize"]
    assert "expected one .symtab section, found 0" in _load_bad(_patched(data, hdr + 4, "<I", 1))
    # A relocation section that patches a section which does not exist.
    rel = next(i for i, s in enumerate(elf.iter_sections()) if s.name == ".reltc")
    assert "patches missing section 999" in _load_bad(
        _patched(data, elf["e_shoff"] + rel * 64 + 44, "<I", 999)
    )


def _first_reloc(data: bytes, name: str = ".reltc") -> int:
    return _section_offsets(data, name)[0]


def test_unknown_relocation_type_and_unknown_symbols():
    data = BASIC.read_bytes()
    off = _first_reloc(data)
    assert "unknown relocation type 99 is not supported in code" in _load_bad(
        _patched(data, off + 8, "<I", 99)
    )
    assert "R_BPF_64_ABS64 is not supported in code" in _load_bad(_patched(data, off + 8, "<I", 2))
    assert "refers to missing symbol 4000" in _load_bad(_patched(data, off + 12, "<I", 4000))
    assert "relocation against unknown symbol #0" in _load_bad(_patched(data, off + 12, "<I", 0))


def test_relocation_on_the_wrong_instruction():
    data = BASIC.read_bytes()
    off = _first_reloc(data)
    r_offset = struct.unpack_from("<Q", data, off)[0]
    msg = _load_bad(_patched(data, off, "<Q", r_offset - 8))  # the insn before the call
    assert "applies to neither a call nor an ld_imm64" in msg and "program 'basic_obj_new_drop'" in msg


def test_unknown_kfunc_names_file_program_and_kfunc():
    data = BASIC.read_bytes().replace(b"bpf_obj_drop_impl\0", b"bpf_obj_drop_nope\0")
    msg = _load_bad(data)
    assert msg.startswith("bad.o: program 'basic_obj_new_drop': unknown kfunc 'bpf_obj_drop_nope'")


def test_btf_that_does_not_parse():
    data = BASIC.read_bytes()
    off, _ = _section_offsets(data, ".BTF")
    assert "bad.o: .BTF: .BTF has bad magic 0x0000" in _load_bad(_patched(data, off, "<H", 0))
    off, _ = _section_offsets(data, ".BTF.ext")
    assert ".BTF.ext has bad magic" in _load_bad(_patched(data, off, "<H", 0))


def test_bad_instruction_encoding_is_a_decode_error():
    data = BASIC.read_bytes()
    off, _ = _section_offsets(data, "tc")
    with pytest.raises(DecodeError, match=r"bad.o: tc:basic_ctx_len: insn 0"):
        load_object_bytes(_patched(data, off, "<B", 0xFF), "bad.o")
