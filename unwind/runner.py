"""Run a `JitProgram` once: machine + kernel model + ledger, ctx set up, result collected.

The JIT must have been compiled with `unwind.jit_kernel.kfunc_stub_addrs()`; a program whose
`stub_addrs` disagree is refused before it runs (its calls would land on the wrong stubs).
The ctx is one page (`skb_ctx`): the __sk_buff, the packet pointers and a tc test run's packet."""

from __future__ import annotations

import struct
import time

from jit.image import JitProgram
from jit.layout import CTX_BASE, CTX_SIZE, STACK_BASE, STACK_SIZE, packet_address
from jit.machine import Machine, MachineError
from unwind.jit_kernel import Kernel, kfunc_stub_addrs
from unwind.kernel.ledger import Ledger
from unwind.result import RunResult
from verifier.errors import LoadError
from verifier.rewrite.ctx_access import SKB_CTX_SIZE, SLOT_FIELDS

CTX_LEN = SKB_CTX_SIZE  # a __sk_buff-like buffer
# The kernel's limit on a test run's packet: PAGE_SIZE - NET_SKB_PAD - the aligned
# skb_shared_info (x86-64), measured on the live kernel (3713 bytes: EINVAL).
MAX_TEST_RUN_PACKET = 3712
DEFAULT_PKT_LEN = 74
ETH_P_IP = 0x0800


_ZERO_STACK = bytes(STACK_SIZE)  # written between runs; allocated once


ETH_HLEN = 14
ETH_P_802_3_MIN = 0x0600
ETH_P_802_3, ETH_P_802_2 = 0x0001, 0x0004
# EtherType -> (name, length of the header a test run pulls: sizeof(struct iphdr/ipv6hdr))
NETWORK_HEADERS = {0x0800: ("IPv4", 20), 0x86DD: ("IPv6", 40)}


def default_ctx() -> bytes:
    """The ctx of a test run on `default_packet()`: len = 74 at offset 0, protocol =
    htons(ETH_P_IP) at 16 (reads as 8 little-endian), and the packet (`skb_ctx`)."""
    return skb_ctx(default_packet())


def default_packet() -> bytes:
    """The packet `default_ctx` describes: 74 bytes, an Ethernet header saying IPv4."""
    pkt = bytearray(DEFAULT_PKT_LEN)
    struct.pack_into(">H", pkt, 12, ETH_P_IP)
    return bytes(pkt)


def eth_protocol(data: bytes) -> int:
    """skb->protocol as the kernel's eth_type_trans sets it for a test run's packet: the
    EtherType when it is one, else 802.3 (raw IPX: payload starts 0xFFFF) or 802.2."""
    (proto,) = struct.unpack_from(">H", data, 12)
    if proto >= ETH_P_802_3_MIN:
        return proto
    return ETH_P_802_3 if data[ETH_HLEN : ETH_HLEN + 2] == b"\xff\xff" else ETH_P_802_2


def skb_ctx(data: bytes, ctx_in: bytes = b"", what: str = "data-in") -> bytes:
    """The ctx page a tc program sees when BPF_PROG_TEST_RUN runs it on packet `data` with
    context `ctx_in` (may be empty). Its `__sk_buff`: the fields the caller may set come
    from ctx_in, len from the packet and protocol from its Ethernet header. Then the hidden
    pointers the rewritten loads of data/data_end/data_meta read (verifier.rewrite.ctx_access):
    data at the start of the Ethernet frame, data_end = data + len, data_meta = data (no
    metadata), and the packet itself at `jit.layout.packet_address`. A packet shorter than
    an Ethernet header, an IPv4 or IPv6 one shorter than its network header too, or one
    longer than a test run takes is refused, as the kernel refuses it (EINVAL)."""
    if len(data) < ETH_HLEN:
        raise LoadError(f"{what}: {len(data)} bytes is shorter than an Ethernet header ({ETH_HLEN})")
    network = NETWORK_HEADERS.get(eth_protocol(data))
    if network is not None and len(data) < ETH_HLEN + network[1]:
        raise LoadError(f"{what}: an {network[0]} packet of {len(data)} bytes is shorter than its Ethernet "
                        f"and {network[0]} headers ({ETH_HLEN + network[1]})")
    if len(data) > MAX_TEST_RUN_PACKET:
        raise LoadError(f"{what}: {len(data)} bytes is longer than a test run's packet may be "
                        f"({MAX_TEST_RUN_PACKET})")
    if len(ctx_in) > CTX_LEN:
        raise LoadError(f"ctx-in: {len(ctx_in)} bytes is larger than __sk_buff ({CTX_LEN})")
    buf = bytearray(ctx_in.ljust(CTX_SIZE, b"\0"))
    struct.pack_into("<I", buf, 0, len(data))
    struct.pack_into("<I", buf, 16, 0)
    struct.pack_into(">H", buf, 16, eth_protocol(data))
    start = packet_address(len(data))
    pointers = {"data": start, "data_end": start + len(data), "data_meta": start}
    for slot, name in SLOT_FIELDS.items():
        struct.pack_into("<Q", buf, slot, pointers[name])
    buf[start - CTX_BASE :] = data
    return bytes(buf)


class ProgramRunner:
    """One machine and kernel model kept across runs of one JitProgram: Unicorn setup and
    the translation of the images are paid once, each `run` starts from a clean kernel
    state (new ledger, zeroed heap and stack, fresh ctx, global data as the object has it)."""

    def __init__(self, jp: JitProgram, budget: int = 10_000_000) -> None:
        expected = kfunc_stub_addrs()
        if jp.stub_addrs and jp.stub_addrs != expected:
            raise MachineError(
                f"prog '{jp.verified.name}': JIT was compiled with kfunc stubs {jp.stub_addrs}, "
                f"the kernel model provides {expected}"
            )
        self.jp = jp
        self.machine = Machine(jp, budget)
        self.kernel = Kernel(self.machine, jp, Ledger())
        self.runs = 0

    def run(self, ctx: bytes | None = None) -> RunResult:
        """Run main with R1 = CTX_BASE; raise MachineError / UnwindError on faults and bad unwinds."""
        jp, machine, kernel = self.jp, self.machine, self.kernel
        data = default_ctx() if ctx is None else ctx
        if len(data) > CTX_SIZE:
            raise MachineError(f"prog '{jp.verified.name}': ctx of {len(data)} bytes exceeds {CTX_SIZE}")
        if self.runs:
            kernel.reset(Ledger())
            machine.write(STACK_BASE, _ZERO_STACK)
            machine.load_maps()  # global data starts from the object's values on every run
        self.runs += 1
        machine.write(CTX_BASE, data.ljust(CTX_SIZE, b"\0"))
        starts_before = machine.emu_starts
        t0 = time.perf_counter()
        retval = machine.run(jp.main, CTX_BASE)
        elapsed_us = (time.perf_counter() - t0) * 1e6
        counters = {"emu_starts": machine.emu_starts - starts_before, "time_us": round(elapsed_us, 1)}
        return kernel.result(retval, counters)


def run_jit_program(jp: JitProgram, ctx: bytes | None = None, budget: int = 10_000_000) -> RunResult:
    """Run main once on a fresh machine (see ProgramRunner to run a program repeatedly)."""
    return ProgramRunner(jp, budget).run(ctx)
