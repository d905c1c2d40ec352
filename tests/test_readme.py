"""The README as a user meets it: every python block runs when pasted into a fresh interpreter,
and the page stays short. (Its performance table is checked in test_docs.py.)"""

import pytest

from tests.helpers.doc_snippets import ROOT, code_blocks, run_python

README = "README.md"
BLOCKS = code_blocks(README)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2, "the README's Usage and whole-model examples were not found"


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_python_block_runs(line, code, tmp_path):
    done = run_python(code, tmp_path)
    assert done.returncode == 0, f"README.md:{line}: the block fails:\n{done.stderr[-3000:]}"


def test_readme_is_at_most_150_lines():
    lines = (ROOT / README).read_text().count("\n")
    assert lines <= 150, f"README.md has {lines} lines; move details to docs/ or benchmarks/"
