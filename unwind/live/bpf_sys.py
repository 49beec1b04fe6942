"""The `bpf()` system call in pure Python (ctypes `syscall(321, ...)`; no libbpf).

Owns the attribute layouts of the commands the kernel oracle needs (offsets as the 6.18
kernel's `union bpf_attr` and `struct bpf_prog_info` have them; see
../shared/reference/live-kernel.md) and one function per command: BTF_LOAD, MAP_CREATE,
MAP_UPDATE_ELEM, MAP_LOOKUP_ELEM, MAP_FREEZE, PROG_LOAD, OBJ_GET_INFO_BY_FD, PROG_TEST_RUN.

File descriptors are `Fd` objects: closed by `close()`, by a `with` block, or by their
owner's `close()`; a failed call closes nothing it did not open. Every failure is one
`LiveKernelError` line naming the command and the errno (a rejected PROG_LOAD carries the
verifier log as well)."""

from __future__ import annotations

import ctypes
import errno as errno_mod
import os
import re
import struct
from dataclasses import dataclass, field

from verifier.errors import BpfUnwindError

SYS_BPF = 321  # x86-64

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_BTF_LOAD = 18
BPF_MAP_FREEZE = 22
COMMAND_NAMES = {
    BPF_MAP_CREATE: "BPF_MAP_CREATE", BPF_MAP_LOOKUP_ELEM: "BPF_MAP_LOOKUP_ELEM",
    BPF_MAP_UPDATE_ELEM: "BPF_MAP_UPDATE_ELEM", BPF_PROG_LOAD: "BPF_PROG_LOAD",
    BPF_PROG_TEST_RUN: "BPF_PROG_TEST_RUN", BPF_OBJ_GET_INFO_BY_FD: "BPF_OBJ_GET_INFO_BY_FD",
    BPF_BTF_LOAD: "BPF_BTF_LOAD", BPF_MAP_FREEZE: "BPF_MAP_FREEZE",
}  # fmt: skip
ATTR_SIZE = 168  # sizeof(union bpf_attr) in 6.18
INFO_SIZE = 232  # sizeof(struct bpf_prog_info) in 6.18
LOG_SIZE = 16 << 20  # the verifier's largest log buffer (UINT_MAX >> 2 is the limit; 16 MiB is plenty)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class LiveKernelError(BpfUnwindError):
    """A bpf() call failed: one line naming the command and errno."""

    def __init__(self, message: str, errno: int = 0, log: str = "") -> None:
        super().__init__(message)
        self.errno = errno
        self.log = log


class Fd:
    """An owned file descriptor; `close()` is idempotent."""

    def __init__(self, fd: int, what: str) -> None:
        self.fd = fd
        self.what = what

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Fd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a safety net; owners close explicitly
        if getattr(self, "fd", -1) >= 0:
            self.close()


class Buf:
    """A C buffer kept alive for the duration of a call; `.addr` goes into an attr field."""

    def __init__(self, data: bytes | int) -> None:
        if isinstance(data, int):
            self.raw = ctypes.create_string_buffer(data)
        else:
            self.raw = ctypes.create_string_buffer(bytes(data), len(data) or 1)

    @property
    def addr(self) -> int:
        return ctypes.addressof(self.raw)

    def bytes(self, n: int | None = None) -> bytes:
        return self.raw.raw[: len(self.raw.raw) if n is None else n]


def errno_text(err: int) -> str:
    return f"{errno_mod.errorcode.get(err, str(err))} ({os.strerror(err)})"


def sys_bpf(cmd: int, attr: bytearray) -> tuple[int, int]:
    """One bpf() call on `attr` (updated in place with what the kernel writes back).
    Returns (result, errno): result < 0 means failure."""
    buf = ctypes.create_string_buffer(bytes(attr), ATTR_SIZE)
    ret = _libc.syscall(SYS_BPF, cmd, buf, ATTR_SIZE)
    err = ctypes.get_errno() if ret < 0 else 0
    attr[:] = buf.raw[: len(attr)]
    return ret, err


def _call(cmd: int, attr: bytearray, what: str = "") -> int:
    ret, err = sys_bpf(cmd, attr)
    if ret < 0:
        name = COMMAND_NAMES.get(cmd, f"bpf cmd {cmd}")
        raise LiveKernelError(f"{name}{what}: {errno_text(err)}", err)
    return ret


def _attr() -> bytearray:
    return bytearray(ATTR_SIZE)


