"""The `bpf-unwind` command line: verify, jit, run and demo a program.

Exit status: 0 success; 1 the program was rejected (verify) or leaked / double-freed
objects (run); 2 bad input or any other reported error. Every error is one line on stderr
naming the program and, where there is one, the instruction; never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from jit.listing import listing
from unwind import report
from unwind.cli import conformance, objcmd, oracle, pipeline, stats
from unwind.interp_kernel import run_interp
from unwind.runner import default_packet, skb_ctx
from verifier.errors import BpfUnwindError, LoadError, VerifierError, quoted, shown
from verifier.program import Program

EXIT_OK, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def _load(args: argparse.Namespace) -> Program:
    """A text-assembly file, stdin (`-`), or one program of a clang-built ELF object."""
    path, prog = args.file, getattr(args, "prog", None)
    if path == "-":
        return pipeline.load_text(sys.stdin.read(), "<stdin>")
    if objcmd.is_elf_file(path):
        return objcmd.load_program(path, prog)
    if prog is not None:
        raise LoadError(f"{path}: --prog selects a program of an ELF object; this is text assembly")
    return pipeline.load_file(path)


def cmd_verify(args: argparse.Namespace) -> int:
    prog = _load(args)
    try:
        vp = pipeline.verify(prog, log_level=args.log_level)
    except VerifierError as err:
        if err.log:
            print(err.log.rstrip("\n"))
        print(f"program {quoted(prog.name)} rejected: {err}")
        return EXIT_FAIL
    print(vp.log.rstrip("\n"))
    print()
    print(report.fdtabs_text(vp))
    print(f"program {quoted(prog.name)} accepted")
    return EXIT_OK


def cmd_jit(args: argparse.Namespace) -> int:
    vp = pipeline.verify(_load(args), log_level=0)
    print(listing(pipeline.jit(vp)))
    return EXIT_OK


def _run_ctx(args: argparse.Namespace) -> bytes | None:
    """The __sk_buff of `--data-in`/`--ctx-in`, built as BPF_PROG_TEST_RUN builds it."""
    data = pipeline.read_input(getattr(args, "data_in", None), "--data-in")
    ctx_in = pipeline.read_input(getattr(args, "ctx_in", None), "--ctx-in")
    if data is None and ctx_in is None:
        return None
    return skb_ctx(default_packet() if data is None else data, ctx_in or b"")


def _run_and_report(prog: Program, as_json: bool, engine: str = "jit", ctx: bytes | None = None) -> int:
    built = pipeline.build(prog, log_level=0)
    result = built.run(ctx) if engine == "jit" else run_interp(built.verified, ctx)
    print(report.run_json(result) if as_json else report.run_text(result, source=prog.source, engine=engine))
    ledger = result.ledger
    return EXIT_FAIL if ledger.leaked() or ledger.double_freed else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    prog = _load(args)
    return _run_and_report(prog, args.json, args.engine, _run_ctx(args))


def cmd_demo(args: argparse.Namespace) -> int:
    text = pipeline.demo_source()
    if args.source:
        print(text.rstrip("\n"))
        return EXIT_OK
    prog = pipeline.load_text(text, pipeline.DEMO_NAME)
    if not args.json:
        print("; the program (bpf-unwind demo --source prints it whole):")
        print("\n".join(line for line in text.splitlines() if line.startswith(";")))
        print()
    return _run_and_report(prog, args.json)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bpf-unwind", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    v = sub.add_parser("verify", help="verify a program: kernel-style log and frame descriptors")
    v.add_argument("file", help="text assembly (.s), a BPF ELF object (.o), or - for stdin")
    v.add_argument("--prog", help="program (function name) of an ELF object")
    v.add_argument("--log-level", type=int, choices=(1, 2, 4, 5, 6), default=1,
                   help="1 or 2 as the kernel's, +4 (BPF_LOG_STATS): verification time and stack depth")
    v.set_defaults(func=cmd_verify)

    j = sub.add_parser("jit", help="x86-64 listing of every image, frame-descriptor keys marked")
    j.add_argument("file")
    j.add_argument("--prog", help="program (function name) of an ELF object")
    j.set_defaults(func=cmd_jit)

    r = sub.add_parser("run", help="verify, JIT and run in Unicorn; show the unwind and the ledger")
    r.add_argument("file")
    r.add_argument("--prog", help="program (function name) of an ELF object")
    r.add_argument("--json", action="store_true", help="one JSON object instead of text")
    r.add_argument(
        "--engine",
        choices=("jit", "interp"),
        default="jit",
        help="x86-64 JIT in Unicorn (default), or the reference interpreter (unwinds by insn pc)",
    )
    r.add_argument("--data-in", help="packet: the ctx's len and protocol come from it (BPF_PROG_TEST_RUN)")
    r.add_argument("--ctx-in", help="__sk_buff bytes (fields a test run may set), completed from the packet")
    r.set_defaults(func=cmd_run)

    d = sub.add_parser("demo", help="run the embedded demo (a throw three frames deep)")
    d.add_argument("--json", action="store_true")
    d.add_argument("--source", action="store_true", help="print the demo program and stop")
    d.set_defaults(func=cmd_demo)

    objcmd.register(sub)
    conformance.register(sub)
    oracle.register(sub)
    stats.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BpfUnwindError as err:
        print(f"bpf-unwind: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
    except Exception as err:  # noqa: BLE001 - the CLI promises no tracebacks
        if os.environ.get("BPF_UNWIND_DEBUG"):
            traceback.print_exc()
        print(
            f"bpf-unwind: internal error: {type(err).__name__}: {shown(str(err))}"
            " (set BPF_UNWIND_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
