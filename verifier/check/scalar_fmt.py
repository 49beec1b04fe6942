"""The kernel's (Linux 6.18) verifier-log text of a scalar register value, e.g.
`scalar(id=1,smin=smin32=0,smax=umax=smax32=umax32=255,var_off=(0x0; 0xff))`.

Rules, as `print_reg_state`/`print_scalar_ranges` write them: a constant is a bare number;
`P` marks a precise scalar; the eight bounds print in the order smin smax umin umax smin32
smax32 umin32 umax32, each omitted when it is the type's default (no information), and a
bound absorbs a later bound of the same kind (min with min, max with max) with the same
value and sign (`smax=umax=255`). A signed number in [S16_MIN, S16_MAX] and an unsigned one
up to U16_MAX print in decimal, any other in hex; a hex s64 prints as its u64 pattern, a
hex s32 as its u32 pattern."""

from __future__ import annotations

from verifier.check.scalar_bounds import S32_MAX, S32_MIN, S64_MAX, S64_MIN, Bounds, s64
from verifier.check.tnum import U32, U64, tnum_is_const, tnum_is_unknown, tnum_str


def _snum_is_decimal(x: int) -> bool:
    return -(1 << 15) <= x < 1 << 15


def snum_text(x: int) -> str:
    """A signed value: decimal when small, else the hex of its u64 bits."""
    x = s64(x)
    return str(x) if _snum_is_decimal(x) else f"{x & U64:#x}"


def unum_text(x: int) -> str:
    return str(x) if x <= 0xFFFF else f"{x:#x}"


def _s32_as_printed(x: int) -> int:
    """An s32 bound as the kernel stores it for printing: itself when printed in decimal,
    else its u32 bits (so that a hex s32 is never shown sign-extended)."""
    return x if _snum_is_decimal(x) else x & U32


def scalar_ranges_text(r: Bounds) -> list[str]:
    """The `name=...=value` items of the bounds, defaults omitted, equal ones merged."""
    items = [
        ("smin", r.smin_value, r.smin_value == S64_MIN),
        ("smax", r.smax_value, r.smax_value == S64_MAX),
        ("umin", r.umin_value, r.umin_value == 0),
        ("umax", r.umax_value, r.umax_value == U64),
        ("smin32", _s32_as_printed(r.s32_min_value), r.s32_min_value == S32_MIN),
        ("smax32", _s32_as_printed(r.s32_max_value), r.s32_max_value == S32_MAX),
        ("umin32", r.u32_min_value, r.u32_min_value == 0),
        ("umax32", r.u32_max_value, r.u32_max_value == U32),
    ]
    omit = [o for _, _, o in items]
    out: list[str] = []
    for i, (name, val, _) in enumerate(items):
        if omit[i]:
            continue
        neg = name[0] == "s" and val < 0
        names = [name]
        for j in range(i + 2, len(items), 2):
            name2, val2, _ = items[j]
            if omit[j]:
                continue
            neg2 = name2[0] == "s" and val2 < 0
            if neg == neg2 and val & U64 == val2 & U64:
                names.append(name2)
                omit[j] = True
        out.append("=".join(names) + "=" + (snum_text(val) if name[0] == "s" else unum_text(val)))
    return out


def scalar_text(r: Bounds, precise: bool = False, id: int = 0, add_const: int | None = None) -> str:  # noqa: A002
    """The log text of a scalar. `id` is the register's link id (0 = none); `add_const`
    the offset of a register linked as `id + off` (printed `id=1+5`)."""
    prefix = "P" if precise else ""
    if tnum_is_const(r.var_off):
        return prefix + snum_text(r.var_off.value)
    parts: list[str] = []
    if id:
        parts.append(f"id={id}" + (f"{add_const:+d}" if add_const is not None else ""))
    parts += scalar_ranges_text(r)
    if not tnum_is_unknown(r.var_off):
        parts.append(f"var_off={tnum_str(r.var_off)}")
    return f"{prefix}scalar({','.join(parts)})"
