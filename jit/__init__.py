"""jit/: x86-64 lowering of verified BPF, images, and the Unicorn machine."""
