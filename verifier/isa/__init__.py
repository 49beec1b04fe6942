"""verifier/isa/: the BPF instruction set as values: `Insn`, opcode constants, raw
(de)serialisation and the reserved-field checks of decoding. Imports nothing of ours but
verifier.errors."""
