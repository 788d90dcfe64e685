"""tests/fault_suite.py, the one table of every fault: each is survived or refused in one clear line.
The faults that train nothing (malformed configs, data and model folders) run in seconds; the training
faults (kills and resumes, SIGTERM, NaN losses, a truncated checkpoint, a failing export, a busy
folder, a changed config) train tiny runs in a dozen processes (several minutes: marked slow), here
with one kill of the diffusion stage (the suite's own run kills each stage ten times), so the suite
cannot rot unseen between the runs that fill the README's table. Each fault also has its own test
(test_faults.py, test_reproducible.py, ...)."""

from __future__ import annotations

import pytest
from fault_suite import FAILED, run_suite


def failures(outcomes) -> str:
    return "\n".join(f"{o.fault}: {o.detail}" for o in outcomes if o.verdict == FAILED)


def test_every_quick_fault_is_survived_or_refused_clearly(tmp_path):
    outcomes = run_suite(tmp_path, kills=0, seed=0, quick=True)
    assert len(outcomes) >= 25 + 10 + 3  # the configs, the images and captions, the model folders
    assert not failures(outcomes)


@pytest.mark.slow
def test_every_training_fault_is_survived_or_refused_clearly(tmp_path):
    outcomes = run_suite(tmp_path, kills=1, seed=0, quick=False, stages=("diffusion",))
    trained = outcomes[25 + 10 + 3:]
    assert len(trained) >= 1 + 1 + 2 + 4  # a kill, SIGTERM, two NaN faults, the four others
    assert not failures(outcomes)
