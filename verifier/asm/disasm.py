"""Disassembler: instruction slots -> text, in two dialects.

* `insn_text` / `disassemble`: the `llvm-objdump -d` syntax that `verifier.asm.assembler` reads back.
  `disassemble(program)` is canonical: `assemble(disassemble(p))` rebuilds p exactly, and
  canonical text survives text -> Program -> text unchanged.
* `kernel_insn_text`: the kernel verifier log's `(%02x) ...` form (`print_bpf_insn`).

Both expect instructions that `verifier.isa.decode` accepts; anything else prints as
`<invalid 0x..>` rather than raising, so logs of broken programs stay readable."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from verifier.asm.assembler import DEFAULT_LICENSE, DEFAULT_PROG_TYPE
from verifier.asm.ops import ALU_OPS, FETCH_OPS, JMP_OPS, LOCK_OPS, MOVSX_OFF, SIZES, SX_SIZES
from verifier.isa.insn import (
    BPF_ABS,
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_DW,
    BPF_END,
    BPF_EXIT,
    BPF_FETCH,
    BPF_IND,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_LD,
    BPF_LDX,
    BPF_MEM,
    BPF_MEMSX,
    BPF_MOV,
    BPF_NEG,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    BPF_PSEUDO_KFUNC_CALL,
    BPF_ST,
    BPF_STX,
    BPF_TO_BE,
    BPF_W,
    BPF_X,
    BPF_XCHG,
    Insn,
    ld_imm64_value,
)
from verifier.program import Program
from verifier.protos.kfuncs import KFUNCS_BY_ID

_ALU_TEXT = {v: k for k, v in ALU_OPS.items()}  # (op, off) -> "+=" ...
_JMP_TEXT = {v: k for k, v in JMP_OPS.items()}
_LOCK_TEXT = {v: k for k, v in LOCK_OPS.items()}
_FETCH_TEXT = {v: k for k, v in FETCH_OPS.items()}
_SIZE_TEXT = {v: k for k, v in SIZES.items()}
_SX_TEXT = {v: k for k, v in SX_SIZES.items()}
_MOVSX_TEXT = {v: k for k, v in MOVSX_OFF.items()}


def _invalid(insn: Insn) -> str:
    return f"<invalid 0x{insn.code:02x}>"


def _rel(n: int) -> str:
    return f"+{n}" if n >= 0 else str(n)


def _mem(base: int, off: int, kernel: bool = False) -> str:
    if kernel:
        return f"(r{base} {_rel(off)})"
    return f"(r{base} + {off})" if off >= 0 else f"(r{base} - {-off})"


def insn_text(
    insns: Sequence[Insn],
    pc: int,
    labels: Mapping[int, str] | None = None,
    call_names: Mapping[int, str] | None = None,
    type_refs: Mapping[int, str] | None = None,
) -> str:
    """The llvm-objdump text of the instruction at `pc` (an ld_imm64 reads slot pc + 1 too).

    labels: jump-target pc -> label; call_names: function start pc -> name (bpf2bpf calls and
    ld_imm64 of a function); type_refs: ld_imm64 pc -> struct name."""
    insn = insns[pc]
    cls = insn.cls
    if cls in (BPF_ALU, BPF_ALU64):
        return _alu_text(insn)
    if cls in (BPF_JMP, BPF_JMP32):
        return _jmp_text(insn, pc, labels or {}, call_names or {})
    if insn.is_ld_imm64():
        if pc + 1 >= len(insns):
            return _invalid(insn)
        value = ld_imm64_value(insn, insns[pc + 1])
        if type_refs and pc in type_refs and insn.src == 0:
            return f"r{insn.dst} = {type_refs[pc]} ll"
        if insn.src == BPF_PSEUDO_FUNC and call_names and pc + insn.imm + 1 in call_names:
            return f"r{insn.dst} = {call_names[pc + insn.imm + 1]} ll"
        if insn.src:
            return f"ld_pseudo r{insn.dst}, {insn.src}, {value:#x}"
        return f"r{insn.dst} = {value:#x} ll"
    return _mem_text(insn, kernel=False)


def _alu_text(insn: Insn) -> str:
    w = "w" if insn.cls == BPF_ALU else "r"
    op = insn.op
    if op == BPF_END:
        kind = "bswap" if insn.cls == BPF_ALU64 else ("be" if insn.code & BPF_TO_BE else "le")
        return f"r{insn.dst} = {kind}{insn.imm} r{insn.dst}"
    if op == BPF_NEG:
        return f"{w}{insn.dst} = -{w}{insn.dst}"
    if op == BPF_MOV:
        if not insn.code & BPF_X:
            return f"{w}{insn.dst} = {insn.imm}"
        sx = f"({_MOVSX_TEXT[insn.off]})" if insn.off in _MOVSX_TEXT else ""
        return f"{w}{insn.dst} = {sx}{w}{insn.src}"
    text = _ALU_TEXT.get((op, insn.off)) or _ALU_TEXT.get((op, 0))
    if text is None:
        return _invalid(insn)
    operand = f"{w}{insn.src}" if insn.code & BPF_X else str(insn.imm)
    return f"{w}{insn.dst} {text} {operand}"


def _target(pc: int, rel: int, labels: Mapping[int, str]) -> str:
    return labels.get(pc + rel + 1) or _rel(rel)


def _jmp_text(insn: Insn, pc: int, labels: Mapping[int, str], call_names: Mapping[int, str]) -> str:
    op = insn.op
    if insn.code == BPF_JMP | BPF_EXIT:
        return "exit"
    if insn.code == BPF_JMP | BPF_CALL:
        if insn.src == BPF_PSEUDO_CALL:
            name = call_names.get(pc + insn.imm + 1)
            return f"call {name}" if name else f"call pc{_rel(insn.imm)}"
        if insn.src == BPF_PSEUDO_KFUNC_CALL:
            proto = KFUNCS_BY_ID.get(insn.imm)
            if insn.off:  # a kfunc of a module BTF (fd_array index in off)
                return f"call kfunc({insn.imm}, {insn.off})"
            return f"call {proto.name}" if proto else f"call kfunc({insn.imm})"
        return f"call {insn.imm}"
    if op == BPF_JA:
        if insn.cls == BPF_JMP32:
            return f"gotol {_target(pc, insn.imm, labels)}"
        return f"goto {_target(pc, insn.off, labels)}"
    if op not in _JMP_TEXT:
        return _invalid(insn)
    w = "w" if insn.cls == BPF_JMP32 else "r"
    operand = f"{w}{insn.src}" if insn.code & BPF_X else str(insn.imm)
    return f"if {w}{insn.dst} {_JMP_TEXT[op]} {operand} goto {_target(pc, insn.off, labels)}"


def _mem_text(insn: Insn, kernel: bool) -> str:
    cls, mode, size = insn.cls, insn.mode, insn.size
    mem = _mem(insn.dst, insn.off, kernel)
    if cls == BPF_LDX and mode in (BPF_MEM, BPF_MEMSX):
        names = _SIZE_TEXT if mode == BPF_MEM else _SX_TEXT
        if size not in names:
            return _invalid(insn)
        return f"r{insn.dst} = *({names[size]} *){_mem(insn.src, insn.off, kernel)}"
    if cls == BPF_ST and mode == BPF_MEM:
        return f"*({_SIZE_TEXT[size]} *){mem} = {insn.imm}"
    if cls == BPF_STX and mode == BPF_MEM:
        return f"*({_SIZE_TEXT[size]} *){mem} = r{insn.src}"
    if cls == BPF_STX and mode == BPF_ATOMIC and size in (BPF_W, BPF_DW):
        return _atomic_text(insn, kernel)
    if cls == BPF_LD and mode in (BPF_ABS, BPF_IND) and size in _SIZE_TEXT:
        if mode == BPF_ABS:
            return f"r0 = *({_SIZE_TEXT[size]} *)skb[{insn.imm}]"
        if insn.imm == 0 and not kernel:
            return f"r0 = *({_SIZE_TEXT[size]} *)skb[r{insn.src}]"
        sign = "+" if insn.imm >= 0 or kernel else "-"
        return f"r0 = *({_SIZE_TEXT[size]} *)skb[r{insn.src} {sign} {insn.imm if kernel else abs(insn.imm)}]"
    return _invalid(insn)


def _atomic_text(insn: Insn, kernel: bool) -> str:
    is64 = insn.size == BPF_DW
    sz = "u64" if is64 else "u32"
    imm, base, off = insn.imm, insn.dst, insn.off
    w = "r" if is64 or kernel else "w"
    s = insn.src
    if kernel:
        mem, k64 = _mem(base, off, True), "64" if is64 else ""
        if imm == BPF_XCHG:
            return f"r{s} = atomic{k64}_xchg(({sz} *){mem}, r{s})"
        if imm == BPF_CMPXCHG:
            return f"r0 = atomic{k64}_cmpxchg(({sz} *){mem}, r0, r{s})"
        if imm & BPF_FETCH and imm & ~BPF_FETCH in _FETCH_TEXT:
            return f"r{s} = atomic{k64}_fetch_{_FETCH_TEXT[imm & ~BPF_FETCH]}(({sz} *){mem}, r{s})"
    else:
        bare = f"r{base} + {off}" if off >= 0 else f"r{base} - {-off}"
        if imm == BPF_XCHG:
            return f"{w}{s} = {'xchg_64' if is64 else 'xchg32_32'}({bare}, {w}{s})"
        if imm == BPF_CMPXCHG:
            return f"{w}0 = {'cmpxchg_64' if is64 else 'cmpxchg32_32'}({bare}, {w}0, {w}{s})"
        if imm & BPF_FETCH and imm & ~BPF_FETCH in _FETCH_TEXT:
            return f"{w}{s} = atomic_fetch_{_FETCH_TEXT[imm & ~BPF_FETCH]}(({sz} *){_mem(base, off)}, {w}{s})"
    if imm in _LOCK_TEXT:
        return f"lock *({sz} *){_mem(base, off, kernel)} {_LOCK_TEXT[imm]} {w}{s}"
    return _invalid(insn)


def _jump_targets(insns: Sequence[Insn]) -> set[int]:
    targets = set()
    pc = 0
    while pc < len(insns):
        insn = insns[pc]
        if insn.is_jump():
            targets.add(pc + insn.jump_offset() + 1)
        pc += 2 if insn.is_ld_imm64() else 1
    return targets


def disassemble(program: Program) -> str:
    """Canonical text of `program`: directives, then each function (`name:` at column 0,
    one tab-indented instruction per line, `.L<pc>:` before every jump target)."""
    out = [f".prog_type {program.prog_type or DEFAULT_PROG_TYPE}"]
    if program.license != DEFAULT_LICENSE:
        out.append(f".license {program.license}")
    for i, st in enumerate(sorted(program.structs.values(), key=lambda s: s.type_id), 1):
        out.append(f".struct {st.name} {st.size}" + ("" if st.type_id == i else f" {st.type_id}"))
    out += [f".global {f.name}" for f in program.funcs if f.linkage == "global"]
    if program.exception_cb:
        out.append(f".exception_callback {program.exception_cb}")
    insns = program.insns
    funcs = sorted(program.funcs, key=lambda f: f.start)
    call_names = {f.start: f.name for f in funcs}
    ld_second = {pc + 1 for pc, i in enumerate(insns) if i.is_ld_imm64()}
    # A label is only placed where a slot starts; other targets stay numeric.
    labels = {t: f".L{t}" for t in _jump_targets(insns) if 0 <= t < len(insns) and t not in ld_second}
    bounds = [f.start for f in funcs] + [len(insns)]
    for idx, func in enumerate(funcs):
        out += ["", f"{func.name}:"]
        pc = func.start
        while pc < bounds[idx + 1]:
            if pc in labels:
                out.append(f"{labels[pc]}:")
            out.append("\t" + insn_text(insns, pc, labels, call_names, program.type_refs))
            pc += 2 if insns[pc].is_ld_imm64() else 1
    return "\n".join(out) + "\n"


def kernel_insn_text(insns: Sequence[Insn], pc: int, func_name: Callable[[Insn], str] | None = None) -> str:
    """The verifier log text of insns[pc] (`print_bpf_insn`), without the `%d: ` prefix.

    func_name names helper and kfunc calls (`call NAME#imm`); by default kfuncs are named
    from KFUNCS_BY_ID ("kernel-function" if unknown) and helpers "unknown"."""
    insn = insns[pc]
    code, cls = f"({insn.code:02x})", insn.cls
    if cls in (BPF_ALU, BPF_ALU64):
        return f"{code} {_alu_text(insn)}"
    if insn.is_ld_imm64():
        second = insns[pc + 1] if pc + 1 < len(insns) else Insn(0)
        return f"{code} r{insn.dst} = {ld_imm64_value(insn, second):#x}"
    if cls not in (BPF_JMP, BPF_JMP32):
        return f"{code} {_mem_text(insn, kernel=True)}"
    if insn.is_exit():
        return f"{code} exit"
    if insn.is_call():
        if insn.src == BPF_PSEUDO_CALL:
            return f"{code} call pc{_rel(insn.imm)}"
        name = func_name(insn) if func_name else None
        if not name:
            proto = KFUNCS_BY_ID.get(insn.imm) if insn.src == BPF_PSEUDO_KFUNC_CALL else None
            name = proto.name if proto else ("kernel-function" if insn.src else "unknown")
        return f"{code} call {name}#{insn.imm}"
    if insn.op == BPF_JA:
        if cls == BPF_JMP32:
            return f"{code} gotol pc{_rel(insn.imm)}"
        return f"{code} goto pc{_rel(insn.off)}"
    if insn.op not in _JMP_TEXT:
        return f"{code} {_invalid(insn)}"
    w = "w" if cls == BPF_JMP32 else "r"
    operand = f"{w}{insn.src}" if insn.code & BPF_X else f"{insn.imm & 0xFFFFFFFF:#x}"
    return f"{code} if {w}{insn.dst} {_JMP_TEXT[insn.op]} {operand} goto pc{_rel(insn.off)}"