def btf_load(data: bytes, log_level: int = 1) -> Fd:
    """BPF_BTF_LOAD; on failure the error carries the BTF verifier's log."""
    blob, log = Buf(data), Buf(LOG_SIZE if log_level else 0)
    attr = _attr()
    struct.pack_into("<QQII I", attr, 0, blob.addr, log.addr if log_level else 0, len(data),
                     LOG_SIZE if log_level else 0, log_level)  # fmt: skip
    ret, err = sys_bpf(BPF_BTF_LOAD, attr)
    if ret < 0:
        text = log.raw.value.decode(errors="replace") if log_level else ""
        last = text.strip().splitlines()[-1] if text.strip() else ""
        raise LiveKernelError(f"BPF_BTF_LOAD: {errno_text(err)}{': ' + last if last else ''}", err, text)
    return Fd(ret, "btf")


@dataclass(frozen=True)
class MapSpec:
    """What BPF_MAP_CREATE needs."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int = 0
    btf_fd: int = 0
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0


def map_create(spec: MapSpec) -> Fd:
    attr = _attr()
    struct.pack_into(
        "<IIIII", attr, 0, spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.flags
    )
    name = spec.name.encode()[:15]
    attr[28 : 28 + len(name)] = name
    struct.pack_into("<III", attr, 48, spec.btf_fd, spec.btf_key_type_id, spec.btf_value_type_id)
    return Fd(_call(BPF_MAP_CREATE, attr, f" '{spec.name}'"), f"map {spec.name}")


def map_update(fd: Fd, key: bytes, value: bytes, flags: int = 0) -> None:
    k, v = Buf(key), Buf(value)
    attr = _attr()
    struct.pack_into("<IIQQQ", attr, 0, fd.fd, 0, k.addr, v.addr, flags)
    _call(BPF_MAP_UPDATE_ELEM, attr, f" ({fd.what})")


def map_lookup(fd: Fd, key: bytes, value_size: int) -> bytes:
    k, v = Buf(key), Buf(value_size)
    attr = _attr()
    struct.pack_into("<IIQQ", attr, 0, fd.fd, 0, k.addr, v.addr)
    _call(BPF_MAP_LOOKUP_ELEM, attr, f" ({fd.what})")
    return v.bytes(value_size)


def map_freeze(fd: Fd) -> None:
    attr = _attr()
    struct.pack_into("<I", attr, 0, fd.fd)
    _call(BPF_MAP_FREEZE, attr, f" ({fd.what})")


@dataclass
class ProgLoad:
    """What BPF_PROG_LOAD needs: raw insns, and BTF records already packed."""

    name: str
    prog_type: int
    insns: bytes
    license: str = "GPL"
    expected_attach_type: int = 0
    btf_fd: int = 0
    func_info: bytes = b""  # records of 8 bytes: insn_off, type_id
    line_info: bytes = b""  # records of 16 bytes: insn_off, file_name_off, line_off, line_col
    attach_btf_id: int = 0
    log_level: int = 1
    prog_flags: int = 0


@dataclass
class LoadResult:
    """The kernel's answer to BPF_PROG_LOAD: an fd when accepted, the log either way."""

    fd: Fd | None
    log: str
    errno: int = 0
    log_true_size: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.fd is not None


