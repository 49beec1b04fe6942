"""EQUALITY of the scalar domain (verifier/check/scalar*.py) with the live kernel's verifier.

Hypothesis (derandomized, SCALAR_KERNEL_EXAMPLES examples, default 40) writes straight-line
tc programs over r2..r9: ctx loads and constants, then ALU64/ALU32 ops (imm and register
operands, shifts, mul, div, neg, byte swaps, 32-bit and sign-extending movs) and
conditional jumps (JMP/JMP32, imm and register) whose taken side skips one instruction.
The kernel verifies each at log level 2; a tiny abstract evaluator built on our domain
follows the log (each printed instruction, each `from X to Y:` branch it pops, each
pruned `safe`) and every register value the kernel prints must equal `scalar_text` of
ours, the `P` of precise scalars aside. The evaluator also keeps the kernel's scalar ids:
movs link registers, `+= const` links with an offset, and a jump refines the linked live
registers (`sync_linked_regs`), so ids print the same too."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.live_kernel import require_live_kernel
from unwind.live.load import kernel_load
from verifier.asm.assembler import assemble
from verifier.check.scalar import (
    Scalar,
    coerce_reg_to_size,
    is_const,
    mark_reg_unknown,
    scalar_alu,
    scalar_end,
    scalar_mov32,
    scalar_movsx,
    scalar_neg,
)
from verifier.check.scalar_bounds import is_reg_const, reg_const_value, s32, s64
from verifier.check.scalar_cmp import is_branch_taken, reg_set_min_max
from verifier.check.scalar_fmt import scalar_text
from verifier.isa import insn as I

EXAMPLES = int(os.environ.get("SCALAR_KERNEL_EXAMPLES", "40"))
RANDOM = bool(os.environ.get("SCALAR_KERNEL_RANDOM"))  # explore: new programs every run
REGS = range(2, 10)
U64 = (1 << 64) - 1
ALU_OPS = {"+": I.BPF_ADD, "-": I.BPF_SUB, "*": I.BPF_MUL, "/": I.BPF_DIV, "%": I.BPF_MOD,
           "&": I.BPF_AND, "|": I.BPF_OR, "^": I.BPF_XOR, "<<": I.BPF_LSH, ">>": I.BPF_RSH,
           "s>>": I.BPF_ARSH}
JMP_OPS = {"==": I.BPF_JEQ, "!=": I.BPF_JNE, ">": I.BPF_JGT, ">=": I.BPF_JGE, "<": I.BPF_JLT,
           "<=": I.BPF_JLE, "&": I.BPF_JSET, "s>": I.BPF_JSGT, "s>=": I.BPF_JSGE,
           "s<": I.BPF_JSLT, "s<=": I.BPF_JSLE}
CTX_LOADS = [("u32", 0), ("u32", 8), ("u32", 16), ("u32", 32), ("u8", 0), ("u16", 0),
             ("u8", 8), ("u16", 8), ("u8", 68)]
SIZES = {"u8": 1, "u16": 2, "u32": 4}

# --- the generator --------------------------------------------------------------------------

imm32 = st.one_of(st.integers(-600, 600), st.sampled_from(
    [0x7FFFFFFF, -0x80000000, 0xFFFF, 0x8000, 0x10000, 0xFF00, -256, 0x7FFFFF00]),
    st.integers(-(1 << 31), (1 << 31) - 1))
imm64 = st.one_of(st.sampled_from([1 << 32, 1 << 63, (1 << 63) - 1, U64 - 0xFF, 0xFFFFFFFF00000000,
                                   0x100000005]), st.integers(0, U64))
reg = st.sampled_from(list(REGS))


@st.composite
def init_op(draw: st.DrawFn, dst: int) -> tuple:
    kind = draw(st.sampled_from(["ldx", "ldx", "ldx", "movi", "lddw"]))
    if kind == "ldx":
        return ("ldx", dst, *draw(st.sampled_from(CTX_LOADS)))
    if kind == "movi":
        return ("movi", dst, draw(imm32), draw(st.booleans()))
    return ("lddw", dst, draw(imm64))


@st.composite
def body_op(draw: st.DrawFn) -> tuple:
    kind = draw(st.sampled_from(["alu"] * 8 + ["jmp"] * 5 + ["mov", "movsx", "neg", "end"]))
    dst, alu64 = draw(reg), draw(st.booleans())
    if kind == "alu":
        op = draw(st.sampled_from(list(ALU_OPS)))
        if draw(st.booleans()):
            return ("alu", op, dst, draw(reg), 0, alu64)
        if op in ("<<", ">>", "s>>"):
            imm = draw(st.integers(0, 63 if alu64 else 31))
        elif op in ("/", "%"):
            imm = draw(imm32.filter(bool))
        else:
            imm = draw(imm32)
        return ("alu", op, dst, None, imm, alu64)
    if kind == "jmp":
        op = draw(st.sampled_from(list(JMP_OPS)))
        src = draw(st.one_of(st.none(), reg))
        return ("jmp", op, dst, src, draw(imm32), not alu64)
    if kind == "mov":
        return ("mov", dst, draw(reg), alu64)
    if kind == "movsx":
        bits = draw(st.sampled_from([8, 16, 32] if alu64 else [8, 16]))
        return ("movsx", dst, draw(reg), bits, alu64)
    if kind == "neg":
        return ("neg", dst, alu64)
    return ("end", dst, draw(st.sampled_from(["le", "be", "bswap"])), draw(st.sampled_from([16, 32, 64])))


@st.composite
def programs(draw: st.DrawFn) -> list[tuple]:
    inits = [("movi", 0, 0, True)] + [draw(init_op(r)) for r in REGS]
    return inits + draw(st.lists(body_op(), min_size=3, max_size=18)) + [("movi", 0, 0, True)]


def render(op: tuple) -> str:
    k = op[0]
    rw = lambda r, wide: f"{'r' if wide else 'w'}{r}"  # noqa: E731
    if k == "ldx":
        return f"r{op[1]} = *({op[2]} *)(r1 + {op[3]})"
    if k == "movi":
        return f"{rw(op[1], op[3])} = {op[2]}"
    if k == "lddw":
        return f"r{op[1]} = {op[2]} ll"
    if k == "alu":
        _, o, dst, src, imm, wide = op
        return f"{rw(dst, wide)} {o}= {rw(src, wide) if src is not None else imm}"
    if k == "mov":
        return f"{rw(op[1], op[3])} = {rw(op[2], op[3])}"
    if k == "movsx":
        return f"{rw(op[1], op[4])} = (s{op[3]}) {rw(op[2], op[4])}"
    if k == "neg":
        return f"{rw(op[1], op[2])} = -{rw(op[1], op[2])}"
    if k == "end":
        return f"r{op[1]} = {op[2]}{op[3]} r{op[1]}"
    raise AssertionError(op)


def program_text(ops: list[tuple]) -> tuple[str, dict[int, int]]:
    """The asm text (every jump skips the next op) and each op's slot pc."""
    lines, pcs, pc = [".prog_type tc", "main:"], {}, 0
    for i, op in enumerate(ops):
        lines.append(f".L{i}:")
        pcs[i] = pc
        if op[0] == "jmp":
            _, o, dst, src, imm, j32 = op
            w = "w" if j32 else "r"
            lines.append(f"\tif {w}{dst} {o} {f'{w}{src}' if src is not None else imm} goto .L{i + 2}")
        else:
            lines.append("\t" + render(op))
        pc += 2 if op[0] == "lddw" else 1
    lines += [f".L{len(ops)}:", "\texit"]
    pcs[len(ops)] = pc
    return "\n".join(lines) + "\n", pcs


