"""unwind/: kernel model, ledger, bpf_throw unwinder and runner on hand-built x86 images.

The images follow the x86 frame layout of the series (§3.11): main is the exception
boundary (push rbp; mov rbp,rsp; sub rsp,N; push r12, rbx, r13, r14, r15), subprogs push
only their callee_regs_used, the trampoline pushes all four and calls the bpf_throw stub,
the exception callback takes rsp/rbp from rsi/rdx. Each body line counts as one BPF insn;
descriptors are keyed by the return offset just past their call line."""

from __future__ import annotations

import copy
import gc
import random
import struct
from dataclasses import dataclass, field, replace

import pytest
from keystone import KS_ARCH_X86, KS_MODE_64, Ks

from jit.image import JitImage, JitProgram
from jit.layout import CODE_BASE, HEAP_BASE, HEAP_SIZE, PAGE
from jit.machine import CALLEE_SAVED_CANARIES, MachineError
from unwind import kernel as kernel_mod
from unwind import pipeline
from unwind.cleanup import check_stack_entry, cleanup_entry, reg_entry_needs_cleanup, throw_error
from unwind.kernel import kfunc_stub_addrs
from unwind.ledger import Ledger
from unwind.result import UnwoundFrame
from unwind.runner import ProgramRunner, default_ctx, run_jit_program
from unwind.unwind_table import UnwindTable, table_for
from unwind.unwinder import Unwinder, UnwindError, spilled_caller_reg_off
from verifier.errors import BpfUnwindError
from verifier.kfuncs import KFUNCS_BY_NAME
from verifier.program import FdEntry, FdTab, FrameDesc, SpillType, StructType, Subprog, VerifiedProgram
from verifier.regtypes import MEM_ALLOC, NOT_INIT, PTR_TO_BTF_ID, SCALAR_VALUE, BaseType

KS = Ks(KS_ARCH_X86, KS_MODE_64)
STUBS = kfunc_stub_addrs()
SYMS = {name: STUBS[KFUNCS_BY_NAME[k].btf_id] for name, k in
        (("obj_new", "bpf_obj_new_impl"), ("obj_drop", "bpf_obj_drop_impl"), ("throw", "bpf_throw"))}
NODE = StructType("node", 24, 7)
COOKIE = 0xEB9F
R15_CANARY = CALLEE_SAVED_CANARIES["r15"]
ALL = (True, True, True, True)
NONE = (False, False, False, False)

Regs = tuple[FdEntry | None, FdEntry | None, FdEntry | None, FdEntry | None]


def obj(off: int) -> FdEntry:
    spill = SpillType.STACK_SPILL if off < 0 else SpillType.STACK_INVALID
    return FdEntry(PTR_TO_BTF_ID | MEM_ALLOC, spill, off, NODE.type_id, NODE.name)


def poison(off: int) -> FdEntry:
    return FdEntry(NOT_INIT, SpillType.STACK_INVALID, off)


def alloc(dest: str) -> list[str]:
    return [f"mov rdi, {NODE.size}", f"mov rsi, {NODE.type_id}", "call {obj_new}", f"mov {dest}, rax"]


def boundary_prologue(depth: int) -> list[str]:
    return ["push rbp", "mov rbp, rsp", f"sub rsp, {depth}", "push r12", "push rbx", "push r13", "push r14",
            "push r15"]


BOUNDARY_EPILOGUE = ["pop r15", "pop r14", "pop r13", "pop rbx", "pop r12", "leave", "ret"]
TRAMP_BODY = ["xor ebx, ebx", "xor r13d, r13d", "xor r14d, r14d", "xor r15d, r15d", "call {throw}"]
CB_PROLOGUE = ["mov rsp, rsi", "mov rbp, rdx", "pop r15", "pop r14", "pop r13", "pop rbx", "pop r12",
               "mov rsp, rbp"]
CB_BODY = ["mov rax, rdi", "leave", "ret"]

