"""The JIT pass loop, image layout, pc -> return-offset conversion, errors, the listing, and
Unicorn smoke runs checking that the bytes compute what BPF says (a Python reference
interpreter for the lowered subset, on random programs)."""

from __future__ import annotations

import random
import struct

import capstone
import keystone
import pytest
from unicorn import UC_ARCH_X86, UC_MODE_64, UC_PROT_EXEC, UC_PROT_READ, Uc
from unicorn import x86_const as X

import jit.compile as jit_compile
from jit.compile import jit_program
from jit.image import JitImage, JitProgram
from jit.layout import (
    CTX_BASE,
    CTX_SIZE,
    HOST_STUB_BASE,
    PAGE,
    STACK_BASE,
    STACK_SIZE,
    STACK_TOP,
    STUB_BASE,
    STUB_REGION_SIZE,
    stub_address,
)
from jit.listing import listing
from jit.lower import LowerCtx, lower_insn
from jit.x86 import JitError
from verifier.errors import BpfUnwindError
from verifier.insn import (
    BPF_ADD,
    BPF_ALU,
    BPF_ALU64,
    BPF_AND,
    BPF_ARSH,
    BPF_B,
    BPF_DIV,
    BPF_DW,
    BPF_H,
    BPF_JEQ,
    BPF_JGE,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JMP,
    BPF_JMP32,
    BPF_JNE,
    BPF_JSET,
    BPF_JSGE,
    BPF_JSGT,
    BPF_JSLE,
    BPF_JSLT,
    BPF_K,
    BPF_LSH,
    BPF_MOV,
    BPF_MUL,
    BPF_NEG,
    BPF_OR,
    BPF_RSH,
    BPF_SUB,
    BPF_W,
    BPF_X,
    BPF_XOR,
    Insn,
    alu64_imm,
    alu64_reg,
    call_helper,
    call_kfunc,
    call_pseudo,
    exit_insn,
    ja,
    jmp_imm,
    ld_imm64,
    ldx_mem,
    mov64_imm,
    mov64_reg,
    st_mem,
    stx_mem,
)
from verifier.program import FdTab, FrameDesc, Subprog, SubprogKind, VerifiedProgram
from verifier.regusage import detect_reg_usage

MD = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
M64 = (1 << 64) - 1


def make_vp(
    funcs: list[tuple[str, list[Insn]]],
    *,
    stack: int = 0,
    descs: dict[int, list[int]] | None = None,
    boundary: bool = False,
    exception_cb: int | None = None,
) -> VerifiedProgram:
    insns: list[Insn] = []
    subprogs = []
    for i, (name, body) in enumerate(funcs):
        start = len(insns)
        insns += body
        kind = SubprogKind.MAIN if i == 0 else SubprogKind.STATIC
        if i == exception_cb:
            kind = SubprogKind.EXCEPTION_CB
        regs = detect_reg_usage(insns, start, len(insns))
        subprogs.append(Subprog(name, start, len(insns), kind, stack if i == 0 else 0, regs))
    fdtabs = [FdTab([FrameDesc(pc) for pc in (descs or {}).get(i, [])]) for i in range(len(funcs))]
    return VerifiedProgram("t", insns, subprogs, fdtabs, exception_cb, None, boundary)


def jit_one(insns: list[Insn], stack: int = 0) -> JitImage:
    return jit_program(make_vp([("main", insns)], stack=stack), {}).main


# ---------------------------------------------------------------- pass loop and jumps


def fillers(nbytes: int) -> list[Insn]:
    """Straight-line insns of exactly `nbytes` bytes: `r0 += 1` (4) and `r1 = r2` (3)."""
    fours, rest = divmod(nbytes, 4)
    threes = {0: 0, 1: 3, 2: 2, 3: 1}[rest]
    fours -= {0: 0, 1: 2, 2: 1, 3: 0}[rest]
    return [alu64_imm(BPF_ADD, 0, 1)] * fours + [mov64_reg(1, 2)] * threes


@pytest.mark.parametrize(
    ("gap", "jcc", "jmp"),
    [
        (123, "74 7b", "eb 7b"),
        (124, "0f 84 7c 00 00 00", "e9 7c 00 00 00"),
        (0x80, "0f 84 80 00 00 00", "e9 80 00 00 00"),
    ],
)
def test_forward_jumps_straddle_the_short_window(gap: int, jcc: str, jmp: str) -> None:
    fill = fillers(gap)
    img = jit_one([jmp_imm(BPF_JEQ, 1, 0, len(fill)), *fill, mov64_imm(0, 0), exit_insn()])
    assert img.code[img.addrs[0] : img.addrs[1]].hex(" ") == "48 85 ff " + jcc
    img = jit_one([ja(len(fill)), *fill, mov64_imm(0, 0), exit_insn()])
    assert img.code[img.addrs[0] : img.addrs[1]].hex(" ") == jmp


