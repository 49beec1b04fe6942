"""Text assembler: BPF assembly in the syntax `llvm-objdump -d` prints -> `Program`.

Owns the file-level grammar: functions (`name:` at column 0; the first is the main
program), local labels (`.L*` / `LBB*`, may be indented), directives, comments (`;`, `#`,
`//`), pasted `llvm-objdump -d` listings (headers, address and raw-byte columns, `<sym>:`
lines, `<LBB..>` jump annotations), and symbol resolution (jump labels, bpf2bpf/kfunc call
targets, struct type ids). The grammar of one instruction lives in `verifier.asm.line`.

Extensions beyond what LLVM prints (all produced by `verifier.asm.disasm`):
  `.global NAME` / `.globl NAME`   the function gets linkage "global" (default "static")
  `.exception_callback NAME`      Program.exception_cb
  `.struct NAME SIZE [ID]`        a local struct type; ids are 1, 2, 3... in declaration order
  `.prog_type NAME`               Program.prog_type (default "tc")
  `.license TEXT`                 Program.license (default "GPL")
  `r1 = NAME ll`                  struct NAME: ld_imm64 of its type id (recorded in type_refs);
                                  function NAME: ld_imm64 src=4 (BPF_PSEUDO_FUNC), relative imm
  `ld_pseudo rD, SRC, VALUE`      any other ld_imm64 with src 1..6 (LLVM's own spelling)
  `call pc+N` / `call kfunc(ID[, OFF])`  bpf2bpf call by offset / kfunc call by BTF id
Every error is an `AsmError("source:line: message")`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from verifier.asm.line import Ref, parse_insn
from verifier.asm.literals import MAX_DIGITS, LineError, abbrev, off16
from verifier.asm.signature import implied_proto
from verifier.errors import AsmError, quoted
from verifier.isa.insn import BPF_JA, BPF_JMP32, BPF_PSEUDO_CALL, BPF_PSEUDO_FUNC, BPF_PSEUDO_KFUNC_CALL, Insn
from verifier.program import FuncSym, Program, StructType
from verifier.protos.kfuncs import KFUNCS_BY_NAME

LOCAL_LABEL_PREFIXES = (".L", "LBB")
DEFAULT_PROG_TYPE = "tc"
DEFAULT_LICENSE = "GPL"

_SYM = r"[A-Za-z_.$][\w.$]*"
_LABEL = re.compile(rf"^(?P<indent>\s*)(?P<name>{_SYM}):(?P<rest>.*)$")
_OBJDUMP_SYM = re.compile(rf"^[0-9a-fA-F]+\s+<(?P<name>{_SYM})>:\s*$")
_OBJDUMP_INSN = re.compile(r"^\s*\d+:\s+(?:[0-9a-fA-F]{2}[ \t]+)*(?P<text>\S.*)$")
_OBJDUMP_HEADER = re.compile(r"^(?:\S.*:\s+file format\s.*|Disassembly of section\s.*:)$")
_DIRECTIVE = re.compile(r"^\s*\.(?P<name>[A-Za-z_]\w*)(?:\s+(?P<args>.*))?$")


def is_local_label(name: str) -> bool:
    return name.startswith(LOCAL_LABEL_PREFIXES)


def strip_comment(line: str) -> str:
    """Drop `;`, `#` and `//` comments (none of these characters occur in instructions)."""
    cut = len(line)
    for marker in (";", "#", "//"):
        pos = line.find(marker)
        if pos != -1:
            cut = min(cut, pos)
    return line[:cut].rstrip()


@dataclass
class _Fixup:
    pc: int
    ref: Ref
    line: int
    scope: str  # function the reference was written in: local labels are per function


@dataclass
class _State:
    source: str
    insns: list[Insn] = field(default_factory=list)
    funcs: list[FuncSym] = field(default_factory=list)
    func_lines: dict[str, int] = field(default_factory=dict)
    labels: dict[tuple[str, str], int] = field(default_factory=dict)  # (function, label) -> pc
    fixups: list[_Fixup] = field(default_factory=list)
    jump_lines: dict[int, int] = field(default_factory=dict)  # pc of a jump or call -> line
    globals_: dict[str, int] = field(default_factory=dict)  # name -> line of .global
    exception_cb: tuple[str, int] | None = None
    structs: dict[str, StructType] = field(default_factory=dict)
    prog_type: str = DEFAULT_PROG_TYPE
    license: str = DEFAULT_LICENSE
    line: int = 0

    def error(self, message: str, line: int | None = None) -> AsmError:
        return AsmError(f"{self.source}:{self.line if line is None else line}: {message}")

    # -- one line ---------------------------------------------------------------------------
    def feed(self, raw: str) -> None:
        line = strip_comment(raw)
        if not line.strip():
            return
        if _OBJDUMP_HEADER.match(line):
            return
        if m := _OBJDUMP_SYM.match(line):
            self.label(m.group("name"), column0=True)
            return
        if m := _OBJDUMP_INSN.match(line):
            self.insn(m.group("text"))
            return
        if m := _LABEL.match(line):
            self.label(m.group("name"), column0=not m.group("indent"))
            if m.group("rest").strip():
                self.insn(m.group("rest"))
            return
        if m := _DIRECTIVE.match(line):
            self.directive(m.group("name"), (m.group("args") or "").strip())
            return
        self.insn(line)

    def label(self, name: str, column0: bool) -> None:
        pc = len(self.insns)
        if (self.scope, name) in self.labels or name in self.func_lines:
            raise self.error(f"label {quoted(name)} is defined twice")
        if is_local_label(name):
            self.labels[(self.scope, name)] = pc
            return
        if not column0:
            raise self.error(
                f"function label '{name}:' must start at column 0 (local labels start with .L or LBB)"
            )
        self.start_func(name)

    @property
    def scope(self) -> str:
        """The function being assembled: local labels (`.L*`, `LBB*`) are scoped to it."""
        return self.funcs[-1].name if self.funcs else ""

    def start_func(self, name: str) -> None:
        pc = len(self.insns)
        if self.funcs and self.funcs[-1].start == pc:
            raise self.error(f"function {quoted(self.funcs[-1].name)} has no instructions")
        self.funcs.append(FuncSym(name, pc))
        self.func_lines[name] = self.line

    def directive(self, name: str, args: str) -> None:
        words = args.split()
        if name in ("global", "globl"):
            if len(words) != 1:
                raise self.error(f".{name} takes one function name")
            self.globals_[words[0]] = self.line
        elif name == "exception_callback":
            if len(words) != 1:
                raise self.error(".exception_callback takes one function name")
            self.exception_cb = (words[0], self.line)
        elif name == "struct":
            self.struct(words)
        elif name == "prog_type":
            if len(words) != 1:
                raise self.error(".prog_type takes one program type name")
            self.prog_type = words[0]
        elif name == "license":
            if not args:
                raise self.error(".license takes a license string")
            self.license = args
        elif name != "text":
            raise self.error(f"unknown directive '.{name}'")

    def struct(self, words: list[str]) -> None:
        if len(words) not in (2, 3) or not re.match(rf"^{_SYM}$", words[0]):
            raise self.error(".struct takes NAME SIZE [TYPE_ID]")
        name = words[0]
        if name in self.structs:
            raise self.error(f"struct {quoted(name)} is declared twice")
        try:
            if any(len(w) > MAX_DIGITS for w in words[1:]):
                raise ValueError("too long")
            size = int(words[1], 0)
            type_id = int(words[2], 0) if len(words) == 3 else len(self.structs) + 1
        except ValueError:
            raise self.error(f"bad .struct number in {quoted(abbrev(' '.join(words), 60))}") from None
        if size <= 0 or type_id <= 0:
            raise self.error(".struct size and type id must be positive")
        if any(st.type_id == type_id for st in self.structs.values()):
            raise self.error(f"struct type id {type_id} is used twice")
        self.structs[name] = StructType(name, size, type_id)

    def insn(self, text: str) -> None:
        if not self.funcs:
            self.start_func("main")
        try:
            slots, ref = parse_insn(text)
        except LineError as exc:
            raise self.error(str(exc)) from None
        pc = len(self.insns)
        if slots[0].is_jump() or slots[0].is_pseudo_call():
            self.jump_lines[pc] = self.line
        if ref is not None:
            self.fixups.append(_Fixup(pc, ref, self.line, self.scope))
        self.insns.extend(slots)

    # -- whole file -------------------------------------------------------------------------
    def finish(self) -> Program:
        if not self.insns:
            raise self.error("no instructions", line=max(self.line, 1))
        if self.funcs[-1].start == len(self.insns):
            raise self.error(
                f"function {quoted(self.funcs[-1].name)} has no"
                " instructions", self.func_lines[self.funcs[-1].name]
            )
        type_refs: dict[int, str] = {}
        for fx in self.fixups:
            self.resolve(fx, type_refs)
        self.check_jumps()
        funcs = [
            FuncSym(f.name, f.start, "global" if f.name in self.globals_ else "static") for f in self.funcs
        ]
        for name, line in self.globals_.items():
            if name not in self.func_lines:
                raise self.error(f".global names unknown function {quoted(name)}", line)
        cb = None
        if self.exception_cb is not None:
            cb, line = self.exception_cb
            if cb not in self.func_lines:
                raise self.error(f".exception_callback names unknown function {quoted(cb)}", line)
        ends = [f.start for f in funcs[1:]] + [len(self.insns)]
        protos = {f.name: implied_proto(self.insns, f.start, end)
                  for f, end in zip(funcs[1:], ends[1:], strict=True)
                  if f.linkage == "global" and f.name != cb}  # fmt: skip
        return Program(
            func_protos=protos,
            name=funcs[0].name,
            insns=self.insns,
            funcs=funcs,
            prog_type=self.prog_type,
            exception_cb=cb,
            structs=dict(self.structs),
            type_refs=type_refs,
            source=self.source,
            license=self.license,
        )

    def func_start(self, name: str) -> int | None:
        for f in self.funcs:
            if f.name == name:
                return f.start
        return None

    def resolve(self, fx: _Fixup, type_refs: dict[int, str]) -> None:
        pc, name, insn = fx.pc, fx.ref.name, self.insns[fx.pc]
        if fx.ref.kind == "jump":
            target = self.labels.get((fx.scope, name), self.func_start(name))
            if target is None:
                # A label of another function is still found, so the existing
                # "leaves function" check below names what is wrong.
                target = next((pc for (_, n), pc in self.labels.items() if n == name), None)
            if target is None:
                raise self.error(f"unknown label {quoted(name)}", fx.line)
            rel = target - pc - 1
            if insn.code == BPF_JMP32 | BPF_JA:
                self.insns[pc] = insn.replace(imm=rel)
            else:
                try:
                    self.insns[pc] = insn.replace(off=off16(rel, "jump offset"))
                except LineError as exc:
                    raise self.error(f"{exc} to label {quoted(name)}", fx.line) from None
        elif fx.ref.kind == "call":
            target = self.func_start(name)
            if target is not None:
                self.insns[pc] = insn.replace(src=BPF_PSEUDO_CALL, imm=target - pc - 1)
            elif name in KFUNCS_BY_NAME:
                self.insns[pc] = insn.replace(src=BPF_PSEUDO_KFUNC_CALL, imm=KFUNCS_BY_NAME[name].btf_id)
            else:
                raise self.error(
                    f"unknown call target {quoted(name)} (not a function of this file nor a kfunc)", fx.line
                )
        else:  # ldimm
            if name in self.structs:
                self.insns[pc] = insn.replace(imm=self.structs[name].type_id)
                type_refs[pc] = name
            elif (target := self.func_start(name)) is not None:
                self.insns[pc] = insn.replace(src=BPF_PSEUDO_FUNC, imm=target - pc - 1)
            else:
                raise self.error(f"unknown symbol {quoted(name)} (not a .struct nor a function)", fx.line)

    def check_jumps(self) -> None:
        bounds = [f.start for f in self.funcs] + [len(self.insns)]
        for pc, line in self.jump_lines.items():
            idx = max(i for i in range(len(self.funcs)) if bounds[i] <= pc)
            start, end = bounds[idx], bounds[idx + 1]
            insn = self.insns[pc]
            if insn.is_pseudo_call():
                if not 0 <= (target := pc + insn.imm + 1) < len(self.insns):
                    raise self.error(f"call from insn {pc} to insn {target} is outside the program", line)
                continue
            target = pc + insn.jump_offset() + 1
            if not start <= target < end:
                where = "outside the program" if not 0 <= target < len(self.insns) else "in another function"
                raise self.error(
                    f"jump from insn {pc} to insn {target} leaves function "
                    f"{quoted(self.funcs[idx].name)} ({where})",
                    line,
                )


def assemble(text: str, source: str = "<asm>") -> Program:
    """Assemble `text` (contents of the file `source`) into a Program."""
    state = _State(source)
    for lineno, raw in enumerate(text.splitlines(), 1):
        state.line = lineno
        state.feed(raw)
    return state.finish()
