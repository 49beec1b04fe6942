"""Verifier cases as data: every `tests/verifier_cases/*.s` is a program whose verdict and
message the live kernel decides (`bpf-unwind kernel`), and on which our processed-insn count
must stay within a factor of 1.5 of the kernel's `verified_insns` when both accept.

The `prec_*` cases are traps for pruning without precision: a scalar that differs between
two paths is relied on only after they join. They must also be *accepted* by a verifier
whose precision tracking is switched off, which shows that they do exercise it."""

from __future__ import annotations

from pathlib import Path

import pytest

import verifier.check.precision as precision
from tests.live_kernel import require_live_kernel
from unwind.cli import oracle, pipeline
from verifier.errors import VerifierError

CASES = sorted((Path(__file__).parent / "verifier_cases").glob("*.s"))
INSNS_FACTOR = 1.5


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_case_agrees_with_the_kernel(path: Path) -> None:
    require_live_kernel()
    (c,) = oracle.compare_file(str(path))
    why = f"{c.reason}: kernel {c.kernel} {c.kernel_msg!r}; ours {c.ours} {c.our_msg!r}"
    assert c.outcome != "DISAGREE", why
    if c.kernel == c.ours == "accepted":
        assert c.kernel_insns and c.our_insns
        ratio = c.our_insns / c.kernel_insns
        assert 1 / INSNS_FACTOR <= ratio <= INSNS_FACTOR, f"ours {c.our_insns}, kernel {c.kernel_insns}"


PRECISION_TRAPS = [p for p in CASES if p.stem.startswith("prec_")]


@pytest.mark.parametrize("path", PRECISION_TRAPS, ids=lambda p: p.stem)
def test_precision_trap_needs_precision(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prog = pipeline.load_file(str(path))
    with pytest.raises(VerifierError):
        pipeline.verify(prog)
    monkeypatch.setattr(precision, "mark_chain_precision", lambda env, state, bt: None)
    pipeline.verify(pipeline.load_file(str(path)))  # unsound without precision: accepted
