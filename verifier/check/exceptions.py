"""The series' verifier-side exception analysis: throw reachability (patch 01), frame
descriptor generation with push/merge and every `frame_desc:` log line (patches 05 and 10),
reference release on throw and the leak check of an exceptional exit (patch 11).

Deviations from the posted v1 code (review findings and [note]s of the reference), each
marked `# deviation:` where it is implemented:
- the reachability walk is memoized (agreed in review of patch 01);
- STACK_ZERO slots are a proper known-zero spill: no entry, NOT_INIT poison if only part
  of the slot is zero (v1 used an uninitialised register);
- a spilled scalar that is not known zero yields a NOT_INIT poison entry (v1 skipped it, so
  it merged silently with pointers);
- entries of the same type but a different btf_id do not merge (v1 kept the first);
- every described reference is released, in caller frames too, so a resource held twice in
  caller frames gets one entry (v1: current frame only, possible double release);
- an exceptional exit from a nested frame still checks leaks: a reference found in no
  descriptor entry of any frame is "Unreleased reference" (v1 checked nothing there)."""

from __future__ import annotations

from verifier.check.cfg import is_throw
from verifier.check.env import Env
from verifier.check.state import (
    BPF_REG_SIZE,
    STACK_INVALID,
    STACK_MISC,
    STACK_SPILL,
    STACK_ZERO,
    RegState,
    StackSlot,
    VerifierState,
    not_init,
    release_reference,
)
from verifier.isa.insn import MAX_CALL_FRAMES, slot_count
from verifier.program import SPILL_TYPE_NAMES, FdEntry, FdTab, FrameDesc, SpillType
from verifier.regtypes import (
    MEM_ALLOC,
    NOT_INIT,
    PTR_MAYBE_NULL,
    PTR_TO_BTF_ID,
    SCALAR_VALUE,
    base_type,
    reg_type_str,
)

# The name `btf_get_name()` gives the program's own BTF (local struct types): it has none.
PROG_BTF_NAME = ""

MERGE_FAILED = "frame_desc: merge: failed to merge old and new frame desc entry"


# Patch 01 ---------------------------------------------------------------------------------


def mark_exception_reachable_subprogs(env: Env) -> None:
    """Mark every subprog on a static call path from main to a bpf_throw as
    is_throw_reachable. Iterative DFS with explicit return stacks (the shape of
    check_max_stack_depth_subprog), limited to MAX_CALL_FRAMES frames."""
    if not env.seen_throw_insn:
        return
    insns = env.insns
    # deviation: memoized per subprog (throw reachable, frames below it); v1 rescans a
    # subprog every time it is called, which is exponential in the call-graph depth.
    done: dict[int, tuple[bool, int]] = {}
    ret_insn = [0] * MAX_CALL_FRAMES
    ret_prog = [0] * MAX_CALL_FRAMES
    height = [0] * (MAX_CALL_FRAMES + 1)
    frame, idx, i = 0, 0, env.subprogs[0].start

    def mark(idx: int, frame: int) -> None:
        env.subprogs[idx].is_throw_reachable = True
        for c in range(frame):
            env.subprogs[ret_prog[c]].is_throw_reachable = True

    while True:
        end = env.subprog_end(idx)
        descended = False
        while i < end:
            insn = insns[i]
            if is_throw(insn):
                mark(idx, frame)
            elif insn.is_pseudo_call() or insn.is_pseudo_func():
                callee = env.find_subprog(i + insn.imm + 1)
                if callee is None:
                    env.reject(f"verifier bug. No program starts at insn {i + insn.imm + 1}", insn_idx=i)
                if callee in done:
                    reach, below = done[callee]
                    if frame + 1 + below >= MAX_CALL_FRAMES:
                        env.reject(f"the call stack of {MAX_CALL_FRAMES} frames is too deep !", insn_idx=i)
                    if reach:
                        mark(idx, frame)
                    height[frame] = max(height[frame], below + 1)
                else:
                    ret_insn[frame] = i + slot_count(insn)
                    ret_prog[frame] = idx
                    frame += 1
                    if frame >= MAX_CALL_FRAMES:
                        env.reject(f"the call stack of {frame} frames is too deep !", insn_idx=i)
                    idx, i, height[frame] = callee, env.subprogs[callee].start, 0
                    descended = True
                    break
            i += slot_count(insn)
        if descended:
            continue
        done[idx] = (env.subprogs[idx].is_throw_reachable, height[frame])
        if frame == 0:
            return
        frame -= 1
        height[frame] = max(height[frame], height[frame + 1] + 1)
        idx, i = ret_prog[frame], ret_insn[frame]