@pytest.mark.parametrize(
    ("gap", "jmp"),
    [(123, "eb 83"), (124, "e9 7f ff ff ff"), (126, "e9 7d ff ff ff")],
)
def test_backward_jump_window(gap: int, jmp: str) -> None:
    """A backward jump starts near (64-byte estimates) and the next pass measures it with
    its own near size: it only becomes short if -(gap + 5) is in the window, so a gap of
    124..126 stays near although a short jump would reach (the kernel's rule)."""
    fill = fillers(gap)
    k = len(fill)
    img = jit_one([*fill, ja(-k - 1), exit_insn()])
    assert img.code[img.addrs[k] : img.addrs[k + 1]].hex(" ") == jmp


def test_straight_line_converges_in_two_sizing_passes() -> None:
    jp = jit_program(make_vp([("main", [mov64_imm(0, 1), exit_insn()])]), {})
    assert jp.passes == 2


def random_jump_program(rng: random.Random) -> list[Insn]:
    n = rng.randint(5, 90)
    body: list[Insn] = []
    for k in range(n):
        left = n - k  # insns after this one, exit included
        roll = rng.random()
        if roll < 0.25:
            body.append(
                jmp_imm(
                    rng.choice([BPF_JEQ, BPF_JGT, BPF_JSET]), 1, rng.randint(0, 300), rng.randint(0, left)
                )
            )
        elif roll < 0.35:
            body.append(ja(rng.randint(0, left)))
        elif roll < 0.45 and k > 0:
            body.append(ja(-rng.randint(1, k) - 1))  # backward, never run
        elif roll < 0.55:
            body.append(exit_insn())
        else:
            body.append(rng.choice(fillers(rng.choice([3, 4, 7, 11, 23, 40]))))
    return [*body, exit_insn()]


def test_random_jump_layouts_follow_the_kernel_rule() -> None:
    """Every jump decodes to the start of its target insn, and is short exactly when the
    final displacement is in [-128, 123]; exits after the first jump to the epilogue."""
    rng = random.Random(1234)
    for _ in range(150):
        insns = random_jump_program(rng)
        img = jit_one(insns)
        first_exit = next(k for k, i in enumerate(insns) if i.is_exit())
        for k, insn in enumerate(insns):
            code = img.code[img.addrs[k] : img.addrs[k + 1]]
            if insn.is_exit() and k > first_exit:
                target = img.addrs[first_exit]
            elif insn.is_jump():
                target = img.addrs[k + 1 + insn.off]
            else:
                continue
            if not code:  # ja +0 / jump to the next insn
                assert target == img.addrs[k + 1]
                continue
            jump = list(MD.disasm(code, img.addrs[k]))[-1]
            assert jump.mnemonic.startswith("j")
            assert int(jump.op_str, 16) == target
            assert jump.size == (
                2 if -128 <= target - img.addrs[k + 1] <= 123 else (6 if insn.is_cond_jump() else 5)
            )


def padding_ctx(insns: list[Insn], addrs: list[int]) -> LowerCtx:
    return LowerCtx(
        name="main",
        insns=insns,
        addrs=addrs,
        cleanup_addr=0,
        padding=True,
        image_addr=0,
        epilogue=b"\xc9\xc3",
        resolve_call=lambda k, i: None,
        resolve_func=lambda k, i: 0,
    )


def test_padding_keeps_a_shrinking_jump_at_its_previous_size() -> None:
    insns = [jmp_imm(BPF_JEQ, 1, 0, 1), mov64_imm(0, 0), exit_insn()]
    # Last pass the je was near (3 + 6 bytes); now its displacement (2) is short.
    code, _ = lower_insn(padding_ctx(insns, [12, 21, 23, 25]), 0)
    assert code.hex(" ") == "48 85 ff 0f 1f 40 00 74 02"
    code, _ = lower_insn(padding_ctx([ja(1), mov64_imm(0, 0), exit_insn()], [12, 17, 19, 21]), 0)
    assert code.hex(" ") == "0f 1f 00 eb 02"
    code, _ = lower_insn(padding_ctx([ja(0), exit_insn()], [12, 14, 16]), 0)
    assert code.hex(" ") == "66 90"
    with pytest.raises(JitError, match="unexpected jump padding: 5 bytes at main\\+0"):
        lower_insn(padding_ctx([ja(1), mov64_imm(0, 0), exit_insn()], [12, 19, 21, 23]), 0)
    with pytest.raises(JitError, match="unexpected jmp_cond padding"):
        lower_insn(padding_ctx(insns, [12, 20, 22, 24]), 0)


