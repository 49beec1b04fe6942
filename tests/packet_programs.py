"""Data for tests/test_packets.py: tc programs that read their packet directly (the ctx's
data/data_end/data_meta), the packets they run on, each accepted program's expected return
value as a function of the packet, and programs the verifier must refuse with the kernel's
message. Packets are BPF_PROG_TEST_RUN's --data-in: an Ethernet frame of 14..64 bytes."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

HEAD = """.prog_type tc
main:
"""
DATA = "\tr2 = *(u32 *)(r1 + 76)\n\tr3 = *(u32 *)(r1 + 80)\n"


def packet(length: int, ethertype: int, seed: int = 0) -> bytes:
    """An Ethernet frame of `length` bytes: made-up addresses and payload, the given type."""
    buf = bytearray((i * 7 + seed) & 0xFF for i in range(length))
    struct.pack_into(">H", buf, 12, ethertype)
    if length > 23:
        buf[14], buf[23] = 0x45, 6  # IPv4 version/IHL, protocol TCP
    return bytes(buf)


ETH_P_IP, ETH_P_IPV6, ETH_P_ARP = 0x0800, 0x86DD, 0x0806
# A test run refuses (EINVAL) an IPv4 frame shorter than 14 + 20 bytes and an IPv6 one
# shorter than 14 + 40: the short frames are ARP.
PACKETS: dict[str, bytes] = {
    "arp_14": packet(14, ETH_P_ARP),
    "arp_20": packet(20, ETH_P_ARP, 3),
    "arp_33": packet(33, ETH_P_ARP, 5),
    "ipv4_34": packet(34, ETH_P_IP, 9),
    "ipv4_64": packet(64, ETH_P_IP, 11),
    "ipv6_64": packet(64, ETH_P_IPV6, 13),
    "arp_42": packet(42, ETH_P_ARP, 17),
    "idx15_64": bytes([0x0F]) + packet(64, ETH_P_IP, 19)[1:],
}


def _u16(p: bytes, off: int) -> int:
    return struct.unpack_from("<H", p, off)[0]


def _u32(p: bytes, off: int) -> int:
    return struct.unpack_from("<I", p, off)[0]


@dataclass(frozen=True)
class PacketProgram:
    name: str
    text: str
    expected: Callable[[bytes], int]  # the return value on a packet (u32)


ACCEPTED = [
    PacketProgram(
        "fixed_offsets",  # three loads at constant offsets inside the range one check proved
        HEAD + DATA + """\tr4 = r2
\tr4 += 24
\tif r4 > r3 goto .Lshort
\tr0 = *(u8 *)(r2 + 23)
\tr5 = *(u16 *)(r2 + 12)
\tr0 <<= 16
\tr0 |= r5
\tr6 = *(u32 *)(r2 + 16)
\tr0 += r6
\texit
.Lshort:
\tr0 = 1000
\texit
""",
        lambda p: ((p[23] << 16 | _u16(p, 12)) + _u32(p, 16)) & 0xFFFF_FFFF if len(p) >= 24 else 1000,
    ),
    PacketProgram(
        "variable_offset",  # an index from the packet, masked, then the range checked again
        HEAD + DATA + """\tr4 = r2
\tr4 += 1
\tif r4 > r3 goto .Lout
\tr5 = *(u8 *)(r2 + 0)
\tr5 &= 15
\tr2 += r5
\tr4 = r2
\tr4 += 20
\tif r4 > r3 goto .Lout
\tr0 = *(u8 *)(r2 + 19)
\texit
.Lout:
\tr0 = 2000
\texit
""",
        lambda p: p[(p[0] & 15) + 19] if (p[0] & 15) + 20 <= len(p) else 2000,
    ),
    PacketProgram(
        "ethertype",  # different verdicts for IPv4, IPv6 and anything else
        HEAD + DATA + """\tr4 = r2
\tr4 += 14
\tif r4 > r3 goto .Ldrop
\tr5 = *(u16 *)(r2 + 12)
\tr5 = be16 r5
\tif r5 == 0x800 goto .Lipv4
\tif r5 == 0x86dd goto .Lipv6
\tr0 = 0
\texit
.Lipv4:
\tr0 = 4
\texit
.Lipv6:
\tr0 = 6
\texit
.Ldrop:
\tr0 = 2
\texit
""",
        lambda p: {0x0800: 4, 0x86DD: 6}.get(struct.unpack_from(">H", p, 12)[0], 0),
    ),
    PacketProgram(
        "ipv4_header",  # the check (`data_end < data + 34`) fails for a short packet
        HEAD + DATA + """\tr4 = r2
