"""Assembler for the `%r` dialect of the bpf_conformance suite (uBPF's, extended to ISA v4).

One instruction or one `label:` per line; `#` starts a comment; operands are separated by
whitespace with an optional trailing comma, so a memory operand is one token
(`[%r10-8]`, `[%r1+0x2]`, `[%r1]`). The first `exit` also defines the label `exit`.

  ALU        add sub mul div sdiv or and lsh rsh neg mod smod xor mov arsh, suffix 32 (ALU32)
             or none/64 (ALU64); sdiv/smod set off=1; movsx{8,16,32}{32,64} (source width
             in off); be16/32/64, le16/32/64 (ALU END); swap/bswap16/32/64 (ALU64 END)
  memory     ldx{b,h,w,dw} dst, [src+off]; ldxs{b,h,w}; st{b,h,w,dw} [dst+off], imm;
             stx{b,h,w,dw} [dst+off], src; lddw dst, imm64 (two slots)
  jumps      ja target; ja32 target (offset in imm); j{eq,gt,ge,set,ne,sgt,sge,lt,le,slt,sle}[32]
             dst, src|imm, target; a target is +N, -N or a label
  calls      call N (helper), call local label|+N (src=1), call runtime N (src=2),
             call %rN (callx: SRC_REG set, register in dst), exit
  atomics    lock [fetch] {add,and,or,xor}[32] [dst+off], src; lock {xchg,cmpxchg}[32] ...

Immediates are hex (`0x`, must fit in u32; taken as its s32 bit pattern) or signed decimal
within i32; lddw takes any 64-bit value; offsets must fit in i16. Registers %r0-%r15 are
accepted (the negative tests use %r11+); `verifier.isa.decode` rejects what the ISA does not
allow, this module only rejects what does not parse. Every error is an `UbpfAsmError`
whose `reason` is the suite's expected string ("Invalid register", "Invalid mnemonic",
"Invalid number of operands for lock", "Immediate out of 32-bit range", ...)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from verifier.errors import AsmError, quoted
from verifier.isa.insn import (
    BPF_ALU,
    BPF_ALU64,
    BPF_ATOMIC,
    BPF_B,
    BPF_CALL,
    BPF_CMPXCHG,
    BPF_DW,
    BPF_END,
    BPF_EXIT,
    BPF_FETCH,
    BPF_H,
    BPF_JA,
    BPF_JMP,
    BPF_JMP32,
    BPF_K,
    BPF_LDX,
    BPF_MEM,
    BPF_MEMSX,
    BPF_MOV,
    BPF_NEG,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_KFUNC_CALL,
    BPF_ST,
    BPF_STX,
    BPF_TO_BE,
    BPF_TO_LE,
    BPF_W,
    BPF_X,
    BPF_XCHG,
    Insn,
    ld_imm64,
    s32,
)

ALU_OPS = {"add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "sdiv": 0x30, "or": 0x40, "and": 0x50,
           "lsh": 0x60, "rsh": 0x70, "neg": 0x80, "mod": 0x90, "smod": 0x90, "xor": 0xA0, "mov": 0xB0,
           "arsh": 0xC0}
JMP_OPS = {"jeq": 0x10, "jgt": 0x20, "jge": 0x30, "jset": 0x40, "jne": 0x50, "jsgt": 0x60, "jsge": 0x70,
           "jlt": 0xA0, "jle": 0xB0, "jslt": 0xC0, "jsle": 0xD0}
ATOMIC_OPS = {"add": 0x00, "and": 0x50, "or": 0x40, "xor": 0xA0, "xchg": BPF_XCHG, "cmpxchg": BPF_CMPXCHG}
SIZES = {"b": BPF_B, "h": BPF_H, "w": BPF_W, "dw": BPF_DW}

_ALU = re.compile(r"^(?P<op>[a-z]+?)(?P<width>32|64)?$")
_MOVSX = re.compile(r"^movsx(?P<src>8|16|32)(?P<width>32|64)$")
_END = re.compile(r"^(?P<kind>be|le|swap|bswap)(?P<bits>16|32|64)$")
_LDX = re.compile(r"^ldx(?P<sx>s)?(?P<size>b|h|w|dw)$")
_ST = re.compile(r"^st(?P<x>x)?(?P<size>b|h|w|dw)$")
_JCC = re.compile(r"^(?P<op>j[a-z]+?)(?P<width>32)?$")
_REG = re.compile(r"^%r(\d+)$")
_MEMOP = re.compile(r"^\[(?P<reg>[^\]+-]+)(?P<off>[+-][^\]]*)?\]$")
_LABEL = re.compile(r"^[A-Za-z_.][\w.]*$")
_NUM = re.compile(r"^(?P<sign>[+-]?)(?P<hex>0[xX])?(?P<digits>[0-9a-fA-F]+)$")

MAX_DIGITS = 40  # a 64-bit value needs at most 20 decimal / 16 hex digits
S16 = (-(1 << 15), (1 << 15) - 1)
S32 = (-(1 << 31), (1 << 31) - 1)


class UbpfAsmError(AsmError):
    """`reason` is the short message the suite's `-- error` sections compare against."""

    def __init__(self, reason: str, detail: str = "", line: int = 0, source: str = "<asm>") -> None:
        self.reason = reason
        self.detail = detail
        self.line = line
        text = f"{reason}: {detail}" if detail else reason
        super().__init__(f"{source}:{line}: {text}" if line else f"{source}: {text}")


