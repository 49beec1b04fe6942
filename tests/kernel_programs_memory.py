"""Features "varoff" and "packet" of tests/kernel_programs.py, and their flaws.

- `st_varoff`: variable-offset stack access: the array fp-64..fp-1 is written first (u64
  stores of the slots not yet written), an index is bounded by a mask or by a compare (then
  shifted to the access size, since the kernel wants stack access aligned on the tnum), and
  `rP = r10; rP += -64; rP += rIdx` (or the offset in the insn, or `rIdx += r10`) is
  loaded from (plain or sign-extending) or stored to, at 1, 2, 4 or 8 bytes;
- `st_packet`: direct packet access: `__sk_buff.data` and `data_end` read from the ctx, an
  optional constant or bounded variable offset added to data, `rT = data + N` checked against
  data_end (both operand orders, both jump senses), then loads within the N bytes checked.
  `unwind.runner.default_packet` is 74 bytes and N goes to 80: both sides of the check run.

`stack_flaw` and `packet_flaw` draw the same shapes broken: an access past the checked range
or the array, before the check or on its failing side, an index with no bound, a misaligned
or negative one. Pointers live only inside a snippet (`scrub`)."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.kernel_programs_core import CTX, SCALAR, SIZES, SKB_DATA, SKB_DATA_END, SKB_LEN, SX, Func, scrub
from tests.kernel_programs_ranges import rng, tested, unknown

ARRAY = -64  # the array a variable offset reaches: fp-64..fp-1


def temps(f: Func, n: int, exclude: tuple[int, ...] = ()) -> list[int] | None:
    """n distinct registers a snippet may clobber (no ctx, not R0, not a loop counter)."""
    pool = [r for r in f.writable() if r not in (0, 10, *exclude) and f.regs.get(r) != CTX]
    if len(pool) < n:
        return None
    out = []
    for _ in range(n):
        out.append(f.draw(st.sampled_from(pool)))
        pool.remove(out[-1])
    return out


def _off(off: int) -> str:
    return f"+ {off}" if off >= 0 else f"- {-off}"


def _init_array(f: Func) -> None:
    for off in range(ARRAY, 0, 8):
        if off not in f.slots:
            src = f.scalar() if f.draw(st.booleans()) else None
            f.emit(f"*(u64 *)(r10 - {-off}) = {f.imm() if src is None else f'r{src}'}")
            f.slots.add(off)


def _source(f: Func, idx: int) -> None:
    if not unknown(f, idx):
        f.emit(f"r{idx} = {f.imm()}")
        f.regs[idx] = SCALAR


def index(f: Func, idx: int, limit: int, align: int, guard: bool,
          avoid: tuple[int, ...] = ()) -> tuple[int, int, str | None]:  # fmt: skip
    """Bound a fresh index for an access of `align` bytes: [0, hi], hi <= limit, a multiple
    of align on the tnum; or reuse a bounded scalar (not one of `avoid`) for bytes. Answers
    (register, hi, the label a compare skips to, if any: the access goes before it)."""
    kind = f.draw(st.sampled_from(("mask", "reuse", "cmp") if guard else ("mask", "reuse")))
    reuse = [r for r, b in sorted(f.bounds.items()) if f.regs.get(r) == SCALAR
             and r not in (*f.reserved, *avoid) and b.lo is not None and b.hi is not None
             and 0 <= b.lo and b.hi <= limit]  # fmt: skip
    if kind == "reuse" and reuse and align == 1:
        r = f.draw(st.sampled_from(reuse))
        return r, f.bounds[r].hi or 0, None
    steps, shift = limit // align, align.bit_length() - 1
    if kind != "cmp":
        _source(f, idx)
        j = steps.bit_length() - f.draw(st.integers(0, steps.bit_length()))  # wide first
        mask = ((1 << j) - 1) & steps if f.draw(st.booleans()) else min((1 << j) - 1, steps)
        if shift and f.draw(st.booleans()):
            f.emit(f"r{idx} &= {mask << shift:#x}")  # the mask clears the low bits itself
        else:
            f.emit(f"{'w' if f.draw(st.booleans()) else 'r'}{idx} &= {mask}")
            f.emit(f"r{idx} <<= {shift}") if shift else None
        f.bounds[idx] = rng(0, mask << shift)
        return idx, mask << shift, None
    bound = f.draw(st.integers(0, steps))
    skip = f.label()
    from_len = f.ctx() is not None and f.draw(st.booleans())
    if from_len:
        f.emit(f"r{idx} = *(u32 *)(r{f.ctx()} + {SKB_LEN})")
        f.regs[idx] = SCALAR
    else:
        _source(f, idx)
    tested(f)
    form = f.draw(st.sampled_from(("u", "u>=", "s") + (("w",) if from_len else ())))
    if form == "u":
        f.emit(f"if r{idx} > {bound} goto {skip}")
    elif form == "u>=":
        f.emit(f"if r{idx} >= {bound + 1} goto {skip}")
    elif form == "w":  # the u32 source has its upper half zero: JMP32 bounds all 64 bits
        f.emit(f"if w{idx} > {bound} goto {skip}")
    else:
        f.emit(f"if r{idx} s> {bound} goto {skip}")
        f.emit(f"if r{idx} s< 0 goto {skip}")
    if shift:
        f.emit(f"r{idx} <<= {shift}")
    f.bounds[idx] = rng(0, bound << shift)
    return idx, bound << shift, skip


def _access(f: Func, ptr: int, off: int, size: int) -> None:
    """A load from or a store to `ptr + off` (ptr is no tracked register)."""
    if f.draw(st.integers(0, 2)) == 0:
        src = f.scalar()
        value = f"r{src}" if src is not None and f.draw(st.booleans()) else str(f.imm())
        f.emit(f"*({SIZES[size]} *)(r{ptr} {_off(off)}) = {value}")
        return
    dst = f.draw(st.sampled_from([r for r in f.writable() if r not in (10, ptr)]))
    sx = size < 8 and f.draw(st.integers(0, 3)) == 0
    f.emit(f"r{dst} = *({SX[size] if sx else SIZES[size]} *)(r{ptr} {_off(off)})")
    f.regs[dst] = SCALAR
    half = 1 << (8 * size - 1)
    if size < 8:
        f.bounds[dst] = rng(-half, half - 1) if sx else rng(0, 2 * half - 1)


def join(f: Func, label: str, regs: dict[int, str], bounds: dict, forget: tuple[int, ...] = ()) -> None:
    """The label a guard skipped to: what held before the guarded code and still holds."""
    f.lines.append(f"{label}:")
    f.regs = {r: k for r, k in f.regs.items() if regs.get(r) == k}
    f.bounds = {r: b for r, b in f.bounds.items() if bounds.get(r) == b and r not in forget}


def st_varoff(f: Func, depth: int) -> bool:
    regs = temps(f, 2)
    if regs is None:
        return False
    idx, ptr = regs
    _init_array(f)
    size = f.draw(st.sampled_from((1, 2, 4, 8)))
    before, ranges = dict(f.regs), dict(f.bounds)
    idx, hi, skip = index(f, idx, -ARRAY - size, size, guard=True, avoid=(ptr,))
    off = ARRAY + size * f.draw(st.integers(0, (-ARRAY - size - hi) // size))
    ptr, base = var_pointer(f, idx, ptr)
    _access(f, ptr, off - base, size)
    if skip is not None:
        join(f, skip, before, ranges, (idx,))
    scrub(f, [ptr])
    return True


def var_pointer(f: Func, idx: int, ptr: int) -> tuple[int, int]:
    """`fp + idx`, one of the ways to write it: `rP = r10; [rP += -64;] rP += rIdx` or
    `rIdx += r10`. Answers the pointer's register and the fp offset it adds."""
    form = f.draw(st.sampled_from(("base", "insn", "scalar")))
    if form == "scalar" and idx not in f.reserved | {0}:
        f.emit(f"r{idx} += r10")
        f.regs.pop(idx, None)
        return idx, 0
    f.emit(f"r{ptr} = r10")
    if form == "base":
        f.emit(f"r{ptr} += {ARRAY}")
    f.emit(f"r{ptr} += r{idx}")
    f.regs.pop(ptr, None)
    return ptr, ARRAY if form == "base" else 0


