"""Prints one closing line over every stage: tests passed and failed.

pytest stages are counted from their JUnit files; a stage without one (sanity,
lint) counts as one test, failed when the stage failed. A stage that failed
although its JUnit file shows no failure (a crash, a collection error) adds one
failure, so the line never reads green when the run was not.
"""
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def count(path):
    passed = failed = skipped = 0
    for suite in ET.parse(path).getroot().iter("testsuite"):
        tests = int(suite.get("tests", 0))
        bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skip = int(suite.get("skipped", 0))
        passed += tests - bad - skip
        failed += bad
        skipped += skip
    return passed, failed, skipped


def main(out_dir, failed_stages, stages):
    failed_stages = set(filter(None, failed_stages.split(",")))
    passed = failed = skipped = 0
    for stage in stages:
        junit = Path(out_dir) / f"junit-{stage}.xml"
        if junit.exists():
            p, f, s = count(junit)
            if stage in failed_stages and not f:
                f = 1
        else:
            p, f, s = (0, 1, 0) if stage in failed_stages else (1, 0, 0)
        passed, failed, skipped = passed + p, failed + f, skipped + s
    line = f"{passed} passed, {failed} failed"
    if skipped:
        line += f", {skipped} skipped"
    print(f"total: {line}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
