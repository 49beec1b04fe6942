"""One line of BPF assembly text -> instruction slots: the operand grammar of the syntax
`llvm-objdump -d` prints for BPF (plus the few extensions listed in `verifier.asm.assembler`).

Owns only the per-instruction grammar and its range checks. Symbols (labels, functions,
kfuncs, structs) are not resolved here: an instruction that names one comes back with a
`Ref` that `verifier.asm.assembler` patches once the whole file has been read. Errors are
`LineError` without a location; the caller adds `file:line`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from verifier.asm.literals import LineError, abbrev, imm32, off16, parse_int, small_int
from verifier.asm.ops import ALU_OPS, FETCH_OPS, JMP_OPS, LOCK_OPS, MOVSX_OFF, SIZES, SX_SIZES
from verifier.errors import quoted
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
    BPF_K,
    BPF_LD,
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
)


@dataclass(frozen=True)
class Ref:
    """A symbol an instruction names: kind is "jump", "call" or "ldimm"."""

    kind: str
    name: str


_REG = r"[rw]\d+"
_UNUM = r"(?:0[xX][0-9a-fA-F]+|\d+)"
_NUM = rf"[-+]?\s*{_UNUM}"
_SYM = r"[A-Za-z_.$][\w.$]*"
_TARGET = rf"(?:[-+]\s*{_UNUM}|{_SYM})"
_ANNOT = r"(?:\s*<[^>]*>)?"


def _mem(p: str) -> str:
    """`rB`, `rB + N` or `rB - N` (no parentheses) with named groups p_base, p_sign, p_off."""
    return rf"(?P<{p}base>{_REG})\s*(?:(?P<{p}sign>[-+])\s*(?P<{p}off>{_UNUM}))?"


_PMEM = rf"\(\s*{_mem('m')}\s*\)"
_SIZE = r"\*\s*\(\s*(?P<size>[us]\d+)\s*\*\s*\)"


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"^{pattern}$")


_P_EXIT = _rx(r"exit")
_P_CALL = _rx(r"call\s+(?P<arg>.+?)")
_P_JA = _rx(rf"(?P<mn>gotol|goto)\s+(?P<tgt>{_TARGET}){_ANNOT}")
_P_COND = _rx(
    rf"if\s+(?P<dst>{_REG})\s*(?P<op>==|!=|s>=|s<=|s>|s<|>=|<=|>|<|&)\s*(?P<src>{_REG}|{_NUM})"
    rf"\s+goto\s+(?P<tgt>{_TARGET}){_ANNOT}"
)
_P_LOCK = _rx(rf"lock\s+{_SIZE}\s*{_PMEM}\s*(?P<op>\+=|&=|\|=|\^=)\s*(?P<src>{_REG})")
_P_STORE = _rx(rf"{_SIZE}\s*{_PMEM}\s*=\s*(?P<src>{_REG}|{_NUM})")
_P_PSEUDO = _rx(rf"ld_pseudo\s+(?P<dst>{_REG})\s*,\s*(?P<kind>\d+)\s*,\s*(?P<val>{_NUM})")
_P_ALU = _rx(
    rf"(?P<dst>{_REG})\s*(?P<op>s>>=|<<=|>>=|s/=|s%=|\+=|-=|\*=|/=|%=|\|=|&=|\^=)\s*"
    rf"(?P<src>{_REG}|{_NUM})"
)
_P_ASSIGN = _rx(rf"(?P<dst>{_REG})\s*=\s*(?P<rhs>.+)")
# Right-hand sides of `dst = ...`.
_R_LDIMM = _rx(rf"(?P<val>{_NUM}|{_SYM})\s+ll")
_R_NEG = _rx(rf"-\s*(?P<src>{_REG})")
_R_MOVSX = _rx(rf"\(\s*(?P<sx>s8|s16|s32)\s*\)\s*(?P<src>{_REG})")
_R_END = _rx(rf"(?P<kind>be|le|bswap)(?P<bits>\d+)\s+(?P<src>{_REG})")
_R_LDX = _rx(rf"{_SIZE}\s*{_PMEM}")
_R_SKB = _rx(rf"{_SIZE}\s*skb\s*\[\s*(?:{_mem('i')}|(?P<abs>{_NUM}))\s*\]")
_R_FETCH = _rx(rf"atomic_fetch_(?P<op>add|and|or|xor)\(\s*\(\s*(?P<size>u32|u64)\s*\*\s*\)\s*{_PMEM}"
               rf"\s*,\s*(?P<src>{_REG})\s*\)")  # fmt: skip
_R_XCHG = _rx(rf"(?P<mn>xchg_64|xchg32_32)\(\s*{_mem('m')}\s*,\s*(?P<src>{_REG})\s*\)")
_R_CMPXCHG = _rx(
    rf"(?P<mn>cmpxchg_64|cmpxchg32_32)\(\s*{_mem('m')}\s*,\s*(?P<old>{_REG})\s*,\s*(?P<src>{_REG})\s*\)"
)
_R_REG = _rx(_REG)
_R_IMM = _rx(_NUM)
_R_KFUNC_ID = _rx(rf"kfunc\(\s*(?P<id>{_NUM})\s*(?:,\s*(?P<off>{_NUM})\s*)?\)")
_R_PC_REL = _rx(rf"pc\s*(?P<rel>[-+]\s*{_UNUM})")


def reg(tok: str, kinds: str = "rw") -> tuple[int, bool]:
    """Register number and whether it was written as a 32-bit `w` register."""
    num = int(tok[1:]) if len(tok) <= 3 else -1
    if not 0 <= num <= 10 or tok[1:] != str(num):
        raise LineError(f"invalid register {quoted(abbrev(tok, 60))} (r0-r10 / w0-w10)")
    if tok[0] not in kinds:
        want = "a 64-bit r" if kinds == "r" else "a 32-bit w"
        raise LineError(f"{quoted(abbrev(tok, 60))} must be {want} register here")
    return num, tok[0] == "w"


def _same_width(a: str, b: str) -> None:
    if a[0] != b[0]:
        raise LineError(f"operands {quoted(abbrev(a, 60))} and {quoted(abbrev(b, 60))} mix 32-bit and 64-bit"
                        " registers")


def _mem_off(m: re.Match[str], p: str) -> int:
    if m.group(f"{p}off") is None:
        return 0
    value = parse_int(m.group(f"{p}off"), "offset")
    return off16(-value if m.group(f"{p}sign") == "-" else value)


def _base(m: re.Match[str], p: str) -> int:
    return reg(m.group(f"{p}base"), "r")[0]


def _target(tok: str, is_long: bool) -> tuple[int, Ref | None]:
    """A jump target: a relative `+N`/`-N` (checked s16, or s32 for gotol) or a label."""
    if tok[0] in "+-":
        value = parse_int(tok, "jump offset")
        if is_long:
            return imm32(tok.replace(" ", "")), None
        return off16(value, "jump offset"), None
    return 0, Ref("jump", tok)


Parsed = tuple[list[Insn], Ref | None]


def _p_exit(m: re.Match[str]) -> Parsed:
    return [Insn(BPF_JMP | BPF_EXIT)], None


def _p_call(m: re.Match[str]) -> Parsed:
    arg = m.group("arg").strip()
    code = BPF_JMP | BPF_CALL
    if _R_IMM.match(arg):
        return [Insn(code, 0, 0, 0, imm32(arg))], None
    if k := _R_KFUNC_ID.match(arg):
        off = off16(parse_int(k.group("off"))) if k.group("off") else 0
        return [Insn(code, 0, BPF_PSEUDO_KFUNC_CALL, off, imm32(k.group("id")))], None
    if p := _R_PC_REL.match(arg):
        return [Insn(code, 0, BPF_PSEUDO_CALL, 0, imm32(p.group("rel").replace(" ", "")))], None
    if re.match(rf"^{_SYM}$", arg):
        return [Insn(code)], Ref("call", arg)
    raise LineError(f"bad call target {quoted(abbrev(arg, 60))}")


def _p_ja(m: re.Match[str]) -> Parsed:
    is_long = m.group("mn") == "gotol"
    rel, ref = _target(m.group("tgt"), is_long)
    if is_long:
        return [Insn(BPF_JMP32 | BPF_JA, 0, 0, 0, rel)], ref
    return [Insn(BPF_JMP | BPF_JA, 0, 0, rel, 0)], ref


def _p_cond(m: re.Match[str]) -> Parsed:
    dst, is32 = reg(m.group("dst"))
    cls = (BPF_JMP32 if is32 else BPF_JMP) | JMP_OPS[m.group("op")]
    rel, ref = _target(m.group("tgt"), False)
    src = m.group("src")
    if _R_REG.match(src):
        _same_width(m.group("dst"), src)
        return [Insn(cls | BPF_X, dst, reg(src)[0], rel, 0)], ref
    return [Insn(cls | BPF_K, dst, 0, rel, imm32(src))], ref


def _atomic_size(size: str, regs: list[str]) -> int:
    if size not in ("u32", "u64"):
        raise LineError(f"atomic operations take u32 or u64, not {size}")
    for r in regs:
        reg(r, "r" if size == "u64" else "rw")
    return BPF_W if size == "u32" else BPF_DW


def _p_lock(m: re.Match[str]) -> Parsed:
    size = _atomic_size(m.group("size"), [m.group("src")])
    code = BPF_STX | BPF_ATOMIC | size
    return [
        Insn(code, _base(m, "m"), reg(m.group("src"))[0], _mem_off(m, "m"), LOCK_OPS[m.group("op")])
    ], None


def _p_store(m: re.Match[str]) -> Parsed:
    size = m.group("size")
    if size not in SIZES:
        raise LineError(f"unknown store size {quoted(size)} (u8/u16/u32/u64)")
    base, off, src = _base(m, "m"), _mem_off(m, "m"), m.group("src")
    if _R_REG.match(src):
        num, is32 = reg(src)
        if is32 and size == "u64":
            raise LineError(f"a u64 store needs a 64-bit register, not {quoted(abbrev(src, 60))}")
        return [Insn(BPF_STX | BPF_MEM | SIZES[size], base, num, off, 0)], None
    return [Insn(BPF_ST | BPF_MEM | SIZES[size], base, 0, off, imm32(src))], None


def _p_pseudo(m: re.Match[str]) -> Parsed:
    dst = reg(m.group("dst"), "r")[0]
    kind = small_int(m.group("kind"), "ld_pseudo kind")
    if not 1 <= kind <= 6:
        raise LineError(f"ld_pseudo kind {kind} out of range (1-6)")
    return list(ld_imm64(dst, _imm64(m.group("val")), kind)), None


def _imm64(tok: str) -> int:
    value = parse_int(tok)
    if not -(1 << 63) <= value < (1 << 64):
        raise LineError(f"immediate {abbrev(tok)} out of range (64 bits)")
    return value


def _p_alu(m: re.Match[str]) -> Parsed:
    dst_tok, src = m.group("dst"), m.group("src")
    dst, is32 = reg(dst_tok)
    op, off = ALU_OPS[m.group("op")]
    cls = (BPF_ALU if is32 else BPF_ALU64) | op
    if _R_REG.match(src):
        _same_width(dst_tok, src)
        return [Insn(cls | BPF_X, dst, reg(src)[0], off, 0)], None
    return [Insn(cls | BPF_K, dst, 0, off, imm32(src))], None


def _same_reg(dst_tok: str, src_tok: str, what: str) -> None:
    if dst_tok != src_tok:
        raise LineError(f"{what} must use the same register on both sides ({quoted(abbrev(dst_tok, 60))},"
                        f" {quoted(abbrev(src_tok, 60))})")


def _assign(dst_tok: str, rhs: str) -> Parsed:
    dst, is32 = reg(dst_tok)
    alu = BPF_ALU if is32 else BPF_ALU64
    if m := _R_LDIMM.match(rhs):
        reg(dst_tok, "r")
        val = m.group("val")
        if re.match(rf"^{_SYM}$", val):
            return list(ld_imm64(dst, 0)), Ref("ldimm", val)
        return list(ld_imm64(dst, _imm64(val))), None
    if m := _R_NEG.match(rhs):
        _same_reg(dst_tok, m.group("src"), "negation")
        return [Insn(alu | BPF_NEG | BPF_K, dst)], None
    if m := _R_MOVSX.match(rhs):
        _same_width(dst_tok, m.group("src"))
        if is32 and m.group("sx") == "s32":
            raise LineError("32-bit movsx takes (s8) or (s16)")
        return [Insn(alu | BPF_MOV | BPF_X, dst, reg(m.group("src"))[0], MOVSX_OFF[m.group("sx")])], None
    if m := _R_END.match(rhs):
        _same_reg(dst_tok.replace("w", "r"), m.group("src").replace("w", "r"), "byte swap")
        bits = small_int(m.group("bits"), "byte swap width")
        if bits not in (16, 32, 64):
            raise LineError(f"byte swap width must be 16, 32 or 64 (is {bits})")
        code = {"be": BPF_ALU | BPF_TO_BE, "le": BPF_ALU | BPF_TO_LE, "bswap": BPF_ALU64 | BPF_TO_LE}
        return [Insn(code[m.group("kind")] | BPF_END, dst, 0, 0, bits)], None
    if m := _R_LDX.match(rhs):
        size = m.group("size")
        if size in SIZES:
            mode, sz = BPF_MEM, SIZES[size]
        elif size in SX_SIZES:
            mode, sz = BPF_MEMSX, SX_SIZES[size]
        else:
            raise LineError(f"unknown load size {quoted(size)} (u8/u16/u32/u64/s8/s16/s32)")
        if is32 and (size == "u64" or mode == BPF_MEMSX):
            raise LineError(f"a {size} load needs a 64-bit destination, not {quoted(abbrev(dst_tok, 60))}")
        return [Insn(BPF_LDX | mode | sz, dst, _base(m, "m"), _mem_off(m, "m"), 0)], None
    if m := _R_SKB.match(rhs):
        return _skb(dst_tok, m)
    if m := _R_FETCH.match(rhs):
        _same_reg(dst_tok, m.group("src"), "atomic fetch")
        size = _atomic_size(m.group("size"), [dst_tok])
        imm = FETCH_OPS[m.group("op")] | BPF_FETCH
        return [Insn(BPF_STX | BPF_ATOMIC | size, _base(m, "m"), dst, _mem_off(m, "m"), imm)], None
    if m := _R_XCHG.match(rhs):
        _same_reg(dst_tok, m.group("src"), "xchg")
        size = _atomic_size("u64" if m.group("mn") == "xchg_64" else "u32", [dst_tok])
        return [Insn(BPF_STX | BPF_ATOMIC | size, _base(m, "m"), dst, _mem_off(m, "m"), BPF_XCHG)], None
    if m := _R_CMPXCHG.match(rhs):
        size = _atomic_size("u64" if m.group("mn") == "cmpxchg_64" else "u32", [dst_tok, m.group("src")])
        _same_reg(dst_tok, m.group("old"), "cmpxchg")
        if dst != 0:
            raise LineError(f"cmpxchg compares against r0/w0, not {quoted(abbrev(dst_tok, 60))}")
        src = reg(m.group("src"))[0]
        return [Insn(BPF_STX | BPF_ATOMIC | size, _base(m, "m"), src, _mem_off(m, "m"), BPF_CMPXCHG)], None
    if _R_REG.match(rhs):
        _same_width(dst_tok, rhs)
        return [Insn(alu | BPF_MOV | BPF_X, dst, reg(rhs)[0])], None
    if _R_IMM.match(rhs):
        return [Insn(alu | BPF_MOV | BPF_K, dst, 0, 0, imm32(rhs))], None
    raise LineError(f"cannot parse right-hand side {quoted(abbrev(rhs, 60))}")


def _skb(dst_tok: str, m: re.Match[str]) -> Parsed:
    size = m.group("size")
    if size not in ("u8", "u16", "u32"):
        raise LineError(f"packet loads take u8/u16/u32, not {size}")
    if reg(dst_tok, "r")[0] != 0:
        raise LineError(f"packet loads write r0, not {quoted(abbrev(dst_tok, 60))}")
    if m.group("abs") is not None:
        return [Insn(BPF_LD | BPF_ABS | SIZES[size], 0, 0, 0, imm32(m.group("abs")))], None
    imm = 0
    if m.group("ioff") is not None:
        imm = imm32(m.group("ioff"))
        imm = -imm if m.group("isign") == "-" else imm
    return [Insn(BPF_LD | BPF_IND | SIZES[size], 0, _base(m, "i"), 0, imm)], None


def _p_assign(m: re.Match[str]) -> Parsed:
    return _assign(m.group("dst"), m.group("rhs").strip())


_FORMS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], Parsed]], ...] = (
    (_P_EXIT, _p_exit),
    (_P_CALL, _p_call),
    (_P_JA, _p_ja),
    (_P_COND, _p_cond),
    (_P_LOCK, _p_lock),
    (_P_STORE, _p_store),
    (_P_PSEUDO, _p_pseudo),
    (_P_ALU, _p_alu),
    (_P_ASSIGN, _p_assign),
)


def parse_insn(text: str) -> Parsed:
    """Parse one instruction (comments and labels already removed) into 1 or 2 slots."""
    text = text.strip()
    for pattern, handler in _FORMS:
        if m := pattern.match(text):
            return handler(m)
    word = text.split()[0] if text.split() else text
    raise LineError(f"unknown instruction {quoted(abbrev(text, 60))}" if word else "empty instruction")