\tr4 += 34
\tif r3 < r4 goto .Lshort
\tr0 = *(u8 *)(r2 + 23)
\texit
.Lshort:
\tr0 = 99
\texit
""",
        lambda p: p[23] if len(p) >= 34 else 99,
    ),
    PacketProgram(
        "meta_and_len",  # data_meta == data (no metadata); data_end - data == len; dst == src
        HEAD + """\tr3 = *(u32 *)(r1 + 80)
\tr4 = *(u32 *)(r1 + 140)
\tr6 = *(u32 *)(r1 + 0)
\tr1 = *(u32 *)(r1 + 76)
\tr5 = r4
\tr5 += 1
\tif r5 > r1 goto .Lnometa
\tr0 = *(u8 *)(r4 + 0)
\texit
.Lnometa:
\tr0 = r3
\tr0 -= r1
\tr0 <<= 16
\tr0 |= r6
\texit
""",
        lambda p: len(p) << 16 | len(p),
    ),
]


@dataclass(frozen=True)
class Refused:
    name: str
    text: str
    message: str  # the kernel's (and our) error line


REFUSED = [
    Refused("read_before_check", HEAD + DATA + "\tr0 = *(u8 *)(r2 + 0)\n\texit\n",
            "R2 offset is outside of the packet"),
    Refused("read_past_range", HEAD + DATA + "\tr4 = r2\n\tr4 += 14\n\tif r4 > r3 goto .L1\n"
            "\tr0 = *(u32 *)(r2 + 12)\n\texit\n.L1:\n\tr0 = 0\n\texit\n",
            "R2 offset is outside of the packet"),
    Refused("read_before_data", HEAD + DATA + "\tr4 = r2\n\tr4 += 14\n\tif r4 > r3 goto .L1\n"
            "\tr0 = *(u8 *)(r2 - 1)\n\texit\n.L1:\n\tr0 = 0\n\texit\n",
            "R2 offset is outside of the packet"),
    Refused("variable_offset_unchecked", HEAD + DATA + "\tr4 = r2\n\tr4 += 64\n\tif r4 > r3 goto .L1\n"
            "\tr5 = *(u8 *)(r2 + 0)\n\tr5 &= 15\n\tr2 += r5\n\tr0 = *(u8 *)(r2 + 0)\n\texit\n"
            ".L1:\n\tr0 = 0\n\texit\n",
            "R2 offset is outside of the packet"),
    Refused("pkt_end_arithmetic", HEAD + DATA + "\tr3 += 1\n\tr0 = 0\n\texit\n",
            "R3 pointer arithmetic on pkt_end prohibited"),
    Refused("pkt_end_deref", HEAD + DATA + "\tr0 = *(u8 *)(r3 + 0)\n\texit\n",
            "R3 invalid mem access 'pkt_end'"),
    Refused("wide_ctx_load", HEAD + "\tr2 = *(u64 *)(r1 + 76)\n\tr0 = 0\n\texit\n",
            "invalid bpf_context access off=76 size=8"),
    Refused("ctx_and_stack_at_one_insn", HEAD + """\tr6 = r1
\tr2 = *(u32 *)(r1 + 0)
\tif r2 > 10 goto .Lstack
\tgoto .Lload
.Lstack:
\tr6 = r10
\tr6 += -200
\t*(u64 *)(r10 - 200) = 0
\t*(u32 *)(r10 - 124) = 0
.Lload:
\tr0 = *(u32 *)(r6 + 76)
\tr0 = 0
\texit
""", "same insn cannot be used with different pointers"),
]

# A packet write: accepted by the kernel, refused here as not modelled.
PACKET_WRITE = HEAD + DATA + """\tr4 = r2
\tr4 += 14
\tif r4 > r3 goto .L1
\t*(u8 *)(r2 + 0) = 1
.L1:
\tr0 = 0
\texit
"""