# Patch 05: frame descriptors -------------------------------------------------------------


def fde_text(e: FdEntry, pfx: str) -> str:
    """`print_frame_desc_reg_entry`."""
    kind, key = ("reg", "regno") if e.is_reg else ("stack", "off")
    spill = SPILL_TYPE_NAMES.get(e.spill_type, "???")
    head = f"frame_desc: {pfx}{kind} fde: {key}={e.off} spill_type={spill} "
    if e.btf_name:
        return head + f"type={'ptr_' if e.is_reg else ''}{e.btf_name} btf={PROG_BTF_NAME} btf_id={e.btf_id}"
    return head + f"type={reg_type_str(e.type)}"


def _merge(env: Env, old: FdEntry | None, new: FdEntry) -> FdEntry:
    """`merge_frame_desc`: the entry to keep at one location, or reject."""
    log = env.log.verbose
    if old is None:
        log("frame_desc: merge: creating new frame desc entry")
        return new
    if old == new:
        log("frame_desc: merge: no merging needed of new frame desc entry into old")
        return old
    ok = old.spill_type == new.spill_type and old.spill_type in (SpillType.STACK_SPILL,
                                                                   SpillType.STACK_INVALID)
    if ok and old.type == new.type:
        if old.btf_id == new.btf_id and old.ptr_off == new.ptr_off:
            return old
        # deviation: one location, two struct types (the dtor would be wrong) or two
        # offsets into the object (the release address would be wrong on one path)
        ok = False
    elif ok and SCALAR_VALUE not in (old.type, new.type):
        ok = False
    elif ok and new.type == SCALAR_VALUE:
        return old
    if not ok:
        env.reject(MERGE_FAILED, extra=(fde_text(old, "old "), fde_text(new, "new ")))
    log("frame_desc: merge: merging new frame desc entry into old")
    return new


def push_exception_frame_desc(env: Env, tab: FdTab, pc: int, entry: FdEntry) -> None:
    """`push_exception_frame_desc` + `find_and_merge_frame_desc`."""
    desc = tab.find(pc)
    if desc is None:
        env.log.verbose(f"frame_desc: find_and_merge: cannot find frame descriptor for pc={pc}, "
                        "creating new entry")
        desc = FrameDesc(pc)
        tab.descs.append(desc)
    if entry.is_reg:
        desc.regs[entry.off - 6] = _merge(env, desc.regs[entry.off - 6], entry)
        return
    for k, old in enumerate(desc.stack):
        if old.off == entry.off:
            desc.stack[k] = _merge(env, old, entry)
            return
    desc.stack.append(_merge(env, None, entry))


def cleanup_supported(entry: FdEntry) -> bool:
    """Patch 10's dry run of `bpf_cleanup_resource_reg(entry, NULL)`: in this model only
    bpf_obj_new objects have a destructor; NOT_INIT and SCALAR entries need none."""
    if entry.type in (NOT_INIT, SCALAR_VALUE):
        return True
    return base_type(entry.type) == PTR_TO_BTF_ID and bool(entry.type & MEM_ALLOC) and entry.btf_id > 0


def gen_reg_entry(env: Env, state: VerifierState, frameno: int, reg: RegState, off: int,
                  tab: FdTab, pc: int) -> None:
    """`gen_exception_frame_desc_reg_entry` for a register (off = regno) or a spill (off < 0)."""
    if reg.type == SCALAR_VALUE or (not reg.ref_obj_id and reg.type != NOT_INIT):
        return
    is_btf = base_type(reg.type) == PTR_TO_BTF_ID
    entry = FdEntry(
        type=reg.type & ~PTR_MAYBE_NULL,
        spill_type=SpillType.STACK_SPILL if off < 0 else SpillType.STACK_INVALID,
        off=off,
        btf_id=reg.btf_id if is_btf else 0,
        btf_name=reg.btf_name if is_btf else "",
        ptr_off=reg.off if reg.ref_obj_id else 0,
    )
    key = "off" if off < 0 else "regno"
    env.log.verbose(f"frame_desc: frame{frameno}: insn_idx={env.insn_idx} {key}={off} "
                    f"size={BPF_REG_SIZE} ref_obj_id={reg.ref_obj_id} type={reg_type_str(reg.type)}")
    if not cleanup_supported(entry):
        env.reject(f"frame_desc: frame{frameno}: failed to simulate cleanup for frame desc entry")
    if reg.ref_obj_id:
        # patch 11 releases current-frame references only; deviation: caller frames too, so
        # a second copy of the same resource in a caller frame gets no second entry.
        release_reference(state, reg.ref_obj_id)
    push_exception_frame_desc(env, tab, pc, entry)


