"""Our JIT on the kernel's own xlated program, placed where the kernel placed its images:
the strictest check of `jit/`, since both JITs then start from the same instructions and
must produce the same bytes.

`rejit(kp, vp)` rebuilds a `VerifiedProgram` from what BPF_OBJ_GET_INFO_BY_FD returned:
- functions from func_info (the kernel does not report its hidden exception callback, so
  insns after the last reported function end form one more subprog when they are the
  default callback `r0 = r1; exit`);
- bpf2bpf calls back to relative form (the kernel's dump keeps the offset in `off` and the
  callee's index in `imm`); helper and kfunc calls keep their `__bpf_call_base`-relative
  imm and resolve to the kernel's real addresses;
- stack depths and the exception boundary from our verifier's view of the same program
  (matched by function order), which the comparison thereby checks too.
Images are pinned at `jited_ksyms` and return through the host's return thunk when the
kernel's images do, with the kernel's BMI2 shifts when this CPU has BMI2
(`jit.compile.KernelHost`). The comparison masks one thing only: the 8-byte
immediates of ld_imm64s that load a map (the kernel's dump replaces the map's address with
its id, so the xlated insn no longer holds what the JIT encoded)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from jit.compile import KernelHost, jit_program
from jit.image import JitProgram
from unwind.live.kallsyms import address_of, name_at
from unwind.live.load import KernelProgram
from verifier.isa.insn import BPF_PSEUDO_CALL, Insn
from verifier.program import FdTab, Subprog, SubprogKind, VerifiedProgram
from verifier.rewrite.regusage import detect_reg_usage

DEFAULT_CB = (Insn(0xBF, 0, 1, 0, 0), Insn(0x95, 0, 0, 0, 0))  # r0 = r1; exit


@dataclass(frozen=True)
class ImageDiff:
    """First difference of one function's image: ours vs the kernel's."""

    name: str
    ours_len: int
    kernel_len: int
    offset: int | None  # first differing byte, None when equal

    @property
    def equal(self) -> bool:
        return self.offset is None


def _subprogs(kp: KernelProgram, vp: VerifiedProgram, insns: list[Insn]) -> list[Subprog]:
    starts = list(kp.info.func_starts) if kp.info and kp.info.func_starts else [0]
    ours = [sp for sp in vp.subprogs if sp.kind != SubprogKind.THROW_TRAMP]
    ends = starts[1:] + [len(insns)]
    hidden_cb = (
        tuple(insns[-2:]) == DEFAULT_CB and any(sp.hidden for sp in ours) and len(insns) - 2 > starts[-1]
    )
    if hidden_cb:
        ends[-1] = len(insns) - 2
        starts, ends = starts + [len(insns) - 2], ends + [len(insns)]
    out = []
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        mine = ours[i] if i < len(ours) else None
        kind = mine.kind if mine else SubprogKind.STATIC
        depth = mine.stack_depth if mine else 0
        name = mine.name if mine else f"func#{i}"
        hidden = hidden_cb and i == len(starts) - 1
        out.append(Subprog(name, start, end, kind, depth, detect_reg_usage(insns, start, end), hidden=hidden))
    return out


def kernel_vp(kp: KernelProgram, vp: VerifiedProgram) -> VerifiedProgram:
    """The kernel's xlated program as a VerifiedProgram our JIT can compile."""
    insns = list(kp.xlated)
    for pc, insn in enumerate(insns):
        if insn.code == 0x85 and insn.src == BPF_PSEUDO_CALL:
            insns[pc] = Insn(insn.code, insn.dst, insn.src, 0, insn.off)
        elif insn.code == 0x85:
            insns[pc] = Insn(insn.code, insn.dst, 0, 0, insn.imm)  # helper or kfunc: base + imm
    subprogs = _subprogs(kp, vp, insns)
    cb = next((i for i, sp in enumerate(subprogs) if sp.kind == SubprogKind.EXCEPTION_CB), None)
    return VerifiedProgram(
        name=vp.name, insns=insns, subprogs=subprogs, fdtabs=[FdTab([]) for _ in subprogs],
        exception_cb=cb, throw_tramp=None, exception_boundary=vp.exception_boundary,
        structs=vp.structs, prog_type=vp.prog_type,
    )  # fmt: skip


def return_thunk(kp: KernelProgram) -> int | None:
    """The return thunk the host kernel jumps to instead of `ret` (X86_FEATURE_RETHUNK:
    `__x86_return_thunk`, or `srso_alias_return_thunk` and kin on CPUs with those
    mitigations): the target of an epilogue's `leave; jmp rel32` that kallsyms names a
    return thunk, None when the kernel's epilogues end with a plain `ret`."""
    if not kp.info:
        return None
    for image, address in zip(kp.images(), kp.info.jited_ksyms, strict=False):
        at = image.find(b"\xc9\xe9")  # leave; jmp rel32
        while 0 <= at <= len(image) - 6:
            rel = int.from_bytes(image[at + 2 : at + 6], "little", signed=True)
            target = (address + at + 6 + rel) & (2**64 - 1)
            if (name_at(target) or "").endswith("return_thunk"):
                return target
            at = image.find(b"\xc9\xe9", at + 1)
    return None


@functools.cache
def host_bmi2() -> bool:
    """The running kernel's CPU has BMI2 (its JIT then shifts by a register with shlx/shrx/sarx)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and " bmi2" in line for line in text.splitlines())


def rejit(kp: KernelProgram, vp: VerifiedProgram) -> JitProgram:
    """Compile the kernel's xlated program with our JIT at the kernel's addresses."""
    kvp = kernel_vp(kp, vp)
    base = address_of("__bpf_call_base") or 0
    helpers = {
        insn.imm: (base + insn.imm) & (2**64 - 1) for insn in kvp.insns if insn.code == 0x85 and insn.src == 0
    }
    thunk = return_thunk(kp)
    host = KernelHost(image_addrs=tuple(kp.info.jited_ksyms) if kp.info else (), return_thunk=thunk,
                      bmi2=host_bmi2())  # fmt: skip
    return jit_program(kvp, {}, helper_addrs=helpers, host=host)


def _map_imm_ranges(jp: JitProgram, index: int) -> list[tuple[int, int]]:
    """Byte ranges of the imm64 of every map-loading ld_imm64 in image `index`."""
    img = jp.images[index]
    vp = jp.verified
    out = []
    for k in range(len(img.addrs) - 1):
        insn = vp.insns[img.start + k]
        if insn.code == 0x18 and insn.src in (1, 2):
            end = img.addrs[k + 2]
            out.append((end - 8, end))
    return out


def compare_images(kp: KernelProgram, jp: JitProgram) -> list[ImageDiff]:
    """One ImageDiff per function the kernel reports, in order."""
    diffs = []
    for i, theirs in enumerate(kp.images()):
        if i >= len(jp.images):
            diffs.append(ImageDiff(f"func#{i}", 0, len(theirs), 0))
            continue
        ours = bytearray(jp.images[i].code)
        kernel = bytearray(theirs)
        for lo, hi in _map_imm_ranges(jp, i):
            ours[lo:hi] = kernel[lo:hi] = bytes(hi - lo)
        first = next((j for j, (a, b) in enumerate(zip(ours, kernel, strict=False)) if a != b), None)
        if first is None and len(ours) != len(kernel):
            first = min(len(ours), len(kernel))
        diffs.append(ImageDiff(jp.images[i].name, len(ours), len(kernel), first))
    return diffs
