"""pytest hooks shared by the suite: the kernel oracle's counts per outcome are printed at the
end of every run that compared programs with the live kernel."""

from __future__ import annotations

import sys


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001, ANN201, ARG001
    oracle_tests = sys.modules.get("tests.test_kernel_oracle") or sys.modules.get("test_kernel_oracle")
    counts = getattr(oracle_tests, "OUTCOME_COUNTS", None)
    if counts:
        line = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
        terminalreporter.write_line(f"kernel oracle: {line}")
