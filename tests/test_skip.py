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


def crash_build_with_day1(daemon, optix, n, **keys):
    """The tests that crash the daemon: skipped without crash points; else day1 (@n records) is
    up and the store warm. The fake's last sequence number after it."""
    if not crash_build(daemon):
        pytest.skip("needs a build with -Dcrashpoints=true")
    config(daemon, optix, **keys)
    daemon.drop_generated(CONN, "day1.ndjson", n)
    run_once(daemon)
    return last_seq(optix)


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


def test_counts_of_unchanged_records_reach_status_and_metrics(optix, daemon):
    metrics = daemon.dir / "dcsyncd.prom"
    daemon.write_config([daemon.connection(optix, skip_unchanged="yes")], metrics_file=metrics)
    daemon.drop_generated(CONN, "day1.ndjson", 300)
    run_once(daemon)
    daemon.drop_generated(CONN, "day2.ndjson", 300)
    run_once(daemon)

    st = subprocess.run(daemon.command("status", "--json"), capture_output=True, text=True, timeout=30)
    assert st.returncode == 0, st.stderr
    conn = [c for c in json.loads(st.stdout)["connections"] if c["name"] == CONN][0]
    assert conn["totals"]["records_unchanged"] == 300
    assert conn["totals"]["records_sent"] == 300
    assert conn["store"]["keys"] == 300 and conn["store"]["bytes"] > 0
    text = subprocess.run(daemon.command("status"), capture_output=True, text=True, timeout=30).stdout
    assert "300 unchanged (not sent)" in text and "a store of 300 key(s)" in text, text
    assert re.search(r'^dcsyncd_records_unchanged_total\{connection="products"\} 300$', metrics.read_text(),
                     re.MULTILINE), metrics.read_text()
    # The dump's size, what the "far smaller than usual" alert compares: its records, sent or not.
    assert re.search(r'^dcsyncd_last_completed_records\{connection="products"\} 300$', metrics.read_text(),
                     re.MULTILINE), metrics.read_text()
    assert re.search(r"day2\.ndjson: 0 records sent, 0 rejected, 0 requests, [\d.]+ s, 300 unchanged", daemon.log())


# --- 2: one key for what the API may take for one -------------------------------------------------

def test_the_string_and_the_number_of_a_key_are_one_key(optix, daemon):
    config(daemon, optix)
    daemon.drop(CONN, "day1.ndjson", ['{"id":1,"v":0}', '{"id":2,"v":0}'])
    run_once(daemon)
    seq = last_seq(optix)

    # "1" is sent (it differs); the later 1 equals what was stored for 1, but must follow it.
    daemon.drop(CONN, "day2.ndjson", ['{"id":"1","v":1}', '{"id":1,"v":0}', '{"id":2,"v":0}'])
    run_once(daemon)

    assert sent_keys(optix, seq) == ["1", 1]


# --- 3: the latest record of a key in a batch decides ---------------------------------------------

def test_a_key_flipping_back_inside_one_file_is_sent_both_times(optix, daemon):
    config(daemon, optix, batch_records=4)
    daemon.drop_generated(CONN, "day1.ndjson", 20)
    run_once(daemon)
    seq = last_seq(optix)
    lines = gen_lines(0, 20)
    # Key 5 changes early and flips back to the stored value later, in another request.
    lines.insert(1, gen_ndjson.record(5, 1))

    daemon.drop(CONN, "day2.ndjson", lines)
    run_once(daemon)

    assert sent_keys(optix, seq) == [5, 5]
    assert optix.record(UUID1, 5) == gen_ndjson.expected(5, 0)


