"""Verifier register types: base types and flags as the kernel composes them
(`PTR_TO_BTF_ID | MEM_ALLOC | PTR_MAYBE_NULL`), and their log spelling (`reg_type_str`).

Numeric values are our own; only the composition rules and the printed names follow the
kernel, because those names appear in verifier logs and frame-descriptor lines."""

from __future__ import annotations

from enum import IntEnum, IntFlag

BASE_TYPE_MASK = 0xFF


class BaseType(IntEnum):
    NOT_INIT = 0
    SCALAR_VALUE = 1
    PTR_TO_CTX = 2
    CONST_PTR_TO_MAP = 3
    PTR_TO_MAP_VALUE = 4
    PTR_TO_MAP_KEY = 5
    PTR_TO_STACK = 6
    PTR_TO_PACKET_META = 7
    PTR_TO_PACKET = 8
    PTR_TO_PACKET_END = 9
    PTR_TO_FLOW_KEYS = 10
    PTR_TO_SOCKET = 11
    PTR_TO_SOCK_COMMON = 12
    PTR_TO_TCP_SOCK = 13
    PTR_TO_TP_BUFFER = 14
    PTR_TO_XDP_SOCK = 15
    PTR_TO_BTF_ID = 16
    PTR_TO_MEM = 17
    PTR_TO_ARENA = 18
    PTR_TO_BUF = 19
    PTR_TO_FUNC = 20
    CONST_PTR_TO_DYNPTR = 21


class TypeFlag(IntFlag):
    NONE = 0
    PTR_MAYBE_NULL = 1 << 8
    MEM_RDONLY = 1 << 9
    MEM_RINGBUF = 1 << 10
    MEM_USER = 1 << 11
    MEM_PERCPU = 1 << 12
    OBJ_RELEASE = 1 << 13
    PTR_UNTRUSTED = 1 << 14
    MEM_UNINIT = 1 << 15
    MEM_ALLOC = 1 << 18
    PTR_TRUSTED = 1 << 19
    MEM_RCU = 1 << 20
    NON_OWN_REF = 1 << 21


NOT_INIT = int(BaseType.NOT_INIT)
SCALAR_VALUE = int(BaseType.SCALAR_VALUE)
PTR_TO_CTX = int(BaseType.PTR_TO_CTX)
PTR_TO_STACK = int(BaseType.PTR_TO_STACK)
PTR_TO_BTF_ID = int(BaseType.PTR_TO_BTF_ID)
CONST_PTR_TO_MAP = int(BaseType.CONST_PTR_TO_MAP)
PTR_TO_MAP_VALUE = int(BaseType.PTR_TO_MAP_VALUE)
PTR_TO_PACKET_META = int(BaseType.PTR_TO_PACKET_META)
PTR_TO_PACKET = int(BaseType.PTR_TO_PACKET)
PTR_TO_PACKET_END = int(BaseType.PTR_TO_PACKET_END)
PTR_TO_FLOW_KEYS = int(BaseType.PTR_TO_FLOW_KEYS)
PTR_TO_MEM = int(BaseType.PTR_TO_MEM)
PTR_MAYBE_NULL = int(TypeFlag.PTR_MAYBE_NULL)
MEM_ALLOC = int(TypeFlag.MEM_ALLOC)

_BASE_NAMES = {
    BaseType.NOT_INIT: "?",
    BaseType.SCALAR_VALUE: "scalar",
    BaseType.PTR_TO_CTX: "ctx",
    BaseType.CONST_PTR_TO_MAP: "map_ptr",
    BaseType.PTR_TO_MAP_VALUE: "map_value",
    BaseType.PTR_TO_MAP_KEY: "map_key",
    BaseType.PTR_TO_STACK: "fp",
    BaseType.PTR_TO_PACKET_META: "pkt_meta",
    BaseType.PTR_TO_PACKET: "pkt",
    BaseType.PTR_TO_PACKET_END: "pkt_end",
    BaseType.PTR_TO_FLOW_KEYS: "flow_keys",
    BaseType.PTR_TO_SOCKET: "sock",
    BaseType.PTR_TO_SOCK_COMMON: "sock_common",
    BaseType.PTR_TO_TCP_SOCK: "tcp_sock",
    BaseType.PTR_TO_TP_BUFFER: "tp_buffer",
    BaseType.PTR_TO_XDP_SOCK: "xdp_sock",
    BaseType.PTR_TO_BTF_ID: "ptr_",
    BaseType.PTR_TO_MEM: "mem",
    BaseType.PTR_TO_ARENA: "arena",
    BaseType.PTR_TO_BUF: "buf",
    BaseType.PTR_TO_FUNC: "func",
    BaseType.CONST_PTR_TO_DYNPTR: "dynptr_ptr",
}

# Prefix order as the kernel prints them.
_PREFIXES = (
    (TypeFlag.MEM_RDONLY, "rdonly_"),
    (TypeFlag.MEM_RINGBUF, "ringbuf_"),
    (TypeFlag.MEM_USER, "user_"),
    (TypeFlag.MEM_PERCPU, "percpu_"),
    (TypeFlag.MEM_RCU, "rcu_"),
    (TypeFlag.PTR_UNTRUSTED, "untrusted_"),
    (TypeFlag.PTR_TRUSTED, "trusted_"),
)


def base_type(t: int) -> int:
    return t & BASE_TYPE_MASK


def type_flags(t: int) -> int:
    return t & ~BASE_TYPE_MASK


def reg_type_str(t: int) -> str:
    """Kernel-style name: prefixes for flags, base name, then for PTR_MAYBE_NULL the kernel's
    postfix: `or_null_` after a btf pointer (`ptr_or_null_`), `_or_null` otherwise."""
    base = BaseType(base_type(t))
    prefix = "".join(text for flag, text in _PREFIXES if t & flag)
    postfix = ""
    if t & TypeFlag.PTR_MAYBE_NULL and base not in (BaseType.NOT_INIT, BaseType.SCALAR_VALUE):
        postfix = "or_null_" if base == BaseType.PTR_TO_BTF_ID else "_or_null"
    return f"{prefix}{_BASE_NAMES[base]}{postfix}"
