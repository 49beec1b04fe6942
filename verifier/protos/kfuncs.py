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
    ITER_NEW = 1 << 4
    ITER_NEXT = 1 << 5
    ITER_DESTROY = 1 << 6


class ArgKind(Enum):
    SCALAR = "scalar"  # any initialised scalar
    CONST_TYPE_ID = "local_type_id__k"  # known constant naming a program-local struct
    IGNORED = "__ign"  # not checked (the kernel's `__ign` suffix)
    ALLOC_OBJ = "p__alloc"  # PTR_TO_BTF_ID | MEM_ALLOC, non-NULL, referenced
    PERCPU_OBJ = "p__alloc_percpu"  # PTR_TO_BTF_ID | MEM_ALLOC | MEM_PERCPU
    ITER = "it"  # pointer to an iterator on the stack (struct bpf_iter_*)
    RB_ROOT = "root"
    RB_NODE = "node"
    CALLBACK = "less"  # a subprog passed by address


class RetKind(Enum):
    VOID = "void"
    ALLOC_OBJ = "alloc_obj"  # PTR_TO_BTF_ID | MEM_ALLOC of the struct named by arg 0
    PERCPU_OBJ = "percpu_obj"
    INT = "int"
    MEM = "mem"  # e.g. `int *` of bpf_iter_num_next


@dataclass(frozen=True)
class KfuncProto:
    name: str
    btf_id: int
    args: tuple[ArgKind, ...]
    ret: RetKind
    flags: KF
    modelled: bool = True  # False: the verifier rejects calls clearly (later issues model it)

    @property
    def release_arg(self) -> int | None:
        """0-based index of the argument a KF_RELEASE kfunc releases."""
        if not self.flags & KF.RELEASE:
            return None
        return next(i for i, a in enumerate(self.args) if a in (ArgKind.ALLOC_OBJ, ArgKind.PERCPU_OBJ))


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
    # Used by the series' selftests; known by name (the loader resolves them) but not yet
    # modelled by the verifier or the kernel model. Stub slots follow table order, so new
    # entries are only ever appended.
    KfuncProto(
        "bpf_percpu_obj_new_impl",
        btf_id=10004,
        args=(ArgKind.CONST_TYPE_ID, ArgKind.IGNORED),
        ret=RetKind.PERCPU_OBJ,
        flags=KF.ACQUIRE | KF.RET_NULL,
        modelled=False,
    ),
    KfuncProto(
        "bpf_percpu_obj_drop_impl",
        btf_id=10005,
        args=(ArgKind.PERCPU_OBJ, ArgKind.IGNORED),
        ret=RetKind.VOID,
        flags=KF.RELEASE,
        modelled=False,
    ),
    KfuncProto(
        "bpf_iter_num_new",
        btf_id=10006,
        args=(ArgKind.ITER, ArgKind.SCALAR, ArgKind.SCALAR),
        ret=RetKind.INT,
        flags=KF.ITER_NEW,
        modelled=False,
    ),
    KfuncProto(
        "bpf_iter_num_next",
        btf_id=10007,
        args=(ArgKind.ITER,),
        ret=RetKind.MEM,
        flags=KF.ITER_NEXT | KF.RET_NULL,
        modelled=False,
    ),
    KfuncProto(
        "bpf_iter_num_destroy",
        btf_id=10008,
        args=(ArgKind.ITER,),
        ret=RetKind.VOID,
        flags=KF.ITER_DESTROY,
        modelled=False,
    ),
    KfuncProto("bpf_rcu_read_lock", btf_id=10009, args=(), ret=RetKind.VOID, flags=KF.NONE, modelled=False),
    KfuncProto("bpf_rcu_read_unlock", btf_id=10010, args=(), ret=RetKind.VOID, flags=KF.NONE, modelled=False),
    KfuncProto(
        "bpf_rbtree_add_impl",
        btf_id=10011,
        args=(ArgKind.RB_ROOT, ArgKind.RB_NODE, ArgKind.CALLBACK, ArgKind.IGNORED, ArgKind.SCALAR),
        ret=RetKind.INT,
        flags=KF.NONE,
        modelled=False,
    ),
)

KFUNCS_BY_NAME: dict[str, KfuncProto] = {k.name: k for k in KFUNCS}
KFUNCS_BY_ID: dict[int, KfuncProto] = {k.btf_id: k for k in KFUNCS}
BPF_THROW_BTF_ID = KFUNCS_BY_NAME["bpf_throw"].btf_id


def is_bpf_throw_kfunc(code: int, src: int, off: int, imm: int) -> bool:
    """`is_bpf_throw_kfunc`: a kfunc call (off == 0) whose imm is bpf_throw's BTF id."""
    return code == 0x85 and src == 2 and off == 0 and imm == BPF_THROW_BTF_ID
