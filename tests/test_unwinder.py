"""unwind/: kernel model, ledger, bpf_throw unwinder and runner on hand-built x86 images
(tests/unwind_harness.py builds them following the series' frame layout, §3.11)."""

from __future__ import annotations

import struct

import pytest

from jit.layout import HEAP_SIZE
from jit.machine import CALLEE_SAVED_CANARIES, MachineError
from tests.unwind_harness import (
    ALL,
    BOUNDARY_EPILOGUE,
    COOKIE,
    NODE,
    NONE,
    R15_CANARY,
    Fn,
    alloc,
    boundary_prologue,
    build,
    four_frames,
    heap,
    helpers,
    obj,
    poison,
    released,
)
from unwind.jit_kernel import kfunc_stub_addrs
from unwind.kernel.ledger import Ledger
from unwind.runner import default_ctx, run_jit_program
from unwind.unwinder import UnwindError, spilled_caller_reg_off
from verifier.errors import BpfUnwindError
from verifier.program import FdEntry, FdTab, FrameDesc, SpillType, Subprog, VerifiedProgram
from verifier.protos.kfuncs import KFUNCS_BY_NAME
from verifier.regtypes import SCALAR_VALUE, BaseType


def test_four_frame_example_releases_everything():
    res = run_jit_program(build(four_frames()))
    assert res.threw and res.cookie == COOKIE
    assert res.retval == COOKIE
    assert [f.subprog for f in res.frames] == ["tramp", "s2", "s1", "main"]
    tramp, s2, s1, main = res.frames
    A, B, C, E, F, G, H = (heap(k) for k in range(1, 8))
    assert tramp.saved_regs == (0, 0, 0, 0) and tramp.desc_pc is None and tramp.released == []
    assert s2.saved_regs == (E, 77, G, H)
    assert s1.saved_regs == (E, 77, C, R15_CANARY)  # R8 spilled by s2's prologue, two frames down
    assert main.saved_regs == (A, 0x1234, C, R15_CANARY)
    assert released(s2) == [("reg", 8, G, 6), ("reg", 9, H, 7)]
    assert released(s1) == [("stack", -8, F, 5), ("reg", 6, E, 4)]
    assert released(main) == [("stack", -8, B, 2), ("stack", -16, 0, None), ("stack", -24, 0, None),
                              ("reg", 6, A, 1), ("reg", 8, C, 3)]
    assert main.released[2].type == "?"
    assert main.released[0].type == "ptr_" and main.released[0].btf_name == "node"
    assert main.sp == main.bp - 24 - 40
    assert [f.desc_pc is not None for f in res.frames] == [False, True, True, True]
    led: Ledger = res.ledger
    assert led.summary() == {"allocated": 7, "released": 7, "released_by_drop": 0, "released_by_unwind": 7,
                             "leaked": 0, "double_freed": 0, "bad_freed": 0}
    assert res.released_count == 7
    assert res.counters["kfunc_calls.bpf_obj_new_impl"] == 7
    assert res.counters["kfunc_calls.bpf_throw"] == 1
    assert res.counters["emu_starts"] == 2
    assert led.objects[0].alloc_site == "subprog 'main' insn 2" and led.objects[0].alloc_pc == 2


def test_normal_return_without_throw_leaks_what_is_held():
    res = run_jit_program(build(four_frames(throw=False)))
    assert not res.threw and res.cookie is None and res.frames == []
    assert res.retval == 3
    assert res.counters["emu_starts"] == 1
    assert len(res.ledger.leaked()) == 7 and res.ledger.released() == []


def test_bpf_obj_drop_and_leak_in_ledger():
    body = [*alloc("rbx"), *alloc("r13"), "mov rdi, rbx", "call {obj_drop}", "mov rax, 5", *BOUNDARY_EPILOGUE]
    res = run_jit_program(build([Fn("main", "main", boundary_prologue(0), body, 0, ALL), *helpers()]))
    assert res.retval == 5 and not res.threw
    led = res.ledger
    assert [o.freed_by for o in led.objects] == ["bpf_obj_drop", None]
    assert led.objects[0].free_site == "subprog 'main' insn 9"
    assert [o.id for o in led.leaked()] == [2]
    assert led.summary()["released_by_drop"] == 1


def test_throw_from_main_through_trampoline():
    body = [*alloc("r15"), *alloc("qword ptr [rbp-8]"), "mov rdi, 7", "call {tramp}", *BOUNDARY_EPILOGUE]
    main = Fn("main", "main", boundary_prologue(8), body, 8, ALL,
              descs={body.index("call {tramp}"): ((None, None, None, obj(9)), [obj(-8)])})
    res = run_jit_program(build([main, *helpers()]))
    assert res.retval == 7 and [f.subprog for f in res.frames] == ["tramp", "main"]
    assert res.frames[1].saved_regs == (CALLEE_SAVED_CANARIES["rbx"], CALLEE_SAVED_CANARIES["r13"],
                                        CALLEE_SAVED_CANARIES["r14"], heap(1))
    assert released(res.frames[1]) == [("stack", -8, heap(2), 2), ("reg", 9, heap(1), 1)]
    assert res.ledger.leaked() == []


