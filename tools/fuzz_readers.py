#!/usr/bin/env python
"""Throw many damaged files at geot's readers and count what happens (docs/reliability.md).

    python tools/fuzz_readers.py --per-family 300

Every case must end in a ScanError naming the file, or in a scan whose features compute; anything
else (another exception, a hang over 20 s) is a crash and makes the exit code 1.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from geot.testing import damaged_inputs  # noqa: E402
from tests.io.test_fuzz import outcome  # noqa: E402  (the test's own judge, so both agree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-family", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    crashes = []
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for case in damaged_inputs(Path(tmp), args.per_family, args.seed):
            result = outcome(case)
            kind = result if result in ("read", "ScanError") else "crash"
            counts[case.family][kind] += 1
            if kind == "crash":
                crashes.append((case.family, result))
    print("| family | cases | ScanError | read as a usable scan | crash or hang |")
    print("|---|---|---|---|---|")
    for family, c in counts.items():
        print(f"| {family} | {sum(c.values())} | {c['ScanError']} | {c['read']} | {c['crash']} |")
    total = sum(sum(c.values()) for c in counts.values())
    print(f"\n{total} cases in {time.time() - t0:.0f} s, {len(crashes)} crashes")
    for family, result in crashes[:20]:
        print(f"  {family}: {result}")
    sys.exit(1 if crashes else 0)


if __name__ == "__main__":
    main()
