"""unwind/: kernel model, bpf_throw unwinder, pipeline and the bpf-unwind CLI."""
