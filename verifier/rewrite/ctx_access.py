"""The packet pointers of a tc program's ctx (`convert_ctx_accesses`, its packet part).

A tc program reads `__sk_buff.data`, `.data_end` and `.data_meta` as u32 fields, and the
verifier types the result as a packet pointer (verifier.check.mem records which loads, in
`CheckResult.ctx_packet_loads`). The kernel rewrites each such load into a 64-bit load of
the real pointer: `skb->data`, and `data_end`/`data_meta` from the `struct bpf_skb_data_end`
kept in `skb->cb`. Our runtime has no `struct sk_buff`: it runs programs on the __sk_buff
image itself, so the real 64-bit addresses live in a hidden area of the ctx page just after
the 192 bytes of `__sk_buff` (`PACKET_SLOTS`), where the runner and the interpreter write
them (unwind.runner). The rewrite is one insn for one, as in the kernel: registers are
kept, `*(u32 *)(rS + 76)` becomes `*(u64 *)(rS + 192)`, so no pc moves."""

from __future__ import annotations

from verifier.isa.insn import BPF_DW, BPF_LDX, BPF_MEM, Insn
from verifier.rewrite.patch import PatchState, iter_insns

SKB_CTX_SIZE = 192  # sizeof(struct __sk_buff): the hidden area starts after it
# __sk_buff offset of the u32 field -> (ctx offset of the hidden u64 pointer, field name).
# 200 is left out: it is offsetof(struct sk_buff, data) in the kernels we compare with, and
# a converted load that happened to equal the kernel's load of another field would pass
# unchecked (unwind.live.xlated); none of these is the kernel's offset for another field.
PACKET_SLOTS: dict[int, tuple[int, str]] = {
    76: (SKB_CTX_SIZE, "data"),
    80: (SKB_CTX_SIZE + 16, "data_end"),
    140: (SKB_CTX_SIZE + 24, "data_meta"),
}
HIDDEN_CTX_END = SKB_CTX_SIZE + 32  # end of the hidden area
SLOT_FIELDS: dict[int, str] = {slot: name for slot, name in PACKET_SLOTS.values()}

__all__ = ["HIDDEN_CTX_END", "PACKET_SLOTS", "SLOT_FIELDS", "convert_ctx_accesses", "packet_load"]


def packet_load(insn: Insn) -> Insn:
    """The 64-bit load of the hidden pointer that replaces the u32 ctx load `insn`."""
    slot = PACKET_SLOTS.get(insn.off)
    if insn.cls != BPF_LDX or slot is None:
        raise ValueError(f"not a ctx load of a packet pointer: {insn}")
    return insn.replace(code=BPF_LDX | BPF_DW | BPF_MEM, off=slot[0])


def convert_ctx_accesses(state: PatchState, loads: frozenset[int]) -> int:
    """Rewrite in place every insn whose loaded pc is in `loads` (pcs of the program as
    loaded); returns how many. Removed insns are simply not found."""
    if not loads:
        return 0
    done = 0
    for pc, insn in iter_insns(state.insns):
        if state.aux[pc].orig_idx in loads:
            state.insns[pc] = packet_load(insn)
            done += 1
    return done
