"""scripts/fault_suite.py's faults that train nothing (malformed configs, data and model folders): each is
refused in one clear line or survived. The training faults have their own tests (test_faults.py,
test_reproducible.py) and run in the script itself."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fault_suite.py"


def test_every_quick_fault_is_survived_or_refused_clearly(tmp_path):
    spec = importlib.util.spec_from_file_location("fault_suite", SCRIPT)
    suite = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = suite  # its dataclasses look their module up there
    spec.loader.exec_module(suite)
    outcomes = suite.run_suite(tmp_path, kills=0, seed=0, quick=True)
    assert len(outcomes) >= 25 + 10 + 3  # the configs, the images and captions, the model folders
    failed = [f"{o.fault}: {o.detail}" for o in outcomes if o.verdict == suite.FAILED]
    assert not failed, "\n".join(failed)
