"""verifier/asm/: the text forms of a program: the assembler of the syntax `llvm-objdump -d`
prints (file grammar and one-line grammar), the bpf_conformance suite's `%r` dialect, and the
disassembler (objdump and kernel-log dialects). Produces and reads `Program`s, so it sits
above verifier.isa, verifier.protos and verifier.program."""