_REG_NAMES = ("rbx", "r13", "r14", "r15")


def subprog_frame(used: tuple[bool, bool, bool, bool], depth: int = 0) -> tuple[list[str], list[str]]:
    regs = [r for r, u in zip(_REG_NAMES, used, strict=True) if u]
    pro = ["push rbp", "mov rbp, rsp"] + ([f"sub rsp, {depth}"] if depth else [])
    pro += [f"push {r}" for r in regs]
    epi = [f"pop {r}" for r in reversed(regs)] + ["leave", "ret"]
    return pro, epi


@dataclass
class Fn:
    name: str
    kind: str
    prologue: list[str]
    body: list[str]
    stack_depth: int = 0
    used: tuple[bool, bool, bool, bool] = NONE
    hidden: bool = False
    descs: dict[int, tuple[Regs, list[FdEntry]]] = field(default_factory=dict)  # body line -> entries


def assemble(lines: list[str], address: int, syms: dict[str, int]) -> tuple[bytes, list[int]]:
    code = b""
    ends: list[int] = []
    for line in lines:
        labels = {f"L{k}": address + (ends[k - 1] if k else 0) for k in range(len(ends) + 1)}
        enc, _ = KS.asm(line.format(**syms, **labels), address + len(code))
        code += bytes(enc or b"")
        ends.append(len(code))
    return code, ends


def build(fns: list[Fn], name: str = "demo", stub_addrs: dict[int, int] | None = None) -> JitProgram:
    syms = dict(SYMS)
    syms.update({f.name: CODE_BASE + 2 * PAGE * i for i, f in enumerate(fns)})
    images, subprogs, fdtabs, start = [], [], [], 0
    for i, f in enumerate(fns):
        address = syms[f.name]
        pcode, _ = assemble(f.prologue, address, syms)
        bcode, ends = assemble(f.body, address + len(pcode), syms)
        addrs = (len(pcode), *(len(pcode) + e for e in ends))
        descs = {k: FrameDesc(start + k, list(regs), list(stack)) for k, (regs, stack) in f.descs.items()}
        offs = sorted((addrs[k + 1], d) for k, d in descs.items())
        images.append(JitImage(
            i, f.name, f.kind, f.hidden, start, pcode + bcode, address, addrs, f.stack_depth, f.used,
            f.kind == "main", f.kind == "exception_cb", tuple(o for o, _ in offs), tuple(d for _, d in offs),
        ))
        subprogs.append(Subprog(f.name, start, start + len(f.body), f.kind, f.stack_depth, f.used, f.hidden))
        fdtabs.append(FdTab(list(descs.values())))
        start += len(f.body)
    kinds = [f.kind for f in fns]
    cb = kinds.index("exception_cb") if "exception_cb" in kinds else None
    tramp = kinds.index("throw_tramp") if "throw_tramp" in kinds else None
    vp = VerifiedProgram(name, [], subprogs, fdtabs, cb, tramp, True, {NODE.name: NODE})
    return JitProgram(vp, tuple(images), STUBS if stub_addrs is None else stub_addrs)


def helpers() -> list[Fn]:
    return [
        Fn("cb", "exception_cb", CB_PROLOGUE, CB_BODY, hidden=True),
        Fn("tramp", "throw_tramp", subprog_frame(ALL)[0], TRAMP_BODY, used=ALL, hidden=True),
    ]


