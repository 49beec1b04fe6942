"""Helper prototypes the verifier checks calls against (`call N`, src_reg 0): the helper's
id, name, argument kinds, return kind, the program types that may call it, and whether
Linux 6.18's fixups replace the call by inline code on x86-64.

Only helpers whose every argument is a scalar (or that take none) and whose result is a
plain scalar are modelled here; every other helper id is refused by the verifier as not
supported by bpf-unwind yet. What each helper returns at run time lives in unwind/ (the
kernel model); this table is only the contract the verifier enforces and the names the
comparisons with the live kernel use. Availability per program type was measured on the
live kernel (tests/test_helpers_scalar.py keeps it measured)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

BPF_FUNC_MAX_ID = 212  # __BPF_FUNC_MAX_ID of Linux 6.18 (enum bpf_func_id)

# nr_cpu_ids of the VM the live comparisons run on (/sys/devices/system/cpu/possible is
# 0-1): the kernel bounds bpf_get_smp_processor_id's R0 by it (do_refine_retval_range).
NR_CPU_IDS = 2


class HelperArg(Enum):
    """The kernel's `enum bpf_arg_type`, the kinds modelled."""

    ANYTHING = "ARG_ANYTHING"  # any initialised register (privileged: a pointer too)


class HelperRet(Enum):
    """The kernel's `enum bpf_return_type`, the kinds modelled."""

    INTEGER = "RET_INTEGER"  # R0 = unknown scalar


# Program types whose func_proto refuses bpf_ktime_get_coarse_ns (the tracing family:
# measured "program of this type cannot use helper" on kprobe, tracepoint, perf_event and
# raw_tracepoint; the skb/xdp types allow it).
COARSE_NS_TYPES = frozenset(
    {"socket_filter", "tc", "xdp", "cgroup_skb", "flow_dissector", "sk_skb", "sk_msg"}
)


@dataclass(frozen=True)
class HelperProto:
    func_id: int
    name: str  # the UAPI name: BPF_FUNC_<name>
    args: tuple[HelperArg, ...] = ()
    ret: HelperRet = HelperRet.INTEGER
    prog_types: frozenset[str] | None = None  # program types that may call it; None: all
    symbol: str = ""  # the kernel function a call goes to, when not bpf_<name>
    inlined: bool = False  # x86-64 fixups replace the call by inline insns (no call left)
    ret_umax: int | None = None  # the kernel's refined R0 upper bound, when it has one

    @property
    def func_name(self) -> str:
        """The name the verifier log uses (`func_id_name`): bpf_<name>."""
        return f"bpf_{self.name}"

    @property
    def kernel_symbol(self) -> str:
        """The kallsyms name of the function the kernel's call targets."""
        return self.symbol or self.func_name

    def allowed(self, prog_type: str) -> bool:
        return self.prog_types is None or prog_type in self.prog_types


HELPERS: tuple[HelperProto, ...] = (
    HelperProto(5, "ktime_get_ns"),
    HelperProto(7, "get_prandom_u32", symbol="bpf_user_rnd_u32"),
    HelperProto(8, "get_smp_processor_id", inlined=True, ret_umax=NR_CPU_IDS - 1),
    HelperProto(42, "get_numa_node_id"),
    HelperProto(118, "jiffies64", inlined=True),
    HelperProto(125, "ktime_get_boot_ns"),
    HelperProto(160, "ktime_get_coarse_ns", prog_types=COARSE_NS_TYPES),
    HelperProto(208, "ktime_get_tai_ns"),
)

HELPERS_BY_ID: dict[int, HelperProto] = {p.func_id: p for p in HELPERS}
HELPERS_BY_NAME: dict[str, HelperProto] = {p.name: p for p in HELPERS}
