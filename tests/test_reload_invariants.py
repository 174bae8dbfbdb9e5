"""Issue 17: no record lost to a reload or a pause; a file is archived only when all of it was
acknowledged in a completed batch; a batch finishes where it started; one object per spool;
signals from the first instant. One deterministic test per defect, then a randomized one.

Run with:  DCSYNCD=build/src/dcsyncd python3 -m pytest -q -p no:cacheprovider tests/test_reload_invariants.py

Every record is a gen_ndjson record whose "v" names the file it came from; the fake records, per
upload request, the "v" of each record it carried (FakeOptix.configure(track="v")), so a check can
say which file's records were acknowledged, in which batch, at which server and uuid. Waiting is
polling (harness.wait_for / wait_log) with timeouts; random delays in the randomized test are its
input (interleavings), never synchronisation.
"""

import json
import os
import random
import re
import signal
import time

import pytest

import gen_ndjson
from harness import UUID1, UUID2, wait_for

WAIT = 60.0
PAUSED = r"products: the API refused the keys \(HTTP 40[13]\)"


# --- helpers -----------------------------------------------------------------------------------

def spool_files(daemon, conn="products"):
    d = daemon.spool(conn)
    return sorted(p.name for p in d.iterdir() if p.is_file() and not p.name.startswith("."))


def work_files(daemon, conn="products"):
    w = daemon.spool(conn) / ".work"
    return sorted(p.name for p in w.iterdir()) if w.exists() else []


def done_files(daemon, conn="products"):
    d = daemon.state_dir / "done" / conn
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def failed_files(daemon, conn="products"):
    f = daemon.spool(conn) / "failed"
    return sorted(p.name for p in f.iterdir() if not p.name.endswith(".error.json")) if f.exists() else []


def base_name(name):
    """A file's own name, whether archived as NAME or <id>-NAME (a name already taken)."""
    m = re.match(r"^\d+-(.*)$", name)
    return m.group(1) if m else name


def rejected_lines(daemon, name, conn="products"):
    p = daemon.spool(conn) / "rejected" / f"{name}.rejected.ndjson"
    return [json.loads(l) for l in p.read_text().splitlines()] if p.exists() else []


def records(start, n, value):
    return [gen_ndjson.record(i, value) for i in range(start, start + n)]


def ok_requests(optix, uuid):
    return [r for r in optix.requests(uuid) if r["status"] == 200]


def completed_pairs(optix, uuid):
    """{(key, v)} of every record acknowledged (200) in a batch the server completed."""
    done = set(optix.state(uuid)["completed_batches"])
    return {(k, v) for r in ok_requests(optix, uuid) if r["batch_uuid"] in done
            for k, v in zip(r["keys"], r["tracked"])}


def staged_pairs(optix, uuid):
    """{(key, v)} of every record acknowledged in a batch still open at the server."""
    open_ = set(optix.state(uuid)["open_batches"])
    return {(k, v) for r in ok_requests(optix, uuid) if r["batch_uuid"] in open_
            for k, v in zip(r["keys"], r["tracked"])}


def batches_of(reqs):
    """{batch_uuid: [requests that carried it, in arrival order]} (faulted ones too)."""
    out = {}
    for r in reqs:
        b = (r["sent"] or {}).get("batch_uuid") or r["batch_uuid"]
        if b:
            out.setdefault(b, []).append(r)
    return out


def describe(reqs):
    return [(r["seq"], r["status"], (r["sent"] or {}).get("batch_uuid", "?")[:8],
             r["first_pk"], r["last_pk"], r["batch_completed"]) for r in reqs]


def wait_settled(daemon, names, conn="products", timeout=WAIT):
    """Wait until every one of names is in done/ or failed/ and nothing is left in the spool or
    .work/; returns (done, failed) as sets of own names. The failure says what is left where."""
    last = {}

    def settled():
        done = {base_name(n) for n in done_files(daemon, conn)}
        failed = {base_name(n) for n in failed_files(daemon, conn)}
        last.update(spool=spool_files(daemon, conn), work=work_files(daemon, conn),
                    missing=sorted(set(names) - done - failed))
        return (done, failed) if not last["missing"] and not last["spool"] and not last["work"] else None
    try:
        return wait_for(settled, f"{len(names)} file(s) in done/ or failed/ and an empty spool", daemon, timeout)
    except AssertionError as e:
        raise AssertionError(f"never settled: neither in done/ nor in failed/: {last.get('missing')}; still in "
                             f"the spool: {last.get('spool')}; still in .work/: {last.get('work')} (a batch "
                             f"nobody finishes?)\n{e}") from None


