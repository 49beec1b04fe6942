"""verifier/rewrite/: the passes after do_check (`finalize`): dead-code removal, kfunc and
div/mod fixups, the hidden exception callback and throw trampoline, instruction patching
that keeps every frame-descriptor pc exact, and `callee_regs_used` (shared with the JIT).
Imports verifier.isa, verifier.protos and verifier.program."""
