"""The JIT's output types: one `JitImage` per subprog and the `JitProgram` of all images.

An image carries `addrs[]` exactly as the kernel's x86 JIT defines it (subprog-relative:
`addrs[0]` is the prologue end, `addrs[k]` the byte offset just past the subprog's BPF insn
k-1) and its frame descriptors keyed by return-address offset, converted exactly once from
insn pcs (the series' `final` rule). Lookup is a binary search on the sorted offsets."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from verifier.program import FrameDesc, VerifiedProgram


@dataclass(frozen=True)
class JitImage:
    index: int  # subprog index in the VerifiedProgram
    name: str
    kind: str  # SubprogKind value
    hidden: bool
    start: int  # first BPF insn (absolute pc) of the subprog
    code: bytes
    address: int  # guest load address of code[0]
    addrs: tuple[int, ...]  # len = insn count of the subprog + 1
    stack_depth: int  # round_up(stack_depth, 8), what `sub rsp` reserves
    callee_regs_used: tuple[bool, bool, bool, bool]  # what the prologue pushes (R6..R9)
    exception_boundary: bool  # pushes r12 + all four (main of a throwing program)
    is_exception_cb: bool
    fd_offsets: tuple[int, ...] = ()  # sorted return-address offsets
    fd_descs: tuple[FrameDesc, ...] = ()  # parallel to fd_offsets; desc.pc stays the insn pc

    @property
    def end(self) -> int:
        return self.address + len(self.code)

    def contains(self, address: int) -> bool:
        return self.address <= address < self.end

    def find_desc(self, ret_offset: int) -> FrameDesc | None:
        i = bisect_left(self.fd_offsets, ret_offset)
        if i < len(self.fd_offsets) and self.fd_offsets[i] == ret_offset:
            return self.fd_descs[i]
        return None

    def insn_at(self, offset: int) -> int | None:
        """Absolute BPF pc whose code covers image byte `offset` (None: prologue)."""
        if offset < self.addrs[0]:
            return None
        k = bisect_right(self.addrs, offset)
        # addrs is non-decreasing; insn k-1 spans [addrs[k-1], addrs[k]).
        return self.start + min(k, len(self.addrs) - 1) - 1


@dataclass(frozen=True)
class JitProgram:
    verified: VerifiedProgram
    images: tuple[JitImage, ...]
    stub_addrs: dict[int, int] = field(default_factory=dict)  # kfunc BTF id -> stub address
    passes: int = 0  # sizing passes of the slowest image
    map_addrs: tuple[int, ...] = ()  # guest address of each map of verified.maps (its value)

    @property
    def main(self) -> JitImage:
        return self.images[0]

    @property
    def exception_cb(self) -> JitImage | None:
        idx = self.verified.exception_cb
        return None if idx is None else self.images[idx]

    def image_at(self, address: int) -> JitImage | None:
        for img in self.images:
            if img.contains(address):
                return img
        return None