def error_json(daemon, name, conn="products"):
    p = daemon.spool(conn) / "failed" / f"{name}.error.json"
    assert p.exists(), f"{name} is in failed/ without {name}.error.json saying why"
    return json.loads(p.read_text())


def check_archived_only_when_acknowledged(daemon, name, expected_keys, value, dests):
    """name is in done/: every one of its records (key, value) must have been acknowledged in a
    batch the server completed, at one destination. dests: {label: (optix, uuid)}."""
    where = {label: completed_pairs(o, u) for label, (o, u) in dests.items()}
    holders = {label for label, pairs in where.items() if any((k, value) in pairs for k in expected_keys)}
    for label in holders:
        missing = sorted(k for k in expected_keys if (k, value) not in where[label])
        elsewhere = {l: sum((k, value) in p for k in missing) for l, p in where.items() if l != label}
        assert not missing, (f"{name} was archived in done/ but {len(missing)} of its {len(expected_keys)} "
                             f"records were never acknowledged in a completed batch at {label} "
                             f"(ids {missing[:5]}...); of those, completed elsewhere: "
                             f"{ {l: n for l, n in elsewhere.items() if n} or 'nowhere'}; staged in a batch "
                             f"never completed: { {l: n for l, (o, u) in dests.items() if (n := sum((k, value) in staged_pairs(o, u) for k in missing))} or 'nowhere'}")
    assert holders, (f"{name} was archived in done/ but none of its {len(expected_keys)} records "
                     f"(ids {min(expected_keys)}..{max(expected_keys)}, v={value}) was ever acknowledged "
                     f"in a completed batch at {sorted(dests)}")
    assert len(holders) == 1, f"{name}'s records were completed at several destinations: {sorted(holders)}"


def watch_done(daemon, files, dests, conn="products"):
    """A predicate step for wait_for: checks, each time it is polled, that every file already in
    done/ had all its records acknowledged in a completed batch (the check the archive must make)."""
    for n in done_files(daemon, conn):
        own = base_name(n)
        if own in files:
            keys, value = files[own]
            check_archived_only_when_acknowledged(daemon, own, keys, value, dests)


# --- 1. the carried file -----------------------------------------------------------------------

def test_carried_file_is_not_archived_when_a_split_request_is_refused_half_way(optix, daemon):
    """a (10) and b (10) share request 1; c (15) does not fit in batch_records = 25 and is carried
    to the next batch. Request 1 gets 413 and is split; the first half (a) is acknowledged, the
    second (b) refused with 401. The reload tries again (nothing fixed: the 401 was once). c must
    go up in a batch of its own before it is archived; it must never reach done/ unsent."""
    optix.configure(track="v")
    daemon.write_config([daemon.connection(optix, batch_records=25)])
    files = {"a.ndjson": (list(range(0, 10)), 1), "b.ndjson": (list(range(10, 20)), 2),
             "c.ndjson": (list(range(20, 35)), 3)}
    for name, (keys, v) in files.items():
        daemon.drop("products", name, records(keys[0], len(keys), v))
    optix.add_faults([{"uuid": UUID1, "status": 413, "count": 1},
                      {"uuid": UUID1, "status": 401, "after": 1}])        # 413, 200, then 401
    daemon.start()

    daemon.wait_log(PAUSED)
    dests = {"products": (optix, UUID1)}
    reqs = optix.requests(UUID1)
    assert [r["status"] for r in reqs] == [413, 200, 401], describe(reqs)
    assert reqs[0]["sent"]["keys"] == list(range(20)), "a and b did not share request 1 (the setup is off)"
    watch_done(daemon, files, dests)
    mark = daemon.mark()
    daemon.reload()
    daemon.wait_log(r"configuration reloaded", since=mark)

    # Poll until all three are archived, checking at every step that nothing in done/ went unsent.
    wait_for(lambda: watch_done(daemon, files, dests) or
             {base_name(n) for n in done_files(daemon)} == set(files),
             "a, b and c archived", daemon)
    for name, (keys, v) in files.items():
        check_archived_only_when_acknowledged(daemon, name, keys, v, dests)
    assert optix.records(UUID1) == {str(i): gen_ndjson.expected(i, v)
                                    for keys, v in files.values() for i in keys}
    assert optix.state(UUID1)["open_batches"] == {}, "a batch was left open at the server"
    assert daemon.stop() == 0