def test_a_key_flipping_back_across_gathered_small_files_is_sent_both_times(optix, daemon):
    config(daemon, optix)
    daemon.drop_generated(CONN, "day1.ndjson", 20)
    run_once(daemon)
    seq = last_seq(optix)
    base = time.time_ns() - 100 * 10**9
    a = daemon.drop(CONN, "a.ndjson", [gen_ndjson.record(5, 1)])
    b = daemon.drop(CONN, "b.ndjson", [gen_ndjson.record(5, 0), gen_ndjson.record(6, 0)])
    os.utime(a, ns=(base, base))
    os.utime(b, ns=(base + 10**9, base + 10**9))

    run_once(daemon)

    new = [r for r in optix.requests(UUID1) if r["seq"] > seq]
    assert len(new) == 1, "the two small files were not gathered into one request"
    assert new[0]["keys"] == [5, 5]
    assert optix.record(UUID1, 5) == gen_ndjson.expected(5, 0)


# --- 4: a batch that does not complete forgets ------------------------------------------------------

def test_a_batch_failed_by_a_4xx_forgets_every_key_it_sent(optix, daemon):
    config(daemon, optix)
    daemon.drop_generated(CONN, "day1.ndjson", 12000)
    run_once(daemon)
    # day2 changes keys 0..5999: 5000 in its first request (acknowledged), 1000 in its second (400).
    daemon.drop(CONN, "day2.ndjson", changed_lines(12000, set(range(6000))))
    optix.add_faults({"uuid": UUID1, "status": 400, "count": 1, "after": 1})
    run_once(daemon, expect=1)
    assert (daemon.spool(CONN) / "failed" / "day2.ndjson").is_file()
    seq = last_seq(optix)

    # What the API holds for 0..5999 is unknown now: day1 again must send them, and only them.
    daemon.drop_generated(CONN, "day3.ndjson", 12000)
    run_once(daemon)

    assert sorted(sent_keys(optix, seq)) == list(range(6000))
    assert optix.records(UUID1) == gen_store(0, 12000)



def test_what_a_failed_batch_sent_is_forgotten_even_where_the_next_batch_leaves_the_key_out(optix, daemon):
    """The next batch's begin forgets what a failed one sent: kept pending, it would complete with it."""
    config(daemon, optix)
    daemon.drop_generated(CONN, "day1.ndjson", 12000)
    run_once(daemon)
    # day2 sends key 9000 = B, late in its file, and is refused (400): the API still holds A.
    day2 = gen_lines(0, 12000)
    day2[9000] = gen_ndjson.record(9000, 1)
    optix.add_faults({"uuid": UUID1, "status": 400, "count": 1})
    daemon.drop(CONN, "day2.ndjson", day2)
    run_once(daemon, expect=1)
    assert optix.record(UUID1, 9000) == gen_ndjson.expected(9000, 0)

    # day3 holds 9000 = A before the place day2 had it: were the failed batch's pending key kept,
    # A would be left out as unchanged and day3's completion would record B as held.
    day3 = gen_lines(0, 12000)
    day3.insert(0, day3.pop(9000))
    daemon.drop(CONN, "day3.ndjson", day3)
    run_once(daemon)
    seq = last_seq(optix)

    daemon.drop(CONN, "day4.ndjson", day2)
    run_once(daemon)

    assert sent_keys(optix, seq) == [9000], "B was taken for what the API holds"
    assert optix.record(UUID1, 9000) == gen_ndjson.expected(9000, 1)


