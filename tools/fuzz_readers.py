#!/usr/bin/env python
"""Throw many damaged inputs at geot and count what happens (docs/reliability.md).

    python tools/fuzz_readers.py --per-family 300 [--only readers|predictions|cli]

Three kinds, each with the judge its CI test uses (tests/io/test_fuzz.py), so both agree:

* readers: damaged mesh and label files must end in a ScanError naming the file, or in a scan whose
  features compute;
* predictions: damaged prediction JSONs given to evaluate_folders beside valid ground truth must end in a
  scored row or a one-line failure naming the file, and the intact prediction beside them must be scored;
* cli: random and mistyped arguments of geot synth / check / evaluate must end with exit code 0, 1 or 2
  (an error said on one line), never a traceback.

Anything else (another exception, a hang) is a crash and makes the exit code 1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from geot.testing import cli_cases, damaged_inputs, damaged_predictions  # noqa: E402
from tests.io.test_fuzz import (  # noqa: E402  (the tests' own judges)
    CLI_OUTCOMES,
    PREDICTION_OUTCOMES,
    READER_OUTCOMES,
    cli_outcome,
    outcome,
    prediction_outcome,
    tally,
)

KINDS = {
    "readers": (damaged_inputs, outcome, READER_OUTCOMES, ("ScanError", "read as a usable scan")),
    "predictions": (damaged_predictions, prediction_outcome, PREDICTION_OUTCOMES,
                    ("scored", "reported failure")),
    "cli": (cli_cases, cli_outcome, CLI_OUTCOMES, ("exit 0", "exit 1", "exit 2")),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-family", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=sorted(KINDS), action="append", help="Run this kind only (repeat).")
    args = parser.parse_args()
    crashes = []
    for kind in args.only or KINDS:
        generate, judge, accepted, titles = KINDS[kind]
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            counts, found = tally(generate(Path(tmp), args.per_family, args.seed), judge, accepted)
        crashes += found
        print(f"\n{kind}:\n")
        print("| family | cases | " + " | ".join(titles) + " | crash or hang |")
        print("|---" * (len(titles) + 3) + "|")
        for family, c in counts.items():
            print(f"| {family} | {sum(c.values())} | " + " | ".join(str(c[a]) for a in accepted)
                  + f" | {c['crash']} |")
        total = sum(sum(c.values()) for c in counts.values())
        print(f"\n{total} cases in {time.time() - t0:.0f} s, {len(found)} crashes")
    for family, case, result in crashes[:20]:
        print(f"  {family}: {getattr(case, 'args', '')} {result}")
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()
