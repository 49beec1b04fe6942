"""The live kernel against our pipeline, one program at a time (`compare`), and the
`bpf-unwind kernel` command that prints the comparison as a table or JSON.

For each program: both verdicts (and the error lines), processed instructions (the kernel's
`verified_insns` and our count), the xlated code (`unwind.live.xlated`), the JIT images (our
JIT on the kernel's xlated code at the kernel's addresses, `unwind.live.rejit`), and, when
both accept, the return value of BPF_PROG_TEST_RUN against `run` on both of our engines with
the same packet. The outcome is one of
- `agree`: same verdict and, when accepted, same xlated code, images and return values;
- `series`: the kernel refuses what the series accepts on purpose: a throw while
  references are held (our descriptors cover them), or a series-only attach target;
- `unmodelled`: we refuse the program clearly as a feature bpf-unwind does not model yet, or
  both accept and return the same values but the kernel's code is ours minus branches and
  code its scalar ranges proved dead (range tracking is not modelled yet);
- `no-oracle`: the live kernel here refuses even a trivial program of this type (e.g. every
  fentry program gets EPERM on these VMs), so there is nothing to compare;
- `DISAGREE`: anything else, with both sides shown."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass, field

from unwind.cli import objcmd, pipeline
from unwind.interp_kernel import run_interp
from unwind.live.bpf_sys import LiveKernelError, prog_test_run
from unwind.live.load import KernelProgram, kernel_load, trivial_load_refused
from unwind.live.rejit import compare_images, rejit
from unwind.live.vmlinux import probe
from unwind.live.xlated import compare_xlated, kernel_dropped_dead_code
from unwind.runner import default_packet, skb_ctx
from verifier.errors import BpfUnwindError, VerifierError
from verifier.load.model import LoadedObject
from verifier.load.object import load_object
from verifier.program import Program, VerifiedProgram

UNMODELLED = re.compile(r"not supported by (this verifier|bpf-unwind)|not modelled|unsupported by bpf-unwind")
SERIES_LEAK = "bpf_throw would lead to reference leak"
SERIES_UNRELEASED = re.compile(r"Unreleased reference id=\d+ alloc_insn=\d+$")
SERIES_ONLY_TARGETS = ("bpf_cleanup_resource",)  # functions the series adds to the kernel
SKB_PROG_TYPES = ("tc", "socket_filter", "cgroup_skb")
RANGES_DEAD_CODE = ("scalar ranges are not modelled: the kernel proved branches one-way and dropped "
                    "code our verifier explores (same return values)")
OUTCOMES = ("agree", "series", "unmodelled", "no-oracle", "DISAGREE")


@dataclass
class Comparison:
    """One row of the table."""

    file: str
    prog: str
    kernel: str = "-"  # accepted | rejected | unloadable
    ours: str = "-"  # accepted | rejected
    kernel_msg: str = ""
    our_msg: str = ""
    kernel_insns: int | None = None
    our_insns: int | None = None
    xlated: str = "-"
    jit: str = "-"
    retval_kernel: int | None = None
    retval_jit: int | None = None
    retval_interp: int | None = None
    outcome: str = "DISAGREE"
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def _held_at_throw(vp: VerifiedProgram) -> bool:
    """Our descriptors say some throw site holds a resource (not only poison entries)."""
    return any(
        e is not None and not e.is_poison for tab in vp.fdtabs for d in tab.descs for e in (*d.regs, *d.stack)
    )


def _run_ours(c: Comparison, prog: Program, vp: VerifiedProgram, ctx: bytes) -> None:
    jp = pipeline.jit(vp)
    c.retval_jit = pipeline.Pipeline(prog, vp, jp).run(ctx).retval & 0xFFFF_FFFF
    c.retval_interp = run_interp(vp, ctx).retval & 0xFFFF_FFFF


def _both_accept(c: Comparison, prog: Program, vp: VerifiedProgram, kp: KernelProgram, data: bytes,
                 ctx_in: bytes) -> None:  # fmt: skip
    problems: list[str] = []
    xd = compare_xlated(vp, kp)
    c.xlated = "equal" if xd.equal else f"pc {xd.pc}: {xd.detail}"
    if xd.unchecked_ctx:
        c.notes.append(f"{xd.unchecked_ctx} ctx loads of fields without a named sk_buff member")
    ranges_only = not xd.equal and kernel_dropped_dead_code(vp, kp)
    if not xd.equal:
        problems.append("xlated code differs")
    diffs = compare_images(kp, rejit(kp, vp))
    bad = [d for d in diffs if not d.equal]
    c.jit = (
        f"equal {len(diffs)}/{len(diffs)}"
        if not bad
        else (
            f"{bad[0].name}: byte {bad[0].offset:#x} (ours {bad[0].ours_len} B, kernel {bad[0].kernel_len} B)"
        )
    )
    if bad:
        problems.append("JIT image differs")
    if prog.prog_type in SKB_PROG_TYPES and kp.fd is not None:
        c.retval_kernel = prog_test_run(kp.fd, data_in=data, ctx_in=ctx_in).retval
        _run_ours(c, prog, vp, skb_ctx(data, ctx_in))
        if not c.retval_kernel == c.retval_jit == c.retval_interp:
            tracked = run_interp(vp, skb_ctx(data, ctx_in), track_stack=True)
            if tracked.counters.get("uninit_stack_read"):
                c.notes.append("the return value depends on uninitialised stack (which root may read)")
            else:
                problems.append("return values differ")
    else:
        c.notes.append(f"not run: BPF_PROG_TEST_RUN of {prog.prog_type} programs is not compared")
    if ranges_only and "return values differ" not in problems:
        c.outcome, c.reason = "unmodelled", RANGES_DEAD_CODE
        return
    c.outcome, c.reason = ("DISAGREE", "; ".join(problems)) if problems else ("agree", "")


def _classify_verdicts(c: Comparison, vp: VerifiedProgram | None) -> None:
    if c.ours == "rejected" and UNMODELLED.search(c.our_msg):
        c.outcome, c.reason = "unmodelled", c.our_msg
    elif c.kernel == "unloadable" and any(t in c.kernel_msg for t in SERIES_ONLY_TARGETS):
        c.outcome, c.reason = "series", "attach target exists only in a kernel with the series"
    elif c.kernel == "rejected" and c.ours == "accepted":
        if c.kernel_msg == SERIES_LEAK and vp is not None and _held_at_throw(vp):
            c.outcome, c.reason = "series", "throw with references held: our frame descriptors release them"
        else:
            c.reason = "the kernel rejects what we accept"
    elif (
        c.kernel == "rejected"
        and c.ours == "rejected"
        and c.kernel_msg == SERIES_LEAK
        and SERIES_UNRELEASED.match(c.our_msg)
    ):
        c.outcome, c.reason = (
            "series",
            "mainline refuses any throw with references held; the series checks the leak",
        )
    elif c.kernel == "rejected" and c.ours == "rejected":
        same = c.kernel_msg.strip() == c.our_msg.strip()
        c.outcome, c.reason = ("agree", "") if same else ("DISAGREE", "both reject, with different messages")
    elif c.kernel == "accepted" and c.ours == "rejected":
        c.reason = "we reject what the kernel accepts"
    else:
        c.reason = f"kernel {c.kernel}: {c.kernel_msg}"


def compare(prog: Program, obj: LoadedObject | None, source: str, data: bytes | None = None,
            ctx_in: bytes = b"", log_level: int = 1) -> Comparison:  # fmt: skip
    """Compare one program; never raises for a verdict, only for unusable input."""
    c = Comparison(source, prog.name)
    data = default_packet() if data is None else data
    if prog.prog_type in SKB_PROG_TYPES:
        skb_ctx(data, ctx_in)  # a packet no test run takes is unusable input (LoadError)
    vp: VerifiedProgram | None = None
    try:
        vp = pipeline.verify(prog, log_level=1)
        c.ours, c.our_insns = "accepted", vp.stats.get("insn_processed")
    except VerifierError as err:
        c.ours, c.our_msg = "rejected", str(err)
    kp: KernelProgram | None = None
    try:
        kp = kernel_load(prog, obj, log_level=log_level)
        c.kernel = "accepted" if kp.accepted else "rejected"
        c.kernel_msg = "" if kp.accepted else kp.error_line
        refused = None if kp.accepted or kp.log.strip() else trivial_load_refused(prog)
        if refused is not None:
            c.outcome = "no-oracle"
            c.reason = f"the live kernel refuses every {prog.prog_type} program here ({refused})"
            return c
        c.kernel_insns = kp.info.verified_insns if kp.info else None
        if kp.accepted and vp is not None:
            _both_accept(c, prog, vp, kp, data, ctx_in)
        else:
            _classify_verdicts(c, vp)
    except LiveKernelError as err:
        c.kernel, c.kernel_msg = "unloadable", str(err)
        _classify_verdicts(c, vp)
    except BpfUnwindError as err:
        c.outcome, c.reason = "DISAGREE", f"our run failed: {err}"
    finally:
        if kp is not None:
            kp.close()
    return c


def compare_file(path: str, prog_name: str | None = None, all_progs: bool = False, data: bytes | None = None,
                 ctx_in: bytes = b"", log_level: int = 1) -> list[Comparison]:  # fmt: skip
    if objcmd.is_elf_file(path):
        obj = load_object(path, only=None if all_progs else prog_name)
        names = list(obj.programs) if all_progs else [obj.program(prog_name).name]
        return [compare(obj.programs[n], obj, path, data, ctx_in, log_level) for n in names]
    return [compare(pipeline.load_file(path), None, path, data, ctx_in, log_level)]


def _fmt(v: int | None) -> str:
    return "-" if v is None else str(v)


def table(rows: list[Comparison]) -> str:
    head = ("program", "kernel", "ours", "insns k/o", "xlated", "jit", "retval k/jit/interp", "outcome")
    body = [
        (r.prog, r.kernel, r.ours, f"{_fmt(r.kernel_insns)}/{_fmt(r.our_insns)}",
         "equal" if r.xlated == "equal" else ("-" if r.xlated == "-" else "differs"),
         r.jit.split(" ")[0] if r.jit.startswith("equal") or r.jit == "-" else "differs",
         f"{_fmt(r.retval_kernel)}/{_fmt(r.retval_jit)}/{_fmt(r.retval_interp)}", r.outcome)
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = [
        "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in (head, *body)
    ]
    for r in rows:
        if r.outcome != "agree":
            lines.append(f"{r.outcome}: {r.prog}: {r.reason}")
            if r.outcome == "DISAGREE":
                lines.append(f"    kernel: {r.kernel} {r.kernel_msg}".rstrip())
                lines.append(f"    ours:   {r.ours} {r.our_msg}".rstrip())
                for what in ("xlated", "jit"):
                    value = getattr(r, what)
                    if value not in ("-", "equal") and not value.startswith("equal"):
                        lines.append(f"    {what}: {value}")
    counts = {o: sum(r.outcome == o for r in rows) for o in OUTCOMES}
    lines.append(", ".join(f"{n} {o}" for o, n in counts.items()))
    return "\n".join(lines)


def cmd_kernel(args: argparse.Namespace) -> int:
    reason = probe()
    if reason is not None:
        raise LiveKernelError(reason)
    data = pipeline.read_input(args.data_in, "--data-in")
    ctx_in = pipeline.read_input(args.ctx_in, "--ctx-in")
    rows = compare_file(args.file, args.prog, args.all, data, ctx_in or b"",
                        args.log_level)  # fmt: skip
    print(json.dumps([asdict(r) for r in rows], indent=1) if args.json else table(rows))
    return 1 if any(r.outcome == "DISAGREE" for r in rows) else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    k = subparsers.add_parser("kernel", help="compare with the running kernel: verdict, xlated, JIT, retval")
    k.add_argument("file", help="text assembly (.s) or a BPF ELF object (.o)")
    k.add_argument("--prog", help="program (function name) of an ELF object")
    k.add_argument("--all", action="store_true", help="every program of the object")
    k.add_argument("--json", action="store_true")
    k.add_argument("--log-level", type=int, choices=(1, 2), default=1, help="the kernel verifier's log level")
    k.add_argument("--data-in", help="packet for BPF_PROG_TEST_RUN and our runs (default: 74-byte IPv4)")
    k.add_argument("--ctx-in", help="__sk_buff bytes for BPF_PROG_TEST_RUN and our runs")
    k.set_defaults(func=cmd_kernel)