# -- packet ----------------------------------------------------------------------------------

CHECKS = ("T > E", "E < T", "T <= E", "E >= T", "T >= E", "E <= T")  # T = data + N


def _check(f: Func, data_end: int, end: int, form: str) -> str:
    """The bounds check `end` (data + N) against data_end: answers the label of its failing
    side; the code that follows it runs only on the passing side."""
    fail = f.label()
    text = form.replace("T", f"r{end}").replace("E", f"r{data_end}")
    if form in ("T > E", "E < T", "T >= E", "E <= T"):
        f.emit(f"if {text} goto {fail}")
    else:
        ok = f.label()
        f.emit(f"if {text} goto {ok}")
        f.emit(f"goto {fail}")
        f.lines.append(f"{ok}:")
    return fail


def packet_start(f: Func, regs: list[int], var: bool) -> tuple[int, int, int]:
    """data, data_end and, after an optional offset (constant, or a bounded index when
    `var`), data + N: answers (data, data_end, N)."""
    data, data_end, end = regs[:3]
    ctx = f.ctx()
    f.emit(f"r{data} = *(u32 *)(r{ctx} + {SKB_DATA})")
    f.emit(f"r{data_end} = *(u32 *)(r{ctx} + {SKB_DATA_END})")
    f.regs.pop(data, None)
    f.regs.pop(data_end, None)
    if var:
        idx, _, _ = index(f, regs[3], 0xFF, 1, guard=False, avoid=(data, data_end, end))
        f.emit(f"r{data} += r{idx}")
    elif f.draw(st.integers(0, 3)) == 0:
        f.emit(f"r{data} += {f.draw(st.integers(0, 20))}")
    n = f.draw(st.one_of(st.integers(1, 80), st.sampled_from((1, 2, 4, 8, 14, 34, 54, 64, 74, 75))))
    f.emit(f"r{end} = r{data}")
    f.emit(f"r{end} += {n}")
    f.regs.pop(end, None)
    return data, data_end, n


