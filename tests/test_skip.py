"""skip_unchanged (issue 24): only records the API is not known to hold go up.

Run with:  DCSYNCD=build/src/dcsyncd /usr/bin/python3 -m pytest -q tests/test_skip.py
(a build with -Dcrashpoints=true for the crash and clock tests; they skip otherwise).

Each invariant of the issue has a test here that fails without its enforcement:
  1. only what a completed batch sent to this destination is skipped (destination change, TTL);
  2. "1" and 1 are one key;
  3. the latest record of a key in a batch decides (flip-back in one file, in a gathered batch);
  4. a batch that does not complete forgets what it sent;
  5. a resumed batch re-cuts the same requests; the store is exact after kill -9 anywhere;
  6. half the TTL since the acknowledgement sends again (the batch's clock moved, no sleep);
  7. `dcsyncd forget`, also while the daemon runs;
  8. a file of unchanged records only sends nothing and is archived; the counts.
The daemon runs unprivileged as the unit runs it (the harness's default).
"""

import gzip
import json
import os
import random
import re
import subprocess
import time

import pytest

import gen_ndjson
from harness import UUID1, UUID2, Daemon, gen_lines, gen_store, wait_for

CONN = "products"


def run_once(daemon, expect=0, env=None):
    proc = daemon.run_once(env=env)
    assert proc.returncode == expect, (
        f"exit {proc.returncode}, want {expect}\nstdout:\n{proc.stdout}\nlog:\n{daemon.log()[-4000:]}")
    return proc


def config(daemon, optix, **keys):
    keys.setdefault("skip_unchanged", "yes")
    daemon.write_config([daemon.connection(optix, **keys)])


def sent_keys(optix, since_seq=0, uuid=UUID1):
    """Primary keys of every acknowledged request after @since_seq, in order."""
    return [k for r in optix.requests(uuid) if r["seq"] > since_seq and r["status"] == 200 for k in r["keys"]]


def last_seq(optix, uuid=UUID1):
    reqs = optix.requests(uuid)
    return reqs[-1]["seq"] if reqs else 0


def unchanged_count(stdout):
    m = re.search(rf"^{CONN}: .*, (\d+) unchanged", stdout, re.MULTILINE)
    return int(m.group(1)) if m else 0


def changed_lines(n, changed):
    """gen_ndjson records 0..n-1, those in @changed with another value."""
    return [gen_ndjson.record(i, 1 if i in changed else 0) for i in range(n)]


def crash_build(daemon):
    return b"DCSYNCD_CRASH_AT" in daemon.binary.read_bytes()


# --- 8: nothing changed, nothing sent --------------------------------------------------------------

def test_an_identical_dump_sends_no_request_and_is_archived(optix, daemon):
    config(daemon, optix)
    daemon.drop_generated(CONN, "day1.ndjson", 12000)
    run_once(daemon)
    first = optix.requests(UUID1)
    assert [r["n_records"] for r in first] == [5000, 5000, 2000]

    daemon.drop_generated(CONN, "day2.ndjson", 12000)
    proc = run_once(daemon)

    assert optix.requests(UUID1) == first, "an identical dump sent requests"
    assert (daemon.state_dir / "done" / CONN / "day2.ndjson").is_file()
    assert not list(daemon.spool(CONN).glob("*.ndjson"))
    assert unchanged_count(proc.stdout) == 12000
    assert optix.records(UUID1) == gen_store(0, 12000)


def test_a_dump_with_a_few_changes_sends_only_those_in_one_batch(optix, daemon):
    config(daemon, optix)
    daemon.drop_generated(CONN, "day1.ndjson", 12000)
    run_once(daemon)
    seq = last_seq(optix)
    changed = {3, 4999, 5000, 7777, 11999}

    daemon.drop(CONN, "day2.ndjson", changed_lines(12000, changed))
    proc = run_once(daemon)

    new = [r for r in optix.requests(UUID1) if r["seq"] > seq]
    assert [r["keys"] for r in new] == [sorted(changed)]
    assert new[0]["batch_completed"] is True
    assert unchanged_count(proc.stdout) == 12000 - len(changed)
    assert optix.records(UUID1) == {**gen_store(0, 12000), **{str(i): gen_ndjson.expected(i, 1) for i in changed}}
