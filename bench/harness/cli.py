"""The command lines' common parts."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.harness.results import RESULTS_CSV


def doc_parser(doc: str, skip: int = 1, csv: bool = True) -> argparse.ArgumentParser:
    """An argument parser described by a module docstring.

    Args:
        doc: the module's ``__doc__``: its first paragraph is the description, the paragraphs
            after the first ``skip`` the epilog (usage examples).
        skip: paragraphs (after the first) left out of the epilog, minus one.
        csv: add ``--csv`` (the results file, default bench/results/results.csv).

    Returns:
        The parser.
    """
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=doc.split("\n\n", skip)[skip])
    if csv:
        ap.add_argument("--csv", type=Path, default=RESULTS_CSV,
                        help="the results file (default: %(default)s)")
    return ap
