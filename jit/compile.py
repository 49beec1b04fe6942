"""Compile a VerifiedProgram into one x86-64 image per subprog (the kernel's
`bpf_int_jit_compile` pass loop plus `jit_subprogs`).

Per subprog: addrs[] starts at the estimate 64*(i+1), sizing passes run `do_jit` until two
consecutive passes give the same length (padding from pass 15, at most 20 passes), then a
write pass must reproduce every addrs[] entry. A call is always `E8 rel32`, so sizes never
depend on call targets: every subprog is sized first, images are placed from `code_base`
(a guard page after each), and the write pass emits the real targets. Finally each
subprog's frame-descriptor pcs are converted once to return-address offsets (patch 09):
`ret_offset = addrs[pc - start + 1]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from jit.image import JitImage, JitProgram
from jit.layout import CODE_BASE, CODE_REGION_SIZE, image_address, map_addresses
from jit.lower import FrameShape, build_epilogue, build_prologue, lower_insn
from jit.lower_ctx import LowerCtx
from jit.x86.encode import JitError
from verifier.isa.insn import BPF_PSEUDO_CALL, BPF_PSEUDO_KFUNC_CALL, BPF_PSEUDO_MAP_VALUE, Insn
from verifier.program import FrameDesc, Subprog, VerifiedProgram
from verifier.rewrite.regusage import detect_reg_usage

MAX_PASSES = 20
PADDING_PASSES = 15
ALL_REGS = (True, True, True, True)

__all__ = ["MAX_PASSES", "PADDING_PASSES", "JitError", "KernelHost", "jit_program"]


def _round_up8(value: int) -> int:
    return (value + 7) & ~7


@dataclass
class _SubprogJit:
    """Pass state of one subprog: addrs[] and cleanup_addr persist across passes."""

    index: int
    sp: Subprog
    insns: tuple[Insn, ...]
    shape: FrameShape
    prologue: bytes
    epilogue: bytes
    addrs: list[int] = field(default_factory=list)
    cleanup_addr: int = 0
    passes: int = 0
    length: int = 0
    address: int = 0
    code: bytes = b""


def _frame_shape(vp: VerifiedProgram, index: int) -> FrameShape:
    sp = vp.subprogs[index]
    boundary = index == 0 and vp.exception_boundary
    if boundary or index == vp.throw_tramp:
        regs = ALL_REGS
    else:
        regs = tuple(sp.callee_regs_used)
        used = detect_reg_usage(vp.insns, sp.start, sp.end)
        missing = [f"R{6 + i}" for i in range(4) if used[i] and not regs[i]]
        if missing:
            raise JitError(
                f"bpf_jit: internal error: {sp.name} uses {', '.join(missing)} "
                f"but callee_regs_used={regs} does not save it"
            )
    return FrameShape(
        stack_depth=_round_up8(sp.stack_depth),
        push_r12=boundary,
        regs=(regs[0], regs[1], regs[2], regs[3]),
        exception_cb=index == vp.exception_cb,
    )


class _Compiler:
    def __init__(
        self, vp: VerifiedProgram, stub_addrs: Mapping[int, int], code_base: int,
        helper_addrs: Mapping[int, int] | None, host: KernelHost | None = None,
    ) -> None:
        self.vp = vp
        self.host = host
        self.stub_addrs = stub_addrs
        self.helper_addrs = helper_addrs
        self.code_base = code_base
        try:
            self.map_addrs = map_addresses([m.value_size for m in vp.maps])
        except ValueError as err:
            raise JitError(f"bpf_jit: {err}") from None
        self.jits: list[_SubprogJit] = []
        self.final = False  # write pass: targets are real
        for i, sp in enumerate(vp.subprogs):
            if sp.end <= sp.start:
                raise JitError(f"bpf_jit: subprog {sp.name} is empty")
            shape = _frame_shape(vp, i)
            self.jits.append(
                _SubprogJit(i, sp, tuple(vp.insns[sp.start : sp.end]), shape,
                            build_prologue(shape), build_epilogue(shape))
            )

    # -- call targets ------------------------------------------------------------

    def _callee_index(self, sj: _SubprogJit, k: int, rel: int) -> int:
        pc = sj.sp.start + k + rel + 1
        for i, sp in enumerate(self.vp.subprogs):
            if sp.start == pc:
                return i
        raise JitError(f"bpf_jit: call target {pc} is not a subprog start at {sj.sp.name}+{k}")

    def _resolve_call(self, sj: _SubprogJit, k: int, insn: Insn) -> int | None:
        where = f"{sj.sp.name}+{k}"
        if not self.final and self.host is not None:
            return None  # images placed by a kernel may be far from any placeholder
        if insn.src == BPF_PSEUDO_KFUNC_CALL:
            if insn.imm not in self.stub_addrs:
                raise JitError(f"bpf_jit: no stub address for kfunc btf_id {insn.imm} at {where}")
            return self.stub_addrs[insn.imm]
        if insn.src == BPF_PSEUDO_CALL:
            callee = self._callee_index(sj, k, insn.imm)
            return self.jits[callee].address if self.final else None
        if self.helper_addrs is None:
            raise JitError(f"bpf_jit: helper calls are not supported yet (call {insn.imm}) at {where}")
        if insn.imm not in self.helper_addrs:
            raise JitError(f"bpf_jit: no stub address for helper {insn.imm} at {where}")
        return self.helper_addrs[insn.imm]

    def _resolve_map(self, sj: _SubprogJit, k: int, insn: Insn, second: Insn) -> int:
        """A map's address, or a global variable's (src 2: value address + second imm).
        Placed by a kernel, the program's imm is the kernel's map id: its own address space
        (`KernelHost.map_address`) gives an immediate of the kernel's encoding length."""
        off = second.imm & 0xFFFF_FFFF if insn.src == BPF_PSEUDO_MAP_VALUE else 0
        if self.host is not None:
            return self.host.map_address + off
        if not 0 <= insn.imm < len(self.map_addrs):
            raise JitError(f"bpf_jit: ld_imm64 of map #{insn.imm}, which the program does not have, "
                           f"at {sj.sp.name}+{k}")
        return self.map_addrs[insn.imm] + off

    def _resolve_func(self, sj: _SubprogJit, k: int, insn: Insn) -> int:
        callee = self._callee_index(sj, k, insn.imm)
        # Placeholder with the same encoding length as any image address (< 4 GiB).
        return self.jits[callee].address if self.final else self.code_base

    # -- passes ------------------------------------------------------------------

    def _do_jit(self, sj: _SubprogJit, padding: bool, write: bool) -> bytes:
        addrs = sj.addrs
        out = bytearray(sj.prologue)
        addrs[0] = len(out)
        ctx = LowerCtx(
            name=sj.sp.name, insns=sj.insns, addrs=addrs, cleanup_addr=sj.cleanup_addr,
            padding=padding, image_addr=sj.address, epilogue=sj.epilogue,
            resolve_call=lambda k, insn: self._resolve_call(sj, k, insn),
            resolve_func=lambda k, insn: self._resolve_func(sj, k, insn),
            resolve_map=lambda k, insn, second: self._resolve_map(sj, k, insn, second),
            return_thunk=self.host.return_thunk if self.host else None,
            final=self.final,
            bmi2=self.host.bmi2 if self.host else False,
        )
        k = 0
        while k < len(sj.insns):
            code, slots = lower_insn(ctx, k)
            end = len(out) + len(code)
            if write and (end > sj.length or end != addrs[k + slots]):
                raise JitError(f"bpf_jit: fatal error at {sj.sp.name}+{k}")
            out += code
            # deviation: the kernel writes only the entry of an ld_imm64's second slot and
            # leaves the first one stale (an early estimate); both get the end here, so
            # addrs[] is non-decreasing and offset -> insn lookups (faults, call sites) work.
            for j in range(k + 1, k + slots + 1):
                addrs[j] = end
            k += slots
        sj.cleanup_addr = ctx.cleanup_addr
        return bytes(out)

    def size(self, sj: _SubprogJit) -> None:
        n = len(sj.insns)
        sj.addrs = [64 * (i + 1) for i in range(n + 1)]
        sj.cleanup_addr = 64 * (n + 1)
        oldlen = 0
        for pass_no in range(MAX_PASSES):
            length = len(self._do_jit(sj, pass_no >= PADDING_PASSES, write=False))
            if length == oldlen:
                sj.passes, sj.length = pass_no + 1, length
                return
            oldlen = length
        raise JitError(f"bpf_jit: {sj.sp.name} did not converge after {MAX_PASSES} passes")

    def write(self, sj: _SubprogJit) -> None:
        code = self._do_jit(sj, sj.passes >= PADDING_PASSES, write=True)
        if len(code) != sj.length:
            raise JitError(f"bpf_jit: proglen={len(code)} != oldproglen={sj.length} in {sj.sp.name}")
        sj.code = code

    def place(self) -> None:
        pinned = self.host.image_addrs if self.host is not None else ()
        address = self.code_base
        for i, sj in enumerate(self.jits):
            if i < len(pinned):
                address = pinned[i]
            sj.address = address
            address = image_address(address + sj.length)
        if not pinned and self.code_base == CODE_BASE and self.jits[-1].address + self.jits[-1].length > (
            CODE_BASE + CODE_REGION_SIZE
        ):
            raise JitError("bpf_jit: images do not fit the code region")

    # -- frame descriptors (patch 09) ---------------------------------------------

    def convert_fdtab(self, sj: _SubprogJit) -> tuple[tuple[int, ...], tuple[FrameDesc, ...]]:
        fdtab = self.vp.fdtabs[sj.index] if sj.index < len(self.vp.fdtabs) else None
        if fdtab is None:
            return (), ()
        keyed: list[tuple[int, FrameDesc]] = []
        for desc in fdtab.descs:
            rel = desc.pc - sj.sp.start + 1
            if not 1 <= rel <= len(sj.insns):
                raise JitError(f"bpf_jit: internal error: frame desc pc={desc.pc} outside {sj.sp.name}")
            ret = sj.addrs[rel]
            call_start = ret - 5
            if not (sj.insns[rel - 1].is_call() and call_start >= sj.addrs[rel - 1]
                    and sj.code[call_start] == 0xE8):
                raise JitError(
                    f"bpf_jit: internal error: frame desc pc={desc.pc} of {sj.sp.name} "
                    f"(ret+{ret:#x}) does not follow a call"
                )
            keyed.append((ret, desc))
        keyed.sort(key=lambda item: item[0])
        offsets = tuple(ret for ret, _ in keyed)
        if len(set(offsets)) != len(offsets):
            raise JitError(f"bpf_jit: internal error: duplicate frame desc offsets in {sj.sp.name}")
        return offsets, tuple(desc for _, desc in keyed)

    def image(self, sj: _SubprogJit) -> JitImage:
        offsets, descs = self.convert_fdtab(sj)
        return JitImage(
            index=sj.index, name=sj.sp.name, kind=sj.sp.kind, hidden=sj.sp.hidden,
            start=sj.sp.start, code=sj.code, address=sj.address, addrs=tuple(sj.addrs),
            stack_depth=sj.shape.stack_depth, callee_regs_used=sj.shape.regs,
            exception_boundary=sj.shape.push_r12, is_exception_cb=sj.shape.exception_cb,
            fd_offsets=offsets, fd_descs=descs,
        )


