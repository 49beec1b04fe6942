"""unwind/live/: the running Linux kernel as an oracle: the bpf() system call, loading our
`Program`s into the kernel (BTF, maps, kfunc ids) and reading back what it made of them.
Imports verifier/ and jit/ only."""
