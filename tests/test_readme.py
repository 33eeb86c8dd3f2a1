"""The README's Python snippets are part of the documentation users copy: they must run."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 3


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"snippet{i}" for i in range(len(SNIPPETS))])
def test_readme_snippet_runs(snippet, tmp_path):
    # Run from a file, as a user would: hypothesis needs the source of the functions it wraps.
    script = tmp_path / "snippet.py"
    script.write_text(snippet)
    runpy.run_path(str(script), run_name="readme")


def test_the_bad_input_table_in_docs_is_what_the_rows_give():
    # Run in a fresh process, as the table was written: the rows' figures and names match.
    root = README.parent
    done = subprocess.run(
        [sys.executable, str(root / "tools" / "bad_input_table.py"), "--check"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