def test_no_convergence_names_the_subprog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jit_compile, "MAX_PASSES", 1)
    vp = make_vp([("main", [mov64_imm(0, 1), exit_insn()])])
    with pytest.raises(JitError, match="bpf_jit: main did not converge after 1 passes"):
        jit_program(vp, {})


# ---------------------------------------------------------------- layout and descriptors


def call_program() -> VerifiedProgram:
    main = [
        mov64_reg(6, 1),
        call_pseudo(6),  # -> sub at 8
        *ld_imm64(2, 1 << 40),
        call_kfunc(9),
        mov64_reg(0, 6),
        exit_insn(),
        mov64_imm(0, 0),
    ]
    sub = [mov64_reg(0, 1), call_kfunc(9), alu64_imm(BPF_ADD, 0, 1), exit_insn()]
    return make_vp([("main", main), ("sub", sub)], stack=16, descs={0: [4, 1], 1: [9]})


def test_images_are_placed_with_guard_pages() -> None:
    jp = jit_program(call_program(), {9: stub_address(3)}, code_base=0x0200_0000)
    main, sub = jp.images
    assert main.address == 0x0200_0000
    assert sub.address % PAGE == 0 and sub.address >= main.end + PAGE
    assert sub.address - PAGE < main.end + PAGE  # exactly one guard page
    assert jp.stub_addrs == {9: stub_address(3)}


def test_descriptor_keys_are_return_addresses() -> None:
    vp = call_program()
    jp = jit_program(vp, {9: stub_address(3)})
    for img in jp.images:
        calls = {
            i.address + i.size - img.address: i
            for i in MD.disasm(img.code, img.address)
            if i.mnemonic == "call"
        }
        assert img.fd_offsets == tuple(sorted(img.fd_offsets))
        for key, desc in zip(img.fd_offsets, img.fd_descs, strict=True):
            assert key in calls
            assert key == img.addrs[desc.pc - img.start + 1]
            assert img.find_desc(key) is desc
            assert img.insn_at(key - 1) == desc.pc
    main, sub = jp.images
    assert [d.pc for d in main.fd_descs] == [1, 4] and [d.pc for d in sub.fd_descs] == [9]
    call_sub = next(i for i in MD.disasm(main.code, main.address) if i.mnemonic == "call")
    assert int(call_sub.op_str, 16) == sub.address
    call_stub = [i for i in MD.disasm(sub.code, sub.address) if i.mnemonic == "call"][0]
    assert int(call_stub.op_str, 16) == stub_address(3)


def test_descriptor_not_at_a_call_is_an_internal_error() -> None:
    vp = make_vp([("main", [mov64_imm(0, 0), exit_insn()])], descs={0: [0]})
    with pytest.raises(JitError, match="frame desc pc=0 of main .* does not follow a call"):
        jit_program(vp, {})
    vp = make_vp([("main", [mov64_imm(0, 0), exit_insn()]), ("f", [exit_insn()])], descs={0: [2]})
    with pytest.raises(JitError, match="outside main"):
        jit_program(vp, {})


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("insns", "message"),
    [
        ([Insn(BPF_ALU64 | BPF_DIV | BPF_K, 0, 0, 0, 3)], r"bpf_jit: unsupported insn \(0x37\) at main\+0"),
        ([mov64_imm(0, 0), Insn(0xFF)], r"bpf_jit: unsupported insn \(0xff\) at main\+1"),
        ([call_helper(1)], r"helper calls are not supported yet \(call 1\) at main\+0"),
        ([call_kfunc(99)], r"no stub address for kfunc btf_id 99 at main\+0"),
        ([call_pseudo(5)], r"call target 6 is not a subprog start at main\+0"),
    ],
)
def test_errors_name_the_insn(insns: list[Insn], message: str) -> None:
    with pytest.raises(JitError, match=message) as err:
        jit_program(make_vp([("main", [*insns, exit_insn()])]), {})
    assert isinstance(err.value, BpfUnwindError)


