"""BTF for a program written in text assembly, which carries none, so that the kernel can load
it: the kernel needs a FUNC (with func_info) for every subprog to accept global subprogs and
exception callbacks, a struct for every `bpf_obj_new` type, and the ctx struct by name.

What text assembly does not say is chosen like this (a heuristic, documented in the README):
- main is `int NAME(struct <ctx> *ctx)`; every function returns `int`;
- a function's arguments are what `verifier.asm.signature` implies (the assembler gives
  `.global` functions the same signature): R1..Rn, n the highest of R1-R5 that it may read
  before writing it; R1 is the ctx pointer when it is dereferenced before being written,
  otherwise every argument is a `u64`;
- the exception callback is `int NAME(u64 cookie)` and main carries the
  `exception_callback:NAME` decl tag;
- a `.struct NAME SIZE` becomes a struct of SIZE bytes made of u64 members `f0, f8, ...`
  (and u8 members for a tail), so that field accesses inside it are accepted."""

from __future__ import annotations

import re
import struct

from unwind.live.btf_raw import FUNC_GLOBAL, FUNC_STATIC, KIND_DECL_TAG, TYPE, BtfBuilder, info_word
from verifier.asm.signature import guess_args
from verifier.load.model import CTX_STRUCTS
from verifier.program import Program


def btf_name(name: str) -> str:
    """A C identifier for BTF (the kernel refuses others): other characters become `_`."""
    out = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return out if out and not out[0].isdigit() else f"_{out}"


def asm_program_btf(prog: Program) -> tuple[bytes, bytes, dict[str, int]]:
    """(BTF blob, func_info records, struct name -> its type id in that BTF)."""
    b = BtfBuilder()
    int_t = b.int_type("int", 4, True)
    u64_t = b.int_type("unsigned long long", 8, False)
    u8_t = b.int_type("unsigned char", 1, False)
    ctx_name = CTX_STRUCTS.get(prog.prog_type, "__sk_buff")
    ctx_ptr = b.ptr(b.struct_type(ctx_name, 0))
    type_ids: dict[str, int] = {}
    for st in sorted(prog.structs.values(), key=lambda s: s.type_id):
        members = [(f"f{o}", u64_t, o * 8) for o in range(0, st.size - st.size % 8, 8)]
        members += [(f"f{o}", u8_t, o * 8) for o in range(st.size - st.size % 8, st.size)]
        type_ids[st.name] = b.struct_type(st.name, st.size, members)
    funcs = sorted(prog.funcs, key=lambda f: f.start)
    records: list[bytes] = []
    main_id = 0
    for i, f in enumerate(funcs):
        end = funcs[i + 1].start if i + 1 < len(funcs) else len(prog.insns)
        if i == 0:
            args = [("ctx", ctx_ptr)]
        elif f.name == prog.exception_cb:
            args = [("cookie", u64_t)]
        else:
            n, r1_ctx = guess_args(prog.insns, f.start, end)
            args = [(f"a{k}", ctx_ptr if k == 1 and r1_ctx else u64_t) for k in range(1, n + 1)]
        linkage = (
            FUNC_GLOBAL if (i == 0 or f.linkage == "global" or f.name == prog.exception_cb) else FUNC_STATIC
        )
        fid = b.func(btf_name(f.name), int_t, args, linkage)
        main_id = main_id or fid
        records.append(struct.pack("<II", f.start, fid))
    if prog.exception_cb:
        tag = b.raw.add_string(f"exception_callback:{prog.exception_cb}")
        b.raw.add_type(TYPE.pack(tag, info_word(KIND_DECL_TAG), main_id) + struct.pack("<i", -1))
    return b.to_bytes(), b"".join(records), type_ids
