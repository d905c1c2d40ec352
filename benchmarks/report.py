"""The docs' performance tables, rendered from the bench's results files (``benchmarks.tables``).

The docs do not hold measured numbers typed by hand: each table sits between two marker
comments that name the kind of table (see ``benchmarks.tables``) and the results files it comes
from,

    <!-- perf-table summary benchmarks/results/cpu-amd-epyc.json -->
    ... generated, do not edit ...
    <!-- /perf-table -->

and this script rewrites what lies between them. Paths are relative to the repository root.
To show another run, change the path on the marker line and run ``--update``.

Usage
    python -m benchmarks.report --update README.md docs/models.md ...  # rewrite the tables
    python -m benchmarks.report --check README.md docs/models.md ...   # exit 1 if one is stale
    python -m benchmarks.report [--kind KIND] RESULTS.json [...]        # print a table
"""

import argparse
import re
import sys

from benchmarks.tables import KINDS, ROOT, render

# The files whose tables --update and --check visit when none are named.
DOCS = ("README.md", "benchmarks/README.md", "docs/models.md", "docs/cuda.md")

MARKER = re.compile(
    r"^<!-- perf-table (?P<kind>[a-z]+) (?P<paths>[^>]+?) -->\n(?P<body>.*?)^<!-- /perf-table -->$",
    re.MULTILINE | re.DOTALL,
)


def blocks(text):
    """(kind, paths, body, match) of each marked table in a document."""
    return [(m["kind"], m["paths"].split(), m["body"], m) for m in MARKER.finditer(text)]


def rendered(text):
    """The document with every marked table rendered anew."""

    def replace(m):
        head = m.group(0).split("\n", 1)[0]
        return f"{head}\n{render(m['kind'], m['paths'].split())}<!-- /perf-table -->"

    return MARKER.sub(replace, text)


def stale(path):
    """The marker lines of the tables in ``path`` that differ from what their files give."""
    text = (ROOT / path).read_text()
    return [
        m.group(0).split("\n", 1)[0]
        for kind, paths, body, m in blocks(text)
        if body != render(kind, paths)
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--update", action="store_true", help="rewrite the marked tables in DOCS")
    mode.add_argument("--check", action="store_true", help="exit 1 if a marked table is stale")
    parser.add_argument("--kind", default="summary", choices=KINDS, help="table to print")
    parser.add_argument("paths", nargs="*", help="docs (--update, --check) or results files")
    args = parser.parse_args(argv)

    if not (args.update or args.check):
        if not args.paths:
            parser.error("name a results file")
        sys.stdout.write(render(args.kind, args.paths))
        return 0

    docs = args.paths or DOCS
    bad = 0
    for doc in docs:
        path = ROOT / doc
        text = path.read_text()
        if not blocks(text):
            print(f"{doc}: no perf-table markers")
            continue
        if args.update:
            new = rendered(text)
            if new != text:
                path.write_text(new)
                print(f"{doc}: updated")
        else:
            for head in stale(doc):
                print(f"{doc}: stale table: {head}")
                bad = 1
    return bad


if __name__ == "__main__":
    sys.exit(main())
