"""jit/x86/: the x86-64 encoder ladder, one tiny `emit_*` per idiom, each returning the exact
bytes the kernel's JIT emits: registers, REX/ModRM and moves (`encode`), ALU idioms
(`alu`), control flow and frames (`flow`), memory and atomics (`mem`). Knows BPF only by its
register numbers (verifier.isa) and raises verifier.errors' types; nothing else of ours."""
