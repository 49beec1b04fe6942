"""Direct packet access of tc programs, run: the ctx loads of data/data_end/data_meta become
64-bit loads of the real pointers (verifier.rewrite.ctx_access), the ctx page holds the test
run's packet (unwind.runner.skb_ctx), and both engines read it as BPF_PROG_TEST_RUN does.

The programs and packets are data (tests/packet_programs.py): each accepted program's return
value is checked on every packet against its expected value on both engines, then against the
live kernel through `unwind.cli.oracle.compare` (verdict, xlated code, JIT bytes, return
values); each refused program against the kernel's message. A read past data_end faults on
both engines when the verifier is bypassed, and never happens to a verified program."""

from __future__ import annotations

import struct

import pytest

from jit.interp.engine import InterpError
from jit.layout import CTX_BASE, CTX_HEAD, CTX_SIZE
from jit.machine import MachineError
from tests.live_kernel import require_live_kernel
from tests.packet_programs import (
    ACCEPTED,
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    PACKET_WRITE,
    PACKETS,
    REFUSED,
    PacketProgram,
    packet,
)
from unwind.cli import oracle, pipeline
from unwind.cli.main import main
from unwind.interp_kernel import run_interp
from unwind.live import xlated
from unwind.live.bpf_sys import LiveKernelError, prog_test_run
from unwind.live.load import kernel_load
from unwind.runner import MAX_TEST_RUN_PACKET, ProgramRunner, skb_ctx
from verifier.asm.assembler import assemble
from verifier.errors import LoadError, VerifierError
from verifier.program import FdTab, Subprog, VerifiedProgram
from verifier.rewrite.ctx_access import HIDDEN_CTX_END, PACKET_SLOTS, SLOT_FIELDS

CASES = [(p, name) for p in ACCEPTED for name in PACKETS]


def _case_id(case: tuple[PacketProgram, str]) -> str:
    return f"{case[0].name}-{case[1]}"


def _slots(ctx: bytes) -> dict[str, int]:
    return {name: struct.unpack_from("<Q", ctx, slot)[0] for slot, name in SLOT_FIELDS.items()}


# -- the ctx page ------------------------------------------------------------------------------


def test_skb_ctx_puts_the_packet_at_the_end_of_the_ctx_page_and_points_at_it():
    pkt = PACKETS["arp_42"]
    ctx = skb_ctx(pkt)
    assert len(ctx) == CTX_SIZE
    ptrs = _slots(ctx)
    assert ptrs["data"] == ptrs["data_meta"] == CTX_BASE + CTX_SIZE - len(pkt)
    assert ptrs["data_end"] == CTX_BASE + CTX_SIZE
    assert ctx[ptrs["data"] - CTX_BASE :] == pkt
    assert struct.unpack_from("<I", ctx, 0)[0] == 42  # __sk_buff.len
    assert struct.unpack_from(">H", ctx, 16)[0] == ETH_P_ARP  # __sk_buff.protocol


def test_the_ctx_page_holds_the_hidden_pointers_and_the_largest_test_run_packet():
    assert HIDDEN_CTX_END <= CTX_HEAD <= CTX_SIZE - MAX_TEST_RUN_PACKET
    ctx = skb_ctx(packet(MAX_TEST_RUN_PACKET, ETH_P_ARP))
    assert _slots(ctx)["data"] - CTX_BASE >= CTX_HEAD


@pytest.mark.parametrize(("length", "ethertype"), [
    (13, ETH_P_ARP), (33, ETH_P_IP), (53, ETH_P_IPV6), (MAX_TEST_RUN_PACKET + 1, ETH_P_ARP),
])  # fmt: skip
def test_skb_ctx_refuses_the_packets_a_test_run_refuses(length, ethertype):
    with pytest.raises(LoadError):
        skb_ctx(packet(length, ethertype) if length >= 14 else bytes(length))


def test_a_test_run_refuses_an_ip_packet_shorter_than_its_network_header():
    """Discovered on the live kernel: EINVAL for IPv4 under 34 bytes and IPv6 under 54."""
    require_live_kernel()
    prog = assemble(ACCEPTED[0].text, "fixed_offsets")
    kp = kernel_load(prog, None)
    try:
        for length, ethertype in ((33, ETH_P_IP), (53, ETH_P_IPV6)):
            with pytest.raises(LiveKernelError, match="EINVAL"):
                prog_test_run(kp.fd, data_in=packet(length, ethertype))
        for length, ethertype in ((34, ETH_P_IP), (54, ETH_P_IPV6), (14, ETH_P_ARP)):
            prog_test_run(kp.fd, data_in=packet(length, ethertype))
    finally:
        kp.close()
    with pytest.raises(LoadError):
        oracle.compare(prog, None, "fixed_offsets", data=packet(33, ETH_P_IP))


