"""Generates deterministic NDJSON spool files of ~160-byte records for dcsyncd tests and benchmarks."""

# Record i is a pure function of (i, value, pk), so a test can rebuild what it expects the fake
# server to hold without keeping the file. Formatting is by hand, not json.dumps, for speed:
# a million records take about a second.

import argparse
import json
import sys

FIRST = ["Ann", "Bob", "Chloé", "Dmitri", "Eve", "Fatima", "George", "Hiro", "Ines", "José"]
LAST = ["Smith", "O'Brien", "Müller", "Nguyen", "Kowalski", "Rossi", "Tanaka", "García"]
CITIES = ["London", "Tel Aviv", "São Paulo", "New York", "Zürich", "Kraków", "Tokyo"]
TAGS = ['["a","b"]', '["vip"]', '[]', '["x","y","z"]', '["new","café"]']
# A few strings JSON must escape, so the daemon's parser and the byte counts meet them.
NOTES = ["ok", 'said \\"hi\\"', "tab\\there", "line\\nbreak", "back\\\\slash", "\\u00e9t\\u00e9"]
BLOCK = 20000


def record(i, value=0, pk="id"):
    """The NDJSON text (no newline) of record i; value is any JSON-able Python value."""
    return _record(i, json.dumps(value), pk)


def _record(i, v, pk):
    first = FIRST[i % len(FIRST)]
    last = LAST[(i // 7) % len(LAST)]
    score = (i * 37 % 10000) / 4          # exact in binary: .0 .25 .5 .75
    return (f'{{"{pk}":{i},"name":"{first} {last}","email":"user{i}@example.com",'
            f'"score":{score},"active":{"true" if i % 3 else "false"},'
            f'"city":"{CITIES[i % len(CITIES)]}","tags":{TAGS[i % len(TAGS)]},'
            f'"note":"{NOTES[i % len(NOTES)]}","v":{v}}}')


def expected(i, value=0, pk="id"):
    """Record i as a Python object, as a JSON parser (or the fake's state()) returns it."""
    return json.loads(record(i, value, pk))


def _is_json(text):
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def write(out, n, start=0, value=0, pk="id"):
    """Write records start..start+n-1 to the binary file object out; returns bytes written."""
    v = json.dumps(value)
    total = 0
    for block in range(start, start + n, BLOCK):
        stop = min(block + BLOCK, start + n)
        data = ("\n".join(_record(i, v, pk) for i in range(block, stop)) + "\n").encode()
        out.write(data)
        total += len(data)
    return total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--records", type=int, required=True)
    p.add_argument("--out", required=True, help="file to write ('-' for stdout)")
    p.add_argument("--start", type=int, default=0, help="first primary key value")
    p.add_argument("--value", default="0", help="the 'v' field: JSON text (2, \"x\", [1]), else a string")
    p.add_argument("--pk", default="id", help="primary key field name")
    args = p.parse_args(argv)
    value = json.loads(args.value) if _is_json(args.value) else args.value
    if args.out == "-":
        write(sys.stdout.buffer, args.records, args.start, value, args.pk)
    else:
        with open(args.out, "wb") as f:
            write(f, args.records, args.start, value, args.pk)
    return 0


if __name__ == "__main__":
    sys.exit(main())