# --- the abstract evaluator ---------------------------------------------------------------


@dataclass
class Reg:
    s: Scalar
    id: int = 0
    off: int = 0
    link: int = 0  # 0, or 32/64: linked as `id + off` by a 32/64-bit add

    def copy(self) -> Reg:
        return Reg(self.s.copy(), self.id, self.off, self.link)

    def text(self) -> str:
        return scalar_text(self.s, id=self.id, add_const=self.off if self.link else None)


class Evaluator:
    """The kernel's path through the program, one log event at a time."""

    def __init__(self, ops: list[tuple], pcs: dict[int, int]) -> None:
        self.ops, self.pcs = ops, pcs
        self.index = {pc: i for i, pc in pcs.items()}
        self.live = liveness(ops)
        self.regs: dict[int, Reg] = {}
        self.stack: list[tuple[int, int, dict[int, Reg]]] = []
        self.id_gen = 0

    def new_id(self, r: Reg) -> None:
        """assign_scalar_id_before_mov: a `+= const` link is dropped, a non-constant
        without an id gets a fresh one."""
        if r.link:
            r.id, r.off, r.link = 0, 0, 0
        if not r.id and not is_const(r.s):
            self.id_gen += 1
            r.id = self.id_gen

    def step(self, i: int) -> int:
        """Execute op `i`; the index of the next op on this path."""
        op, regs = self.ops[i], self.regs
        k = op[0]
        if k == "ldx":
            s = Scalar()
            mark_reg_unknown(s)
            coerce_reg_to_size(s, SIZES[op[2]])
            regs[op[1]] = Reg(s)
        elif k == "movi":
            regs[op[1]] = Reg(Scalar.const(op[2] & (U64 if op[3] else 0xFFFFFFFF)))
        elif k == "lddw":
            regs[op[1]] = Reg(Scalar.const(op[2]))
        elif k == "alu":
            self.alu(*op[1:])
        elif k == "neg":
            scalar_neg(regs[op[1]].s, op[2])
            regs[op[1]] = Reg(regs[op[1]].s)
        elif k == "end":
            code = {"le": I.BPF_ALU | I.BPF_TO_LE, "be": I.BPF_ALU | I.BPF_TO_BE,
                    "bswap": I.BPF_ALU64 | I.BPF_TO_LE}[op[2]] | I.BPF_END
            scalar_end(regs[op[1]].s, I.Insn(code, op[1], imm=op[3]))
            if (op[2], op[3]) != ("le", 64):  # only the identity keeps the register's id
                regs[op[1]] = Reg(regs[op[1]].s)
        elif k in ("mov", "movsx"):
            self.mov(op)
        elif k == "jmp":
            return self.jump(i, *op[1:])
        return i + 1

    def alu(self, o: str, dst: int, src: int | None, imm: int, alu64: bool) -> None:
        d = self.regs[dst]
        s = self.regs[src].s.copy() if src is not None else Scalar.const(imm)
        scalar_alu(d.s, s, ALU_OPS[o], alu64)
        if o in "+-" and d.id and is_reg_const(s, not alu64):
            val = reg_const_value(s, not alu64)
            off = s32(val)
            if ((alu64 and not -(1 << 31) <= s64(val) < 1 << 31) or (not alu64 and d.link == 64)
                    or (o == "-" and off == -(1 << 31)) or d.link):
                d.id, d.off, d.link = 0, 0, 0
            else:
                d.off, d.link = (off if o == "+" else -off), (64 if alu64 else 32)
        else:
            d.id, d.off, d.link = 0, 0, 0

    def mov(self, op: tuple) -> None:
        src = self.regs[op[2]]
        wide = op[-1]
        if op[0] == "mov" and wide:
            self.new_id(src)
            self.regs[op[1]] = src.copy()
            return
        keep = src.s.umax_value < (1 << 32 if op[0] == "mov" else 1 << (op[3] - 1))
        if keep:
            self.new_id(src)
        d = src.copy()
        if not keep:
            d.id, d.off, d.link = 0, 0, 0
        if op[0] == "mov":
            scalar_mov32(d.s, src.s)
        else:
            scalar_movsx(d.s, src.s, op[3], wide)
        self.regs[op[1]] = d

    def jump(self, i: int, o: str, dst: int, src: int | None, imm: int, j32: bool) -> int:
        regs = self.regs
        a = regs[dst].s
        b = regs[src].s if src is not None else Scalar.const(imm)
        pred = is_branch_taken(a, b, JMP_OPS[o], j32)
        if pred >= 0:
            return i + 2 if pred else i + 1
        other = {r: v.copy() for r, v in regs.items()}
        if src is not None:
            reg_set_min_max(other[dst].s, other[src].s, a, b, JMP_OPS[o], j32)
        else:
            reg_set_min_max(other[dst].s, Scalar.const(imm), a, b.copy(), JMP_OPS[o], j32)
        for known in ([src] if src is not None else []) + [dst]:
            for state in (regs, other):
                sync_linked_regs(state, known, self.live[i])
        self.stack.append((self.pcs[i], self.pcs[i + 2], other))
        return i + 1


