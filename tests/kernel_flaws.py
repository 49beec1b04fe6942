"""The deliberate flaws of tests/kernel_programs.py: one error per flawed program, put at a
random point of one function, so that the kernel's and our rejections (and their messages)
are compared too."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.kernel_programs import CTX, DIVS, SCALAR, SHIFTS, SIZES, STACK, Func, _clobber, _w


def flaw(f: Func, kind: str) -> None:
    """One deliberate error the kernel rejects (or, for a few shapes, accepts: e.g. a register
    the generator thinks uninitialised that a caller did set); only the verdicts compare."""
    dst = f.draw(st.sampled_from([r for r in f.writable() if r != 10]))
    if kind == "uninit_read":
        pool = [r for r in range(10) if r not in f.regs and not (f.sig.is_global and 1 <= r <= 5)]
        if pool:
            f.emit(f"r{dst} {f.draw(st.sampled_from(('=', '+=')))} r{f.draw(st.sampled_from(pool))}")
    elif kind == "stack_oob":
        off = f.draw(st.sampled_from((-520, -516, -512 - 8 * STACK, 0, 8, 16)))
        size = f.draw(st.sampled_from((1, 4, 8)))
        text = f"*({SIZES[size]} *)(r10 {off:+})".replace("+", "+ ").replace("-", "- ")
        f.emit(f"{text} = 0" if f.draw(st.booleans()) else f"r{dst} = {text}")
    elif kind == "stack_misaligned":
        size = f.draw(st.sampled_from((2, 4, 8)))
        off = -size * f.draw(st.integers(1, 4)) + f.draw(st.integers(1, size - 1))
        f.emit(f"*({SIZES[size]} *)(r10 - {-off}) = 0" if f.draw(st.booleans())
               else f"r{dst} = *({SIZES[size]} *)(r10 - {-off})")  # fmt: skip
    elif kind == "div_zero" and (src := f.scalar()) is not None:
        f.emit(f"{_w(src, f.draw(st.booleans()))} {f.draw(st.sampled_from(DIVS))} 0")
    elif kind == "bad_shift" and (src := f.scalar()) is not None:
        is32 = f.draw(st.booleans())
        f.emit(f"{_w(src, is32)} {f.draw(st.sampled_from(SHIFTS))} {f.draw(st.sampled_from((32, 64, 100)))}")
    elif kind == "ctx_bad_access" and f.of(CTX):
        size, off = f.draw(st.sampled_from(((8, 0), (4, 2), (2, 0), (4, 200), (4, 400), (4, -4))))
        sign = "-" if off < 0 else "+"
        f.emit(f"r{dst} = *({SIZES[size]} *)(r{f.of(CTX)[0]} {sign} {abs(off)})")
        f.regs[dst] = SCALAR
    elif kind == "ctx_arith" and f.of(CTX):
        op = f.draw(st.sampled_from(("*=", "+=", "|=", "<<=")))
        # an immediate: with a register the kernel first checks its range ("math between ctx
        # pointer and register with unbounded min value"), docs/deviations.md "scalar ranges"
        f.emit(f"r{f.of(CTX)[0]} {op} 3")
    elif kind == "write_fp":
        f.emit(f"r10 = {f.draw(st.sampled_from(('0', 'r1')))}")
    elif kind == "global_bad_arg":
        glob = [c for c in f.callees if c.is_global and c.nargs]
        if glob:
            callee = f.draw(st.sampled_from(glob))
            bad = "r10" if callee.ctx else f"r{f.of(CTX)[0]}" if f.of(CTX) else "r10"
            for r in range(1, callee.nargs + 1):
                f.emit(f"r{r} = {bad if r == 1 else 0}")
            f.emit(f"call {callee.name}")
            _clobber(f)
    elif kind == "infinite_loop":
        top = f.label()
        f.lines.append(f"{top}:")
        f.emit(f"goto {top}")