def test_carried_file_handed_back_after_401_keeps_its_earlier_rejected_lines(optix, daemon):
    """c.ndjson was uploaded once with a bad line (its rejected file holds it). Another c.ndjson is
    carried after a and b; the first request is refused with 401 before anything was acknowledged,
    so all three go back to the spool. c's rejected file must keep the earlier line (handing back
    takes back only this attempt's lines), and after the reload c's new bad line is added once."""
    optix.configure(track="v")
    daemon.write_config([daemon.connection(optix, batch_records=25)])
    old_bad = '{"name":"earlier bad line, no id"}'
    daemon.drop("products", "c.ndjson", records(100, 2, 0) + [old_bad] + records(102, 2, 0))
    proc = daemon.run_once()
    assert proc.returncode == 1, f"first run: exit {proc.returncode} (1 expected: a line was rejected)"
    history = rejected_lines(daemon, "c.ndjson")
    assert [(r["line"], r["record"]) for r in history] == [(3, old_bad)], history

    new_bad = '{"name":"new bad line, no id"}'
    daemon.drop("products", "a.ndjson", records(0, 10, 1))
    daemon.drop("products", "b.ndjson", records(10, 10, 2))
    daemon.drop("products", "c.ndjson", records(20, 5, 3) + [new_bad] + records(25, 10, 3))
    optix.add_faults({"uuid": UUID1, "status": 401, "count": 1})
    mark = daemon.mark()
    daemon.start()

    daemon.wait_log(PAUSED, since=mark)
    wait_for(lambda: work_files(daemon) == [] and len(spool_files(daemon)) == 3,
             "a, b and c handed back to the spool", daemon)
    now = rejected_lines(daemon, "c.ndjson")
    assert [(r["line"], r["record"]) for r in now] == [(3, old_bad)], (
        f"c.ndjson was handed back to the spool and its rejected file lost its earlier lines: it now "
        f"holds {now} (the line rejected by the earlier upload, line 3, must stay)")

    daemon.reload()
    wait_for(lambda: len([n for n in done_files(daemon) if base_name(n) == "c.ndjson"]) == 2 and
             {"a.ndjson", "b.ndjson"} <= {base_name(n) for n in done_files(daemon)},
             "a, b and the second c archived", daemon)
    now = [(r["line"], r["record"]) for r in rejected_lines(daemon, "c.ndjson")]
    assert sorted(now) == sorted([(3, old_bad), (6, new_bad)]), (
        f"c.ndjson's rejected file should hold the earlier line and the new one once each; it holds {now}")
    expected = {str(i): gen_ndjson.expected(i, v) for i, v in
                [(i, 0) for i in range(100, 104)] + [(i, 1) for i in range(10)] +
                [(i, 2) for i in range(10, 20)] + [(i, 3) for i in range(20, 35)]}
    assert optix.records(UUID1) == expected
    assert daemon.stop() == 0


# --- 2 and 3. a reload that changes the destination under an open batch --------------------------

def open_batch_then_reload(daemon, old, change, wait_acks=2):
    """a.ndjson (1000 records, 20 requests of 50, each held 0.15 s by the old server) is sent;
    after wait_acks acknowledgements the old server is stopped (a request hangs in flight), the
    configuration is changed by change() and reloaded, and the old server goes on."""
    old.configure(delay=0.15)
    wait_for(lambda: len(ok_requests(old, UUID1)) >= wait_acks, f"{wait_acks} requests of a.ndjson acknowledged",
             daemon)
    batch = ok_requests(old, UUID1)[0]["batch_uuid"]
    old.suspend()
    try:
        mark = daemon.mark()
        change()
        daemon.reload()
        daemon.wait_log(r"configuration reloaded", since=mark)
    finally:
        old.resume()
    return batch


