"""jit.machine: memory map, entry/exit through the host stub, stubs, control transfer,
one-line fault and budget errors, the callee-saved register contract.

Images are built by hand with keystone: each body line counts as one "BPF insn", so
`addrs` and `insn_at` work as for JIT output."""

from __future__ import annotations

import time

import pytest
from keystone import KS_ARCH_X86, KS_MODE_64, Ks

from jit.image import JitImage, JitProgram
from jit.layout import CODE_BASE, CTX_BASE, PAGE, STACK_BASE, STACK_TOP, stub_address
from jit.machine import CALLEE_SAVED_CANARIES, Machine, MachineError
from verifier.errors import BpfUnwindError
from verifier.program import FdTab, Subprog, VerifiedProgram

KS = Ks(KS_ARCH_X86, KS_MODE_64)
FRAME = ["push rbp", "mov rbp, rsp"]
LEAVE = ["leave", "ret"]


def image_addr(i: int) -> int:
    return CODE_BASE + 2 * PAGE * i


def assemble(lines: list[str], address: int, syms: dict[str, int]) -> tuple[bytes, list[int]]:
    """Assemble line by line; returns code and the end offset of every line.
    `{name}` in a line is a symbol, `{L3}` the address of line 3 (backward references)."""
    code = b""
    ends: list[int] = []
    for line in lines:
        labels = {f"L{k}": address + (ends[k - 1] if k else 0) for k in range(len(ends) + 1)}
        enc, _ = KS.asm(line.format(**syms, **labels), address + len(code))
        code += bytes(enc or b"")
        ends.append(len(code))
    return code, ends


def program(name: str, funcs: list[tuple[str, list[str], list[str]]]) -> JitProgram:
    """funcs: (name, prologue lines, body lines); the first is main."""
    syms = {f: image_addr(i) for i, (f, _, _) in enumerate(funcs)}
    syms.update(stub0=stub_address(0), stub1=stub_address(1), stub2=stub_address(2))
    images, subprogs, start = [], [], 0
    for i, (fname, prologue, body) in enumerate(funcs):
        address = image_addr(i)
        pcode, _ = assemble(prologue, address, syms) if prologue else (b"", [])
        bcode, ends = assemble(body, address + len(pcode), syms)
        addrs = (len(pcode), *(len(pcode) + e for e in ends))
        kind = "main" if i == 0 else "static"
        images.append(
            JitImage(i, fname, kind, False, start, pcode + bcode, address, addrs, 0,
                     (False,) * 4, False, False)
        )
        subprogs.append(Subprog(fname, start, start + len(body), kind, 0, (False,) * 4))
        start += len(body)
    vp = VerifiedProgram(name, [], subprogs, [FdTab() for _ in funcs], None, None, False)
    return JitProgram(vp, tuple(images))


def simple(body: list[str], name: str = "demo") -> JitProgram:
    return program(name, [("main", FRAME, body + LEAVE)])


def test_normal_run_returns_rax_and_keeps_callee_saved():
    jp = simple(["mov rax, rdi", "add rax, 5"])
    m = Machine(jp)
    assert m.run(jp.main, 37) == 42
    assert m.emu_starts == 1
    for name, value in CALLEE_SAVED_CANARIES.items():
        assert m.reg(name) == value


def test_u64_return_value():
    jp = simple(["mov rax, -1"])
    assert Machine(jp).run(jp.main, 0) == 0xFFFF_FFFF_FFFF_FFFF


def test_register_and_memory_access():
    m = Machine(simple(["nop"]))
    for name in ("rax", "rdi", "rsi", "rdx", "rcx", "r8", "rbx", "r12", "r13", "r14", "r15", "rbp", "rsp"):
        m.set_reg(name, 0x1122334455667700 + len(name))
        assert m.reg(name) == 0x1122334455667700 + len(name)
    m.set_reg("rax", -2)
    assert m.reg("rax") == 0xFFFF_FFFF_FFFF_FFFE
    m.write(CTX_BASE, (0xDEADBEEF).to_bytes(8, "little"))
    assert m.read_u64(CTX_BASE) == 0xDEADBEEF
    m.write(STACK_TOP - 16, bytes(range(16)))
    view = m.read_stack(STACK_TOP - 16)
    assert bytes(view[:16]) == bytes(range(16))
    assert len(view) == STACK_BASE + 0x10000 - (STACK_TOP - 16)
    with pytest.raises(MachineError):
        m.read_u64(STACK_BASE - 8)  # guard page


def test_ctx_pointer_reaches_program():
    jp = simple(["mov rax, qword ptr [rdi]"])
    m = Machine(jp)
    m.write(CTX_BASE, (1234).to_bytes(8, "little"))
    assert m.run(jp.main, CTX_BASE) == 1234


def test_bound_stub_handler_sets_rax():
    jp = simple(["mov rdi, 41", "call {stub0}", "mov rdi, rax", "call {stub0}"])
    m = Machine(jp)
    seen: list[int] = []

    def handler(mach: Machine) -> None:
        seen.append(mach.reg("rdi"))
        mach.set_reg("rax", mach.reg("rdi") + 1)

    m.bind_stub(stub_address(0), handler)
    assert m.run(jp.main, 0) == 43
    assert seen == [41, 42]
    with pytest.raises(MachineError, match="bound twice"):
        m.bind_stub(stub_address(0), handler)