class _LineError(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass
class UbpfProgram:
    insns: list[Insn]
    labels: dict[str, int] = field(default_factory=dict)  # label -> slot index


# ---------------------------------------------------------------- operands


def abbrev(text: str, limit: int = 24) -> str:
    """An operand for a message, cut to `limit` characters (a literal may be megabytes long)."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_number(text: str, range_reason: str = "Immediate out of 64-bit range") -> int:
    """A signed decimal or hex literal. Its length is bounded before it is converted: more
    than MAX_DIGITS significant digits is `range_reason` for whatever field it is."""
    m = _NUM.match(text)
    if not m or (not m.group("hex") and not m.group("digits").isdigit()):
        raise _LineError("Invalid number", abbrev(text))
    if len(m.group("digits").lstrip("0")) > MAX_DIGITS:
        raise _LineError(range_reason, abbrev(text))
    value = int(m.group("digits"), 16 if m.group("hex") else 10)
    return -value if m.group("sign") == "-" else value


def imm32(text: str) -> int:
    value = parse_number(text, "Immediate out of 32-bit range")
    if text.lstrip("+-").lower().startswith("0x") and value >= 0:
        if value > 0xFFFFFFFF:
            raise _LineError("Immediate out of 32-bit range", abbrev(text))
        return s32(value)
    if not S32[0] <= value <= S32[1]:
        raise _LineError("Immediate out of 32-bit range", abbrev(text))
    return value


def imm64(text: str) -> int:
    value = parse_number(text)
    if not -(1 << 63) <= value < (1 << 64):
        raise _LineError("Immediate out of 64-bit range", abbrev(text))
    return value


def offset16(text: str) -> int:
    value = parse_number(text, "Offset out of 16-bit range")
    if not S16[0] <= value <= S16[1]:
        raise _LineError("Offset out of 16-bit range", abbrev(text))
    return value


def register(text: str) -> int:
    m = _REG.match(text)
    if not m or len(m.group(1)) > 2 or int(m.group(1)) > 15:
        raise _LineError("Invalid register", abbrev(text))
    return int(m.group(1))


def mem_operand(text: str) -> tuple[int, int]:
    m = _MEMOP.match(text)
    if not m:
        raise _LineError("Failed to decode register and offset", text)
    off = m.group("off")
    return register(m.group("reg")), offset16(off) if off else 0


# ---------------------------------------------------------------- one line


@dataclass
class _Asm:
    source: str
    insns: list[Insn] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    refs: list[tuple[int, str, int]] = field(default_factory=list)  # (pc, label, line)
    line: int = 0
    seen_exit: bool = False

    def count(self, mnemonic: str, operands: list[str], n: int) -> None:
        if len(operands) != n:
            raise _LineError("Invalid number of operands", f"{mnemonic} takes {n}, got {len(operands)}")

    def target(self, text: str, range_reason: str = "Offset out of 16-bit range") -> int:
        """A jump target: +N/-N now, or a label resolved at the end (0 until then)."""
        if text[:1] in "+-":
            return parse_number(text, range_reason)
        if not _LABEL.match(text):
            raise _LineError("Invalid label", abbrev(text))
        self.refs.append((len(self.insns), text, self.line))
        return 0

    def emit(self, *insns: Insn) -> None:
        self.insns.extend(insns)

    def insn(self, mnemonic: str, ops: list[str]) -> None:
        if mnemonic == "exit":
            self.count(mnemonic, ops, 0)
            if not self.seen_exit:
                self.labels.setdefault("exit", len(self.insns))
                self.seen_exit = True
            self.emit(Insn(BPF_JMP | BPF_EXIT))
        elif mnemonic == "lddw":
            self.count(mnemonic, ops, 2)
            self.emit(*ld_imm64(register(ops[0]), imm64(ops[1])))
        elif mnemonic == "call":
            self.call(ops)
        elif mnemonic == "lock":
            self.lock(ops)
        elif mnemonic in ("ja", "ja32"):
            self.count(mnemonic, ops, 1)
            if mnemonic == "ja":
                self.emit(Insn(BPF_JMP | BPF_JA, off=self.target_off(ops[0])))
            else:
                self.emit(Insn(BPF_JMP32 | BPF_JA, imm=self.target_imm(ops[0])))
        elif m := _END.match(mnemonic):
            self.count(mnemonic, ops, 1)
            if m.group("kind") in ("swap", "bswap"):
                code = BPF_ALU64 | BPF_END | BPF_TO_LE
            else:
                code = BPF_ALU | BPF_END | (BPF_TO_BE if m.group("kind") == "be" else BPF_TO_LE)
            self.emit(Insn(code, register(ops[0]), imm=int(m.group("bits"))))
        elif m := _MOVSX.match(mnemonic):
            self.count(mnemonic, ops, 2)
            cls = BPF_ALU if m.group("width") == "32" else BPF_ALU64
            self.emit(Insn(cls | BPF_MOV | BPF_X, register(ops[0]), register(ops[1]), int(m.group("src"))))
        elif m := _LDX.match(mnemonic):
            self.count(mnemonic, ops, 2)
            src, off = mem_operand(ops[1])
            mode = BPF_MEMSX if m.group("sx") else BPF_MEM
            if m.group("sx") and m.group("size") == "dw":
                raise _LineError("Invalid mnemonic", mnemonic)
            self.emit(Insn(BPF_LDX | mode | SIZES[m.group("size")], register(ops[0]), src, off))
        elif m := _ST.match(mnemonic):
            self.count(mnemonic, ops, 2)
            dst, off = mem_operand(ops[0])
            size = SIZES[m.group("size")]
            if m.group("x"):
                self.emit(Insn(BPF_STX | BPF_MEM | size, dst, register(ops[1]), off))
            else:
                self.emit(Insn(BPF_ST | BPF_MEM | size, dst, 0, off, imm32(ops[1])))
        elif (m := _JCC.match(mnemonic)) and m.group("op") in JMP_OPS:
            self.count(mnemonic, ops, 3)
            cls = BPF_JMP32 if m.group("width") else BPF_JMP
            dst = register(ops[0])
            code = cls | JMP_OPS[m.group("op")]
            if ops[1].startswith("%"):
                insn = Insn(code | BPF_X, dst, register(ops[1]))
            else:
                insn = Insn(code | BPF_K, dst, imm=imm32(ops[1]))
            self.emit(insn.replace(off=self.target_off(ops[2])))
        elif (m := _ALU.match(mnemonic)) and m.group("op") in ALU_OPS:
            self.alu(mnemonic, m.group("op"), m.group("width"), ops)
        else:
            raise _LineError("Invalid mnemonic", mnemonic)

    def target_off(self, text: str) -> int:
        value = self.target(text)
        if not S16[0] <= value <= S16[1]:
            raise _LineError("Offset out of 16-bit range", abbrev(text))
        return value

    def target_imm(self, text: str) -> int:
        value = self.target(text, "Immediate out of 32-bit range")
        if not S32[0] <= value <= S32[1]:
            raise _LineError("Immediate out of 32-bit range", abbrev(text))
        return value

    def alu(self, mnemonic: str, op: str, width: str | None, ops: list[str]) -> None:
        cls = BPF_ALU if width == "32" else BPF_ALU64
        off = 1 if op in ("sdiv", "smod") else 0
        code = cls | ALU_OPS[op]
        if ALU_OPS[op] == BPF_NEG:
            self.count(mnemonic, ops, 1)
            self.emit(Insn(code, register(ops[0])))
            return
        self.count(mnemonic, ops, 2)
        dst = register(ops[0])
        if ops[1].startswith("%"):
            self.emit(Insn(code | BPF_X, dst, register(ops[1]), off))
        else:
            self.emit(Insn(code | BPF_K, dst, 0, off, imm32(ops[1])))

    def call(self, ops: list[str]) -> None:
        code = BPF_JMP | BPF_CALL
        if len(ops) == 1 and ops[0].startswith("%"):
            self.emit(Insn(code | BPF_X, register(ops[0])))  # callx
        elif len(ops) == 1:
            self.emit(Insn(code, imm=imm32(ops[0])))
        elif len(ops) == 2 and ops[0] == "local":
            self.emit(Insn(code, src=BPF_PSEUDO_CALL, imm=self.target_imm(ops[1])))
        elif len(ops) == 2 and ops[0] == "runtime":
            self.emit(Insn(code, src=BPF_PSEUDO_KFUNC_CALL, imm=imm32(ops[1])))
        elif len(ops) == 2:
            raise _LineError("Invalid call mode", ops[0])
        else:
            raise _LineError("Invalid number of operands", f"call takes 1 or 2, got {len(ops)}")

    def lock(self, ops: list[str]) -> None:
        fetch = bool(ops) and ops[0] == "fetch"
        rest = ops[1:] if fetch else ops
        if len(rest) != 3:
            raise _LineError("Invalid number of operands for lock")
        m = re.match(r"^([a-z]+?)(32)?$", rest[0])
        if not m or m.group(1) not in ATOMIC_OPS:
            raise _LineError("Invalid atomic operation", rest[0])
        imm = ATOMIC_OPS[m.group(1)] | (BPF_FETCH if fetch else 0)
        size = BPF_W if m.group(2) else BPF_DW
        dst, off = mem_operand(rest[1])
        self.emit(Insn(BPF_STX | BPF_ATOMIC | size, dst, register(rest[2]), off, imm))

    # ------------------------------------------------------------ whole text

    def feed(self, raw: str) -> None:
        text = raw.split("#", 1)[0].strip()
        if not text:
            return
        tokens = [t[:-1] if t.endswith(",") else t for t in text.split()]
        tokens = [t for t in tokens if t]
        if not tokens:  # only separators, e.g. a line `,`
            raise _LineError("Invalid mnemonic", text)
        if tokens[0].endswith(":"):
            name = tokens[0][:-1]
            if not _LABEL.match(name):
                raise _LineError("Invalid label", name)
            if name in self.labels and not (name == "exit" and self.seen_exit):
                raise _LineError("Duplicate label", name)
            self.labels[name] = len(self.insns)
            tokens = tokens[1:]
            if not tokens:
                return
        self.insn(tokens[0], tokens[1:])

    def resolve(self) -> None:
        for pc, name, line in self.refs:
            self.line = line
            if name not in self.labels:
                raise _LineError("Invalid label", name)
            rel = self.labels[name] - pc - 1
            insn = self.insns[pc]
            if insn.code == BPF_JMP32 | BPF_JA or insn.is_call():
                self.insns[pc] = insn.replace(imm=rel)
            elif not S16[0] <= rel <= S16[1]:
                raise _LineError("Offset out of 16-bit range", f"jump to {quoted(name)}")
            else:
                self.insns[pc] = insn.replace(off=rel)


def assemble_ubpf(text: str, source: str = "<asm>", first_line: int = 1) -> UbpfProgram:
    """Assemble `%r`-dialect text; line numbers in errors start at `first_line`."""
    asm = _Asm(source)
    try:
        for lineno, raw in enumerate(text.splitlines(), first_line):
            asm.line = lineno
            asm.feed(raw)
        asm.resolve()
    except _LineError as exc:
        raise UbpfAsmError(exc.reason, exc.detail, asm.line, source) from None
    return UbpfProgram(asm.insns, asm.labels)
