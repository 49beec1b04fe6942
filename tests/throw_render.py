"""Rendering of tests/throw_programs.py's `Spec` as text assembly: each frame's allocations,
parking, drops, calls and throw, and the cleanup chain of its normal path."""

from __future__ import annotations

from tests.throw_programs import SIZES, Frame, Obj, Spec

# -- rendering --------------------------------------------------------------------------------


def store(loc: int, src: int) -> str:
    return f"r{loc} = r{src}" if loc > 0 else f"*(u64 *)(r10 - {-loc}) = r{src}"


def load(dst: int, loc: int) -> str:
    return f"r{dst} = r{loc}" if loc > 0 else f"r{dst} = *(u64 *)(r10 - {-loc})"


def zero(loc: int, imm: bool) -> list[str]:
    if loc > 0:
        return [f"r{loc} = 0"]
    if imm:
        return [f"*(u64 *)(r10 - {-loc}) = 0"]
    return ["r1 = 0", store(loc, 1)]


def park(locs: list[tuple[int, bool]]) -> list[str]:
    """R0 (the object) into each location; derived ones get obj + 8."""
    out = [store(loc, 0) for loc, derived in locs if not derived]
    for loc, derived in locs:
        if derived:
            tmp = loc if loc > 0 else 1
            out += [f"r{tmp} = r0", f"r{tmp} += 8"] + ([] if loc > 0 else [store(loc, 1)])
    return out


def drop_from(loc: int, derived: bool, null_checked: bool, label: str) -> list[str]:
    out = [load(1, loc)]
    if null_checked:
        out.append(f"if r1 == 0 goto {label}")
    if derived:
        out.append("r1 += -8")
    out.append("call bpf_obj_drop_impl")
    if null_checked:
        out.append(f"{label}:")
    return out


def drop_source(obj: Obj) -> tuple[int, bool]:
    """The location a plain drop reads: a base pointer if there is one."""
    return min(obj.locs, key=lambda ld: ld[1])


def carried_value(spec: Spec, frame: Frame) -> list[str]:
    """R1 = ctx->len, from this frame's carrier."""
    assert frame.carrier is not None
    out = [load(1, frame.carrier)]
    if spec.carry == "ctx":
        out.append("r1 = *(u32 *)(r1 + 0)")
    return out


