"""unwind/cli/: the tools around the model: the `bpf-unwind` command line (`main`), the
load -> verify -> JIT -> run pipeline, ELF objects on the command line, and the
bpf_conformance runner and plugin. The top of the one-way flow: may import everything
above it, and nothing imports it but tests and benchmarks."""
