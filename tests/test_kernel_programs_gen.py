"""The generator's own promise, checked against the live kernel alone: without features and
with each feature of `tests.kernel_programs.labelled_programs` (and with all of them), a
program drawn without a flaw is ACCEPTED and one whose flaw the kernel surely reaches is
REJECTED. Our verifier is not asked here (tests/test_kernel_diff.py compares the two).

GEN_EXAMPLES (default 30) programs per feature set, derandomized;
`GEN_EXAMPLES=500 .venv/bin/python -m pytest tests/test_kernel_programs_gen.py -q` is the
large check. Without a usable kernel the test fails in CI (CI set) and skips elsewhere."""

from __future__ import annotations

import os
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings

from tests.kernel_programs import kernel_programs, labelled_programs
from tests.kernel_programs_core import FEATURES
from tests.live_kernel import require_live_kernel
from unwind.live.load import kernel_load
from verifier.asm.assembler import assemble

EXAMPLES = int(os.environ.get("GEN_EXAMPLES", "30"))
FEATURE_SETS = [frozenset()] + [frozenset({name}) for name in sorted(FEATURES)] + [FEATURES]


def kernel_verdict(text: str) -> tuple[bool, str]:
    kp = kernel_load(assemble(text, "<gen>"), None)
    try:
        return kp.accepted, kp.error_line
    finally:
        kp.close()


@pytest.mark.parametrize("features", FEATURE_SETS, ids=lambda fs: "+".join(sorted(fs)) or "base")
def test_the_kernel_gives_the_verdict_the_generator_claims(features: frozenset[str]) -> None:
    require_live_kernel()
    tally: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(labelled_programs(features))
    def check(labelled: tuple[str, str]) -> None:
        text, expect = labelled
        accepted, error = kernel_verdict(text)
        tally[expect] += 1
        if expect == "accept":
            assert accepted, f"an unflawed program was rejected: {error}\n--- program ---\n{text}"
        elif expect == "reject":
            assert not accepted, f"a flawed program was accepted\n--- program ---\n{text}"

    check()
    assert tally["accept"] >= EXAMPLES // 2, tally  # most programs carry no flaw
    if features:  # the base grammar's flaws are never sure (kernel_programs.labelled_programs)
        assert tally["unknown"] <= EXAMPLES // 10, tally


# a line only the feature writes (the base grammar prints masks in decimal, never adds r10 to a
# register, never reads data_end, never counts past 4 or by a masked count)
FEATURE_MARKS = {
    "ranges": r"&= 0x",
    "varoff": r"= r10$",
    "packet": r"\+ 80\)$",
    "loops": r"(= (1[0-6]|[5-9])|&= (15|7|3|1))\n(\tr\d = 0\n)?\.L\d+:",
}


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_a_feature_adds_its_statements(name: str) -> None:
    seen: list[str] = []

    @settings(max_examples=20, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(kernel_programs(frozenset({name})))
    def collect(text: str) -> None:
        seen.append(text)

    collect()
    assert any(re.search(FEATURE_MARKS[name], text, re.M) for text in seen)
    assert not any(re.search(FEATURE_MARKS[name], text, re.M) for text in _base_programs())


def _base_programs() -> list[str]:
    seen: list[str] = []

    @settings(max_examples=100, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(kernel_programs())
    def collect(text: str) -> None:
        seen.append(text)

    collect()
    return seen


def test_unknown_features_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown features"):
        kernel_programs(frozenset({"nope"}))
