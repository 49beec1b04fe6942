"""The resource ledger: every object the kernel model hands out and what became of it.

An object is allocated (id, address, size, type name, allocation pc/site), then freed by
`bpf_obj_drop` (the program) or by `unwind` (bpf_throw's cleanup), or still live at the end
of the run: leaked. Freeing an address that is not live is recorded, never raised, so one
run reports every problem at once, in two kinds: a double free (an object used to live
there: `freed_twice`) and a bad free (no object ever did, e.g. the ctx or a scalar that
looks like a heap address: `bad_freed`). `double_freed` is both, in order, with details in
`double_free_records` (`object_id` None for a bad free)."""

from __future__ import annotations

from dataclasses import dataclass

FREED_BY_DROP = "bpf_obj_drop"
FREED_BY_UNWIND = "unwind"


@dataclass
class LedgerObject:
    id: int  # 1-based, in allocation order
    address: int
    size: int
    type_name: str
    alloc_pc: int | None  # BPF insn of the allocating call (None: unknown)
    alloc_site: str  # e.g. "subprog 's1' insn 12"
    freed_by: str | None = None  # FREED_BY_DROP | FREED_BY_UNWIND | None (live)
    free_site: str = ""

    @property
    def live(self) -> bool:
        return self.freed_by is None


@dataclass(frozen=True)
class DoubleFree:
    address: int
    by: str
    site: str
    object_id: int | None  # the object that used to live there, None: never allocated


class Ledger:
    """Allocation/free record of one run."""

    def __init__(self) -> None:
        self.objects: list[LedgerObject] = []
        self.freed_twice: list[int] = []  # addresses whose object was already freed
        self.bad_freed: list[int] = []  # addresses no object ever lived at
        self.double_free_records: list[DoubleFree] = []  # both kinds, in order
        self._live: dict[int, LedgerObject] = {}
        self._last_at: dict[int, LedgerObject] = {}  # last object ever at an address

    def alloc(
        self, address: int, size: int, type_name: str, alloc_pc: int | None = None, alloc_site: str = ""
    ) -> LedgerObject:
        if address in self._live:
            raise ValueError(f"address {address:#x} allocated twice while live")
        obj = LedgerObject(len(self.objects) + 1, address, size, type_name, alloc_pc, alloc_site)
        self.objects.append(obj)
        self._live[address] = obj
        self._last_at[address] = obj
        return obj

    def free(self, address: int, by: str, site: str = "") -> LedgerObject | None:
        """Free the live object at `address`; None (and a double or bad free record) if none is."""
        obj = self._live.pop(address, None)
        if obj is None:
            prev = self._last_at.get(address)
            (self.freed_twice if prev else self.bad_freed).append(address)
            self.double_free_records.append(DoubleFree(address, by, site, prev.id if prev else None))
            return None
        obj.freed_by = by
        obj.free_site = site
        return obj

    @property
    def double_freed(self) -> list[int]:
        """Every free that released no live object, in order: double and bad frees."""
        return [r.address for r in self.double_free_records]

    def lookup(self, address: int) -> LedgerObject | None:
        """The live object at `address`, if any."""
        return self._live.get(address)

    def live(self) -> list[LedgerObject]:
        return [o for o in self.objects if o.live]

    def leaked(self) -> list[LedgerObject]:
        """Objects still live; meaningful once the run is over."""
        return self.live()

    def released(self, by: str | None = None) -> list[LedgerObject]:
        return [o for o in self.objects if o.freed_by is not None and (by is None or o.freed_by == by)]

    def summary(self) -> dict[str, int]:
        return {
            "allocated": len(self.objects),
            "released": len(self.released()),
            "released_by_drop": len(self.released(FREED_BY_DROP)),
            "released_by_unwind": len(self.released(FREED_BY_UNWIND)),
            "leaked": len(self.leaked()),
            "double_freed": len(self.freed_twice),
            "bad_freed": len(self.bad_freed),
        }
