"""Kfunc prototypes the verifier checks calls against: name, our BTF id (the call's imm),
argument kinds and the kernel's KF_* flags.

Runtime behaviour of each kfunc lives in unwind/ (the kernel model); this table is only the
contract the verifier enforces and the JIT's fixups rely on. BTF ids are our own numbering
(there is no vmlinux BTF here); they are stable because they appear in encoded programs."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntFlag


class KF(IntFlag):
    """The kernel's kfunc flags that matter to this model."""

    NONE = 0
    ACQUIRE = 1 << 0  # returns a referenced pointer (new ref_obj_id)
    RELEASE = 1 << 1  # releases the referenced pointer passed as its release argument
    RET_NULL = 1 << 2  # return value may be NULL until checked
    THROW = 1 << 3  # never returns: unwinds to the exception callback


class ArgKind(Enum):
    SCALAR = "scalar"  # any initialised scalar
    CONST_TYPE_ID = "local_type_id__k"  # known constant naming a program-local struct
    IGNORED = "__ign"  # not checked (the kernel's `__ign` suffix)
    ALLOC_OBJ = "p__alloc"  # PTR_TO_BTF_ID | MEM_ALLOC, non-NULL, referenced


class RetKind(Enum):
    VOID = "void"
    ALLOC_OBJ = "alloc_obj"  # PTR_TO_BTF_ID | MEM_ALLOC of the struct named by arg 0


@dataclass(frozen=True)
class KfuncProto:
    name: str
    btf_id: int
    args: tuple[ArgKind, ...]
    ret: RetKind
    flags: KF

    @property
    def release_arg(self) -> int | None:
        """0-based index of the argument a KF_RELEASE kfunc releases."""
        if not self.flags & KF.RELEASE:
            return None
        return self.args.index(ArgKind.ALLOC_OBJ)


KFUNCS: tuple[KfuncProto, ...] = (
    KfuncProto(
        "bpf_obj_new_impl",
        btf_id=10001,
        args=(ArgKind.CONST_TYPE_ID, ArgKind.IGNORED),
        ret=RetKind.ALLOC_OBJ,
        flags=KF.ACQUIRE | KF.RET_NULL,
    ),
    KfuncProto(
        "bpf_obj_drop_impl",
        btf_id=10002,
        args=(ArgKind.ALLOC_OBJ, ArgKind.IGNORED),
        ret=RetKind.VOID,
        flags=KF.RELEASE,
    ),
    KfuncProto(
        "bpf_throw",
        btf_id=10003,
        args=(ArgKind.SCALAR,),
        ret=RetKind.VOID,
        flags=KF.THROW,
    ),
)

KFUNCS_BY_NAME: dict[str, KfuncProto] = {k.name: k for k in KFUNCS}
KFUNCS_BY_ID: dict[int, KfuncProto] = {k.btf_id: k for k in KFUNCS}
BPF_THROW_BTF_ID = KFUNCS_BY_NAME["bpf_throw"].btf_id


def is_bpf_throw_kfunc(code: int, src: int, off: int, imm: int) -> bool:
    """`is_bpf_throw_kfunc`: a kfunc call (off == 0) whose imm is bpf_throw's BTF id."""
    return code == 0x85 and src == 2 and off == 0 and imm == BPF_THROW_BTF_ID