@dataclass(frozen=True)
class KernelHost:
    """Where a real kernel put things and what its CPU offers, so that our images can be
    compared with its images byte for byte: each image's address (jited_ksyms; images
    beyond the list are placed after the last one), the return thunk's address when the
    kernel uses one, and whether it shifts with BMI2."""

    image_addrs: Sequence[int] = ()
    return_thunk: int | None = None
    bmi2: bool = False  # the host CPU has BMI2, so the kernel's shifts by register use VEX forms
    # Maps and map values live in the kernel's vmalloc/direct-map space: any such address
    # makes ld_imm64 a 10-byte movabs as in the kernel's image (the comparison masks it).
    map_address: int = 0xFFFF_C900_0000_0000


def jit_program(
    vp: VerifiedProgram,
    stub_addrs: Mapping[int, int],
    code_base: int = CODE_BASE,
    helper_addrs: Mapping[int, int] | None = None,
    host: KernelHost | None = None,
) -> JitProgram:
    """Lower every subprog of `vp` to x86-64; `stub_addrs` maps kfunc BTF ids to call stubs,
    `helper_addrs` helper ids (call imm with src 0) to theirs. Helper and kfunc calls are
    the same `E8 rel32` to the stub (the kernel's `__bpf_call_base + imm` after fixups).
    With `host`, images sit where a kernel put its own and return through its thunk."""
    if not vp.subprogs:
        raise JitError(f"bpf_jit: {vp.name} has no subprogs")
    comp = _Compiler(vp, stub_addrs, code_base, helper_addrs, host)
    for sj in comp.jits:
        comp.size(sj)
    comp.place()
    comp.final = True
    for sj in comp.jits:
        comp.write(sj)
    images = tuple(comp.image(sj) for sj in comp.jits)
    return JitProgram(
        verified=vp, images=images, stub_addrs=dict(stub_addrs),
        passes=max(sj.passes for sj in comp.jits), map_addrs=comp.map_addrs,
    )