def render_frame(spec: Spec, i: int) -> list[str]:
    frame = spec.frames[i]
    imm = frame.stack_zero_imm
    lines = [f"{frame.name}:"]
    body: list[str] = []
    if frame.carrier is not None:
        if frame.is_global and spec.carry == "ctx":
            # a global's signature is implied by its code (verifier/asm/signature.py): R1 is
            # the ctx only when dereferenced before anything else reads it
            body.append("r0 = *(u32 *)(r1 + 0)")
        if i == 0 and spec.carry == "len":
            body.append("r1 = *(u32 *)(r1 + 0)")
        body.append(store(frame.carrier, 1))
    if frame.borrow is not None:
        body += [store(loc, 2) for loc in frame.borrow.locs]
    for loc, value, narrow in frame.junk:
        if loc > 0:
            body.append(f"r{loc} = {value} ll")
        else:
            body += [f"r1 = {value} ll", store(loc, 1).replace("u64", "u32") if narrow else store(loc, 1)]
    n = len(frame.objs)
    for j, obj in enumerate(frame.objs):
        body += [f"r1 = obj{obj.size} ll", "r2 = 0", "call bpf_obj_new_impl", f"if r0 == 0 goto .Lf{j}"]
        if obj.lost:
            continue
        if obj.alt:
            if obj.zero_other:
                for loc, _ in obj.locs + obj.alt:
                    body += zero(loc, imm)
            body += carried_value(spec, frame)
            body += [f"if r1 > {obj.split_k} goto .Lalt{j}"] + park(obj.locs) + [f"goto .Ljoin{j}"]
            body += [f".Lalt{j}:"] + park(obj.alt) + [f".Ljoin{j}:"]
        elif obj.partner is not None:
            (a, _), (b, _) = obj.partner.locs[0], obj.locs[0]
            body += carried_value(spec, frame)
            body += [f"if r1 > {obj.swap_k} goto .Lswap{j}", store(b, 0), f"goto .Lswapped{j}"]
            body += [f".Lswap{j}:", load(1, a), store(b, 1), store(a, 0), f".Lswapped{j}:"]
        else:
            body += park(obj.locs)

    def call_next() -> list[str]:
        out = carried_value(spec, frame)[:1] if frame.carrier is not None else ["r1 = 0"]
        callee = spec.frames[i + 1]
        # R2: the borrowed object, else a scalar (a pointer left there is no global's arg)
        out.append(load(2, callee.borrow.src) if callee.borrow is not None else "r2 = 0")
        return out + [f"call {callee.name}"]

    if frame.twice:
        body += call_next()
    stale = False
    for obj in frame.objs:
        if obj.drop_early:
            loc, derived = drop_source(obj)
            body += drop_from(loc, derived, False, "")
            if obj.null_after:
                for loc, _ in obj.locs:
                    body += zero(loc, imm)
            else:
                stale = True
    if i + 1 < len(spec.frames):
        body += call_next()
    if i != spec.throw_frame:
        pass
    elif spec.mode == "always":
        body += [f"r1 = {spec.cookie}", "call bpf_throw"]
    elif spec.mode == "cond":
        body += carried_value(spec, frame)
        body += [f"if r1 > {spec.threshold} goto .Lnothrow", f"r1 = {spec.cookie}", "call bpf_throw",
                 ".Lnothrow:"]
    ret = spec.main_ret if i == 0 else 0

    def drop_obj(j: int, obj: Obj, normal_path_too: bool) -> list[str]:
        if obj.lost:
            return []
        if obj.alt:
            return [s for k, (loc, d) in enumerate(obj.locs + obj.alt)
                    for s in drop_from(loc, d, True, f".Ls{j}_{k}")]
        loc, derived = drop_source(obj)
        return drop_from(loc, derived, normal_path_too and obj.drop_early, f".Ln{j}")

    if stale:
        # the normal path has an epilogue of its own: stale copies must not be dropped
        for j in reversed(range(n)):
            obj = frame.objs[j]
            if not obj.drop_early:
                body += [s.replace(".Ls", ".Les") for s in drop_obj(j, obj, False)]
        body.append("goto .Lf0")
        for j in reversed(range(n)):
            body.append(f".Lf{j + 1}:")
            body += drop_obj(j, frame.objs[j], False)
    else:
        for j in reversed(range(n)):
            body.append(f".Lf{j + 1}:")
            body += drop_obj(j, frame.objs[j], True)
    body += [".Lf0:", f"r0 = {ret}", "exit"]
    # labels at column 0, insns indented
    lines += [s if s.endswith(":") else f"\t{s}" for s in body]
    return lines


def render(spec: Spec) -> str:
    head = [f".struct obj{s} {s}" for s in SIZES]
    head += [f".global {f.name}" for f in spec.frames if f.is_global]
    if spec.callback is not None:
        head += [".global cb", ".exception_callback cb"]
    lines = head + [""]
    for i in range(len(spec.frames)):
        lines += render_frame(spec, i) + [""]
    if spec.callback is not None:
        kind, c = spec.callback
        body = {
            "plus": ["r0 = r1", f"r0 += {c}"],
            "busy": [store(-8 * (c % 64 + 1), 1), f"r6 = {c}", load(0, -8 * (c % 64 + 1)), "r0 += r6"],
            "const": [f"r0 = {c}"],
        }[kind]
        lines += ["cb:"] + [f"\t{x}" for x in body + ["exit"]]
    return "\n".join(lines) + "\n"