def sync_linked_regs(regs: dict[int, Reg], known: int, live: set[int]) -> None:
    k = regs[known]
    if not k.id:
        return
    for r in sorted(live):
        reg = regs.get(r)
        if r == known or reg is None or reg.id != k.id:
            continue
        if reg.off == k.off and (reg.link == k.link or not (reg.link or k.link)):
            regs[r] = k.copy()
            continue
        s = k.s.copy()
        scalar_alu(s, Scalar.const(reg.off - k.off), I.BPF_ADD, reg.link != 32)
        regs[r] = Reg(s, reg.id, reg.off, reg.link)


def uses_defs(op: tuple) -> tuple[set[int], set[int]]:
    k = op[0]
    if k == "ldx":
        return {1}, {op[1]}
    if k in ("movi", "lddw"):
        return set(), {op[1]}
    if k == "alu":
        return {op[2]} | ({op[3]} if op[3] is not None else set()), {op[2]}
    if k in ("mov", "movsx"):
        return {op[2]}, {op[1]}
    if k in ("neg", "end"):
        return {op[1]}, {op[1]}
    return {op[2]} | ({op[3]} if op[3] is not None else set()), set()


def liveness(ops: list[tuple]) -> list[set[int]]:
    """Registers live before each op (the exit at the end reads r0)."""
    live: list[set[int]] = [set() for _ in range(len(ops) + 1)]
    live[len(ops)] = {0}
    for i in reversed(range(len(ops))):
        after = live[i + 1] | (live[i + 2] if ops[i][0] == "jmp" else set())
        uses, defs = uses_defs(ops[i])
        live[i] = uses | (after - defs)
    return live


