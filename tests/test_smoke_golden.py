"""CI's regression report: the smoke protocol on the shipped embedded stack against results/golden/smoke."""

import os
from pathlib import Path

from evalkit.presets import compare_with_golden, run_smoke


def test_smoke_protocol_matches_the_golden(tmp_path):
    run_dir = run_smoke(tmp_path, progress=False)
    text, failed = compare_with_golden(run_dir)
    destination = os.environ.get("EVALKIT_CI_REPORT")
    if destination:  # .ci/run prints it after the tests
        Path(destination).write_text(text)
    print(text)
    assert not failed, text
