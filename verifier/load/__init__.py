"""verifier/load/: clang-built BPF ELF objects -> `Program`s: the ELF container, the object
model (program sections, functions, map references), linking and relocations, BTF-defined
maps and global data sections, BTF and .BTF.ext, and the objdump-style listing of an
object. Imports verifier.isa, verifier.protos, verifier.program and (for the listing)
verifier.asm."""