def prog_load(req: ProgLoad) -> LoadResult:
    """BPF_PROG_LOAD. A rejection is a result (with the log), not an exception; only a
    failure that is not the verifier's (bad attr, no permission) raises."""
    log_size = LOG_SIZE if req.log_level else 0  # a log buffer without a level is EINVAL
    insns, lic, log = Buf(req.insns), Buf(req.license.encode() + b"\0"), Buf(max(log_size, 1))
    finfo, linfo = Buf(req.func_info), Buf(req.line_info)
    attr = _attr()
    struct.pack_into("<IIQQIIQII", attr, 0, req.prog_type, len(req.insns) // 8, insns.addr, lic.addr,
                     req.log_level, log_size, log.addr if log_size else 0, 0, req.prog_flags)  # fmt: skip
    name = re.sub(r"[^A-Za-z0-9_.]", "_", req.name).encode()[:15]  # the kernel's prog_name charset
    attr[48 : 48 + len(name)] = name
    struct.pack_into("<II", attr, 68, req.expected_attach_type, req.btf_fd)
    if req.func_info:
        struct.pack_into("<IQI", attr, 76, 8, finfo.addr, len(req.func_info) // 8)
    if req.line_info:
        struct.pack_into("<IQI", attr, 92, 16, linfo.addr, len(req.line_info) // 16)
    struct.pack_into("<I", attr, 108, req.attach_btf_id)
    ret, err = sys_bpf(BPF_PROG_LOAD, attr)
    (true_size,) = struct.unpack_from("<I", attr, 140)
    text = log.raw.value.decode(errors="replace")
    if ret >= 0:
        return LoadResult(Fd(ret, f"prog {req.name}"), text, 0, true_size)
    return LoadResult(None, text, err, true_size)


@dataclass(frozen=True)
class ProgInfo:
    """What BPF_OBJ_GET_INFO_BY_FD tells of a loaded program."""

    xlated: bytes
    jited: bytes
    jited_ksyms: tuple[int, ...]
    jited_func_lens: tuple[int, ...]
    jited_line_info: tuple[int, ...]
    line_info: bytes
    func_starts: tuple[int, ...]  # xlated insn index of each function (func_info)
    verified_insns: int
    tag: bytes


_INFO_ARRAYS = (  # (count offset, pointer offset, element size, name)
    (20, 32, 1, "xlated"), (16, 24, 1, "jited"), (104, 112, 8, "ksyms"), (108, 120, 4, "func_lens"),
    (168, 160, 8, "jited_line_info"), (148, 152, 16, "line_info"), (144, 136, 8, "func_info"),
)  # fmt: skip


def prog_info(fd: Fd) -> ProgInfo:
    """Two calls: the first learns the array sizes, the second fills them."""
    info = Buf(INFO_SIZE)
    attr = _attr()
    struct.pack_into("<IIQ", attr, 0, fd.fd, INFO_SIZE, info.addr)
    _call(BPF_OBJ_GET_INFO_BY_FD, attr, f" ({fd.what})")
    first = info.bytes(INFO_SIZE)
    counts = {name: struct.unpack_from("<I", first, c)[0] for c, _p, _s, name in _INFO_ARRAYS}
    rec_sizes = {"jited_line_info": struct.unpack_from("<I", first, 176)[0] or 8,
                 "line_info": struct.unpack_from("<I", first, 172)[0] or 16,
                 "func_info": struct.unpack_from("<I", first, 132)[0] or 8}  # fmt: skip
    bufs: dict[str, Buf] = {}
    second = bytearray(INFO_SIZE)
    for c, p, size, name in _INFO_ARRAYS:
        size = rec_sizes.get(name, size)
        n = counts[name]
        bufs[name] = Buf(max(n * size, 1))
        struct.pack_into("<I", second, c, n)
        struct.pack_into("<Q", second, p, bufs[name].addr if n else 0)
    struct.pack_into("<II", second, 172, rec_sizes["line_info"], rec_sizes["jited_line_info"])
    struct.pack_into("<I", second, 132, rec_sizes["func_info"])
    info2 = Buf(bytes(second))
    attr = _attr()
    struct.pack_into("<IIQ", attr, 0, fd.fd, INFO_SIZE, info2.addr)
    _call(BPF_OBJ_GET_INFO_BY_FD, attr, f" ({fd.what})")
    out = info2.bytes(INFO_SIZE)

    def arr(name: str, fmt: str, size: int) -> tuple[int, ...]:
        n = counts[name]
        return struct.unpack_from(f"<{n}{fmt}", bufs[name].raw.raw, 0) if n else ()

    return ProgInfo(
        xlated=bufs["xlated"].bytes(counts["xlated"]),
        jited=bufs["jited"].bytes(counts["jited"]),
        jited_ksyms=arr("ksyms", "Q", 8),
        jited_func_lens=arr("func_lens", "I", 4),
        jited_line_info=arr("jited_line_info", "Q", 8),
        line_info=bufs["line_info"].bytes(counts["line_info"] * rec_sizes["line_info"]),
        func_starts=tuple(
            struct.unpack_from("<I", bufs["func_info"].raw.raw, i * rec_sizes["func_info"])[0]
            for i in range(counts["func_info"])
        ),
        verified_insns=struct.unpack_from("<I", out, 216)[0],
        tag=out[8:16],
    )


@dataclass(frozen=True)
class TestRun:
    """What BPF_PROG_TEST_RUN returned."""

    retval: int
    duration_ns: int  # average per repetition, as the kernel reports it
    data_out: bytes
    ctx_out: bytes


def prog_test_run(fd: Fd, data_in: bytes = b"", ctx_in: bytes = b"", repeat: int = 1,
                  data_out_size: int = 0, ctx_out_size: int = 0) -> TestRun:  # fmt: skip
    din, cin = Buf(data_in), Buf(ctx_in)
    dout, cout = Buf(max(data_out_size, 1)), Buf(max(ctx_out_size, 1))
    attr = _attr()
    struct.pack_into("<IIIIQQII", attr, 0, fd.fd, 0, len(data_in), data_out_size, din.addr if data_in else 0,
                     dout.addr if data_out_size else 0, repeat, 0)  # fmt: skip
    struct.pack_into("<IIQQ", attr, 40, len(ctx_in), ctx_out_size, cin.addr if ctx_in else 0,
                     cout.addr if ctx_out_size else 0)  # fmt: skip
    _call(BPF_PROG_TEST_RUN, attr, f" ({fd.what})")
    retval, _ds_in, ds_out = struct.unpack_from("<III", attr, 4)
    (duration,) = struct.unpack_from("<I", attr, 36)
    (cs_out,) = struct.unpack_from("<I", attr, 44)
    return TestRun(retval, duration, dout.bytes(ds_out), cout.bytes(cs_out))
