"""The deliberate flaws of tests/kernel_programs.py: one error per flawed program, put at a
random point of one function, so that the kernel's and our rejections (and their messages)
are compared too.

`FLAWS` are the base grammar's; `FEATURE_FLAWS` join them when a program is drawn with the
feature they break (tests/kernel_programs_memory.py draws those). `flaw` records in
`Func.flaw_state` whether the kernel surely refuses what it put ("certain", as long as the
point is reached) or may accept it ("uncertain": e.g. a shift by 32 of a 64-bit register,
or a register a caller may have set)."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.kernel_programs_core import CTX, DIVS, SCALAR, SHIFTS, SIZES, STACK, Func, _clobber, _w
from tests.kernel_programs_memory import PACKET_FLAWS, STACK_FLAWS, packet_flaw, stack_flaw

# made by tests/kernel_flaws.py (r0_uninit: by `function`); not drawn, see docs/deviations.md
# "errors in CFG order": "unreachable" (an insn after the last exit) and "infinite_loop"
FLAWS = (
    "uninit_read", "stack_oob", "stack_misaligned", "div_zero", "bad_shift", "ctx_bad_access",
    "ctx_arith", "write_fp", "r0_uninit", "global_bad_arg",
)  # fmt: skip
FEATURE_FLAWS = {"varoff": STACK_FLAWS, "packet": PACKET_FLAWS}


def flaw(f: Func, kind: str) -> None:
    """One deliberate error the kernel rejects (or, for a few shapes, accepts: e.g. a register
    the generator thinks uninitialised that a caller did set); only the verdicts compare."""
    placed = _flaw(f, kind)
    if placed is not None:
        f.flaw_state = "certain" if placed and not f.doubt else "uncertain"
        f.flaw_calls = set(f.calls)


def _flaw(f: Func, kind: str) -> bool | None:
    """Puts the flaw; answers None when nothing was put, else whether the kernel surely
    refuses it."""
    dst = f.draw(st.sampled_from([r for r in f.writable() if r != 10]))
    if kind in STACK_FLAWS:
        return True if stack_flaw(f, kind) else None
    if kind in PACKET_FLAWS:
        return True if packet_flaw(f, kind) else None
    if kind == "uninit_read":
        unset = f.maybe if f.features else f.regs  # with features: no path wrote it
        pool = [r for r in range(10) if r not in unset and not (f.sig.is_global and 1 <= r <= 5)]
        if pool:
            f.emit(f"r{dst} {f.draw(st.sampled_from(('=', '+=')))} r{f.draw(st.sampled_from(pool))}")
            return f.sig.name == "main" and bool(f.features)
    elif kind == "stack_oob":
        off = f.draw(st.sampled_from((-520, -516, -512 - 8 * STACK, 0, 8, 16)))
        size = f.draw(st.sampled_from((1, 4, 8)))
        text = f"*({SIZES[size]} *)(r10 {off:+})".replace("+", "+ ").replace("-", "- ")
        f.emit(f"{text} = 0" if f.draw(st.booleans()) else f"r{dst} = {text}")
        return True
    elif kind == "stack_misaligned":
        size = f.draw(st.sampled_from((2, 4, 8)))
        off = -size * f.draw(st.integers(1, 4)) + f.draw(st.integers(1, size - 1))
        f.emit(f"*({SIZES[size]} *)(r10 - {-off}) = 0" if f.draw(st.booleans())
               else f"r{dst} = *({SIZES[size]} *)(r10 - {-off})")  # fmt: skip
        return True
    elif kind == "div_zero" and (src := f.scalar()) is not None:
        f.emit(f"{_w(src, f.draw(st.booleans()))} {f.draw(st.sampled_from(DIVS))} 0")
        return True
    elif kind == "bad_shift" and (src := f.scalar()) is not None:
        is32 = f.draw(st.booleans())
        amounts = (64, 100) if f.features and not is32 else (32, 64, 100)  # r << 32 is no flaw
        op, amount = f.draw(st.sampled_from(SHIFTS)), f.draw(st.sampled_from(amounts))
        f.emit(f"{_w(src, is32)} {op} {amount}")
        return amount >= (32 if is32 else 64)
    elif kind == "ctx_bad_access" and f.of(CTX):
        shapes = ((8, 0), (4, 2), (2, 0), (4, 200), (4, 400), (4, -4))
        # a u16 read of len is a narrow load the kernel allows: not drawn with features
        size, off = f.draw(st.sampled_from([s for s in shapes if not (f.features and s == (2, 0))]))
        sign = "-" if off < 0 else "+"
        f.emit(f"r{dst} = *({SIZES[size]} *)(r{f.of(CTX)[0]} {sign} {abs(off)})")
        f.regs[dst] = SCALAR
        return True
    elif kind == "ctx_arith" and f.of(CTX):
        op = f.draw(st.sampled_from(("*=", "|=", "<<=") if f.features else ("*=", "+=", "|=", "<<=")))
        # an immediate: with a register the kernel first checks its range ("math between ctx
        # pointer and register with unbounded min value"), docs/deviations.md "scalar ranges"
        f.emit(f"r{f.of(CTX)[0]} {op} 3")
        return op != "+="  # ctx + 3 is refused only where it is dereferenced (not drawn with features)
    elif kind == "write_fp":
        f.emit(f"r10 = {f.draw(st.sampled_from(('0', 'r1')))}")
        return True
    elif kind == "global_bad_arg":
        glob = [c for c in f.callees if c.is_global and c.nargs]
        if glob:
            callee = f.draw(st.sampled_from(glob))
            bad = "r10" if callee.ctx else f"r{f.of(CTX)[0]}" if f.of(CTX) else "r10"
            for r in range(1, callee.nargs + 1):
                f.emit(f"r{r} = {bad if r == 1 else 0}")
            f.emit(f"call {callee.name}")
            _clobber(f)
            return True
    elif kind == "infinite_loop":
        top = f.label()
        f.lines.append(f"{top}:")
        f.emit(f"goto {top}")
        return True
    return None
