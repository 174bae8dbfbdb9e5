"""Adds up meson test logs (JSON lines) and pytest JUnit XML files into one closing line.
--failed-job=NAME: a CI job that exited non-zero; counted as a failure when no result says why
(it died before writing them), so the closing line never reads "0 failed" after a failure."""
import json
import sys
import xml.etree.ElementTree as ET


def main(args):
    jobs = [a.split("=", 1)[1] for a in args if a.startswith("--failed-job=")]
    paths = [a for a in args if not a.startswith("--failed-job=")]
    passed = failed = skipped = 0
    for path in paths:
        try:
            if path.endswith(".xml"):
                for suite in ET.parse(path).getroot().iter("testsuite"):
                    tests = int(suite.get("tests", 0))
                    bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
                    skip = int(suite.get("skipped", 0))
                    passed += tests - bad - skip
                    failed += bad
                    skipped += skip
            else:
                with open(path) as f:
                    for line in f:
                        res = json.loads(line).get("result")
                        if res in ("OK", "EXPECTEDFAIL"):
                            passed += 1
                        elif res == "SKIP":
                            skipped += 1
                        else:
                            failed += 1
        except (OSError, ValueError, ET.ParseError) as e:
            print(f"{path}: no results ({e})", file=sys.stderr)
            failed += 1
    if jobs and not failed:
        print(f"job(s) {', '.join(jobs)} failed without a failed test: counted as failures", file=sys.stderr)
        failed += len(jobs)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