def four_frames(throw: bool = True) -> list[Fn]:
    """The series' example: main -> s1 -> s2 -> tramp; s1 uses R6,R7, s2 uses R8,R9.

    Allocation order (ledger ids): A=1 main R6, B=2 main fp-8, C=3 main R8, E=4 s1 R6,
    F=5 s1 fp-8, G=6 s2 R8, H=7 s2 R9."""
    main_body = [*alloc("rbx"), *alloc("qword ptr [rbp-8]"), "mov qword ptr [rbp-16], 0",
                 "mov r13, 0x1234", *alloc("r14"), "call {s1}", "mov rax, 3", *BOUNDARY_EPILOGUE]
    main = Fn("main", "main", boundary_prologue(24), main_body, stack_depth=24, used=ALL,
              descs={main_body.index("call {s1}"): ((obj(6), None, obj(8), poison(9)),
                                                     [obj(-8), obj(-16), poison(-24)])})
    pro, epi = subprog_frame((True, True, False, False), 8)
    s1_body = [*alloc("rbx"), *alloc("qword ptr [rbp-8]"), "mov r13, 77", "call {s2}", *epi]
    s1 = Fn("s1", "static", pro, s1_body, 8, (True, True, False, False),
            descs={s1_body.index("call {s2}"): ((obj(6), None, None, None), [obj(-8)])})
    pro, epi = subprog_frame((False, False, True, True))
    throw_call = ["mov rdi, 0xeb9f", "call {tramp}"] if throw else ["nop", "nop"]
    s2_body = [*alloc("r14"), *alloc("r15"), *throw_call, *epi]
    s2 = Fn("s2", "static", pro, s2_body, 0, (False, False, True, True),
            descs={len(s2_body) - len(epi) - 1: ((None, None, obj(8), obj(9)), [])})
    return [main, s1, s2, *helpers()]


def heap(k: int) -> int:
    """Address of the k-th (1-based) 24-byte object of the bump allocator."""
    return HEAP_BASE + 24 * (k - 1)


def released(frame: object) -> list[tuple[str, int, int, int | None]]:
    return [(r.where, r.off, r.value, r.resource_id) for r in frame.released]


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
                             "leaked": 0, "double_freed": 0}
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
    assert led.summary()["double_freed"] == 2


def test_real_jit_output_unwinds():
    """jit.compile on a hand-built VerifiedProgram (no verifier): main -> s1 -> trampoline."""
    from jit.compile import jit_program
    from verifier.insn import BPF_DW, call_kfunc, call_pseudo, exit_insn, mov64_imm, mov64_reg, stx_mem

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


# -- the unwind table, and the table-driven walk against the per-frame slow path -----------


def reference_walk(jp: JitProgram, ledger: Ledger, rsp: int, rbp: int, view: bytes,
                   frames: list[UnwoundFrame]) -> tuple[int, int]:
    """The unwinder as it was before unwind tables: image_at + find_desc + per-entry
    dispatch for every frame, one checked read per word. The table walk must match it."""
    prog, main, lo, hi = jp.verified.name, jp.main, rsp, rsp + len(view)

    def u64(a: int, what: str) -> int:
        if not lo <= a <= hi - 8:
            raise throw_error(prog, f"{what} at {a:#x} is outside the live stack [{lo:#x}, {hi:#x})")
        return struct.unpack_from("<Q", view, a - lo)[0]

    if rsp % 8:
        raise throw_error(prog, f"misaligned stack pointer {rsp:#x}")
    saved = [0, 0, 0, 0]
    ip, sp, bp = u64(rsp, "return address"), rsp + 8, rbp
    while True:
        image = jp.image_at(ip - 1)
        if image is None:
            raise throw_error(prog, f"return address {ip:#x} (frame {len(frames)}) is not in any image")
        if bp % 8 or not sp <= bp <= hi - 16:
            raise throw_error(prog, f"bad frame pointer {bp:#x} for sp {sp:#x} in subprog '{image.name}'")
        if image is main and not main.exception_boundary:
            raise throw_error(prog, f"main subprog '{main.name}' is not an exception boundary")
        off = ip - image.address
        frame = UnwoundFrame(image.name, image.index, image.kind, ip, sp, bp, off, None, [], tuple(saved))
        frames.append(frame)
        if not image.hidden:
            desc = image.find_desc(off)
            if desc is None:
                raise throw_error(prog, f"no frame descriptor for subprog '{image.name}' at return offset "
                                        f"{off:#x} (insn {image.insn_at(off - 1)})")
            frame.desc_pc = desc.pc
            site = f"subprog '{image.name}' pc {desc.pc}"
            for e in desc.stack:
                check_stack_entry(prog, site, e)
                value = u64(bp + e.off, f"stack slot fp{e.off:+d} of '{image.name}'")
                frame.released.append(cleanup_entry(ledger, prog, site, e, "stack", value))
            for i, e in enumerate(desc.regs):
                if reg_entry_needs_cleanup(e):
                    frame.released.append(cleanup_entry(ledger, prog, site, e, "reg", saved[i]))
                    saved[i] = 0
        if image is main:
            break
        used = image.callee_regs_used
        for i in range(4):
            if used[i]:
                saved[i] = u64(sp + spilled_caller_reg_off(used, i), f"saved R{6 + i}")
        older = u64(bp, "saved rbp")
        if older <= bp or older % 8:
            raise throw_error(prog, f"frame pointer chain broken above subprog '{image.name}': "
                                    f"{bp:#x} -> {older:#x}")
        ip, sp, bp = u64(bp + 8, "return address"), bp + 16, older
    if sp != bp - main.stack_depth - 40:
        raise throw_error(prog, f"main frame sp {sp:#x} != bp {bp:#x} - stack_depth {main.stack_depth} - 40")
    return sp, bp