def check_batch_stayed(daemon, batch, a_keys, home, elsewhere):
    """a.ndjson's batch began at home (optix, uuid, label). Either the file is in done/ and every
    one of its records is in that batch, completed, at home, with no request of it anywhere else;
    or the file is in failed/ with an error.json saying so, and the batch was completed nowhere."""
    optix, uuid, label = home
    done = {base_name(n) for n in done_files(daemon)}
    failed = set(failed_files(daemon))
    strays = [(l, describe([r for r in o.requests(u) if (r["sent"] or {}).get("batch_uuid") == batch]))
              for o, u, l in elsewhere]
    strays = [(l, rs) for l, rs in strays if rs]
    if "a.ndjson" in done:
        reqs = [r for r in optix.requests(uuid) if (r["sent"] or {}).get("batch_uuid") == batch]
        stored = {k for r in reqs if r["status"] == 200 for k in r["keys"]}
        completed = batch in optix.state(uuid)["completed_batches"]
        assert not strays and completed and stored == set(a_keys), (
            f"a.ndjson was archived as a success but its batch {batch} was split: {len(stored)} of "
            f"{len(a_keys)} records at {label} (batch {'completed' if completed else 'never completed'} "
            f"there), requests of the same batch elsewhere: {strays}")
    else:
        assert "a.ndjson" in failed, f"a.ndjson neither in done/ nor in failed/: done {done}, failed {failed}"
        err = error_json(daemon, "a.ndjson")
        assert re.search(r"base_url|uuid|reload|configuration", err.get("error", "")), (
            f"a.ndjson failed, but its error.json does not say the destination changed under its batch: {err}")
        assert batch not in optix.state(uuid)["completed_batches"], f"a.ndjson failed, yet {batch} was completed at {label}"
        for o, u, l in elsewhere:
            assert batch not in o.state(u)["completed_batches"], f"a.ndjson failed, yet {batch} was completed at {l}"


def test_reload_changing_base_url_under_an_open_batch_finishes_it_at_the_old_server(optix_factory, daemon):
    old, new = optix_factory(), optix_factory()
    for o in (old, new):
        o.configure(track="v")
    conn = daemon.connection(old, batch_records=50)
    daemon.write_config([conn])
    daemon.drop_generated("products", "a.ndjson", 1000, value=1)
    daemon.start()

    batch = open_batch_then_reload(daemon, old, lambda: daemon.write_config([{**conn, "base_url": new.url}]))
    daemon.drop_generated("products", "b.ndjson", 100, start=5000, value=2)
    wait_settled(daemon, ["a.ndjson", "b.ndjson"])

    check_batch_stayed(daemon, batch, range(1000), (old, UUID1, "the old server"), [(new, UUID1, "the new server")])
    assert "b.ndjson" in {base_name(n) for n in done_files(daemon)}, "b.ndjson was not uploaded"
    b_at_new = {k for k, v in completed_pairs(new, UUID1) if v == 2}
    b_at_old = {k for r in old.requests(UUID1) for k in r["keys"] if k >= 5000}
    assert b_at_new == set(range(5000, 5100)) and not b_at_old, (
        f"b.ndjson, dropped after the reload, must go to the new server only: {len(b_at_new)} of 100 "
        f"completed there, {len(b_at_old)} sent to the old one")
    for o, label in ((old, "old"), (new, "new")):
        leftover = o.state(UUID1)["open_batches"]
        if "a.ndjson" in done_files(daemon) or label == "new":
            assert leftover == {}, f"batches left open at the {label} server: {leftover}"
    assert daemon.stop() == 0


def test_reload_changing_uuid_under_an_open_batch_finishes_it_under_the_old_uuid(optix, daemon):
    optix.configure(track="v")
    conn = daemon.connection(optix, batch_records=50)
    daemon.write_config([conn])
    daemon.drop_generated("products", "a.ndjson", 1000, value=1)
    daemon.start()

    batch = open_batch_then_reload(daemon, optix, lambda: daemon.write_config([{**conn, "uuid": UUID2}]))
    daemon.drop_generated("products", "b.ndjson", 100, start=5000, value=2)
    wait_settled(daemon, ["a.ndjson", "b.ndjson"])

    check_batch_stayed(daemon, batch, range(1000), (optix, UUID1, "the old uuid"), [(optix, UUID2, "the new uuid")])
    assert "b.ndjson" in {base_name(n) for n in done_files(daemon)}, "b.ndjson was not uploaded"
    b_new = {k for k, v in completed_pairs(optix, UUID2) if v == 2}
    b_old = {k for r in optix.requests(UUID1) for k in r["keys"] if k >= 5000}
    assert b_new == set(range(5000, 5100)) and not b_old, (
        f"b.ndjson, dropped after the reload, must go to the new uuid only: {len(b_new)} of 100 completed "
        f"there, {len(b_old)} sent to the old uuid")
    assert optix.state(UUID2)["open_batches"] == {}, "a batch left open under the new uuid"
    if "a.ndjson" in {base_name(n) for n in done_files(daemon)}:
        assert optix.state(UUID1)["open_batches"] == {}, "a batch left open under the old uuid"
    assert daemon.stop() == 0