# --- the log --------------------------------------------------------------------------------

INSN_LINE = re.compile(r"^(\d+): \([0-9a-f]{2}\) [^;]*?(?:\s*; (.*))?$")
FROM_LINE = re.compile(r"^from (\d+) to (\d+): (.*)$")
STATE_LINE = re.compile(r"^(\d+): (R.*)$")
SAFE_LINE = re.compile(r"^(\d+): safe$")


def parse_regs(text: str) -> dict[int, str]:
    """`R1=ctx() R2=scalar(..., var_off=(0x0; 0xff))` -> {1: 'ctx()', 2: 'scalar(...)'}."""
    out: dict[int, str] = {}
    for m in re.finditer(r"(?:^| )R(\d+)=", text):
        start, depth, j = m.end(), 0, m.end()
        while j < len(text) and (depth or text[j] != " "):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            j += 1
        out[int(m.group(1))] = text[start:j]
    return out


def compare(ev: Evaluator, printed: dict[int, str], where: str, program: str) -> None:
    for r, text in printed.items():
        if r in (1, 10):
            continue
        ours = ev.regs[r].text() if r in ev.regs else "<uninit>"
        assert text.removeprefix("P") == ours, (
            f"{where}: R{r} kernel {text} ours {ours}\n--- program ---\n{program}")


def follow_log(ops: list[tuple], log: str, program: str) -> int:
    """Drive the evaluator along the kernel's log; the number of compared events."""
    _, pcs = program_text(ops)
    ev = Evaluator(ops, pcs)
    nxt: int | None = 0  # index of the op the current path executes next
    compared = 0
    for line in log.splitlines():
        if m := FROM_LINE.match(line):
            assert ev.stack, f"kernel pops a branch we never pushed: {line}\n{program}"
            frm, to, regs = ev.stack.pop()
            assert (frm, to) == (int(m.group(1)), int(m.group(2))), f"{line} vs ours {frm}->{to}"
            ev.regs, nxt = regs, ev.index[to]
            if m.group(3) == "safe":
                nxt = None
            else:
                compare(ev, parse_regs(m.group(3)), line[:20], program)
                compared += 1
        elif m := SAFE_LINE.match(line):
            assert nxt is not None and pcs[nxt] == int(m.group(1)), f"{line} but ours at {nxt}"
            nxt = None
        elif m := STATE_LINE.match(line):
            compare(ev, parse_regs(m.group(2)), line[:12], program)
        elif m := INSN_LINE.match(line):
            pc = int(m.group(1))
            if pc == pcs[len(ops)]:  # exit
                nxt = None
                continue
            assert nxt is not None and pcs[nxt] == pc, f"kernel at {pc}, ours at {nxt}\n{program}"
            nxt = ev.step(nxt)
            if m.group(2):
                compare(ev, parse_regs(m.group(2)), f"after {pc}", program)
                compared += 1
    assert not ev.stack, f"branches we pushed the kernel never popped: {ev.stack}\n{program}"
    return compared


def check_program(ops: list[tuple]) -> None:
    text, _ = program_text(ops)
    kp = kernel_load(assemble(text, "<scalar>"), None, log_level=2)
    try:
        assert kp.accepted, f"kernel rejected a generated program:\n{text}\n{kp.log[-2000:]}"
        follow_log(ops, kp.log, text)
    finally:
        kp.close()


@settings(max_examples=EXAMPLES, derandomize=not RANDOM, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def _property(ops: list[tuple]) -> None:
    check_program(ops)


def test_scalar_domain_prints_like_the_kernel() -> None:
    require_live_kernel()
    _property()
