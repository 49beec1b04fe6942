"""jit/interp/: the reference interpreter, insn by insn: the oracle for differential tests
against the JIT and the baseline of the speed benchmarks. `engine` runs a VerifiedProgram,
`ops` turns each slot into a closure, `alu` holds the ISA's ALU semantics. Imports
verifier.isa, verifier.program, verifier.errors and jit.layout (the shared guest addresses)."""
