"""unwind/kernel/: the runtime kernel model both engines share: the resource ledger, the
object allocator and drop rule (`run_state`), and `bpf_cleanup_resource` (`cleanup`), what
releasing one frame-descriptor entry means. Helpers, maps, ringbuf, iterators and dynptrs
join it as they are modelled. Imports verifier/, jit.layout and the hand-off type
unwind.result; never the unwinder, the engines' bindings or the command line."""
