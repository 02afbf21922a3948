"""The typed API: mypy --strict passes on the examples and on typing/typed_api.py,
whose assert_type lines say what editors and type checkers see."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytest.importorskip("mypy", reason="needs mypy (the test extra)")


@pytest.mark.timeout(300)
def test_mypy_strict_on_the_examples_and_the_typed_api():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--ignore-missing-imports",
            os.path.join("tests", "typing", "typed_api.py"),
            "examples",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