def slot_reg(env: Env, slot: StackSlot, frameno: int, off: int) -> RegState | None:
    """The register a stack slot stands for in a descriptor, None for no entry."""
    stype = slot.slot_type[BPF_REG_SIZE - 1]
    if stype == STACK_SPILL:
        reg = slot.spilled_ptr
        if reg.type != SCALAR_VALUE:
            return reg
        # v1 skips every scalar spill. deviation: only a known zero (NULL) is skipped; any
        # other scalar is a NOT_INIT poison entry that no pointer can merge with.
        return None if reg.is_known_zero else not_init()
    if stype == STACK_ZERO:
        # deviation: a proper NULL (no entry) if all 8 bytes are zero, poison otherwise.
        return None if slot.all_bytes(STACK_ZERO) else not_init()
    if stype in (STACK_MISC, STACK_INVALID):
        return not_init()
    env.reject(f"verifier internal error: frame{frameno} stack off={off} slot_type={stype} "
               "missing handling for exception frame generation")


def gen_exception_frame_descs(env: Env, state: VerifierState, pc: int) -> None:
    """`gen_exception_frame_descs` at a throwing insn `pc` (a bpf_throw call, or the call of
    a throw-reachable global subprog on its exception path): one descriptor per frame, keyed
    by `pc` for the current frame and by the callsite for every caller frame."""
    for frameno in range(state.curframe, -1, -1):
        frame = state.frames[frameno]
        key = pc if frameno == state.curframe else state.frames[frameno + 1].callsite
        tab = env.fdtabs[frame.subprogno]
        env.log.verbose(f"frame_desc: frame{frameno}: Stack:")
        for spi in range(len(frame.stack)):
            off = -(BPF_REG_SIZE * spi + BPF_REG_SIZE)
            reg = slot_reg(env, frame.stack[spi], frameno, off)
            if reg is not None:
                gen_reg_entry(env, state, frameno, reg, off, tab, key)
        env.log.verbose(f"frame_desc: frame{frameno}: Registers:")
        for regno in range(6, 10):
            reg = frame.regs[regno]
            if reg.type == SCALAR_VALUE and not reg.is_known_zero:
                reg = not_init()  # a havoc scalar in R6-R9 is poison
            gen_reg_entry(env, state, frameno, reg, regno, tab, key)
        if tab.find(key) is None:
            # deviation: the series creates a descriptor only when it pushes an entry, so a
            # frame holding nothing (R6-R9 known zero, no stack) has none and the runtime
            # skips it silently. An empty descriptor lets the unwinder treat a missing one
            # as the error it is.
            env.log.verbose(f"frame_desc: frame{frameno}: no entries, empty frame descriptor for pc={key}")
            tab.descs.append(FrameDesc(key))


def check_reference_leak(env: Env, state: VerifierState, exception_exit: bool) -> None:
    """Patch 11's `check_reference_leak`: nothing to check on a normal exit of a nested
    frame (references go back to the caller); otherwise every remaining reference leaks.

    deviation: an exceptional exit is checked in nested frames too. After descriptor
    generation released every reference described in any frame, what remains is held by
    no entry (only in R0-R5, or lost), so the unwinder could never release it."""
    if not exception_exit and state.curframe > 0:
        return
    if not state.refs:
        return
    lines = [f"Unreleased reference id={r.id} alloc_insn={r.insn_idx}" for r in state.refs]
    for line in lines[:-1]:
        env.log.error(line)
    env.reject(lines[-1])


def throw_exit(env: Env, state: VerifierState, pc: int) -> None:
    """The exceptional exit at a throwing insn: descriptors, then the leak check."""
    gen_exception_frame_descs(env, state, pc)
    check_reference_leak(env, state, exception_exit=True)
