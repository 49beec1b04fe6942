"""How results are shown: text and JSON renderings of a run (unwind trace, ledger) and of
the verifier's frame descriptors. Kept apart from the CLI so tests can check them."""

from __future__ import annotations

import json
from typing import Any

from unwind.result import Released, RunResult, UnwoundFrame
from verifier.asm.disasm import insn_text
from verifier.program import FdEntry, FrameDesc, SubprogKind, VerifiedProgram


def _hex(v: int) -> str:
    return f"{v:#x}"


def entry_text(e: FdEntry) -> str:
    return e.describe()


def desc_text(vp: VerifiedProgram, desc: FrameDesc) -> str:
    entries = desc.entries()
    body = "; ".join(entry_text(e) for e in entries) if entries else "(no entries)"
    names = {sp.start: sp.name for sp in vp.subprogs}
    return f"pc {desc.pc} ({insn_text(vp.insns, desc.pc, call_names=names)}): {body}"


def fdtabs_text(vp: VerifiedProgram) -> str:
    """Frame descriptors of every subprog, pcs as in the final program."""
    lines: list[str] = []
    for sp, tab in zip(vp.subprogs, vp.fdtabs, strict=True):
        regs = ",".join(f"R{6 + i}" for i, used in enumerate(sp.callee_regs_used) if used) or "-"
        head = (
            f"subprog '{sp.name}' ({sp.kind}{', hidden' if sp.hidden else ''}) insns {sp.start}..{sp.end - 1}"
            f" stack_depth={sp.stack_depth} callee_regs_used={regs}"
        )
        lines.append(head)
        for desc in tab.descs:
            lines.append(f"  frame desc {desc_text(vp, desc)}")
    return "\n".join(lines)


def _released_text(r: Released) -> str:
    where = f"fp{r.off:+d}" if r.where == "stack" else f"R{r.off}"
    what = f"{r.type}{r.btf_name}" if r.btf_name else r.type
    if r.resource_id is None:
        return f"{where} {what} = {_hex(r.value)} (nothing to release)"
    return f"{where} {what} = {_hex(r.value)} -> released object #{r.resource_id}"


def frame_text(n: int, f: UnwoundFrame) -> list[str]:
    saved = " ".join(f"R{6 + i}={_hex(v)}" for i, v in enumerate(f.saved_regs))
    desc = "hidden, no cleanup" if f.desc_pc is None else f"frame desc pc={f.desc_pc}"
    lines = [f"  #{n} {f.subprog} ({f.kind}) ret+{f.ret_offset:#x} sp={_hex(f.sp)} bp={_hex(f.bp)} [{desc}]"]
    if f.kind == SubprogKind.THROW_TRAMP:
        lines.append("      saved the thrower's R6-R9 (its pushes), zeroed them and called bpf_throw")
    else:
        lines.append(f"      R6-R9 at call: {saved}")
    for r in f.released:
        lines.append(f"      {_released_text(r)}")
    return lines


def run_text(result: RunResult, source: str = "", engine: str = "jit") -> str:
    where = f" ({source})" if source else ""
    how = ""
    if engine != "jit":
        how = f", engine {engine}: frames in insns, ret+N is insns past the subprog start"
    lines = [f"program '{result.program}'{where}{how}"]
    if result.threw:
        lines.append(f"threw: cookie {_hex(result.cookie or 0)}")
    lines.append(f"retval: {result.retval} ({_hex(result.retval)})")
    if result.frames:
        lines.append(f"unwound {len(result.frames)} frames, innermost first:")
        for n, f in enumerate(result.frames):
            lines.extend(frame_text(n, f))
    s = result.ledger.summary()
    lines.append(
        f"ledger: {s['allocated']} allocated, {s['released']} released"
        f" ({s['released_by_unwind']} by unwind), {s['leaked']} leaked, {s['double_freed']} double freed"
        + (f", {s['bad_freed']} bad frees (never allocated)" if s["bad_freed"] else "")
    )
    for obj in result.ledger.leaked():
        lines.append(f"  leaked: object #{obj.id} {obj.type_name} at {_hex(obj.address)}")
    for addr in result.ledger.freed_twice:
        lines.append(f"  double free of {_hex(addr)}")
    for addr in result.ledger.bad_freed:
        lines.append(f"  bad free of {_hex(addr)}: no object was ever allocated there")
    return "\n".join(lines)


def run_json(result: RunResult) -> str:
    s = result.ledger.summary()
    doc: dict[str, Any] = {
        "program": result.program,
        "retval": result.retval,
        "threw": result.threw,
        "cookie": result.cookie,
        "frames": [
            {
                "subprog": f.subprog,
                "kind": f.kind,
                "ret_offset": f.ret_offset,
                "desc_pc": f.desc_pc,
                "saved_regs": list(f.saved_regs),
                "released": [
                    {
                        "where": r.where,
                        "off": r.off,
                        "type": r.type,
                        "btf_name": r.btf_name,
                        "value": r.value,
                        "resource_id": r.resource_id,
                    }
                    for r in f.released
                ],
            }
            for f in result.frames
        ],
        "released": s["released"],
        "released_by_unwind": s["released_by_unwind"],
        "allocated": s["allocated"],
        "leaked": s["leaked"],
        "double_freed": s["double_freed"],
        "bad_freed": s["bad_freed"],
        "counters": result.counters,
    }
    return json.dumps(doc, indent=2)