def st_packet(f: Func, depth: int) -> bool:
    if f.ctx() is None or (regs := temps(f, 5)) is None:
        return False
    var = f.draw(st.integers(0, 2)) == 0
    data, data_end, n = packet_start(f, regs, var)
    dst = regs[4]
    f.emit(f"w{dst} = 0")  # bounded on both sides of the check
    f.regs[dst] = SCALAR
    fail = _check(f, data_end, regs[2], f.draw(st.sampled_from(CHECKS)))
    hull = 0
    for _ in range(f.draw(st.integers(1, 2))):
        size = f.draw(st.sampled_from([s for s in (1, 2, 4, 8) if s <= n]))
        off = f.draw(st.integers(0, n - size))
        f.emit(f"r{dst} = *({SIZES[size]} *)(r{data} {_off(off)})")
        hull = max(hull, (1 << (8 * size)) - 1)
    f.lines.append(f"{fail}:")
    f.regs[dst] = SCALAR
    if hull < 1 << 63:
        f.bounds[dst] = rng(0, hull)
    scrub(f, regs[:3])
    return True


# -- flaws -----------------------------------------------------------------------------------

STACK_FLAWS = ("varoff_oob", "varoff_unbounded", "varoff_misaligned")
PACKET_FLAWS = ("pkt_past_range", "pkt_before_check", "pkt_wrong_side", "pkt_unbounded", "pkt_negative")


def _len(f: Func, dst: int) -> None:
    """dst = __sk_buff.len: a u32 the kernel knows nothing more of."""
    f.emit(f"r{dst} = *(u32 *)(r{f.ctx()} + {SKB_LEN})")
    f.regs[dst] = SCALAR


