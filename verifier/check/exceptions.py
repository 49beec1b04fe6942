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
- every path describes every location (object, NULL or NOT_INIT poison); a non-referenced
  pointer is poison and a slot beyond a path's stack depth is NOT_INIT on that path, so
  neither merges with an object (v1 gave them no entry: the object entry of another path
  won, and the unwinder freed the ctx or a stale slot);
- entries of the same type but a different btf_id do not merge (v1 kept the first);
- every described reference is released, in caller frames too, so a resource held twice in
  caller frames gets one entry (v1: current frame only, possible double release);
- an exceptional exit from a nested frame still checks leaks: a reference found in no
  descriptor entry of any frame is "Unreleased reference" (v1 checked nothing there)."""

from __future__ import annotations

from verifier.check.cfg import is_throw
from verifier.check.env import Env
from verifier.check.precision import mark_throw_precise
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
    scalar,
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


def push_exception_frame_desc(env: Env, tab: FdTab, pc: int, entry: FdEntry,
                              absent: FdEntry | None = None) -> None:
    """`push_exception_frame_desc` + `find_and_merge_frame_desc`. `absent` is what an
    existing descriptor stands for at a location it has no entry for (None: nothing, as in
    the series; see `merge_frame_entries` for why a path's descriptor needs a poison here)."""
    desc = tab.find(pc)
    if desc is None:
        env.log.verbose(f"frame_desc: find_and_merge: cannot find frame descriptor for pc={pc}, "
                        "creating new entry")
        desc = FrameDesc(pc)
        tab.descs.append(desc)
    if entry.is_reg:
        old = desc.regs[entry.off - 6]
        desc.regs[entry.off - 6] = _merge(env, old if old is not None else absent, entry)
        return
    for k, old in enumerate(desc.stack):
        if old.off == entry.off:
            desc.stack[k] = _merge(env, old, entry)
            return
    desc.stack.append(_merge(env, absent, entry))


def poison_entry(off: int) -> FdEntry:
    """The NOT_INIT entry of a location whose content is unknown: it merges with NULL and
    with itself, never with a pointer."""
    return FdEntry(NOT_INIT, SpillType.STACK_SPILL if off < 0 else SpillType.STACK_INVALID, off)


def poison_absent(env: Env, desc: FrameDesc, frameno: int, seen: set[int]) -> None:
    """After a path pushed its entries into an existing descriptor: every stack entry the
    path has no entry for (beyond its stack depth) merges with NOT_INIT (see
    `gen_exception_frame_descs`)."""
    for k, old in enumerate(desc.stack):
        if old.off not in seen:
            env.log.verbose(f"frame_desc: frame{frameno}: insn_idx={env.insn_idx} off={old.off} "
                            "beyond the stack depth of this path: NOT_INIT")
            desc.stack[k] = _merge(env, old, poison_entry(old.off))


def cleanup_supported(entry: FdEntry) -> bool:
    """Patch 10's dry run of `bpf_cleanup_resource_reg(entry, NULL)`: in this model only
    bpf_obj_new objects have a destructor; NOT_INIT and SCALAR entries need none."""
    if entry.type in (NOT_INIT, SCALAR_VALUE):
        return True
    return base_type(entry.type) == PTR_TO_BTF_ID and bool(entry.type & MEM_ALLOC) and entry.btf_id > 0


def null_entry(off: int) -> FdEntry:
    """The entry of a location provably NULL (a known-zero scalar, an all-zero slot): the
    series' intent for NULL, which any pointer entry upgrades and which releases nothing."""
    return FdEntry(SCALAR_VALUE, SpillType.STACK_SPILL if off < 0 else SpillType.STACK_INVALID, off)


def gen_reg_entry(env: Env, state: VerifierState, frameno: int, reg: RegState, off: int) -> FdEntry:
    """`gen_exception_frame_desc_reg_entry` for a register (off = regno) or a spill (off < 0).

    deviation: every location gets an entry. The series skips scalars (so NULL "merges" by
    absence) and non-referenced pointers, which then merge silently with an object entry of
    another path (the unwinder frees the ctx, a stack address, a stale pointer). Here a
    known zero is a NULL entry, a referenced pointer an object entry, anything else a
    NOT_INIT poison entry."""
    if reg.is_known_zero:
        entry = null_entry(off)
    elif reg.ref_obj_id and reg.is_pointer:
        is_btf = base_type(reg.type) == PTR_TO_BTF_ID
        entry = FdEntry(
            type=reg.type & ~PTR_MAYBE_NULL,
            spill_type=SpillType.STACK_SPILL if off < 0 else SpillType.STACK_INVALID,
            off=off,
            btf_id=reg.btf_id if is_btf else 0,
            btf_name=reg.btf_name if is_btf else "",
            ptr_off=reg.off,
        )
    else:
        reg, entry = not_init(), poison_entry(off)
    key = "off" if off < 0 else "regno"
    env.log.verbose(f"frame_desc: frame{frameno}: insn_idx={env.insn_idx} {key}={off} "
                    f"size={BPF_REG_SIZE} ref_obj_id={reg.ref_obj_id} type={reg_type_str(reg.type)}")
    if not cleanup_supported(entry):
        env.reject(f"frame_desc: frame{frameno}: failed to simulate cleanup for frame desc entry")
    if reg.ref_obj_id:
        # patch 11 releases current-frame references only; deviation: caller frames too, so
        # a second copy of the same resource in a caller frame gets no second entry (it is
        # an unknown scalar now: a poison entry).
        release_reference(state, reg.ref_obj_id)
    return entry


def slot_reg(env: Env, slot: StackSlot, frameno: int, off: int) -> RegState:
    """The register a stack slot stands for in a descriptor."""
    stype = slot.slot_type[BPF_REG_SIZE - 1]
    if stype == STACK_SPILL:
        # v1 skips every scalar spill. deviation: a known zero is NULL, any other scalar is
        # a NOT_INIT poison entry that no pointer can merge with (gen_reg_entry). A spill
        # narrower than 8 bytes is NULL only if the other bytes are known zeroes.
        rest = [t for t in slot.slot_type if t != STACK_SPILL]
        if rest and not (slot.spilled_ptr.is_known_zero and all(t == STACK_ZERO for t in rest)):
            return not_init()
        return slot.spilled_ptr
    if stype == STACK_ZERO:
        # deviation: a proper NULL if all 8 bytes are zero, poison otherwise.
        return scalar(0) if slot.all_bytes(STACK_ZERO) else not_init()
    if stype in (STACK_MISC, STACK_INVALID):
        return not_init()
    env.reject(f"verifier internal error: frame{frameno} stack off={off} slot_type={stype} "
               "missing handling for exception frame generation")


def gen_exception_frame_descs(env: Env, state: VerifierState, pc: int) -> None:
    """`gen_exception_frame_descs` at a throwing insn `pc` (a bpf_throw call, or the call of
    a throw-reachable global subprog on its exception path): one descriptor per frame, keyed
    by `pc` for the current frame and by the callsite for every caller frame.

    deviation: the series merges entry by entry, so a location one path has no entry for (a
    slot beyond that path's stack depth, a register holding a non-referenced pointer such
    as the ctx) silently takes another path's object entry, and the unwinder frees whatever
    that path left there: a stale pointer of an earlier callee's frame, a canary, the ctx.
    Here every path describes every R6-R9 and every slot of its stack (object, NULL or
    NOT_INIT poison, `gen_reg_entry`), and a location a path has no entry for is NOT_INIT
    on that path: beyond its stack depth a slot holds whatever the memory held."""
    for frameno in range(state.curframe, -1, -1):
        frame = state.frames[frameno]
        key = state.frame_insn_idx(frameno, pc)
        tab = env.fdtabs[frame.subprogno]
        fresh = tab.find(key) is None
        slots = [-(BPF_REG_SIZE * spi + BPF_REG_SIZE) for spi in range(len(frame.stack))]
        env.log.verbose(f"frame_desc: frame{frameno}: Stack:")
        for off in [*slots, 6, 7, 8, 9]:
            if off == 6:
                env.log.verbose(f"frame_desc: frame{frameno}: Registers:")
            # read each location only now: describing an object released its other copies
            reg = slot_reg(env, frame.stack[-off // BPF_REG_SIZE - 1], frameno, off) if off < 0 \
                else frame.regs[off]
            entry = gen_reg_entry(env, state, frameno, reg, off)
            push_exception_frame_desc(env, tab, key, entry, None if fresh else poison_entry(off))
        desc = tab.find(key)
        assert desc is not None  # four register entries were pushed
        if not fresh:
            poison_absent(env, desc, frameno, set(slots))


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
    """The exceptional exit at a throwing insn: descriptors, then the leak check. What the
    descriptors describe is relied on (precision), so no state differing there is pruned."""
    mark_throw_precise(env, state)
    gen_exception_frame_descs(env, state, pc)
    check_reference_leak(env, state, exception_exit=True)
