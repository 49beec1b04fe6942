"""Feature "loops" of tests/kernel_programs.py: loops whose round count is a bounded scalar
the kernel does not know (the base grammar's counted loops go to 16 rounds with the feature).

`st_loop_unknown` draws the count as `len & M` (or a masked copy of a scalar), M < 16, and
one of: counting down (`rC -= 1; if rC s> 0 goto top`, also JMP32), counting up to it
(`rC += 1; if rC < rN goto top`, both operand orders), or testing first (`if rC == 0 goto
end; ...; rC -= 1; goto top`). The kernel follows such a loop while the counter's range
shrinks, so each stays within its rounds. The body is a nested block at most one level deep
(no calls, no throws, every register keeps its kind); what the generator knew of ranges
before the loop is forgotten inside it (round two may differ) and after it."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.kernel_programs_core import SCALAR, SKB_LEN, Func, _block


def _count(f: Func, dst: int) -> bool:
    """dst = a bounded count the kernel does not know; True when it comes from the ctx
    (then surely unknown: a loop that tests it first surely runs its body)."""
    src = f.scalar()
    from_len = f.ctx() is not None and (src is None or f.draw(st.booleans()))
    if from_len:
        f.emit(f"r{dst} = *(u32 *)(r{f.ctx()} + {SKB_LEN})")
    elif src is not None:
        f.emit(f"r{dst} = r{src}")
    else:
        f.emit(f"r{dst} = {f.draw(st.integers(0, 15))}")
    f.emit(f"{'w' if f.draw(st.booleans()) else 'r'}{dst} &= {f.draw(st.sampled_from((15, 7, 3, 1)))}")
    f.regs[dst] = SCALAR
    return from_len


def st_loop_unknown(f: Func, depth: int) -> bool:
    free = [r for r in (6, 7, 8, 9) if r not in f.reserved]
    kind = f.draw(st.sampled_from(("down", "up", "while")))
    if len(free) < (2 if kind == "up" else 1):
        return False
    ctr = f.draw(st.sampled_from(free))
    limit = f.draw(st.sampled_from([r for r in free if r != ctr])) if kind == "up" else None
    top, end = f.label(), f.label()
    surely = _count(f, limit if limit is not None else ctr)
    if limit is not None:
        f.emit(f"r{ctr} = 0")
    f.lines.append(f"{top}:")
    if kind == "while":
        f.emit(f"if r{ctr} == 0 goto {end}")
    f.reserved |= {ctr} | ({limit} if limit is not None else set())
    f.regs[ctr] = SCALAR
    f.loops += 1
    f.bounds = {}  # what holds in round one may not in round two
    # a body the kernel may skip: only when the count may be a constant 0 it knows
    _block(f, depth + 1, doubt=kind == "while" and not surely)
    f.bounds = {}
    f.loops -= 1
    f.reserved -= {ctr, limit}
    f.regs[ctr] = SCALAR
    is32 = f.draw(st.booleans())
    c = f"{'w' if is32 else 'r'}{ctr}"
    if kind == "down":
        f.emit(f"{c} -= 1")
        f.emit(f"if {c} s> 0 goto {top}")
    elif kind == "up":
        n = f"{'w' if is32 else 'r'}{limit}"
        f.emit(f"{c} += 1")
        f.emit(f"if {c} < {n} goto {top}" if f.draw(st.booleans()) else f"if {n} > {c} goto {top}")
    else:
        f.emit(f"r{ctr} -= 1")
        f.emit(f"goto {top}")
        f.lines.append(f"{end}:")
    return True
