"""Hand-built x86 images for the unwinder tests (shared by test_unwinder.py and
test_unwind_table.py).

The images follow the x86 frame layout of the series (§3.11): main is the exception
boundary (push rbp; mov rbp,rsp; sub rsp,N; push r12, rbx, r13, r14, r15), subprogs push
only their callee_regs_used, the trampoline pushes all four and calls the bpf_throw stub,
the exception callback takes rsp/rbp from rsi/rdx. Each body line counts as one BPF insn;
descriptors are keyed by the return offset just past their call line."""

from __future__ import annotations

from dataclasses import dataclass, field

from keystone import KS_ARCH_X86, KS_MODE_64, Ks

from jit.image import JitImage, JitProgram
from jit.layout import CODE_BASE, HEAP_BASE, PAGE
from jit.machine import CALLEE_SAVED_CANARIES
from unwind.jit_kernel import kfunc_stub_addrs
from verifier.program import FdEntry, FdTab, FrameDesc, SpillType, StructType, Subprog, VerifiedProgram
from verifier.protos.kfuncs import KFUNCS_BY_NAME
from verifier.regtypes import MEM_ALLOC, NOT_INIT, PTR_TO_BTF_ID

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