def test_missing_descriptor_is_an_error():
    fns = four_frames()
    s1 = fns[1]
    (k, entries), = s1.descs.items()
    s1.descs = {k - 1: entries}  # a table, but no descriptor for the real call site
    with pytest.raises(UnwindError) as exc:
        run_jit_program(build(fns))
    msg = str(exc.value)
    assert msg.startswith("prog 'demo': bpf_throw: no frame descriptor for subprog 's1' at return offset 0x")
    assert "\n" not in msg and isinstance(exc.value, BpfUnwindError)


def test_bpf_frame_of_an_image_without_descriptors_is_an_error():
    # The verifier gives every frame on a throw path a descriptor, even an empty one; a
    # non-hidden frame without one means verifier and runtime disagree (the series skipped
    # such frames silently, losing the saved-register chain).
    fns = four_frames()
    fns[1].descs = {}
    with pytest.raises(UnwindError, match="no frame descriptor for subprog 's1'"):
        run_jit_program(build(fns))


def test_same_object_twice_is_recorded_as_double_free():
    body = [*alloc("rbx"), "mov qword ptr [rbp-8], rbx", "mov rdi, 1", "call {tramp}", *BOUNDARY_EPILOGUE]
    main = Fn("main", "main", boundary_prologue(8), body, 8, ALL,
              descs={body.index("call {tramp}"): ((obj(6), None, None, None), [obj(-8)])})
    res = run_jit_program(build([main, *helpers()]))
    assert res.retval == 1
    assert res.ledger.double_freed == [heap(1)]
    assert res.ledger.double_free_records[0].by == "unwind"
    assert res.ledger.double_free_records[0].object_id == 1
    assert released(res.frames[1]) == [("stack", -8, heap(1), 1), ("reg", 6, heap(1), None)]


def test_scalar_and_poison_register_entries_are_skipped():
    body = ["mov rbx, 5", "mov rdi, 2", "call {tramp}", *BOUNDARY_EPILOGUE]
    scalar = FdEntry(SCALAR_VALUE, SpillType.STACK_INVALID, 6)
    main = Fn("main", "main", boundary_prologue(0), body, 0, ALL,
              descs={body.index("call {tramp}"): ((scalar, poison(7), None, None), [])})
    res = run_jit_program(build([main, *helpers()]))
    assert res.retval == 2 and res.frames[1].released == []


def test_entry_without_destructor_is_an_error():
    body = [*alloc("rbx"), "mov rdi, 2", "call {tramp}", *BOUNDARY_EPILOGUE]
    sock = FdEntry(int(BaseType.PTR_TO_SOCKET), SpillType.STACK_INVALID, 6)
    main = Fn("main", "main", boundary_prologue(0), body, 0, ALL,
              descs={body.index("call {tramp}"): ((sock, None, None, None), [])})
    with pytest.raises(UnwindError, match="no destructor for frame desc entry R6: sock"):
        run_jit_program(build([main, *helpers()]))


def test_broken_frame_chain_is_an_error():
    fns = four_frames()
    s2 = fns[2]
    k = s2.body.index("call {tramp}")
    s2.body.insert(k, "mov rbp, 0x10")
    s2.descs = {k + 1: s2.descs[k]}
    with pytest.raises(UnwindError, match="chain broken above subprog 'tramp': 0x[0-9a-f]+ -> 0x10"):
        run_jit_program(build(fns))


def test_return_address_outside_images_is_an_error():
    fns = four_frames()
    s2 = fns[2]
    k = s2.body.index("call {tramp}")
    s2.body.insert(k, "mov qword ptr [rbp+8], 0x1234")  # s2's return address into s1
    s2.descs = {k + 1: s2.descs[k]}
    with pytest.raises(UnwindError, match=r"return address 0x1234 \(frame 2\) is not in any image"):
        run_jit_program(build(fns))


def test_spilled_caller_reg_offsets():
    assert [spilled_caller_reg_off(ALL, i) for i in range(4)] == [24, 16, 8, 0]
    used = (True, False, True, False)
    assert spilled_caller_reg_off(used, 0) == 8 and spilled_caller_reg_off(used, 2) == 0
    assert [spilled_caller_reg_off((False, False, True, True), i) for i in (2, 3)] == [8, 0]