def test_callee_regs_used_must_cover_the_code() -> None:
    insns = [mov64_reg(6, 1), mov64_reg(0, 6), exit_insn()]
    sp = Subprog("main", 0, 3, SubprogKind.MAIN, 0, (False, False, False, False))
    vp = VerifiedProgram("t", insns, [sp], [FdTab()], None, None, False)
    with pytest.raises(JitError, match="main uses R6"):
        jit_program(vp, {})


# ---------------------------------------------------------------- listing


def test_listing_marks_descriptors_and_names_targets() -> None:
    jp = jit_program(call_program(), {9: stub_address(3)})
    text = listing(jp)
    main, sub = jp.images
    assert text.startswith(f"main (main) at {main.address:#x}, {len(main.code)} bytes, stack 16, pushes: rbx")
    assert f"sub (static) at {sub.address:#x}" in text
    for key, desc in zip(main.fd_offsets, main.fd_descs, strict=True):
        assert f"<- frame desc pc={desc.pc} (ret+{key:#x})" in text
    assert "# sub" in text and "# kfunc stub 9" in text
    assert "pushq %rbp" in text and "leave" in text
    assert sum(line.startswith("; ") for line in text.splitlines()) == len(jp.verified.insns) - 1  # ld_imm64


# ---------------------------------------------------------------- Unicorn smoke runs