def stack_flaw(f: Func, kind: str) -> bool:
    """A variable-offset stack access the kernel refuses: reaching past fp-1, with an index
    of no useful bound, or off the access size's alignment. False when it cannot be drawn."""
    if f.ctx() is None or (regs := temps(f, 2)) is None:
        return False
    idx, ptr = regs
    _init_array(f)
    size = f.draw(st.sampled_from((2, 4, 8) if kind == "varoff_misaligned" else (1, 2, 4, 8)))
    shift = size.bit_length() - 1
    rel = size * f.draw(st.integers(0, 64 // size - 1))
    _len(f, idx)
    skip = None
    if kind == "varoff_unbounded" and f.draw(st.booleans()):
        f.emit(f"r{idx} <<= 32")  # unbounded below: refused at the pointer arithmetic
    elif kind == "varoff_misaligned":
        rel = 0
        mask = f.draw(st.sampled_from([m for m in range(1, 64 - size + 1) if m & (size - 1)]))
        f.emit(f"r{idx} &= {mask:#x}")
    elif kind == "varoff_oob":  # the largest index reaches past fp-1
        least = (64 - size - rel) // size + 1
        if f.draw(st.booleans()):
            mask = (1 << least.bit_length()) - 1
            f.emit(f"{'w' if f.draw(st.booleans()) else 'r'}{idx} &= {mask}")
        else:
            skip = f.label()
            f.emit(f"if r{idx} > {least + f.draw(st.integers(0, 3))} goto {skip}")
        if shift:
            f.emit(f"r{idx} <<= {shift}")
    ptr, base = var_pointer(f, idx, ptr)
    _access(f, ptr, ARRAY + rel - base, size)
    if skip is not None:
        f.lines.append(f"{skip}:")
    scrub(f, [ptr])
    return True


def packet_flaw(f: Func, kind: str) -> bool:
    """A packet access the kernel refuses: past the range checked, before the check, on its
    failing side, or at an offset of no bound or a negative one."""
    if f.ctx() is None or (regs := temps(f, 5)) is None:
        return False
    data, data_end, end, idx, dst = regs
    if kind in ("pkt_unbounded", "pkt_negative"):
        f.emit(f"r{data} = *(u32 *)(r{f.ctx()} + {SKB_DATA})")
        f.emit(f"r{data_end} = *(u32 *)(r{f.ctx()} + {SKB_DATA_END})")
        _len(f, idx)
        if kind == "pkt_negative":
            f.emit(f"r{idx} = (s{f.draw(st.sampled_from((8, 16)))})r{idx}")
        elif f.draw(st.booleans()):
            f.emit(f"r{idx} <<= 32")
        f.emit(f"r{data} += r{idx}")
        n = f.draw(st.integers(1, 16))
        f.emit(f"r{end} = r{data}")
        f.emit(f"r{end} += {n}")
    else:
        _, _, n = packet_start(f, regs, var=False)
    size = f.draw(st.sampled_from([s for s in (1, 2, 4, 8) if s <= n]))
    off = f.draw(st.integers(0, n - size))
    load = f"r{dst} = *({SIZES[size]} *)(r{data} {{}})"
    if kind == "pkt_before_check":
        f.emit(load.format(_off(off)))
    fail = _check(f, data_end, end, f.draw(st.sampled_from(CHECKS[:4])))
    if kind == "pkt_past_range":
        off = n - size + f.draw(st.integers(1, 4))
    if kind == "pkt_wrong_side":
        done = f.label()
        f.emit(f"goto {done}")
        f.lines.append(f"{fail}:")
        f.emit(load.format(_off(off)))
        f.lines.append(f"{done}:")
    else:
        f.emit(load.format(_off(off)))
        f.lines.append(f"{fail}:")
    f.regs.pop(dst, None)
    scrub(f, [data, data_end, end])
    return True
