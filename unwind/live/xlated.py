"""Our final instructions against the kernel's xlated ones, after a short list of
normalisations, each with its reason:

1. calls by name: a kfunc or helper call names its target (ours from the kfunc and helper
   tables, the kernel's from `__bpf_call_base + imm` in kallsyms); a bpf2bpf call names its
   callee by function index (the kernel's dump keeps the index in `imm`, ours is relative).
   Two helpers have no call left in the kernel's code, its x86-64 fixups inline them; each
   inline sequence stands for the call (docs/deviations.md): bpf_get_smp_processor_id is
   `r0 = &cpu_number; r0 = this_cpu_ptr(r0); r0 = *(u32 *)(r0 + 0)` (a per-CPU move, which
   only the kernel writes) and bpf_jiffies64 is `r0 = &jiffies ll; r0 = *(u64 *)(r0 + 0)`
   (an ld_imm64 of a plain number dereferenced, which no verified program does);
2. the series' throw trampoline: our calls to the hidden `__bpf_throw_tramp` are the
   kernel's `call bpf_throw`, and the trampoline's own insns (mainline has none) are dropped;
3. object types: the ld_imm64 of a `bpf_obj_new` local type id names the struct (its BTF id
   differs between our numbering and the BTF the kernel was given), and the `meta` argument
   of obj_new/obj_drop is a kernel pointer there and the type id here (docs/deviations.md);
4. map loads: the kernel's dump names the map by id, ours by index: only the kind and the
   value offset are compared;
5. ctx accesses: the kernel converts each `__sk_buff` load into a load of the real
   `struct sk_buff` field (convert_ctx_accesses); a load that differs only in size and
   offset is accepted when it reads the sk_buff field of the same name at its vmlinux BTF
   offset and size (`len`, `protocol`), or, for the ctx fields our model does not name, when
   it keeps its registers (reported as unchecked). Our 64-bit load of a packet pointer from
   the hidden ctx area (verifier.rewrite.ctx_access) must be the kernel's 64-bit load of
   `skb->data`, or of `data_end`/`data_meta` in the `struct bpf_skb_data_end` at `skb->cb`.
   A narrow load (`*(u16 *)(r1 + 0)` of the u32 `len`) may be followed in the kernel's code
   by the shift and mask that cut it out of the wider field: the insns are aligned across
   them, and every jump must land on the same aligned insn on both sides.
Anything else is a difference, reported with both instructions."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from unwind.live.kallsyms import call_imm_target
from unwind.live.load import KernelProgram
from unwind.live.vmlinux import vmlinux_btf
from verifier.asm.disasm import insn_text
from verifier.isa.insn import BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL, Insn
from verifier.program import VerifiedProgram
from verifier.protos.helpers import HELPERS_BY_ID, HELPERS_BY_NAME
from verifier.protos.kfuncs import KFUNCS_BY_ID
from verifier.rewrite.ctx_access import SLOT_FIELDS

SKB_FIELDS = {0: "len", 16: "protocol"}  # our __sk_buff offsets -> struct sk_buff member
OBJ_META_KFUNCS = (
    "bpf_obj_new_impl", "bpf_obj_drop_impl", "bpf_percpu_obj_new_impl", "bpf_percpu_obj_drop_impl",
)  # fmt: skip
SIZE_CODES = {1: 0x10, 2: 0x08, 4: 0x00, 8: 0x18}
LDX_DW = 0x79
BPF_ADDR_PERCPU = -1  # the `off` of the kernel-internal per-CPU move (BPF_MOV64_PERCPU_REG)
INLINE_TAIL = ("inline",)  # a kernel insn that continues an inlined helper call


@dataclass(frozen=True)
class XlatedDiff:
    """The outcome of one comparison: equal, or the first difference."""

    ours_len: int
    kernel_len: int
    pc: int | None  # first differing (normalised) pc, None when equal
    detail: str = ""
    unchecked_ctx: int = 0  # ctx loads accepted without a named field

    @property
    def equal(self) -> bool:
        return self.pc is None


@functools.cache
def struct_field(struct: str, name: str) -> tuple[int, int] | None:
    """(byte offset, size) of member `name` of `struct <struct>` in the running kernel,
    looking through the anonymous structs and unions it is grouped in."""
    btf = vmlinux_btf()

    def find(type_id: int, base: int) -> tuple[int, int] | None:
        t = btf.skip_modifiers(type_id)
        for m in t.members if t.kind in (4, 5) else ():
            if m.name == name and not m.bitfield_size:
                return base + m.offset // 8, btf.resolve_size(m.type)
            if not m.name:
                found = find(m.type, base + m.offset // 8)
                if found:
                    return found
        return None

    return next((f for t in btf.find(struct) if t.kind == 4 and (f := find(t.id, 0))), None)


def skb_field(name: str) -> tuple[int, int] | None:
    """(byte offset, size) of `struct sk_buff`'s member `name` in the running kernel."""
    return struct_field("sk_buff", name)


