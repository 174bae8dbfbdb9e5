"""Adds up meson test logs (JSON lines) and pytest JUnit XML files into one closing line."""
import json
import sys
import xml.etree.ElementTree as ET


def main(paths):
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
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