# -- the rewrite -------------------------------------------------------------------------------


def test_the_packet_ctx_loads_and_only_they_become_64_bit_loads_of_the_hidden_pointers():
    prog = assemble(next(p for p in ACCEPTED if p.name == "meta_and_len").text, "meta")
    vp = pipeline.verify(prog)
    assert len(vp.insns) == len(prog.insns)
    changed = {pc: (a, b) for pc, (a, b) in enumerate(zip(prog.insns, vp.insns, strict=True)) if a != b}
    assert sorted(changed) == [0, 1, 3]  # data_end, data_meta, data (r1 = *(u32 *)(r1 + 76)); not len
    for before, after in changed.values():
        assert (after.code, after.dst, after.src) == (0x79, before.dst, before.src)
        assert after.off == PACKET_SLOTS[before.off][0]
    assert vp.stats["ctx_loads_converted"] == 3


def test_a_packet_load_in_dead_code_goes_with_it():
    text = ACCEPTED[0].text.replace("main:\n", "main:\n\tr0 = 0\n\tif r0 == 0 goto .Llive\n"
                                    "\tr7 = *(u32 *)(r1 + 140)\n.Llive:\n")  # fmt: skip
    vp = pipeline.verify(assemble(text, "dead"))
    assert vp.stats["ctx_loads_converted"] == 2
    assert not any(i.code == 0x61 and i.off in PACKET_SLOTS for i in vp.insns)


def test_the_xlated_comparison_pairs_each_converted_load_with_its_own_kernel_field():
    require_live_kernel()
    for off, (slot, name) in PACKET_SLOTS.items():
        where = xlated.packet_pointer_field(name)
        assert where is not None and where[1] == 8
        ours = ("insn", 0x79, 2, 1, slot, 0)
        assert xlated._ctx_pair(ours, ("insn", 0x79, 2, 1, where[0], 0)) == "named"
        for other, _ in PACKET_SLOTS.values():  # another field's load is a difference
            if other != slot:
                wrong = xlated.packet_pointer_field(SLOT_FIELDS[other])
                assert xlated._ctx_pair(ours, ("insn", 0x79, 2, 1, wrong[0], 0)) is None
        assert slot not in {xlated.packet_pointer_field(n)[0] for n in SLOT_FIELDS.values()}, off


# -- running -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_packet_programs_return_the_expected_value_on_both_engines(case):
    prog, name = case
    pkt = PACKETS[name]
    built = pipeline.build(assemble(prog.text, prog.name))
    ctx = skb_ctx(pkt)
    expected = prog.expected(pkt)
    assert built.run(ctx).retval & 0xFFFF_FFFF == expected
    assert run_interp(built.verified, ctx).retval & 0xFFFF_FFFF == expected


def _unchecked(text: str) -> VerifiedProgram:
    """A program as the JIT would get it, no verifier: reads its packet pointers directly."""
    insns = assemble(".prog_type tc\nmain:\n" + text, "raw").insns
    return VerifiedProgram("raw", insns, [Subprog("main", 0, len(insns), "main", 0, (False,) * 4)],
                           [FdTab()], None, None, False)  # fmt: skip


@pytest.mark.parametrize("past", [0, 1, 64])
def test_a_read_past_data_end_faults_on_both_engines(past):
    data_end = PACKET_SLOTS[80][0]
    vp = _unchecked(f"\tr3 = *(u64 *)(r1 + {data_end})\n\tr0 = *(u8 *)(r3 + {past})\n\texit\n")
    ctx = skb_ctx(PACKETS["arp_42"])
    with pytest.raises(MachineError, match="UNMAPPED"):
        ProgramRunner(pipeline.jit(vp)).run(ctx)
    with pytest.raises(InterpError, match="outside every mapped region"):
        run_interp(vp, ctx)