def ledger_state(led: Ledger) -> tuple[object, ...]:
    return ([(o.id, o.freed_by, o.free_site) for o in led.objects], led.double_freed, led.double_free_records)


def outcome(jp: JitProgram, ledger: Ledger, rsp: int, rbp: int, data: bytes, fast: bool) -> tuple:
    """What one walk does: (sp, bp) or the error text, the trace so far, the ledger after."""
    led, frames = copy.deepcopy(ledger), []
    try:
        if fast:
            uw = Unwinder(jp, led)
            frames = uw.frames
            end: object = uw.walk(rsp, rbp, memoryview(bytearray(data)))
        else:
            end = reference_walk(jp, led, rsp, rbp, data, frames)
    except UnwindError as err:
        end = str(err)
    return end, frames, ledger_state(led)


def capture_throw(jp: JitProgram, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """rsp, rbp, the stack bytes and the ledger at the bpf_throw stub of one run of `jp`."""
    seen: dict[str, object] = {}
    real = kernel_mod.bpf_throw

    def spy(machine, jp_, ledger, cookie, table=None):
        rsp = machine.reg("rsp")
        seen.update(rsp=rsp, rbp=machine.reg("rbp"), data=bytes(machine.read_stack(rsp)),
                    ledger=copy.deepcopy(ledger))
        return real(machine, jp_, ledger, cookie, table)

    with monkeypatch.context() as mp:
        mp.setattr(kernel_mod, "bpf_throw", spy)
        assert run_jit_program(jp).threw
    return seen


def four_frames_program() -> JitProgram:
    return build(four_frames())


def demo_program() -> JitProgram:
    return pipeline.build_text(pipeline.demo_source(), "demo.s", log_level=0).jitted


def odd_descs(far: int = 0, dynptr: bool = False, unaligned: bool = True) -> JitProgram:
    """four_frames with a NULL entry without destructor in main, R8 of main also listed by
    s1 (which does not push R8: released there, then seen as NULL by main), and on request
    an unaligned slot (main's entries then all take the checked path), a slot at fp+far of
    main and an unsupported dynptr slot in s1."""
    fns = four_frames()
    (k, (regs, stack)), = fns[0].descs.items()
    sock = FdEntry(int(BaseType.PTR_TO_SOCKET), SpillType.STACK_SPILL, -16)
    odd = [obj(-12)] if unaligned else []
    fns[0].descs = {k: (regs, [*stack[:1], *odd, sock, *stack[2:], *([obj(far)] if far else [])])}
    (k, (regs, stack)), = fns[1].descs.items()
    dyn = FdEntry(PTR_TO_BTF_ID | MEM_ALLOC, SpillType.STACK_DYNPTR, -8)
    fns[1].descs = {k: ((regs[0], regs[1], obj(8), regs[3]), [*stack, *([dyn] if dynptr else [])])}
    return build(fns)


@pytest.mark.parametrize("make", [four_frames_program, demo_program])
def test_unwind_table_has_the_slow_paths_plan_for_every_descriptor(make):
    jp = make()
    table = UnwindTable(jp)
    ndescs = 0
    for image in jp.images:
        for off, desc in zip(image.fd_offsets, image.fd_descs, strict=True):
            ndescs += 1
            ip = image.address + off
            plan = table.plans[ip]  # every descriptor, by its absolute return address
            assert jp.image_at(ip - 1) is image and plan.image is image and plan.ret_offset == off
            assert plan.desc_pc == desc.pc == image.find_desc(off).pc and not image.hidden
            assert plan.site == f"subprog '{image.name}' pc {desc.pc}" and plan.missing is None
            assert [st[5] for st in plan.stack] == desc.stack
            assert [(st[0], st[5]) for st in plan.regs] == [
                (i, e) for i, e in enumerate(desc.regs) if reg_entry_needs_cleanup(e)]
            used = image.callee_regs_used
            saves = [(i, spilled_caller_reg_off(used, i)) for i in range(4) if used[i]]
            assert [(i, 8 * w) for i, w in plan.saves] == ([] if image is jp.main else saves)
    assert sum(1 for p in table.plans.values() if p.desc_pc is not None) == ndescs > 0
    for ip, plan in table.plans.items():
        assert jp.image_at(ip - 1) is plan.image
        assert plan.image.hidden == (plan.desc_pc is None)
        assert UnwindTable(jp).resolve(ip) == plan  # the slow path builds the same plan


def test_unwind_table_slow_path_for_unknown_addresses():
    jp = build(four_frames())
    table = UnwindTable(jp)
    assert table.resolve(0x1234) is None
    s1 = jp.images[1]
    miss = table.resolve(s1.address + s1.fd_offsets[0] - 1)
    assert miss.missing.startswith("no frame descriptor for subprog 's1' at return offset")
    assert s1.address + s1.fd_offsets[0] - 1 not in table.plans  # errors are not cached
    tramp = next(i for i in jp.images if i.kind == "throw_tramp")
    ip = tramp.address + tramp.addrs[-1] - 1  # inside an insn: not precomputed, then cached
    assert ip not in table.plans and table.resolve(ip) is table.plans[ip]


def test_table_for_is_one_table_per_live_program():
    jp, other = build(four_frames()), build(four_frames())
    assert table_for(jp) is table_for(jp) is not table_for(other)
    runner = ProgramRunner(jp)
    assert runner.kernel.unwind_table is table_for(jp)
    from unwind import unwind_table
    key = id(other)
    del other
    gc.collect()
    assert key not in unwind_table._tables  # a cached table does not keep its program alive


@pytest.mark.parametrize("make", [four_frames_program, demo_program, odd_descs])
def test_table_walk_matches_the_slow_walk_on_corrupted_stacks(make, monkeypatch):
    jp = make()
    seen = capture_throw(four_frames_program() if make is odd_descs else jp, monkeypatch)  # same code
    rsp, rbp, data, led = seen["rsp"], seen["rbp"], seen["data"], seen["ledger"]
    assert outcome(jp, led, rsp, rbp, data, True) == outcome(jp, led, rsp, rbp, data, False)
    rng = random.Random(1234)
    nwords = (rbp - rsp) // 8 + 24  # the frames and a little above
    keys = list(table_for(jp).plans)
    results = set()
    for _ in range(400):
        buf = bytearray(data)
        r_sp, r_bp = rsp, rbp
        for _ in range(rng.choice((1, 1, 2))):
            k = rng.randrange(nwords)
            pick = rng.randrange(8)
            word = struct.unpack_from("<Q", buf, 8 * k)[0]
            value = [0, word + 8, word - 8, rsp + 8 * rng.randrange(nwords), rng.choice(keys),
                     heap(rng.randrange(1, 8)), rng.getrandbits(64), word + 1][pick]
            struct.pack_into("<Q", buf, 8 * k, value % 2**64)
        if rng.random() < 0.1:
            r_bp += rng.choice((-16, -8, 1, 8, 16))
        if rng.random() < 0.05:
            r_sp, buf = r_sp + 8, buf[8:]
        if rng.random() < 0.05:
            buf = buf[: rng.randrange(len(buf))]
        fast = outcome(jp, led, r_sp, r_bp, bytes(buf), True)
        assert fast == outcome(jp, led, r_sp, r_bp, bytes(buf), False)
        results.add("ok" if isinstance(fast[0], tuple) else " ".join(str(fast[0]).split()[3:5]))
    assert len(results) >= 5, results  # the corruptions reach several different checks
    for n in range(len(data) + 1):  # every stack end: each bound check at its edge
        assert outcome(jp, led, rsp, rbp, data[:n], True) == outcome(jp, led, rsp, rbp, data[:n], False)


def test_walk_error_messages(monkeypatch):
    jp = build(four_frames())
    seen = capture_throw(jp, monkeypatch)
    rsp, rbp, data, led = seen["rsp"], seen["rbp"], seen["data"], seen["ledger"]

    def walk_error(jp_: JitProgram, r_sp: int = rsp, r_bp: int = rbp, buf: bytes = data) -> str:
        end = outcome(jp_, led, r_sp, r_bp, buf, True)[0]
        assert isinstance(end, str) and end == outcome(jp_, led, r_sp, r_bp, buf, False)[0]
        return end

    assert "misaligned stack pointer" in walk_error(jp, r_sp=rsp + 4)
    assert "bad frame pointer" in walk_error(jp, r_bp=rbp + 4)
    assert "return address" in walk_error(jp, buf=b"") and "outside the live stack" in walk_error(jp, buf=b"")
    not_boundary = replace(jp, images=(replace(jp.main, exception_boundary=False), *jp.images[1:]))
    assert "main subprog 'main' is not an exception boundary" in walk_error(not_boundary)
    deeper = replace(jp, images=(replace(jp.main, stack_depth=32), *jp.images[1:]))
    assert "main frame sp 0x" in walk_error(deeper)
    main_bp = outcome(jp, led, rsp, rbp, data, True)[1][-1].bp
    below, above = rsp - main_bp, rsp + len(data) - main_bp  # main's slots must lie in [below, above)
    for off, unaligned in [(o, u) for o in (-4096, below - 8, above, 4096) for u in (False, True)] + [
            (above - 4, True)]:
        far = walk_error(odd_descs(far=off, unaligned=unaligned))
        assert f"stack slot fp{off:+d} of 'main' at 0x" in far and "is outside the live stack" in far
    for off, unaligned in [(below, False), (below, True), (above - 8, False), (above - 8, True)]:
        jp_edge = odd_descs(far=off, unaligned=unaligned)  # the edges themselves are inside
        assert outcome(jp_edge, led, rsp, rbp, data, True)[0] == (main_bp - 64, main_bp)
    for n in range(64):  # frame 0 with bp = sp (its saves reach above bp) on a short stack
        for r_bp in (rsp + 8, rsp + 16):
            fast = outcome(jp, led, rsp, r_bp, data[:n], True)
            assert fast == outcome(jp, led, rsp, r_bp, data[:n], False)
    assert "saved R6 at" in outcome(jp, led, rsp, rsp + 8, data[:32], True)[0]
    unsupported = walk_error(odd_descs(far=-4096, dynptr=True))  # s1 comes before main
    assert unsupported.endswith("subprog 's1' pc 32: unsupported frame desc entry fp-8: ptr_ (STACK_DYNPTR)")
