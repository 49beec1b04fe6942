"""verifier/check/: `do_check` and everything it calls: the environment, register and stack
state, ALU and jumps, memory, calls and returns, pruning, the series' exception analysis
(throw reachability, frame descriptors, merge) and the verifier log. Entry point:
`verifier.check.checker.check`. Imports verifier.isa, verifier.protos, verifier.program,
verifier.regtypes and (for the log's instruction text) verifier.asm."""