# --- 4. removed while busy, added back ---------------------------------------------------------

def test_connection_removed_while_busy_and_added_back_keeps_the_newest_value(optix, daemon):
    """old.ndjson (3000 records, v=1) is half sent when products is removed; new2.ndjson (keys
    0..999, v=2) is dropped while it is out of the configuration, products is added back, then
    new3.ndjson (keys 0..499, v=3). One object at a time may work the spool, in file order: every
    key must end with the newest value, and no two batches of products may interleave."""
    optix.configure(track="v", delay=0.1)
    products = daemon.connection(optix, batch_records=100)
    other = daemon.connection(optix, name="other", uuid=UUID2)
    daemon.write_config([products, other])
    daemon.drop_generated("products", "old.ndjson", 3000, value=1)
    daemon.start()

    wait_for(lambda: len(ok_requests(optix, UUID1)) >= 2, "2 requests of old.ndjson acknowledged", daemon)
    mark = daemon.mark()
    daemon.write_config([other])
    daemon.reload()
    daemon.wait_log(r"configuration reloaded", since=mark)
    daemon.drop_generated("products", "new2.ndjson", 1000, value=2)
    mark = daemon.mark()
    daemon.write_config([products, other])
    daemon.reload()
    daemon.wait_log(r"configuration reloaded", since=mark)
    daemon.drop_generated("products", "new3.ndjson", 500, value=3)

    wait_settled(daemon, ["old.ndjson", "new2.ndjson", "new3.ndjson"], timeout=90)
    reqs = optix.requests(UUID1)
    spans = {b: (rs[0]["seq"], rs[-1]["seq"]) for b, rs in batches_of(reqs).items()}
    order = sorted(spans.items(), key=lambda kv: kv[1][0])
    for (b1, (s1, e1)), (b2, (s2, e2)) in zip(order, order[1:]):
        assert e1 < s2, (f"two batches of products were sent at the same time: {b1[:8]} (requests "
                         f"{s1}..{e1}) and {b2[:8]} (requests {s2}..{e2}): two objects worked the spool")
    got = optix.records(UUID1)
    want = {**{str(i): 1 for i in range(3000)}, **{str(i): 2 for i in range(1000)}, **{str(i): 3 for i in range(500)}}
    wrong = {k: (got.get(k) or {}).get("v") for k, v in want.items() if (got.get(k) or {}).get("v") != v}
    assert not wrong, (f"{len(wrong)} keys do not hold the newest value, e.g. "
                       f"{dict(list(sorted(wrong.items(), key=lambda kv: int(kv[0])))[:5])} "
                       f"(key: v held; want 3 below 500, 2 below 1000, 1 above): an older batch completed last")
    assert set(done_files(daemon)) == {"old.ndjson", "new2.ndjson", "new3.ndjson"}
    assert optix.state(UUID1)["open_batches"] == {}
    assert daemon.stop() == 0


# --- 5. signals --------------------------------------------------------------------------------

def in_start_up(pid):
    """dcsyncd is in its start-up: its own code runs and it has its journal open (the replay and
    the scan of the spool come next, before READY). Before its code runs at all (the dynamic
    loader; setpriv and sh in the unprivileged mode) no program can answer for a signal."""
    with open(f"/proc/{pid}/comm") as f:
        if f.read().strip() != "dcsyncd":
            return False
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("/journal"):
                return True
        except OSError:
            pass
    return False


