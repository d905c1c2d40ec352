"""The code blocks of the Markdown docs, and running them as a user would paste them."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A fenced block, possibly indented (inside a list item): its language and its code.
FENCE = re.compile(
    r"^(?P<indent> *)```(?P<lang>\w*)\n(?P<code>.*?)^(?P=indent)```\s*$", re.M | re.S
)


def code_blocks(doc, lang="python"):
    """(line number, code) of each ``lang`` block of ``doc`` (a path relative to the root)."""
    text = (ROOT / doc).read_text()
    blocks = []
    for m in FENCE.finditer(text):
        if m["lang"] == lang:
            line = text.count("\n", 0, m.start()) + 1
            blocks.append((line, textwrap.dedent(m["code"])))
    return blocks


def user_env():
    """The environment of a user who installed the package: this checkout importable, one
    thread per process for the multi-process examples on a shared machine."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def run_python(code, cwd, args=(), timeout=300):
    """Runs ``code`` as a fresh script (``python script.py``, or ``args`` before the script,
    e.g. torchrun's), in ``cwd``; returns the finished process."""
    script = Path(cwd) / "snippet.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, *args, str(script)],
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