def packet_pointer_field(name: str) -> tuple[int, int] | None:
    """Where the kernel's converted load of `__sk_buff.<name>` (data, data_end, data_meta)
    reads: `skb->data`, or the member of `struct bpf_skb_data_end` kept in `skb->cb`."""
    if name == "data":
        return skb_field("data")
    cb, inner = skb_field("cb"), struct_field("bpf_skb_data_end", name)
    return (cb[0] + inner[0], inner[1]) if cb is not None and inner is not None else None


def _call_name(insn: Insn, kernel: bool) -> str:
    if kernel:
        return call_imm_target(insn.imm) or f"addr#{insn.imm}"
    if insn.src == BPF_PSEUDO_KFUNC_CALL:
        proto = KFUNCS_BY_ID.get(insn.imm)
        return proto.name if proto else f"kfunc#{insn.imm}"
    helper = HELPERS_BY_ID.get(insn.imm)
    return helper.kernel_symbol if helper else f"helper#{insn.imm}"


def _inlined_helper(insns: list[Insn], pc: int) -> tuple[str, int] | None:
    """(helper symbol, insns it takes) when the kernel inlined a helper call at pc."""
    window = insns[pc : pc + 3]
    if len(window) != 3 or window[0].dst != 0:
        return None
    head, mid, load = window
    r0_load = (load.dst, load.src, load.off) == (0, 0, 0)
    if head.code == 0xB7 and (mid.code, mid.dst, mid.src, mid.off) == (0xBF, 0, 0, BPF_ADDR_PERCPU):
        if r0_load and load.code == 0x61:
            return HELPERS_BY_NAME["get_smp_processor_id"].kernel_symbol, 3
    if head.code == 0x18 and head.src == 0 and mid.code == 0 and r0_load and load.code == 0x79:
        return HELPERS_BY_NAME["jiffies64"].kernel_symbol, 3
    return None


def normalize_ours(vp: VerifiedProgram) -> list[tuple]:
    """Our final insns as comparable tuples, the trampoline dropped."""
    tramp = vp.subprogs[vp.throw_tramp] if vp.throw_tramp is not None else None
    starts = {sp.start: i for i, sp in enumerate(vp.subprogs)}
    type_pcs = {pc for pc in range(len(vp.insns)) if _is_type_load(vp.insns, pc, kernel=False)}
    out: list[tuple] = []
    for pc, insn in enumerate(vp.insns):
        if tramp is not None and tramp.start <= pc < tramp.end:
            continue
        if insn.code == 0x85 and insn.src == BPF_PSEUDO_CALL:
            target = pc + insn.imm + 1
            callee = "bpf_throw" if tramp is not None and target == tramp.start else starts.get(target)
            out.append(("call", callee))
        elif insn.code == 0x85:
            out.append(("call", _call_name(insn, False)))
        else:
            out.append(_plain(vp.insns, pc, insn, type_pcs))
    return out


def normalize_kernel(kp: KernelProgram) -> list[tuple]:
    insns = kp.xlated
    type_pcs = {pc for pc in range(len(insns)) if _is_type_load(insns, pc, kernel=True)}
    out: list[tuple] = []
    tail = 0
    for pc, insn in enumerate(insns):
        inlined = None if tail else _inlined_helper(insns, pc)
        if tail:
            tail -= 1
            out.append(INLINE_TAIL)
        elif inlined is not None:
            out.append(("call", inlined[0]))
            tail = inlined[1] - 1
        elif insn.code == 0x85 and insn.src == BPF_PSEUDO_CALL:
            out.append(("call", insn.imm))
        elif insn.code == 0x85:
            out.append(("call", _call_name(insn, True)))
        else:
            out.append(_plain(insns, pc, insn, type_pcs))
    return out


def _next_call(insns: list[Insn], pc: int, kernel: bool) -> str | None:
    """The kfunc the next call after pc names, looking past argument setup only."""
    for insn in insns[pc + 1 : pc + 8]:
        if insn.code == 0x85:
            return _call_name(insn, kernel)
    return None


def _is_type_load(insns: list[Insn], pc: int, kernel: bool) -> bool:
    """An ld_imm64 of a struct type id or of the obj_new/obj_drop meta argument."""
    insn = insns[pc]
    if insn.code != 0x18 or insn.src != 0 or insn.dst not in (1, 2):
        return False
    return _next_call(insns, pc, kernel) in OBJ_META_KFUNCS


def _plain(insns: list[Insn], pc: int, insn: Insn, type_pcs: set[int]) -> tuple:
    if pc in type_pcs:
        return ("ld_type", insn.dst)
    if pc > 0 and (pc - 1) in type_pcs and insn.code == 0:
        return ("ld_type_hi",)
    if insn.code == 0x18 and insn.src in (1, 2):
        return ("ld_map", insn.dst, insn.src)
    if pc > 0 and insns[pc - 1].code == 0x18 and insns[pc - 1].src in (1, 2) and insn.code == 0:
        return ("ld_map_off", insn.imm)
    return ("insn", insn.code, insn.dst, insn.src, insn.off, insn.imm)