def wait_exec(daemon, timeout=10.0):
    """Spin (no sleep: the point is to be early) until dcsyncd is in its start-up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if in_start_up(daemon.pid):
                return
        except OSError:
            pass
        if daemon.proc.poll() is not None:
            raise AssertionError(f"dcsyncd exited with {daemon.proc.returncode} at start:\n{daemon.log()[-3000:]}")
    raise AssertionError("the daemon's process never became dcsyncd")


@pytest.mark.parametrize("attempt", range(3))
def test_sighup_in_the_first_instants_of_start_up_does_not_kill_the_daemon(optix, daemon, attempt):
    """The journal replay and the spool scan (500 files here) come before READY: a SIGHUP then
    must be handled (reload, or ignored), never kill the daemon."""
    daemon.write_config([daemon.connection(optix)])
    for i in range(500):
        daemon.drop("products", f"f{i:04d}.ndjson", [gen_ndjson.record(i)])
    daemon.start()
    wait_exec(daemon)
    daemon.signal(signal.SIGHUP)

    try:
        wait_for(lambda: len(optix.records(UUID1)) == 500, "the 500 files uploaded", daemon)
    except AssertionError as e:
        if daemon.running():
            raise
        raise AssertionError(f"dcsyncd died (exit {daemon.proc.returncode}; -{int(signal.SIGHUP)} is SIGHUP) of a "
                             f"SIGHUP sent as it started, before READY: signals must be handled from the first "
                             f"instant\n{e}") from None
    assert daemon.stop() == 0


def test_sigterm_waits_for_a_removed_connection_still_sending(optix, daemon):
    """products is removed while it sends a.ndjson; SIGTERM comes while its request is in flight
    (held by the stopped server). The drain must wait for that answer and record it: the next
    start resumes after it, never sends it again."""
    optix.configure(track="v", delay=0.2)
    products = daemon.connection(optix, batch_records=100)
    other = daemon.connection(optix, name="other", uuid=UUID2)
    daemon.write_config([products, other])
    daemon.drop_generated("products", "a.ndjson", 2000, value=1)
    daemon.start()

    wait_for(lambda: len(ok_requests(optix, UUID1)) >= 2, "2 requests of a.ndjson acknowledged", daemon)
    mark = daemon.mark()
    daemon.write_config([other])
    daemon.reload()
    daemon.wait_log(r"products: removed from the configuration", since=mark)
    daemon.wait_log(r"products: a\.ndjson: request \d+: records", since=daemon.mark())
    optix.suspend()
    try:
        term = daemon.mark()
        daemon.signal(signal.SIGTERM)
        daemon.wait_log(r"SIGTERM: taking no new files", since=term)
    finally:
        optix.resume()
    status = daemon.wait_exit(timeout=WAIT)
    assert status == 0, f"exit {status} on SIGTERM; log tail:\n{daemon.log(term)[-3000:]}"

    sent = [int(n) for n in re.findall(r"products: a\.ndjson: request (\d+): records", daemon.log(mark))]
    last = max(sent)
    # The fake answers after its delay, resumed: the request it held is answered (to whoever is left).
    wait_for(lambda: len(ok_requests(optix, UUID1)) >= last, f"request {last} answered by the server")
    first_run = ok_requests(optix, UUID1)
    held = first_run[last - 1]["keys"]

    daemon.write_config([products, other])
    resume = daemon.mark()
    daemon.start()
    wait_settled(daemon, ["a.ndjson"])
    assert optix.records(UUID1) == {str(i): gen_ndjson.expected(i, 1) for i in range(2000)}
    later = [r for r in optix.requests(UUID1) if r["seq"] > first_run[-1]["seq"]]
    resent = [r for r in later if r["keys"] and r["keys"][0] == held[0]]
    assert not resent, (f"request {last} (ids {held[0]}..{held[-1]}) was in flight at SIGTERM and was sent "
                        f"again after the restart: the daemon exited without waiting for its answer and "
                        f"recording it; the restart says: {re.findall(r'resuming batch.*', daemon.log(resume))}")
    assert daemon.stop() == 0


# --- randomized: reloads, pauses, faults, splits and small-file groups together -------------------

UUID3 = "33333333-3333-4333-8333-333333333333"      # "other": a connection that stays, so products can go
SEEDS = [1701, 2718, 3141, 4669, 5772]
KEYS = 400


def make_files(rng, n):
    """n files in drop order; file i carries v = i + 1 on a random range of the same 400 keys,
    small ones (grouped into one request) and large ones (several requests), some with bad lines.
    {name: {"keys": [...], "v": v, "bad": [(line, text)], "lines": [text]}}"""
    files = {}
    for i in range(n):
        size = rng.randint(3, 20) if rng.random() < 0.6 else rng.randint(120, 350)
        start = rng.randrange(0, KEYS - size)
        lines = records(start, size, i + 1)
        bad = []
        for j in range(rng.choice([0, 0, 1, 2])):
            text = json.dumps({"bad": f"f{i:02d}-{j}", "v": i + 1})        # no "id": rejected locally
            lines.insert(rng.randint(0, len(lines)), text)
        bad = [(n + 1, t) for n, t in enumerate(lines) if '"bad"' in t]
        files[f"f{i:02d}.ndjson"] = {"keys": list(range(start, start + size)), "v": i + 1, "bad": bad,
                                     "lines": lines}
    return files


def check_final_state(daemon, files, dests, done, failed):
    """The invariants of issue 17 on the final state; dests: {label: (optix, uuid)}."""
    listed = [base_name(n) for n in done_files(daemon)] + failed_files(daemon)
    twice = sorted({n for n in listed if listed.count(n) > 1})
    assert not twice, f"files archived or failed more than once: {twice}"
    completed = {label: completed_pairs(o, u) for label, (o, u) in dests.items()}
    by_v = {f["v"]: name for name, f in files.items()}

    for name, f in files.items():
        rej = rejected_lines(daemon, name)
        local = [(r["line"], r["record"]) for r in rej if not r["error"].startswith("HTTP ")]
        server = [json.loads(r["record"]) for r in rej if r["error"].startswith("HTTP ")]
        wrong = [l for l in local if l not in f["bad"]]
        assert not wrong, f"{name}: good lines rejected locally: {wrong}"
        for line in f["bad"]:
            n = local.count(line)
            assert n == 1 or (name in failed and n == 0), (
                f"{name}: bad line {line[0]} appears {n} times in rejected/{name}.rejected.ndjson "
                f"(once expected: rejected history lost or doubled); it holds {local}")
        refused = {r["id"] for r in server if r.get("v") == f["v"]}
        keys = [k for k in f["keys"] if k not in refused]
        if name in done:
            check_archived_only_when_acknowledged(daemon, name, keys, f["v"], dests)
        else:
            err = error_json(daemon, name)
            assert err.get("error"), f"{name} failed without a reason in its error.json: {err}"
            at = [label for label, pairs in completed.items() if any((k, f["v"]) in pairs for k in f["keys"])]
            assert not at, f"{name} is in failed/ ({err.get('error')}) but records of it were completed at {at}"

    for label, (o, u) in dests.items():
        st = o.state(u)
        staged = {}
        for r in ok_requests(o, u):
            if r["batch_uuid"] in st["open_batches"]:
                staged.setdefault(r["batch_uuid"], set()).update(by_v.get(v, f"v={v}") for v in r["tracked"])
        bad_open = {b[:8]: sorted(names) for b, names in staged.items() if not names <= failed}
        assert not bad_open, f"batches left open at {label} holding records of files not in failed/: {bad_open}"
        newest = {}
        for k, v in completed[label]:
            newest[k] = max(v, newest.get(k, 0))
        held = {int(k): r.get("v") for k, r in o.records(u).items()}
        stale = {k: (held.get(k), v) for k, v in newest.items() if held.get(k) != v}
        assert not stale, (f"{len(stale)} keys at {label} do not hold the newest value completed there, e.g. "
                           f"{dict(sorted(stale.items())[:6])} (key: (held v, newest v)); v is the file's "
                           f"index + 1 in drop order: an older batch completed after a newer one")


@pytest.mark.parametrize("seed", SEEDS)
def test_random_reloads_pauses_and_faults_keep_every_invariant(optix_factory, daemon, seed):
    rng = random.Random(seed)
    servers = {"A": optix_factory(), "B": optix_factory()}
    for o in servers.values():
        o.configure(track="v", delay=rng.choice([0.02, 0.05, 0.1]), connections={UUID3: "id"})
    dests = {f"{s}/{u[:8]}": (o, u) for s, o in servers.items() for u in (UUID1, UUID2)}
    cur = {"base": "A", "uuid": UUID1, "key_ok": True, "present": True, "batch_records": rng.choice([50, 100])}
    other = daemon.connection(servers["A"], name="other", uuid=UUID3)
    actions = []

    def write():
        o = servers[cur["base"]]
        conn = daemon.connection(o, uuid=cur["uuid"], batch_records=cur["batch_records"], retry_max_seconds=1,
                                 api_key=o.api_key if cur["key_ok"] else "rotated-away")
        daemon.write_config(([conn] if cur["present"] else []) + [other])

    def reload(kind):
        if not cur["present"]:
            kind = "add back"
            cur["present"] = True
        elif kind == "base_url":
            cur["base"] = "B" if cur["base"] == "A" else "A"
        elif kind == "uuid":
            cur["uuid"] = UUID2 if cur["uuid"] == UUID1 else UUID1
        elif kind == "wrong key":
            cur["key_ok"] = False
        elif kind == "fix key":
            cur["key_ok"] = True
        elif kind == "remove":
            cur["present"] = False
        elif kind == "batch_records":
            cur["batch_records"] = 150 - cur["batch_records"]
        write()
        mark = daemon.mark()
        daemon.reload()
        daemon.wait_log(r"configuration reloaded", since=mark)
        actions.append(f"reload ({kind}): {dict(cur, uuid=cur['uuid'][:8])}")

    def fault():
        o, f = servers[cur["base"]], {"uuid": cur["uuid"]}
        kind = rng.choice(["401", "403", "413", "422"])
        if kind in ("401", "403"):
            f.update(status=int(kind), after=rng.randint(0, 3))
        elif kind == "413":
            f.update(status=413, after=rng.randint(0, 2))
        else:
            f.update(reject_pk=rng.randrange(KEYS))
        o.add_faults(f)
        actions.append(f"fault at {cur['base']}: {f}")

    files = make_files(rng, rng.randint(14, 22))
    names = list(files)
    write()
    daemon.start()
    # The SIGHUP of the first instants has a test of its own: here the reloads come after READY.
    daemon.wait_log(r"dcsyncd \S+: \d+ connection\(s\)")
    try:
        while names:
            r = rng.random()
            if r < 0.45:
                for _ in range(min(len(names), rng.choice([1, 1, 2, 4]))):    # several at once: a group
                    name = names.pop(0)
                    daemon.drop("products", name, files[name]["lines"])
                    actions.append(f"drop {name} (keys {files[name]['keys'][0]}..{files[name]['keys'][-1]}, "
                                   f"v={files[name]['v']}, {len(files[name]['bad'])} bad)")
            elif r < 0.7:
                fault()
            else:
                reload(rng.choice(["same", "same", "base_url", "uuid", "wrong key", "fix key", "remove",
                                   "batch_records"]))
            time.sleep(rng.uniform(0, 0.3))          # the test's input: varies the interleavings
        cur["key_ok"] = True
        reload("fix key")
        done, failed = wait_settled(daemon, list(files), timeout=45)
        for o in servers.values():
            o.configure(delay=0)
        check_final_state(daemon, files, dests, done, failed)
        status = daemon.stop()
        assert status == 0, f"exit {status} on SIGTERM"
        if os.environ.get("DCSYNCD_TEST_VERBOSE"):
            print(f"seed {seed}: done {len(done)}, failed {len(failed)}\n  " + "\n  ".join(actions))
    except AssertionError as e:
        raise AssertionError(f"seed {seed}: {e}\nactions:\n  " + "\n  ".join(actions)) from None


# --- 6. a batch's identity across a crash ------------------------------------------------------

@pytest.mark.parametrize("change", ["uuid", "base_url"])
def test_destination_changed_while_stopped_fails_the_open_batch_never_sends_it_elsewhere(
        optix_factory, daemon, change):
    """kill -9 (a crash point) in the middle of a batch, then the connection's uuid or base_url
    changes before the next start: the rest of the batch must not go to the new destination
    under the old batch_uuid (a split batch, never completed anywhere); the file fails saying why."""
    from test_crash import crashpoints_built
    if not crashpoints_built(daemon):
        pytest.skip("needs a build with -Dcrashpoints=true")
    old, new = optix_factory(), optix_factory()
    daemon.write_config([daemon.connection(old, batch_records=100)])
    daemon.drop_generated("products", "a.ndjson", 1000, value=1)
    proc = daemon.run_once(env={"DCSYNCD_CRASH_AT": "after-ack:3"})
    assert proc.returncode == -9, f"expected the crash point to kill it, got {proc.returncode}"
    batch = {r["batch_uuid"] for r in old.requests(UUID1)}
    assert len(batch) == 1
    moved = daemon.connection(new if change == "base_url" else old, batch_records=100,
                              uuid=UUID2 if change == "uuid" else UUID1)
    daemon.write_config([moved])
    proc = daemon.run_once()
    assert proc.returncode == 1
    target = new if change == "base_url" else old
    sent_elsewhere = [r for r in target.requests(UUID2 if change == "uuid" else UUID1)
                      if r["batch_uuid"] in batch]
    assert not sent_elsewhere, f"the open batch went on at the new destination: {len(sent_elsewhere)} request(s)"
    error = daemon.spool("products") / "failed" / "a.ndjson.error.json"
    assert error.exists(), daemon.log()[-3000:]
    assert "another destination" in json.loads(error.read_text())["error"]
    assert not (daemon.state_dir / "done" / "products" / "a.ndjson").exists()
