"""verifier/: BPF ISA, assembly, verification, frame descriptors and rewrites."""
