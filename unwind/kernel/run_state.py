"""The kernel-side state of one run, common to both engines' kernel models (unwind.jit_kernel
for the JIT in Unicorn, unwind.interp_kernel for the reference interpreter): the resource
ledger, the object heap, kfunc call counts, the throw outcome, and the `RunResult` they
make. Both engines allocate from here, so they give objects the same addresses by
construction; each kernel model adds only how it reads arguments and call sites.

bpf_obj_new_impl's heap is a bump allocator from HEAP_BASE in 8-byte steps; memory is never
reused within a run (so new objects read as zeroed) and it returns NULL when exhausted.

The scalar helpers of verifier.protos.helpers (`helper`) are deterministic, restarting with
every run: the ktime helpers read one fake clock that starts at FAKE_CLOCK_START_NS and
advances FAKE_CLOCK_STEP_NS per read (boot time = monotonic time, TAI = monotonic time +
a fixed epoch), jiffies64 is that clock at HZ from the kernel's INITIAL_JIFFIES,
get_prandom_u32 is an xorshift32 stream from a fixed seed, and the CPU and NUMA node are
always 0."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from jit.layout import HEAP_BASE, HEAP_SIZE
from unwind.kernel.cleanup import UnwindError
from unwind.kernel.ledger import FREED_BY_DROP, Ledger
from unwind.result import RunResult, UnwoundFrame
from verifier.errors import BpfUnwindError
from verifier.program import StructType
from verifier.protos.helpers import HELPERS
from verifier.protos.kfuncs import KFUNCS

FAKE_CLOCK_START_NS = 1_000_000_000
FAKE_CLOCK_STEP_NS = 1_000
FAKE_TAI_EPOCH_NS = 1_700_000_000 * 1_000_000_000  # TAI = the fake clock + this
HZ = 250  # CONFIG_HZ of the VM the live comparisons run on
INITIAL_JIFFIES = (-300 * HZ) & 0xFFFF_FFFF  # the kernel's jiffies_64 at boot
PRANDOM_SEED = 0x2545_F491

_Arg = TypeVar("_Arg")
_Ret = TypeVar("_Ret")


class KernelError(BpfUnwindError):
    """A kfunc was called in a way the verifier should have made impossible."""


class RunState:
    """Ledger, heap and throw outcome of the current run; `reset` starts the next one."""

    def __init__(self, prog: str, structs: dict[str, StructType], ledger: Ledger) -> None:
        self.prog = prog
        self._struct_names = {st.type_id: st.name for st in structs.values()}
        self.kfunc_calls: dict[str, int] = {proto.name: 0 for proto in KFUNCS}
        self.helper_calls: dict[str, int] = {proto.func_name: 0 for proto in HELPERS}
        self.heap_next = HEAP_BASE
        RunState.reset(self, ledger)

    def reset(self, ledger: Ledger) -> int:
        """Forget the previous run; return how many heap bytes it used (to re-zero)."""
        used = self.heap_next - HEAP_BASE
        self.ledger = ledger
        self.heap_next = HEAP_BASE
        self.threw = False
        self.cookie: int | None = None
        self.frames: list[UnwoundFrame] = []
        self.unwind_us = 0.0
        self.clock_ns = FAKE_CLOCK_START_NS
        self.prandom_state = PRANDOM_SEED
        for calls in (self.kfunc_calls, self.helper_calls):  # in place: the stubs hold them
            for name in calls:
                calls[name] = 0
        return used

    # -- stubs -----------------------------------------------------------------------------

    def counted(self, name: str, impl: Callable[[_Arg], _Ret], calls: dict[str, int] | None = None,
                ) -> Callable[[_Arg], _Ret]:  # fmt: skip
        """`impl` counting its calls in `calls` (default: the kfunc counts) under `name`."""
        calls = self.kfunc_calls if calls is None else calls

        def stub(arg: _Arg) -> _Ret:
            calls[name] += 1
            return impl(arg)

        return stub

    def unimplemented(self, name: str, site_of: Callable[[_Arg], str]) -> Callable[[_Arg], None]:
        def stub(arg: _Arg) -> None:
            site = site_of(arg)
            raise KernelError(f"prog '{self.prog}': kfunc '{name}' is not modelled (called at {site})")

        return stub

    # -- the object kfuncs -------------------------------------------------------------------

    def obj_new(self, size: int, type_id: int, pc: int | None, site: str) -> int:
        """bpf_obj_new_impl(size, meta = local type id): the object's address, 0 if no room."""
        rounded = (max(size, 1) + 7) & ~7
        if size > HEAP_SIZE or self.heap_next + rounded > HEAP_BASE + HEAP_SIZE:
            return 0
        address = self.heap_next
        self.heap_next += rounded
        type_name = self._struct_names.get(type_id, f"type#{type_id}")
        self.ledger.alloc(address, size, type_name, pc, site)
        return address

    def obj_drop(self, ptr: int, site: str) -> None:
        """bpf_obj_drop_impl(ptr): a bad free is a double-free record, NULL is an error."""
        if ptr == 0:
            raise KernelError(f"prog '{self.prog}': bpf_obj_drop_impl(NULL) at {site}")
        self.ledger.free(ptr, FREED_BY_DROP, site)

    # -- the scalar helpers ------------------------------------------------------------------

    def helper(self, name: str) -> int:
        """The value helper `name` (verifier.protos.helpers, UAPI name) returns."""
        if name in ("ktime_get_ns", "ktime_get_boot_ns", "ktime_get_coarse_ns"):
            return self._tick()
        if name == "ktime_get_tai_ns":
            return FAKE_TAI_EPOCH_NS + self._tick()
        if name == "jiffies64":
            return INITIAL_JIFFIES + self.clock_ns * HZ // 1_000_000_000
        if name == "get_prandom_u32":
            return self._prandom_u32()
        if name in ("get_smp_processor_id", "get_numa_node_id"):
            return 0
        raise KernelError(f"prog '{self.prog}': helper '{name}' is not modelled")

    def _tick(self) -> int:
        now = self.clock_ns
        self.clock_ns += FAKE_CLOCK_STEP_NS
        return now

    def _prandom_u32(self) -> int:
        x = self.prandom_state
        x ^= (x << 13) & 0xFFFF_FFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFF_FFFF
        self.prandom_state = x
        return x

    def begin_throw(self, cookie: int) -> None:
        """Record the throw; a second one in the same run is an error."""
        if self.threw:
            raise UnwindError(f"prog '{self.prog}': bpf_throw called again after an exception")
        self.threw, self.cookie = True, cookie

    # -- the run's result --------------------------------------------------------------------

    def result(self, retval: int, counters: dict[str, float]) -> RunResult:
        """RunResult with the engine's `counters` plus kfunc counts and the unwinder's time."""
        counters = {
            "kfunc_calls": sum(self.kfunc_calls.values()),
            **counters,
            "unwind_us": round(self.unwind_us, 1),
        }
        for name, n in self.kfunc_calls.items():
            counters[f"kfunc_calls.{name}"] = n
        for name, n in self.helper_calls.items():
            if n:
                counters[f"helper_calls.{name}"] = n
        return RunResult(
            program=self.prog,
            retval=retval,
            threw=self.threw,
            cookie=self.cookie,
            frames=self.frames,
            ledger=self.ledger,
            counters=counters,
        )
