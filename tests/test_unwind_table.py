"""The unwind table (unwind/unwind_table.py) and the table-driven walk, checked against a
reference per-frame walk (the algorithm before the table) on real and corrupted stacks."""

from __future__ import annotations

import copy
import gc
import random
import struct
from dataclasses import replace

import pytest

from jit.image import JitProgram
from tests.unwind_harness import (
    build,
    four_frames,
    heap,
    obj,
)
from unwind import jit_kernel as kernel_mod
from unwind.cli import pipeline
from unwind.kernel.cleanup import check_stack_entry, cleanup_entry, reg_entry_needs_cleanup, throw_error
from unwind.kernel.ledger import Ledger
from unwind.result import UnwoundFrame
from unwind.runner import ProgramRunner, run_jit_program
from unwind.unwind_table import UnwindTable, table_for
from unwind.unwinder import Unwinder, UnwindError, spilled_caller_reg_off
from verifier.program import FdEntry, SpillType
from verifier.regtypes import MEM_ALLOC, PTR_TO_BTF_ID, BaseType

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