def _ctx_pair(ours: tuple, theirs: tuple) -> str | None:
    """'named' / 'unchecked' when the pair is a converted ctx load, None otherwise."""
    if ours[0] != "insn" or theirs[0] != "insn":
        return None
    _, code, dst, src, off, _imm = ours
    _, kcode, kdst, ksrc, koff, _kimm = theirs
    if code & 0x07 != 0x01 or kcode & 0x07 != 0x01 or (dst, src) != (kdst, ksrc):
        return None
    packet = SLOT_FIELDS.get(off) if code == LDX_DW else None
    field = SKB_FIELDS.get(off) if packet is None else packet
    if field is None:
        return "unchecked"
    where = skb_field(field) if packet is None else packet_pointer_field(packet)
    if where is None:
        return None
    foff, fsize = where
    return "named" if koff == foff and kcode == (0x61 & ~0x18) | SIZE_CODES.get(fsize, -1) else None


def _jump_off(item: tuple) -> int | None:
    """The pc offset of a jump (conditional, `ja` or `gotol`), None for anything else."""
    if item[0] != "insn" or item[1] & 0x07 not in (0x05, 0x06):
        return None
    op = item[1] & 0xF0
    if op in (0x80, 0x90):  # call, exit
        return None
    return item[5] if item[1] == 0x06 else item[4]  # gotol keeps its offset in imm


def _without_off(item: tuple) -> tuple:
    at = 5 if item[1] == 0x06 else 4  # gotol keeps its offset in imm
    return item[:at] + item[at + 1 :]


def _narrow_fixup(item: tuple, dst: int) -> bool:
    """The kernel's tail of a narrow ctx load: `dst >>= k` / `dst &= mask` (ALU32 or ALU64)."""
    return item[0] == "insn" and item[1] in (0x74, 0x77, 0x54, 0x57) and item[2] == dst


def compare_xlated(vp: VerifiedProgram, kp: KernelProgram) -> XlatedDiff:
    """Align our insns with the kernel's (a converted ctx load may take extra kernel insns),
    then check every jump lands on the same aligned insn."""
    ours, theirs = normalize_ours(vp), normalize_kernel(kp)
    unchecked, i, j = 0, 0, 0
    kmap: dict[int, int] = {}  # kernel pc -> our pc
    jumps: list[tuple[int, int]] = []
    while i < len(ours) and j < len(theirs):
        a, b = ours[i], theirs[j]
        kmap[j] = i
        off_a, off_b = _jump_off(a), _jump_off(b)
        if off_a is not None and off_b is not None and _without_off(a) == _without_off(b):
            jumps.append((i, j))
        elif a == b:
            while j + 1 < len(theirs) and theirs[j + 1] == INLINE_TAIL:
                j += 1
                kmap[j] = i
        else:
            kind = _ctx_pair(a, b)
            if kind is None:
                detail = f"ours {_show(a)} | kernel {_show(b)}"
                return XlatedDiff(len(ours), len(theirs), i, detail, unchecked)
            unchecked += kind == "unchecked"
            while j + 1 < len(theirs) and _narrow_fixup(theirs[j + 1], a[2]) and (
                i + 1 >= len(ours) or ours[i + 1] != theirs[j + 1]
            ):
                j += 1
                kmap[j] = i
        i, j = i + 1, j + 1
    if i != len(ours) or j != len(theirs):
        detail = f"lengths differ: ours {len(ours)}, kernel {len(theirs)} (aligned to ours {i}, kernel {j})"
        return XlatedDiff(len(ours), len(theirs), min(i, len(ours)), detail)
    kmap[len(theirs)] = len(ours)
    for i, j in jumps:
        ours_target = i + 1 + (_jump_off(ours[i]) or 0)
        kernel_target = j + 1 + (_jump_off(theirs[j]) or 0)
        if kmap.get(kernel_target) != ours_target:
            detail = f"jumps differ: ours {_show(ours[i])} (to {ours_target}) | kernel {_show(theirs[j])}"
            return XlatedDiff(len(ours), len(theirs), i, detail, unchecked)
    return XlatedDiff(len(ours), len(theirs), None, "", unchecked)


def kernel_dropped_dead_code(vp: VerifiedProgram, kp: KernelProgram) -> bool:
    """The kernel's code is ours with insns left out, jumps aside: the branches its scalar
    ranges prove one-way (hard-wired, then removed) and the code only they reached, which
    our verifier, knowing constants only, explores and keeps (docs/deviations.md)."""
    ours = [x for x in normalize_ours(vp) if _jump_off(x) is None]
    theirs = [x for x in normalize_kernel(kp) if _jump_off(x) is None and x != INLINE_TAIL]
    if len(theirs) >= len(ours):
        return False
    rest = iter(ours)
    return all(any(x == y for y in rest) for x in theirs)


def _show(item: tuple) -> str:
    if item[0] == "insn":
        _, code, dst, src, off, imm = item
        return insn_text([Insn(code, dst, src, off, imm)], 0)
    return " ".join(str(x) for x in item)
