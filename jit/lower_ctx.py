"""The context of one lowering pass over one subprog (`LowerCtx`): the insns, addrs[] of the
previous pass, cleanup_addr, padding, the image address and the call/func resolvers. Shared
by `jit.lower` (the instruction switch) and `jit.lower_alu` (its ALU cases), and built by
`jit.compile`'s pass loop; it lives on its own so that neither lowering module imports the
other's caller."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jit.x86.encode import JitError
from verifier.isa.insn import Insn

# Resolves the absolute call target of the call at subprog index k; None = not known yet
# (sizing passes): a call is always 5 bytes, only its rel32 changes.
CallResolver = Callable[[int, Insn], int | None]
# Resolves the address of a pseudo-func ld_imm64 (src=4) at subprog index k.
FuncResolver = Callable[[int, Insn], int]
# Resolves the 64-bit value of an ld_imm64 of a map (src 1: the map) or of a global
# variable (src 2: its address in the map's value) at subprog index k, given both slots.
MapResolver = Callable[[int, Insn, Insn], int]


def no_maps(k: int, insn: Insn, second: Insn) -> int:
    """The MapResolver of a program without maps."""
    raise JitError(f"bpf_jit: ld_imm64 of map #{insn.imm} (src {insn.src}) at insn {k}: no maps are known")



@dataclass
class LowerCtx:
    """One pass over one subprog. `addrs` is updated by the caller after every insn."""

    name: str
    insns: Sequence[Insn]  # the subprog's insns (index 0 = its first insn)
    addrs: list[int]
    cleanup_addr: int
    padding: bool
    image_addr: int  # guest address of byte 0 of this image (placeholder while sizing)
    epilogue: bytes
    resolve_call: CallResolver
    resolve_func: FuncResolver
    seen_exit: bool = False
    # The kernel built with return thunks (X86_FEATURE_RETHUNK) ends the epilogue with
    # `jmp __x86_return_thunk` instead of `ret`; None keeps the plain `ret`.
    return_thunk: int | None = None
    bmi2: bool = False  # shifts by a register as shlx/shrx/sarx (a BMI2 host kernel)
    final: bool = True  # the write pass: absolute targets are real
    resolve_map: MapResolver = no_maps

    def where(self, k: int) -> str:
        return f"{self.name}+{k}"

    def unsupported(self, k: int) -> JitError:
        return JitError(f"bpf_jit: unsupported insn (0x{self.insns[k].code:02x}) at {self.where(k)}")

    def jump_target(self, k: int, off: int) -> int:
        target = k + 1 + off
        if not 0 <= target <= len(self.insns):
            raise JitError(f"bpf_jit: jump out of subprog at {self.where(k)} (off {off})")
        return self.addrs[target] - self.addrs[k + 1]

    def size_diff(self, k: int, emitted: int) -> int:
        """INSN_SZ_DIFF: last pass's end of insn k minus this pass's start, minus what
        has been emitted for it so far."""
        return self.addrs[k + 1] - self.addrs[k] - emitted