def test_runner_ctx_and_heap_exhaustion():
    body = ["mov eax, dword ptr [rdi]", "add eax, dword ptr [rdi+16]", *BOUNDARY_EPILOGUE]
    jp = build([Fn("main", "main", boundary_prologue(0), body, 0, ALL), *helpers()])
    assert run_jit_program(jp).retval == 74 + 8
    ctx = bytearray(default_ctx())
    struct.pack_into("<I", ctx, 0, 1000)
    assert run_jit_program(jp, bytes(ctx)).retval == 1008
    body = [f"mov rdi, {HEAP_SIZE + 1}", "mov rsi, 7", "call {obj_new}", *BOUNDARY_EPILOGUE]
    jp = build([Fn("main", "main", boundary_prologue(0), body, 0, ALL), *helpers()])
    res = run_jit_program(jp)
    assert res.retval == 0 and res.ledger.objects == []


def test_runner_refuses_foreign_stub_addresses():
    jp = build(four_frames(), stub_addrs={10001: 0x1234})
    with pytest.raises(MachineError, match="kfunc stubs"):
        run_jit_program(jp)


def test_kfunc_stub_addresses_follow_kfunc_slots():
    addrs = kfunc_stub_addrs()
    assert set(addrs) == {k.btf_id for k in KFUNCS_BY_NAME.values()}
    assert len(set(addrs.values())) == len(addrs)


def test_ledger_records():
    led = Ledger()
    a = led.alloc(0x100, 8, "node", 3, "subprog 'main' insn 3")
    b = led.alloc(0x108, 8, "node")
    assert led.free(0x100, "bpf_obj_drop") is a and a.freed_by == "bpf_obj_drop"
    assert led.free(0x100, "unwind") is None
    assert led.free(0x999, "unwind") is None
    assert led.double_freed == [0x100, 0x999]
    assert [r.object_id for r in led.double_free_records] == [1, None]
    assert led.leaked() == [b] and led.lookup(0x108) is b and led.lookup(0x100) is None
    # one double free (object 1 lived at 0x100), one bad free (nothing ever lived at 0x999)
    assert led.freed_twice == [0x100] and led.bad_freed == [0x999]
    assert led.summary()["double_freed"] == 1 and led.summary()["bad_freed"] == 1


def test_real_jit_output_unwinds():
    """jit.compile on a hand-built VerifiedProgram (no verifier): main -> s1 -> trampoline."""
    from jit.compile import jit_program
    from verifier.isa.insn import BPF_DW, call_kfunc, call_pseudo, exit_insn, mov64_imm, mov64_reg, stx_mem

    new, throw = KFUNCS_BY_NAME["bpf_obj_new_impl"].btf_id, KFUNCS_BY_NAME["bpf_throw"].btf_id
    alloc_insns = [mov64_imm(1, NODE.size), mov64_imm(2, NODE.type_id), call_kfunc(new)]
    insns = [
        *alloc_insns, mov64_reg(6, 0), *alloc_insns, stx_mem(BPF_DW, 10, 0, -8),  # 0-7
        call_pseudo(2), mov64_imm(0, 3), exit_insn(),  # 8-10: main calls s1 at 11
        *alloc_insns, mov64_reg(7, 0), mov64_imm(1, COOKIE), call_pseudo(4),  # 11-16: s1 calls tramp
        mov64_imm(0, 0), exit_insn(),  # 17-18
        mov64_reg(0, 1), exit_insn(),  # 19-20: exception callback returns the cookie
        mov64_imm(6, 0), mov64_imm(7, 0), mov64_imm(8, 0), mov64_imm(9, 0), call_kfunc(throw),  # 21-25
    ]
    subprogs = [
        Subprog("main", 0, 11, "main", 8, (True, False, False, False)),
        Subprog("s1", 11, 19, "static", 0, (False, True, False, False)),
        Subprog("cb", 19, 21, "exception_cb", 0, NONE, True),
        Subprog("tramp", 21, 26, "throw_tramp", 0, ALL, True),
    ]
    fdtabs = [FdTab([FrameDesc(8, [obj(6), None, None, None], [obj(-8)])]),
              FdTab([FrameDesc(16, [None, obj(7), None, None], [])]), FdTab(), FdTab()]
    vp = VerifiedProgram("e2e", insns, subprogs, fdtabs, 2, 3, True, {NODE.name: NODE})
    res = run_jit_program(jit_program(vp, kfunc_stub_addrs()))
    assert res.retval == COOKIE and res.threw
    assert [f.subprog for f in res.frames] == ["tramp", "s1", "main"]
    assert [f.desc_pc for f in res.frames] == [None, 16, 8]
    c = CALLEE_SAVED_CANARIES
    assert res.frames[1].saved_regs == (heap(1), heap(3), c["r14"], c["r15"])
    assert res.frames[2].saved_regs == (heap(1), c["r13"], c["r14"], c["r15"])
    assert res.ledger.summary()["released_by_unwind"] == 3 and res.ledger.leaked() == []