def test_unbound_stub_slot_traps():
    jp = simple(["call {stub0}"])
    # slot 0 is a `ret` even without a handler; an address between slots is int3
    assert Machine(jp).run(jp.main, 0) == 0
    jp = simple(["mov rax, {stub0}", "add rax, 4", "call rax"])
    with pytest.raises(MachineError, match="kfunc stub"):
        Machine(jp).run(jp.main, 0)


def test_resume_at_transfers_control():
    funcs = [
        ("main", FRAME, ["call {stub0}", "add rax, 1"] + LEAVE),
        ("alt", [], ["mov rax, 99", "ret"]),
    ]
    jp = program("demo", funcs)
    m = Machine(jp)
    m.bind_stub(stub_address(0), lambda mach: mach.resume_at(jp.images[1].address, {"rdi": 1}))
    assert m.run(jp.main, 0) == 100  # alt's ret returns to main just after the stub call
    assert m.emu_starts == 2


def test_fault_names_program_subprog_and_insn():
    funcs = [
        ("main", FRAME, ["call {sub1}"] + LEAVE),
        ("sub1", FRAME, ["mov rdi, 16", "mov rax, qword ptr [rdi]"] + LEAVE),
    ]
    jp = program("demo", funcs)
    with pytest.raises(MachineError) as exc:
        Machine(jp).run(jp.main, 0)
    msg = str(exc.value)
    start = jp.images[1].start
    rip = jp.images[1].address + jp.images[1].addrs[1]
    assert msg.startswith(f"prog 'demo': fault in subprog 'sub1' at insn {start + 1} (rip={rip:#x}): ")
    assert "UC_ERR_READ_UNMAPPED at 0x10" in msg
    assert "\n" not in msg
    assert isinstance(exc.value, BpfUnwindError)


def test_write_fault_and_invalid_insn():
    jp = simple(["mov rdi, 8", "mov qword ptr [rdi], rax"])
    with pytest.raises(MachineError, match=r"subprog 'main' at insn 1 .*UC_ERR_WRITE_UNMAPPED"):
        Machine(jp).run(jp.main, 0)
    jp = simple(["nop", "nop", "ud2"])
    with pytest.raises(MachineError, match=r"subprog 'main' at insn 2 .*UC_ERR_INSN_INVALID"):
        Machine(jp).run(jp.main, 0)


def test_jump_outside_images_faults():
    jp = simple(["mov rax, 0x3000000", "jmp rax"])
    with pytest.raises(MachineError, match=r"outside every image .*UC_ERR_FETCH_UNMAPPED"):
        Machine(jp).run(jp.main, 0)
    # the page after an image is an unmapped guard page
    jp = simple(["lea rax, [rip]", "add rax, 0x1000", "mov rax, qword ptr [rax]"])
    with pytest.raises(MachineError, match="UC_ERR_READ_UNMAPPED"):
        Machine(jp).run(jp.main, 0)


def test_stack_overflow_hits_guard_page():
    funcs = [("main", FRAME, ["call {rec}"] + LEAVE), ("rec", FRAME, ["call {rec}"] + LEAVE)]
    jp = program("deep", funcs)
    with pytest.raises(MachineError, match=r"prog 'deep': fault in subprog 'rec'.*stack guard page"):
        Machine(jp).run(jp.main, 0)


def test_endless_loop_exhausts_budget_without_hanging():
    jp = simple(["mov rax, 1", "add rax, 1", "jmp {L1}"])
    t0 = time.perf_counter()
    with pytest.raises(MachineError) as exc:
        Machine(jp, budget=200_000).run(jp.main, 0)
    assert time.perf_counter() - t0 < 5
    msg = str(exc.value)
    assert msg.startswith("prog 'demo': instruction budget of 200000 exhausted in subprog 'main' at insn ")
    assert int(msg.rsplit(" ", 1)[1]) in (1, 2)


def test_default_budget_stops_endless_loop():
    jp = simple(["jmp {L0}"])
    with pytest.raises(MachineError, match="budget of 10000000 exhausted"):
        Machine(jp).run(jp.main, 0)


def test_clobbered_callee_saved_register_is_reported():
    jp = simple(["mov rbx, 7", "mov r14, 9"])
    with pytest.raises(MachineError, match=r"callee-saved registers not restored: rbx=0x7 .*r14=0x9"):
        Machine(jp).run(jp.main, 0)
    jp = program("demo", [("main", [], ["pop rax", "push rax", "push rax", "ret"])])
    with pytest.raises(MachineError, match="rsp="):
        Machine(jp).run(jp.main, 0)


def test_image_overlapping_fixed_region_is_refused():
    jp = simple(["nop"])
    bad = JitImage(0, "main", "main", False, 0, b"\xc3", STACK_BASE, (0, 1), 0, (False,) * 4, False, False)
    with pytest.raises(MachineError, match="overlaps"):
        Machine(JitProgram(jp.verified, (bad,)))


def test_budget_must_be_positive():
    with pytest.raises(ValueError):
        Machine(simple(["nop"]), budget=0)
