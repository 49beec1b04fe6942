"""The guard every test that asks the live kernel uses: on these machines bpf() works, so in
CI (`CI` set) an unusable kernel fails the test with the probe's reason; elsewhere the test
is skipped with it."""

from __future__ import annotations

import os

import pytest

from unwind.live.vmlinux import probe


def require_live_kernel() -> None:
    reason = probe()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI runs on a VM where bpf() works, but: {reason}")
    pytest.skip(reason)