def test_a_truncated_gz_batch_forgets_every_key_it_sent(optix, daemon):
    config(daemon, optix)
    daemon.drop_generated(CONN, "day1.ndjson", 12000)
    run_once(daemon)
    day1 = last_seq(optix)
    # day2 changes keys 0..5999 and ends early: what it sent before the cut is unknown at the API.
    whole = gzip.compress("".join(l + "\n" for l in changed_lines(12000, set(range(6000)))).encode())
    daemon.drop(CONN, "day2.ndjson.gz", whole[: len(whole) * 3 // 4])
    run_once(daemon, expect=1)
    assert (daemon.spool(CONN) / "failed" / "day2.ndjson.gz").is_file()
    sent_before = set(sent_keys(optix, day1))
    assert sent_before, "nothing of day2 went up before the truncation"
    seq = last_seq(optix)

    daemon.drop_generated(CONN, "day3.ndjson", 12000)
    run_once(daemon)

    assert set(sent_keys(optix, seq)) >= sent_before
    assert optix.records(UUID1) == gen_store(0, 12000)

@pytest.mark.parametrize("crash", [None, "after-ack:1"])
def test_a_record_the_server_refused_is_not_taken_for_held(optix, daemon, crash):
    """Invariant 1: a record refused (422 down to itself, to rejected/) never reached the API;
    its key must not complete as known, also when the batch completes after a restart."""
    if crash and not crash_build(daemon):
        pytest.skip("needs a build with -Dcrashpoints=true")
    config(daemon, optix, batch_records=4)
    daemon.drop_generated(CONN, "day1.ndjson", 20)
    run_once(daemon)
    changed = {0, 1, 2, 5, 10, 11}     # request 1: 0 1 2 5 (5 refused), request 2: 10 11
    day2 = changed_lines(20, changed)
    # Every request holding 5: the whole first one, its half 2 5, then 5 alone.
    optix.add_faults({"uuid": UUID1, "reject_pk": 5, "count": 3})
    daemon.drop(CONN, "day2.ndjson", day2)
    if crash:
        crashed = daemon.run_once(env={"DCSYNCD_CRASH_AT": crash})
        assert crashed.returncode == -9, crashed.stdout
    run_once(daemon, expect=0 if crash else 1)     # 1: a record was rejected in this run
    assert optix.pending_faults() == []
    assert optix.record(UUID1, 5) == gen_ndjson.expected(5, 0)
    assert "refused by the server" in daemon.log()
    seq = last_seq(optix)

    # The same dump again, accepted now: 5 goes (the API holds its old value), the others are held.
    daemon.drop(CONN, "day3.ndjson", day2)
    run_once(daemon)

    assert sent_keys(optix, seq) == [5], "the refused record was taken for held"
    assert optix.record(UUID1, 5) == gen_ndjson.expected(5, 1)


# --- 1: per destination -------------------------------------------------------------------------------

def test_a_changed_destination_never_skips_by_the_old_store(optix, daemon):
    config(daemon, optix)
    daemon.drop_generated(CONN, "day1.ndjson", 50)
    run_once(daemon)

    daemon.write_config([daemon.connection(optix, uuid=UUID2, skip_unchanged="yes")])
    daemon.drop_generated(CONN, "day2.ndjson", 50)
    run_once(daemon)
    assert sent_keys(optix, uuid=UUID2) == list(range(50))

    # Back to the first: the store now knows only the second, so everything goes again.
    seq = last_seq(optix)
    config(daemon, optix)
    daemon.drop_generated(CONN, "day3.ndjson", 50)
    run_once(daemon)
    assert sent_keys(optix, seq) == list(range(50))


def test_turning_skip_unchanged_off_and_on_again_forgets_what_was_stored(optix, daemon):
    config(daemon, optix)
    daemon.drop_generated(CONN, "day1.ndjson", 50)
    run_once(daemon)
    config(daemon, optix, skip_unchanged="no")
    daemon.drop_generated(CONN, "day2.ndjson", 50, value=1)
    run_once(daemon)
    seq = last_seq(optix)

    config(daemon, optix)
    daemon.drop_generated(CONN, "day3.ndjson", 50)
    run_once(daemon)

    assert sent_keys(optix, seq) == list(range(50))
    assert optix.records(UUID1) == gen_store(0, 50)


# --- 6: TTL and the periodic resend -------------------------------------------------------------------

@pytest.mark.parametrize("keys, early, late", [
    ({"ttl_seconds": 1000}, 400, 600),
    ({"unchanged_resend_seconds": 1000}, 900, 1100),
])
def test_an_unchanged_record_is_sent_again_once_its_resend_time_passed(optix, daemon, keys, early, late):
    seq = crash_build_with_day1(daemon, optix, 30, **keys)

    daemon.drop_generated(CONN, "day2.ndjson", 30)
    run_once(daemon, env={"DCSYNCD_TEST_CLOCK_OFFSET": str(early)})
    assert sent_keys(optix, seq) == []

    daemon.drop_generated(CONN, "day3.ndjson", 30)
    run_once(daemon, env={"DCSYNCD_TEST_CLOCK_OFFSET": str(late)})
    assert sent_keys(optix, seq) == list(range(30))


# --- 7: forget -----------------------------------------------------------------------------------------

def test_forget_makes_the_next_file_go_whole_and_needs_the_daemons_user(optix, daemon):
    config(daemon, optix)
    daemon.drop_generated(CONN, "day1.ndjson", 40)
    run_once(daemon)
    seq = last_seq(optix)

    if daemon.priv.unprivileged:
        refused = daemon.exporter_popen([daemon.binary, "-c", daemon.conf_path, "forget", CONN],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = refused.communicate(timeout=30)
        assert refused.returncode == 1 and "root or as the daemon's user" in err, (out, err)
    proc = subprocess.run(daemon.command("forget", CONN), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    daemon.drop_generated(CONN, "day2.ndjson", 40)
    run_once(daemon)

    assert sent_keys(optix, seq) == list(range(40))


def test_a_crash_between_forgetting_and_the_flags_removal_forgets_again(optix, daemon):
    """Killed after the store was cleared but before the request was removed: the next start
    clears it again (idempotent), the file goes whole, and then the store holds it."""
    seq = crash_build_with_day1(daemon, optix, 40)
    proc = subprocess.run(daemon.command("forget", CONN), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    daemon.drop_generated(CONN, "day2.ndjson", 40)
    crashed = daemon.run_once(env={"DCSYNCD_CRASH_AT": "store-forgotten"})
    assert crashed.returncode == -9, crashed.stdout
    run_once(daemon)
    assert sent_keys(optix, seq) == list(range(40))
    assert daemon.log().count("forgotten on request") == 1, daemon.log()[-2000:]
    seq = last_seq(optix)
    daemon.drop_generated(CONN, "day3.ndjson", 40)
    run_once(daemon)
    assert sent_keys(optix, seq) == []


def test_forget_while_the_daemon_runs_applies_before_its_next_batch(optix, daemon):
    config(daemon, optix)
    daemon.start()
    try:
        daemon.drop_generated(CONN, "day1.ndjson", 40)
        wait_for(lambda: (daemon.state_dir / "done" / CONN / "day1.ndjson").is_file(), what="day1 archived",
                 daemon=daemon)
        daemon.drop_generated(CONN, "day2.ndjson", 40)
        wait_for(lambda: (daemon.state_dir / "done" / CONN / "day2.ndjson").is_file(), what="day2 archived",
                 daemon=daemon)
        seq = last_seq(optix)
        proc = subprocess.run(daemon.command("forget", CONN), capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        daemon.drop_generated(CONN, "day3.ndjson", 40)
        wait_for(lambda: (daemon.state_dir / "done" / CONN / "day3.ndjson").is_file(), what="day3 archived",
                 daemon=daemon)
    finally:
        daemon.stop()
    assert sent_keys(optix, seq) == list(range(40))
    assert "forgotten on request" in daemon.log()


# --- formats ----------------------------------------------------------------------------------------------

def csv_rows(n, value="a"):
    return "id,name,v\n" + "".join(f"{i},n{i},{value}\n" for i in range(n))


@pytest.mark.parametrize("name, pack", [
    ("d.csv", lambda t: t.encode()),
    ("d.csv.gz", lambda t: gzip.compress(t.encode())),
    ("d.ndjson.gz", None),
])
def test_unchanged_records_of_csv_and_compressed_drops_are_not_sent(optix, daemon, name, pack):
    config(daemon, optix, batch_records=100)
    if pack is None:
        day = lambda v: gzip.compress("".join(gen_ndjson.record(i, v) + "\n" for i in range(300)).encode())
    else:
        day = lambda v: pack(csv_rows(300, "a" if v == 0 else "b"))
    daemon.drop(CONN, "1-" + name, day(0))
    run_once(daemon)
    seq = last_seq(optix)
    daemon.drop(CONN, "2-" + name, day(0))
    proc = run_once(daemon)
    assert sent_keys(optix, seq) == [] and unchanged_count(proc.stdout) == 300

    daemon.drop(CONN, "3-" + name, day(1))
    run_once(daemon)
    assert len(sent_keys(optix, seq)) == 300


# --- 5: crashes --------------------------------------------------------------------------------------------

def requests_by_batch(optix, seq):
    out = {}
    for r in optix.requests(UUID1):
        if r["seq"] > seq and r["status"] == 200:
            out.setdefault(r["batch_uuid"], []).append(r)
    return out


@pytest.mark.parametrize("point", ["after-ack:1", "after-ack:2", "store-pending:2", "before-store-commit",
                                   "store-complete-chunk:2", "after-store-commit", "before-archive"])
def test_after_a_crash_the_batch_resends_the_same_requests_and_the_store_is_exact(optix, daemon, point):
    seq = crash_build_with_day1(daemon, optix, 12000)
    unchanged = set(range(2000, 3000))
    changed = set(range(12000)) - unchanged
    daemon.drop(CONN, "day2.ndjson", changed_lines(12000, changed))

    crashed = daemon.run_once(env={"DCSYNCD_CRASH_AT": point})
    assert crashed.returncode == -9, crashed.stdout
    run_once(daemon)

    batches = requests_by_batch(optix, seq)
    assert len(batches) == 1, "the resumed batch went up under another batch_uuid"
    reqs = list(batches.values())[0]
    # A request re-sent after the crash holds exactly what it held before.
    by_first = {}
    for r in reqs:
        assert by_first.setdefault(r["keys"][0], r["keys"]) == r["keys"]
    assert [len(k) for k in by_first.values()] == [5000, 5000, 1000]
    assert sorted(k for ks in by_first.values() for k in ks) == sorted(changed)
    # The store knows what the completed batch sent: the same dump again sends nothing.
    seq = last_seq(optix)
    daemon.drop(CONN, "day3.ndjson", changed_lines(12000, changed))
    run_once(daemon)
    assert sent_keys(optix, seq) == []


def test_random_kill_9_during_half_changed_dumps_leaves_the_store_exact(optix, daemon):
    rounds = int(os.environ.get("DCSYNCD_KILLS", "5"))
    seed = int(os.environ.get("DCSYNCD_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"\n  seed {seed}, {rounds} rounds")
    n = 20000
    config(daemon, optix, batch_records=1000)
    values = [0] * n
    daemon.drop_generated(CONN, "day0.ndjson", n)
    run_once(daemon)
    for rnd in range(1, rounds + 1):
        flip = set(rng.sample(range(n), n // 2))
        for i in flip:
            values[i] = rnd
        daemon.drop(CONN, f"day{rnd}.ndjson", [gen_ndjson.record(i, values[i]) for i in range(n)])
        daemon.start()
        time.sleep(rng.uniform(0.05, 0.6))    # a random moment to die at, not a synchronisation
        daemon.kill9()
    run_once(daemon)

    assert optix.records(UUID1) == {str(i): gen_ndjson.expected(i, values[i]) for i in range(n)}
    assert optix.state(UUID1)["open_batches"] == {}
    seq = last_seq(optix)
    daemon.drop(CONN, "again.ndjson", [gen_ndjson.record(i, values[i]) for i in range(n)])
    run_once(daemon)
    assert sent_keys(optix, seq) == [], f"seed {seed}: the store was not exact"


# --- dcsyncd check ---------------------------------------------------------------------------------------

def test_check_says_how_many_would_be_sent_and_unknown_to_an_exporter(optix, daemon, tmp_path):
    config(daemon, optix)
    src = tmp_path / "src"
    src.mkdir()
    src.chmod(0o755)
    f = src / "day2.ndjson"
    f.write_text("".join(l + "\n" for l in changed_lines(100, {1, 2, 3})))
    f.chmod(0o644)
    # No store yet: the count is known, it is everything.
    js = subprocess.run(daemon.command("check", "--json", CONN, str(f)), capture_output=True, text=True, timeout=60)
    assert js.returncode == 0 and json.loads(js.stdout)["would_send"] == 100, (js.stdout, js.stderr)
    daemon.drop_generated(CONN, "day1.ndjson", 100)
    run_once(daemon)

    proc = subprocess.run(daemon.command("check", CONN, str(f)), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "would send 3 of 100 (the others are unchanged)" in proc.stdout, proc.stdout
    js = subprocess.run(daemon.command("check", "--json", CONN, str(f)), capture_output=True, text=True, timeout=60)
    doc = json.loads(js.stdout)
    assert doc["records"] == 100 and doc["would_send"] == 3, doc

    if daemon.priv.unprivileged:
        # A store its group cannot read (an exporter outside it): the count is unknown, never a failure.
        (daemon.state_dir / "store" / CONN).chmod(0o700)
        x = daemon.exporter_popen([daemon.binary, "-c", daemon.conf_path, "check", CONN, f],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = x.communicate(timeout=60)
        assert x.returncode == 0, (out, err)
        assert "100 record(s) would go up" in out and "would send: unknown" in out, out


def test_a_resumed_batch_decides_at_its_journaled_time_not_at_the_restart(optix, daemon):
    """Invariant 5: the restart comes after half the TTL; the resumed batch still decides as it began."""
    seq = crash_build_with_day1(daemon, optix, 12000, ttl_seconds=1000)
    changed = set(range(0, 12000, 2))          # 6000: two requests; the odd keys unchanged
    daemon.drop(CONN, "day2.ndjson", changed_lines(12000, changed))

    crashed = daemon.run_once(env={"DCSYNCD_CRASH_AT": "after-ack:1", "DCSYNCD_TEST_CLOCK_OFFSET": "400"})
    assert crashed.returncode == -9, crashed.stdout
    run_once(daemon, env={"DCSYNCD_TEST_CLOCK_OFFSET": "600"})

    batches = requests_by_batch(optix, seq)
    assert len(batches) == 1
    assert sorted(set(k for r in list(batches.values())[0] for k in r["keys"])) == sorted(changed)


@pytest.mark.parametrize("keys", [{"unchanged_resend_seconds": 100}, {"ttl_seconds": 600}])
def test_a_resumed_batch_decides_by_the_config_it_was_opened_with(optix, daemon, keys):
    """Invariant 5: what decisions depend on (the resend time, the TTL) edited while the daemon was
    stopped: the resumed batch still re-cuts the same requests, with the TTL it began with."""
    seq = crash_build_with_day1(daemon, optix, 12000)
    changed = set(range(0, 12000, 2))          # 6000: two requests; the odd keys unchanged
    daemon.drop(CONN, "day2.ndjson", changed_lines(12000, changed))
    clock = {"DCSYNCD_TEST_CLOCK_OFFSET": "400"}    # past the new resend time, past half the new TTL

    crashed = daemon.run_once(env={"DCSYNCD_CRASH_AT": "after-ack:1", **clock})
    assert crashed.returncode == -9, crashed.stdout
    config(daemon, optix, **keys)
    run_once(daemon, env=clock)

    batches = requests_by_batch(optix, seq)
    assert len(batches) == 1
    reqs = list(batches.values())[0]
    assert [len(r["keys"]) for r in reqs] == [5000, 1000]
    assert sorted(k for r in reqs for k in r["keys"]) == sorted(changed)
    assert all(r.get("ttl_seconds") is None for r in reqs), "the resumed batch's requests changed their TTL"