def run(jp: JitProgram, regs: dict[int, int], stubs: dict[int, bytes] | None = None, ctx: bytes = b"") -> Uc:
    uc = Uc(UC_ARCH_X86, UC_MODE_64)
    for img in jp.images:
        uc.mem_map(img.address, -(-len(img.code) // PAGE) * PAGE, UC_PROT_READ | UC_PROT_EXEC)
        uc.mem_write(img.address, img.code)
    uc.mem_map(HOST_STUB_BASE, PAGE)
    uc.mem_write(HOST_STUB_BASE, b"\xf4")  # hlt: the main image returns here
    uc.mem_map(STUB_BASE, STUB_REGION_SIZE)
    for addr, code in (stubs or {}).items():
        uc.mem_write(addr, code)
    uc.mem_map(STACK_BASE, STACK_SIZE)
    uc.mem_map(CTX_BASE, CTX_SIZE)
    uc.mem_write(CTX_BASE, ctx)
    uc.mem_write(STACK_TOP - 8, struct.pack("<Q", HOST_STUB_BASE))
    uc.reg_write(X.UC_X86_REG_RSP, STACK_TOP - 8)
    for reg, value in regs.items():
        uc.reg_write(reg, value)
    uc.emu_start(jp.main.address, 0, count=1_000_000)
    assert uc.reg_read(X.UC_X86_REG_RIP) == HOST_STUB_BASE + 1, "did not return to the host stub"
    assert uc.reg_read(X.UC_X86_REG_RSP) == STACK_TOP
    return uc


def sx(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def ref_alu(regs: list[int], insn: Insn) -> None:
    is64 = insn.cls == BPF_ALU64
    bits = 64 if is64 else 32
    mask = (1 << bits) - 1
    dst = regs[insn.dst] & mask
    src = (regs[insn.src] if insn.uses_reg_src else sx(insn.imm, 32)) & mask
    op = insn.op
    results = {
        BPF_MOV: src,
        BPF_ADD: dst + src,
        BPF_SUB: dst - src,
        BPF_MUL: dst * src,
        BPF_AND: dst & src,
        BPF_OR: dst | src,
        BPF_XOR: dst ^ src,
        BPF_NEG: -dst,
        BPF_LSH: dst << (src & (bits - 1)),
        BPF_RSH: dst >> (src & (bits - 1)),
        BPF_ARSH: sx(dst, bits) >> (src & (bits - 1)),
    }
    regs[insn.dst] = results[op] & mask


SIZES = {BPF_B: 1, BPF_H: 2, BPF_W: 4, BPF_DW: 8}
COND = {
    BPF_JEQ: lambda a, b, n: a == b,
    BPF_JNE: lambda a, b, n: a != b,
    BPF_JSET: lambda a, b, n: bool(a & b),
    BPF_JGT: lambda a, b, n: a > b,
    BPF_JGE: lambda a, b, n: a >= b,
    BPF_JLT: lambda a, b, n: a < b,
    BPF_JLE: lambda a, b, n: a <= b,
    BPF_JSGT: lambda a, b, n: sx(a, n) > sx(b, n),
    BPF_JSGE: lambda a, b, n: sx(a, n) >= sx(b, n),
    BPF_JSLT: lambda a, b, n: sx(a, n) < sx(b, n),
    BPF_JSLE: lambda a, b, n: sx(a, n) <= sx(b, n),
}


def interpret(insns: list[Insn], regs: list[int], mem: dict[str, bytearray], fp: int) -> int:
    """Reference semantics of the lowered subset; memory through r1 (ctx) or r10 (stack)."""
    pc = 0
    while True:
        insn = insns[pc]
        pc += 1
        if insn.cls in (BPF_ALU, BPF_ALU64):
            ref_alu(regs, insn)
        elif insn.is_ld_imm64():
            regs[insn.dst] = (insns[pc].imm & 0xFFFFFFFF) << 32 | (insn.imm & 0xFFFFFFFF)
            pc += 1
        elif insn.cls in (1, 2, 3):  # LDX, ST, STX
            base = insn.src if insn.cls == 1 else insn.dst
            buf, off = (mem["ctx"], insn.off) if base == 1 else (mem["stack"], fp + insn.off)
            size = SIZES[insn.size]
            if insn.cls == 1:
                regs[insn.dst] = int.from_bytes(buf[off : off + size], "little")
            else:
                value = sx(insn.imm, 32) if insn.cls == 2 else regs[insn.src]
                buf[off : off + size] = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        elif insn.is_exit():
            return regs[0]
        elif insn.is_jump():
            if insn.op == 0:
                pc += insn.jump_offset()
                continue
            n = 64 if insn.cls == BPF_JMP else 32
            mask = (1 << n) - 1
            b = regs[insn.src] if insn.uses_reg_src else sx(insn.imm, 32)
            if COND[insn.op](regs[insn.dst] & mask, b & mask, n):
                pc += insn.off
        else:
            raise AssertionError(f"unexpected {insn}")


ALU_OPS = [BPF_ADD, BPF_SUB, BPF_MUL, BPF_AND, BPF_OR, BPF_XOR, BPF_LSH, BPF_RSH, BPF_ARSH, BPF_MOV, BPF_NEG]
X86_ARGS = [X.UC_X86_REG_RDI, X.UC_X86_REG_RSI, X.UC_X86_REG_RDX, X.UC_X86_REG_RCX, X.UC_X86_REG_R8]
WRITABLE = [0, 2, 3, 4, 5, 6, 7, 8, 9]  # r1 stays the ctx pointer, r10 the frame pointer


def random_insn(rng: random.Random, left: int) -> Insn:
    roll = rng.random()
    dst, src = rng.choice(WRITABLE), rng.choice(range(10))
    cls = rng.choice([BPF_ALU, BPF_ALU64])
    if roll < 0.5:
        op = rng.choice(ALU_OPS)
        if op == BPF_NEG:
            return Insn(cls | op, dst)
        if rng.random() < 0.5:
            return Insn(cls | op | BPF_X, dst, src)
        imm = (
            rng.randrange(64 if cls == BPF_ALU64 else 32)
            if op in (BPF_LSH, BPF_RSH, BPF_ARSH)
            else rng.choice(
                [0, 1, -1, 5, 127, 128, -129, 0x1000, 0x7FFFFFFF, -0x80000000, rng.randrange(-(2**31), 2**31)]
            )
        )
        return Insn(cls | op | BPF_K, dst, 0, 0, imm)
    if roll < 0.7:
        size = rng.choice(list(SIZES))
        base, off = rng.choice([(1, rng.randrange(0, 200)), (10, -rng.randrange(88, 500))])
        kind = rng.randrange(3)
        if kind == 0:
            return ldx_mem(size, dst, base, off)
        if kind == 1:
            return stx_mem(size, base, src, off)
        return st_mem(size, base, off, rng.randrange(-(2**31), 2**31))
    op = rng.choice(list(COND))
    jcls = rng.choice([BPF_JMP, BPF_JMP32])
    off = min(left, rng.choice([0, 1, 2, 3, rng.randint(0, left)]))  # mostly short hops
    if rng.random() < 0.5:
        return Insn(jcls | op | BPF_X, rng.choice(range(10)), src, off)
    return Insn(
        jcls | op | BPF_K,
        rng.choice(range(10)),
        0,
        off,
        rng.choice([0, 1, -1, 200, rng.randrange(-999, 999)]),
    )


@pytest.mark.parametrize("seed", range(30))
def test_random_programs_compute_what_bpf_says(seed: int) -> None:
    rng = random.Random(seed)
    init = [rng.getrandbits(64) for _ in range(10)]
    prologue: list[Insn] = []
    for r in WRITABLE:
        prologue += ld_imm64(r, init[r] if rng.random() < 0.8 else rng.randrange(-(2**31), 2**32))
    n = rng.randint(20, 120)
    body = [random_insn(rng, n - k) for k in range(n)]
    dump = [stx_mem(BPF_DW, 10, r, -8 * (r + 1)) for r in range(10)]
    insns = [*prologue, *body, *dump, exit_insn()]
    ctx = bytes(rng.getrandbits(8) for _ in range(256))
    jp = jit_program(make_vp([("main", insns)], stack=512), {})
    uc = run(jp, {X.UC_X86_REG_RDI: CTX_BASE}, ctx=ctx)

    fp = STACK_TOP - 16  # rbp of main: below the return address and the saved rbp
    stack = bytearray(uc.mem_read(fp - 512, 512))
    regs = [0] * 11
    regs[1], regs[10] = CTX_BASE, fp
    mem = {"ctx": bytearray(ctx), "stack": bytearray(512)}  # fresh guest memory is zero
    expected = interpret(insns, regs, mem, 512)
    assert uc.reg_read(X.UC_X86_REG_RAX) == expected
    assert bytes(uc.mem_read(CTX_BASE, 256)) == bytes(mem["ctx"])
    assert stack == mem["stack"]


def test_bpf2bpf_call_preserves_callee_saved_registers() -> None:
    main = [
        mov64_imm(6, 1000),
        mov64_imm(1, 5),
        mov64_imm(2, 7),
        call_pseudo(2),
        alu64_reg(BPF_ADD, 0, 6),
        exit_insn(),
    ]
    sub = [mov64_reg(6, 1), Insn(BPF_ALU64 | BPF_MUL | BPF_X, 6, 2), mov64_reg(0, 6), exit_insn()]
    jp = jit_program(make_vp([("main", main), ("sub", sub)]), {})
    uc = run(jp, {X.UC_X86_REG_RBX: 0x5A5A})
    assert uc.reg_read(X.UC_X86_REG_RAX) == 1035
    assert uc.reg_read(X.UC_X86_REG_RBX) == 0x5A5A  # restored by main's epilogue


def test_kfunc_call_reaches_its_stub() -> None:
    stub = stub_address(2)
    jp = jit_program(
        make_vp([("main", [mov64_imm(1, 40), mov64_imm(2, 2), call_kfunc(5), exit_insn()])]), {5: stub}
    )
    uc = run(jp, {}, stubs={stub: bytes.fromhex("488d0437c3")})  # lea rax, [rdi + rsi]; ret
    assert uc.reg_read(X.UC_X86_REG_RAX) == 42


def test_exception_callback_returns_to_the_main_programs_caller() -> None:
    """A fake bpf_throw stub clobbers the callee-saved registers, then enters the default
    callback with rsi = main's sp at the call and rdx = main's fp, like the kernel: the
    callback restores rbx/r12-r15 from main's frame and returns its r1 to the host."""
    main = [
        mov64_imm(6, 1),
        mov64_imm(7, 2),
        mov64_imm(8, 3),
        mov64_imm(9, 4),
        mov64_imm(1, 42),
        call_kfunc(1),
        mov64_imm(0, 0),
        exit_insn(),
    ]
    cb = [mov64_reg(0, 1), exit_insn()]
    vp = make_vp([("main", main), ("exception_cb", cb)], stack=8, boundary=True, exception_cb=1)
    stub = stub_address(1)
    jp = jit_program(vp, {1: stub})
    ks = keystone.Ks(keystone.KS_ARCH_X86, keystone.KS_MODE_64)
    asm = (
        "lea rsi, [rsp + 8]; mov rdx, rbp; mov rbx, 0xdead; mov r12, 0xdead; mov r13, 0xdead; "
        f"mov r15, 0xdead; mov rbp, 0xdead; movabs rax, {jp.images[1].address:#x}; jmp rax"
    )
    code = bytes(ks.asm(asm)[0])
    saved = {
        X.UC_X86_REG_RBX: 11,
        X.UC_X86_REG_R12: 12,
        X.UC_X86_REG_R13: 13,
        X.UC_X86_REG_R14: 14,
        X.UC_X86_REG_R15: 15,
        X.UC_X86_REG_RBP: 0x77,
    }
    uc = run(jp, saved, stubs={stub: code})
    assert uc.reg_read(X.UC_X86_REG_RAX) == 42
    for reg, value in saved.items():
        assert uc.reg_read(reg) == value
