"""The abstract evaluator of tests/test_scalar_kernel.py: it runs a generated straight-line
program (a list of op tuples) on our scalar domain along the path the kernel's verifier
log takes, and checks each register text the log prints against `scalar_text`. Besides the
domain it keeps what the kernel keeps around scalars: ids (movs link registers, `+= const`
links with an offset, a jump refines the linked live registers) and the branch stack."""

from __future__ import annotations

import re
from dataclasses import dataclass

from verifier.check.scalar import (
    Scalar,
    coerce_reg_to_size,
    is_const,
    mark_reg_unknown,
    scalar_alu,
    scalar_alu_forks,
    scalar_end,
    scalar_mov32,
    scalar_movsx,
    scalar_neg,
)
from verifier.check.scalar_bounds import is_reg_const, reg_const_value, s32, s64
from verifier.check.scalar_cmp import is_branch_taken, reg_set_min_max
from verifier.check.scalar_fmt import scalar_text
from verifier.isa import insn as I

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
        self.current = 0  # the op being executed

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
        self.current = i
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
        if scalar_alu_forks(d.s, s, ALU_OPS[o], alu64):  # the other path: dst = 0, same insn
            other = {r: v.copy() for r, v in self.regs.items()}
            other[dst] = Reg(Scalar.const(0))
            self.stack.append((self.pcs[self.current], self.pcs[self.current], other))
            d.s = Scalar.const(U64)
        wide_before = d.s.umax_value >> 32  # a 32-bit op keeps no link to a wider value
        scalar_alu(d.s, s, ALU_OPS[o], alu64)
        if o in "+-" and d.id and is_reg_const(s, not alu64):
            val = reg_const_value(s, not alu64)
            off = s32(val)
            if ((alu64 and not -(1 << 31) <= s64(val) < 1 << 31)
                    or (not alu64 and (d.link == 64 or wide_before))
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
        if reg.off == k.off:  # the same offset (also both unlinked): a plain copy, id flags too
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


def follow_log(ops: list[tuple], pcs: dict[int, int], log: str, program: str) -> int:
    """Drive the evaluator along the kernel's log; the number of compared events."""
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