def test_the_last_byte_before_data_end_reads_on_both_engines():
    data_end = PACKET_SLOTS[80][0]
    vp = _unchecked(f"\tr3 = *(u64 *)(r1 + {data_end})\n\tr0 = *(u8 *)(r3 - 1)\n\texit\n")
    ctx = skb_ctx(PACKETS["arp_42"])
    assert ProgramRunner(pipeline.jit(vp)).run(ctx).retval == PACKETS["arp_42"][-1]
    assert run_interp(vp, ctx).retval == PACKETS["arp_42"][-1]


CHECKED = (14, 20, 33)  # the range `if data + N > data_end` proves
READS = [(off, size) for off in (0, 1, 12, 13, 16, 19, 29, 30, 32) for size in (1, 2, 4, 8)]


@pytest.mark.parametrize("checked", CHECKED)
def test_a_verified_program_never_reads_past_data_end(checked):
    """Whatever the read after the check, the verifier accepts it iff it lies inside the
    checked range, and an accepted one runs on every packet length without a fault."""
    for off, size in READS:
        width = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}[size]
        text = (".prog_type tc\nmain:\n\tr2 = *(u32 *)(r1 + 76)\n\tr3 = *(u32 *)(r1 + 80)\n"
                f"\tr4 = r2\n\tr4 += {checked}\n\tif r4 > r3 goto .Lout\n"
                f"\tr0 = *({width} *)(r2 + {off})\n\texit\n.Lout:\n\tr0 = 7\n\texit\n")  # fmt: skip
        try:
            built = pipeline.build(assemble(text, "grid"))
        except VerifierError as err:
            assert off + size > checked and "outside of the packet" in str(err)
            continue
        assert off + size <= checked
        for length in sorted({14, checked - 1, checked, checked + 1, 64} - {13}):
            pkt = packet(length, ETH_P_ARP)
            want = int.from_bytes(pkt[off : off + size], "little") if length >= checked else 7
            ctx = skb_ctx(pkt)
            assert built.run(ctx).retval == want
            assert run_interp(built.verified, ctx).retval == want


# -- the live kernel ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_packet_programs_agree_with_the_kernel(case):
    require_live_kernel()
    prog, name = case
    pkt = PACKETS[name]
    c = oracle.compare(assemble(prog.text, prog.name), None, prog.name, data=pkt)
    assert (c.outcome, c.reason, c.xlated, c.notes) == ("agree", "", "equal", [])
    assert c.jit.startswith("equal")
    assert c.retval_kernel == c.retval_jit == c.retval_interp == prog.expected(pkt)


@pytest.mark.parametrize("refused", REFUSED, ids=lambda r: r.name)
def test_refused_packet_programs_agree_with_the_kernel(refused):
    prog = assemble(refused.text, refused.name)
    with pytest.raises(VerifierError) as err:
        pipeline.verify(prog)
    assert str(err.value) == refused.message
    require_live_kernel()
    c = oracle.compare(prog, None, refused.name)
    assert (c.outcome, c.kernel, c.kernel_msg, c.ours) == ("agree", "rejected", refused.message, "rejected")


def test_a_packet_write_is_refused_as_not_modelled():
    require_live_kernel()
    c = oracle.compare(assemble(PACKET_WRITE, "write"), None, "write")
    assert (c.outcome, c.kernel, c.ours) == ("unmodelled", "accepted", "rejected")
    assert c.our_msg == "direct packet writes are not supported by bpf-unwind"


# -- the command line ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "want"), [("ipv4_64", 4), ("ipv6_64", 6), ("arp_42", 0)])
@pytest.mark.parametrize("engine", ["jit", "interp"])
def test_run_with_data_in_reads_the_packet(tmp_path, capsys, name, want, engine):
    src = tmp_path / "ethertype.s"
    src.write_text(next(p for p in ACCEPTED if p.name == "ethertype").text)
    data = tmp_path / "packet.bin"
    data.write_bytes(PACKETS[name])
    assert main(["run", str(src), "--data-in", str(data), "--engine", engine]) == 0
    assert f"retval: {want} ({want:#x})" in capsys.readouterr().out


def test_kernel_command_with_data_in_agrees(tmp_path, capsys):
    require_live_kernel()
    src = tmp_path / "header.s"
    src.write_text(next(p for p in ACCEPTED if p.name == "ipv4_header").text)
    data = tmp_path / "packet.bin"
    data.write_bytes(PACKETS["arp_20"])
    assert main(["kernel", str(src), "--data-in", str(data)]) == 0
    out = capsys.readouterr().out
    assert "99/99/99" in out and "1 agree" in out
