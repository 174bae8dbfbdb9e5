"""dcsyncd's failure handling against the fake Opti-X server: transient errors, refused keys,
refused records, permanent errors, a server that is down, TLS, and one connection's trouble
not holding up another.

Run with:  DCSYNCD=build/src/dcsyncd /usr/bin/python3 -m pytest -q tests/test_failures.py

The behaviour under test is the answers table of docs/optix-api.md and the troubleshooting
table of dcsyncd(8) (TROUBLESHOOTING). Every test ends with the server's state equal to the expected records
and the log naming what happened. No test sleeps to synchronise: they poll the fake's state,
the file system or the daemon's log, with timeouts.
"""

import email.utils
import json
import os
import re
import time
import subprocess
from pathlib import Path

import pytest

import gen_ndjson
from harness import UUID1, UUID2, wait_for

WAIT = 30.0


# --- helpers -----------------------------------------------------------------------------------

def store(start, n, value=0):
    """What the fake must hold for gen_ndjson records start..start+n-1: {pk_json: record}."""
    return {str(i): gen_ndjson.expected(i, value) for i in range(start, start + n)}




def run_once(daemon, expect, timeout=60):
    proc = daemon.run_once(timeout=timeout)
    assert proc.returncode == expect, (f"exit {proc.returncode}, want {expect}\nstdout:\n{proc.stdout}\n"
                                       f"log tail:\n{daemon.log()[-4000:]}")
    return proc




def wait_records(optix, uuid, expected, daemon=None, timeout=WAIT):
    """Wait until the fake's store for uuid equals expected (a dict); fails showing the difference."""
    last = {}

    def ok():
        last["r"] = optix.records(uuid)
        return last["r"] == expected
    try:
        wait_for(ok, f"{len(expected)} records in {uuid}", daemon, timeout)
    except AssertionError as e:
        got = last.get("r", {})
        raise AssertionError(f"{e}\nstore has {len(got)} records, {len(set(expected) - set(got))} missing, "
                             f"{len(set(got) - set(expected))} unexpected") from None


def spool_files(daemon, conn):
    """Eligible files in the spool directory itself (not in its subdirectories, no dotfiles)."""
    return sorted(p.name for p in daemon.spool(conn).iterdir() if p.is_file() and not p.name.startswith("."))


def work_files(daemon, conn):
    work = daemon.spool(conn) / ".work"
    return sorted(p.name for p in work.iterdir()) if work.exists() else []


def done_files(daemon, conn):
    done = daemon.state_dir / "done" / conn
    return sorted(p.name for p in done.iterdir()) if done.exists() else []


def failed_dir(daemon, conn):
    return daemon.spool(conn) / "failed"


def statuses(reqs):
    return [r["status"] for r in reqs]


def one_batch(reqs):
    """Every request that carried a body (faulted ones too) names one batch, and the 200s complete it
    on the last one only; returns its uuid."""
    uuids = {r["sent"]["batch_uuid"] for r in reqs if r["sent"]}
    assert len(uuids) == 1, [r["sent"] and r["sent"]["batch_uuid"] for r in reqs]
    ok = [r for r in reqs if r["status"] == 200]
    flags = [r["batch_completed"] for r in ok]
    assert flags == [False] * (len(ok) - 1) + [True], f"batch_completed flags of the 200s: {flags}"
    return uuids.pop()


def sent_keys(r):
    return r["sent"]["keys"] if r["sent"] else None


def retry_lines(log, conn, name, request=1):
    """(what, K, S) of each `<conn>: <file>: request N failed (what), retry K in S s` line."""
    pat = re.compile(rf"{re.escape(conn)}: {re.escape(name)}: request {request} failed \((.*)\), "
                     rf"retry (\d+) in ([0-9.]+) s$", re.MULTILINE)
    return [(m.group(1), int(m.group(2)), float(m.group(3))) for m in pat.finditer(log)]


# --- transient: retried with back-off until the data is in ---------------------------------------

@pytest.mark.parametrize("status", [500, 503, 408])
def test_transient_status_three_times_then_ok_retries_the_same_request(optix, daemon, status):
    daemon.write_config([daemon.connection(optix)])
    daemon.drop_generated("products", "a.ndjson", 100)
    optix.add_faults({"uuid": UUID1, "status": status, "count": 3})

    run_once(daemon, 0)

    reqs = optix.requests(UUID1)
    assert statuses(reqs) == [status, status, status, 200]
    one_batch(reqs)
    assert all(sent_keys(r) == list(range(100)) for r in reqs), "a retry sent other records"
    assert optix.records(UUID1) == store(0, 100)
    assert optix.state(UUID1)["open_batches"] == {}
    lines = retry_lines(daemon.log(), "products", "a.ndjson")
    assert [(w, k) for w, k, _ in lines] == [(f"HTTP {status}", 1), (f"HTTP {status}", 2), (f"HTTP {status}", 3)]
    # Full jitter over initial * 2^attempt (retry_initial_seconds = 0.05 in the harness).
    assert all(0 <= s <= 0.05 * 2 ** (k - 1) + 0.005 for _, k, s in lines), lines
    assert done_files(daemon, "products") == ["a.ndjson"]


def test_503_on_request_2_of_3_resends_that_request_of_the_same_batch(optix, daemon):
    daemon.write_config([daemon.connection(optix, batch_records=1000)])
    daemon.drop_generated("products", "a.ndjson", 2500)
    optix.add_faults({"uuid": UUID1, "status": 503, "count": 2, "after": 1})

    run_once(daemon, 0)

    reqs = optix.requests(UUID1)
    assert statuses(reqs) == [200, 503, 503, 200, 200]
    one_batch(reqs)
    assert [sent_keys(r)[0] for r in reqs] == [0, 1000, 1000, 1000, 2000]
    assert optix.records(UUID1) == store(0, 2500)
    assert [(w, k) for w, k, _ in retry_lines(daemon.log(), "products", "a.ndjson", request=2)] == \
        [("HTTP 503", 1), ("HTTP 503", 2)]


@pytest.mark.parametrize("fault", ["reset_mid_body", "reset", "close", "reset_after_process"])
def test_connection_dropped_without_an_answer_is_retried(optix, daemon, fault):
    """reset_mid_body: RST half-way through the body; reset: RST after the body; close: FIN without
    an answer; reset_after_process: applied, then RST (the re-send must be harmless)."""
    daemon.write_config([daemon.connection(optix)])
    daemon.drop_generated("products", "big.ndjson", 5000)     # ~800 kB: the reset lands mid-body
    optix.add_faults({"uuid": UUID1, fault: True})

    run_once(daemon, 0)

    reqs = optix.requests(UUID1)
    assert len(reqs) == 2 and statuses(reqs)[-1] == 200, statuses(reqs)
    assert reqs[0]["sent"] is None or reqs[0]["sent"] == reqs[1]["sent"], "the retry is not the same request"
    assert reqs[1]["sent"]["batch_completed"] is True and reqs[1]["keys"] == list(range(5000))
    if fault == "reset_after_process":
        # Applied, unanswered, sent again: the contract's at-least-once re-send of a completed batch.
        assert reqs[1].get("resent_completed_batch") is True
    assert optix.records(UUID1) == store(0, 5000)
    lines = retry_lines(daemon.log(), "products", "big.ndjson")
    assert len(lines) == 1 and lines[0][1] == 1, daemon.log()[-3000:]
    assert not lines[0][0].startswith("HTTP"), f"a dropped connection logged as {lines[0][0]!r}"
    assert lines[0][0], "no curl error named"


def test_stalled_server_times_out_after_timeout_seconds_and_the_retry_delivers(optix, daemon):
    daemon.write_config([daemon.connection(optix, timeout_seconds=5)])
    daemon.drop_generated("products", "a.ndjson", 200)
    # Reads the body, then says nothing until the test ends: only the timeout can end the wait,
    # so the run finishing at all (the hang guard is far below the stall) is the check.
    optix.add_faults({"uuid": UUID1, "hold": True})

    started = time.time()
    run_once(daemon, 0, timeout=120)

    assert optix.records(UUID1) == store(0, 200)
    # The stalled request is never answered, so never recorded: just the retry shows.
    reqs = optix.requests(UUID1)
    assert statuses(reqs) == [200] and reqs[0]["keys"] == list(range(200))
    assert optix.held() == 1
    gap = reqs[0]["time"] - started
    assert gap >= 5, f"retry {gap:.2f} s after the start, before timeout_seconds = 5"
    lines = retry_lines(daemon.log(), "products", "a.ndjson")
    assert len(lines) == 1, daemon.log()[-3000:]
    assert re.search(r"(?i)time|slow", lines[0][0]), f"a stall logged as {lines[0][0]!r}"


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_with_retry_after_waits_at_least_that_long(optix, daemon, form):
    daemon.write_config([daemon.connection(optix)])
    daemon.drop_generated("products", "a.ndjson", 100)
    if form == "seconds":
        retry_after, least = "2", 2.0
    else:
        # An HTTP-date has whole seconds: 3 s ahead of the next whole second means >= 2 s from now.
        retry_after, least = email.utils.formatdate(int(time.time()) + 4, usegmt=True), 2.0
    optix.add_faults({"uuid": UUID1, "status": 429, "retry_after": retry_after,
                      "body": {"status": 429, "error": "Too Many Requests",
                               "message": "You have exceeded the rate limit"}})

    run_once(daemon, 0)

    reqs = optix.requests(UUID1)
    assert statuses(reqs) == [429, 200]
    gap = reqs[1]["time"] - reqs[0]["time"]
    assert gap >= least, f"retried {gap:.2f} s after a 429 with Retry-After: {retry_after}"
    assert gap < least + 3, f"retried only after {gap:.2f} s"
    assert optix.records(UUID1) == store(0, 100)
    lines = retry_lines(daemon.log(), "products", "a.ndjson")
    assert len(lines) == 1 and lines[0][0] == "HTTP 429" and lines[0][2] >= least - 0.01, lines


def test_persistent_503_with_retry_max_elapsed_goes_to_failed(optix, daemon):
    daemon.write_config([daemon.connection(optix, retry_max_elapsed_seconds=1, retry_max_seconds=0.2)])
    path = daemon.drop_generated("products", "a.ndjson", 50)
    content = path.read_bytes()
    optix.add_faults({"uuid": UUID1, "status": 503, "count": 10**6, "body": {"error": "down for maintenance"}})

    run_once(daemon, 1)

    reqs = optix.requests(UUID1)
    assert len(reqs) >= 2 and set(statuses(reqs)) == {503}
    assert optix.records(UUID1) == {}
    failed = failed_dir(daemon, "products")
    assert (failed / "a.ndjson").read_bytes() == content
    err = json.loads((failed / "a.ndjson.error.json").read_text())
    assert err["status"] == 503 and json.loads(err["response"]) == {"error": "down for maintenance"}
    assert "retry_max_elapsed_seconds" in err["error"]
    assert re.search(r"products: a\.ndjson: failed for good: gave up after \d+ s of retries "
                     r"\(retry_max_elapsed_seconds\): HTTP 503; moved to .*/failed/", daemon.log())
    assert spool_files(daemon, "products") == [] and work_files(daemon, "products") == []


# --- 401/403: the connection pauses -------------------------------------------------------------

PAUSE_RE = (r"products: the API refused the keys \(HTTP {status}\): fix api_key and brand_key of "
            r"\[connection products\], then reload")


@pytest.mark.parametrize("status", [401, 403])
def test_refused_keys_under_once_exit_1_and_leave_the_files_in_the_spool(optix, daemon, status):
    daemon.write_config([daemon.connection(optix)])
    paths = [daemon.drop_generated("products", f"{n}.ndjson", 10, start=i * 10) for i, n in enumerate("ab")]
    contents = {p.name: p.read_bytes() for p in paths}
    if status == 401:
        optix.configure(api_key="rotated-key")          # the daemon's key is now wrong
    else:
        optix.add_faults({"uuid": UUID1, "status": 403, "count": 100})

    proc = run_once(daemon, 1)

    assert statuses(optix.requests(UUID1)) == [status], "kept sending after the keys were refused"
    assert optix.records(UUID1) == {}
    assert spool_files(daemon, "products") == ["a.ndjson", "b.ndjson"]
    assert {n: (daemon.spool("products") / n).read_bytes() for n in contents} == contents
    assert work_files(daemon, "products") == [] and not failed_dir(daemon, "products").exists()
    assert re.search(PAUSE_RE.format(status=status), daemon.log())
    assert "PAUSED: the API refused the keys" in proc.stdout


def test_file_handed_back_after_401_does_not_reject_its_bad_lines_twice(optix, daemon):
    """The bad line is written to rejected/ when its request is cut; the 401 hands the file back
    and the next run cuts it again: the rejected file must still hold that line once."""
    daemon.write_config([daemon.connection(optix)])
    lines = [gen_ndjson.record(i) for i in range(5)] + ['{"name":"no key"}'] + \
        [gen_ndjson.record(i) for i in range(5, 9)]
    daemon.drop("products", "a.ndjson", lines)
    optix.configure(api_key="rotated-key")

    run_once(daemon, 1)
    assert spool_files(daemon, "products") == ["a.ndjson"]

    optix.configure(api_key=optix.api_key)
    run_once(daemon, 1)     # 1: a line was rejected

    assert optix.records(UUID1) == store(0, 9)
    rej = [json.loads(l) for l in
           (daemon.spool("products") / "rejected" / "a.ndjson.rejected.ndjson").read_text().splitlines()]
    assert [(r["line"], r["record"]) for r in rej] == [(6, '{"name":"no key"}')], rej


def test_refused_key_file_fixed_and_reload_resumes_at_once(optix, daemon):
    # retry_max_seconds = 300 (default): only the reload can bring the data up within the test.
    daemon.write_config([daemon.connection(optix, api_key="wrong-key")])
    daemon.drop_generated("products", "a.ndjson", 300)
    daemon.start()

    daemon.wait_log(PAUSE_RE.format(status=401))
    wait_for(lambda: spool_files(daemon, "products") == ["a.ndjson"] and work_files(daemon, "products") == [],
             "a.ndjson handed back to the spool", daemon)
    assert statuses(optix.requests(UUID1)) == [401]
    assert optix.records(UUID1) == {}

    daemon.write_key("products", "api_key", optix.api_key)
    mark = daemon.mark()
    daemon.reload()

    wait_records(optix, UUID1, store(0, 300), daemon)
    daemon.wait_log(r"configuration reloaded", since=mark)
    daemon.wait_log(r"products: .*trying the keys again", since=mark)
    reqs = optix.requests(UUID1)
    assert statuses(reqs) == [401, 200], "sent while paused, or more than once after the reload"
    assert reqs[1]["keys"] == list(range(300)) and reqs[1]["batch_completed"] is True
    wait_for(lambda: done_files(daemon, "products") == ["a.ndjson"], "a.ndjson archived", daemon)
    assert daemon.stop() == 0


def test_refused_keys_are_tried_again_after_retry_max_seconds(optix, daemon):
    daemon.write_config([daemon.connection(optix, retry_max_seconds=1)])
    daemon.drop_generated("products", "a.ndjson", 100)
    optix.configure(api_key="rotated-key")
    daemon.start()

    daemon.wait_log(PAUSE_RE.format(status=401))
    optix.configure(api_key=optix.api_key)               # the server takes the daemon's key again

    wait_records(optix, UUID1, store(0, 100), daemon, timeout=10)
    daemon.wait_log(r"products: .*trying the keys again")
    reqs = optix.requests(UUID1)
    assert statuses(reqs)[-1] == 200 and set(statuses(reqs)) <= {401, 200}
    auth = [r for r in reqs if r["status"] == 401]
    for a, b in zip(reqs, reqs[1:]):
        assert b["time"] - a["time"] >= 0.9, f"tried again {b['time'] - a['time']:.2f} s after a 401"
    assert len(auth) <= 3
    assert daemon.stop() == 0


def test_401_mid_batch_keeps_the_batch_and_resumes_it_after_reload(optix, daemon):
    """Request 1 acknowledged, request 2 refused: the file is not handed back (part of it is at the
    server, in an open batch); after the reload the same batch goes on at request 2."""
    daemon.write_config([daemon.connection(optix, batch_records=1000)])
    daemon.drop_generated("products", "a.ndjson", 2500)
    optix.add_faults({"uuid": UUID1, "status": 401, "after": 1,
                      "body": {"status": 401, "error": "Unauthorized"}})
    daemon.start()

    daemon.wait_log(PAUSE_RE.format(status=401))
    assert work_files(daemon, "products") != [] and spool_files(daemon, "products") == []
    daemon.reload()

    wait_records(optix, UUID1, store(0, 2500), daemon)
    reqs = optix.requests(UUID1)
    assert statuses(reqs) == [200, 401, 200, 200]
    one_batch(reqs)
    assert [sent_keys(r)[0] for r in reqs] == [0, 1000, 1000, 2000]
    assert daemon.stop() == 0


# --- 413 and 422: split the request ------------------------------------------------------------

def test_401_after_half_of_a_split_request_was_acknowledged_keeps_the_batch(optix, daemon):
    """413 splits 5000 records; the first half is acknowledged (staged in the open batch), then the
    keys are refused. Part of the file is at the server, so it is not handed back: the batch waits
    in the journal and the next run completes that same batch."""
    daemon.write_config([daemon.connection(optix)])
    path = daemon.drop_generated("products", "big.ndjson", 5000)
    optix.configure(max_body=int(path.stat().st_size * 0.6))
    optix.add_faults({"uuid": UUID1, "status": 401, "after": 2})     # 413, 200, then 401

    run_once(daemon, 1)

    reqs = optix.requests(UUID1)
    assert statuses(reqs) == [413, 200, 401]
    batch = reqs[1]["batch_uuid"]
    assert optix.state(UUID1)["open_batches"] == {batch: 2500}
    assert spool_files(daemon, "products") == [], "a file with acknowledged records was handed back"

    run_once(daemon, 0)

    assert optix.records(UUID1) == store(0, 5000)
    reqs = optix.requests(UUID1)
    assert {r["sent"]["batch_uuid"] for r in reqs} == {batch}, "the records went in a new batch"
    assert optix.state(UUID1)["open_batches"] == {}


def test_413_for_a_single_record_rejects_it_with_the_servers_answer(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    lines = [gen_ndjson.record(i) for i in range(10)]
    lines[4] = json.dumps({"id": 4, "blob": "x" * 20000})
    daemon.drop("products", "a.ndjson", lines)
    optix.configure(max_body=8000)

    run_once(daemon, 1)

    expected = store(0, 10)
    del expected["4"]
    assert optix.records(UUID1) == expected
    reqs = optix.requests(UUID1)
    one_batch(reqs)
    assert all(r["bytes"] <= 8000 for r in reqs if r["status"] == 200)
    rej = [json.loads(l) for l in
           (daemon.spool("products") / "rejected" / "a.ndjson.rejected.ndjson").read_text().splitlines()]
    assert [(r["line"], r["record"]) for r in rej] == [(5, lines[4])]
    assert rej[0]["error"].startswith("HTTP 413: ") and "exceeds 8000" in rej[0]["error"]
    assert re.search(r"products: a\.ndjson: line 5 refused by the server: HTTP 413: ", daemon.log())


def test_422_for_every_record_rejects_each_and_leaves_nothing_open(optix, daemon):
    """Nothing of the batch was staged: there is nothing to complete, and a request with an empty
    "data" is never sent."""
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", "a.ndjson", [gen_ndjson.record(i) for i in range(3)])
    optix.add_faults([{"uuid": UUID1, "reject_pk": i, "count": 100} for i in range(3)])

    run_once(daemon, 1)

    assert optix.records(UUID1) == {}
    state = optix.state(UUID1)
    assert state["open_batches"] == {}, "the batch was left open"
    reqs = optix.requests(UUID1)
    assert all(r["status"] == 422 and r["n_records"] > 0 for r in reqs), reqs
    assert len({r["batch_uuid"] for r in reqs}) == 1
    rej = [json.loads(l) for l in
           (daemon.spool("products") / "rejected" / "a.ndjson.rejected.ndjson").read_text().splitlines()]
    assert [r["line"] for r in rej] == [1, 2, 3]
    assert done_files(daemon, "products") == ["a.ndjson"]


def test_413_splits_the_request_until_it_fits_and_no_request_exceeds_the_limit(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    path = daemon.drop_generated("products", "big.ndjson", 5000)
    limit = int(path.stat().st_size * 0.6)       # 5000 records do not fit, 2500 do
    optix.configure(max_body=limit)

    run_once(daemon, 0)

    reqs = optix.requests(UUID1)
    assert statuses(reqs) == [413, 200, 200], [(r["status"], r["n_records"], r["bytes"]) for r in reqs]
    one_batch(reqs)
    assert reqs[0]["bytes"] > limit
    assert all(r["bytes"] <= limit for r in reqs if r["status"] == 200)
    assert [k for r in reqs[1:] for k in r["keys"]] == list(range(5000)), "split out of order"
    assert optix.records(UUID1) == store(0, 5000)
    assert optix.state(UUID1)["open_batches"] == {}
    assert re.search(r"products: big\.ndjson: HTTP 413 for 5000 records: splitting the request", daemon.log())
    assert not (daemon.spool("products") / "rejected").exists()
    assert done_files(daemon, "products") == ["big.ndjson"]


def test_422_for_one_poisoned_record_rejects_it_alone_and_stores_the_other_4999(optix, daemon):
    daemon.write_config([daemon.connection(optix, rate_limit="off")])
    daemon.drop_generated("products", "big.ndjson", 5000)
    body = {"status": 422, "error": "Unprocessable Entity", "message": "record 1234: 'email' is not an address"}
    optix.add_faults({"uuid": UUID1, "reject_pk": 1234, "count": 10**6, "body": body})

    run_once(daemon, 1)     # --once exits 1 when a record was rejected

    expected = store(0, 5000)
    del expected["1234"]
    assert optix.records(UUID1) == expected
    reqs = optix.requests(UUID1)
    one_batch(reqs)
    assert optix.state(UUID1)["open_batches"] == {}
    assert statuses(reqs)[0] == 422 and statuses(reqs)[-1] == 200
    sent = [k for r in reqs if r["status"] == 200 for k in r["keys"]]
    assert sent == [k for k in range(5000) if k != 1234], "records lost, repeated or out of order"
    rej = daemon.spool("products") / "rejected" / "big.ndjson.rejected.ndjson"
    lines = [json.loads(l) for l in rej.read_text().splitlines()]
    assert len(lines) == 1, lines
    assert lines[0]["line"] == 1235
    assert lines[0]["record"] == gen_ndjson.record(1234)
    assert lines[0]["error"].startswith("HTTP 422: ")
    assert json.loads(lines[0]["error"][len("HTTP 422: "):]) == body
    log = daemon.log()
    assert re.search(r"products: big\.ndjson: HTTP 422 for 5000 records: splitting the request", log)
    assert re.search(r"products: big\.ndjson: line 1235 refused by the server: HTTP 422: \{", log)
    assert done_files(daemon, "products") == ["big.ndjson"]


@pytest.mark.parametrize("poisoned", [1234, 3333])
def test_422_bisection_takes_at_most_two_requests_per_halving(optix, daemon, poisoned):
    """Finding one refused record among 5000 takes 13 halvings; each costs at most a refused and an
    accepted request, plus the first: 27. More spends the API key's request budget (50 per 10 s by
    default, shared by the key's connections) on one bad record."""
    daemon.write_config([daemon.connection(optix, rate_limit="off")])
    daemon.drop_generated("products", "big.ndjson", 5000)
    optix.add_faults({"uuid": UUID1, "reject_pk": poisoned, "count": 10**6})

    run_once(daemon, 1)

    expected = store(0, 5000)
    del expected[str(poisoned)]
    assert optix.records(UUID1) == expected
    reqs = optix.requests(UUID1)
    trace = [(r["status"], sent_keys(r)[0], sent_keys(r)[-1] + 1) for r in reqs]
    assert len(reqs) <= 2 * 13 + 1, f"{len(reqs)} requests to find record {poisoned} among 5000: {trace}"


# --- other 4xx: failed/ -------------------------------------------------------------------------

def test_404_mid_batch_fails_the_file_keeps_the_batch_open_and_moving_it_back_retries_anew(optix, daemon):
    daemon.write_config([daemon.connection(optix, batch_records=1000)])
    path = daemon.drop_generated("products", "a.ndjson", 2500)
    content = path.read_bytes()
    body = {"status": 404, "error": "Not Found", "message": f"data connection {UUID1} not found"}
    optix.add_faults({"uuid": UUID1, "status": 404, "after": 1, "body": body})
    daemon.start()

    failed = failed_dir(daemon, "products")
    wait_for(lambda: (failed / "a.ndjson.error.json").exists(), "failed/a.ndjson.error.json", daemon)
    daemon.wait_log(r"products: a\.ndjson: failed for good: the server answered HTTP 404; moved to .*/failed/")
    reqs = optix.requests(UUID1)
    assert statuses(reqs) == [200, 404], "a permanent error was retried"
    first_batch = reqs[0]["batch_uuid"]
    err = json.loads((failed / "a.ndjson.error.json").read_text())
    assert err["status"] == 404
    assert json.loads(err["response"]) == body
    assert err["request"] == 2
    assert err["records_sent"] == 1000
    assert err["batch_uuid"] == first_batch
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", err["time"]), err["time"]
    assert (failed / "a.ndjson").read_bytes() == content
    state = optix.state(UUID1)
    assert state["open_batches"] == {first_batch: 1000}, "the batch was completed with partial data"
    assert state["records"] == {}
    assert spool_files(daemon, "products") == [] and work_files(daemon, "products") == []

    os.rename(failed / "a.ndjson", daemon.spool("products") / "a.ndjson")

    wait_records(optix, UUID1, store(0, 2500), daemon)
    again = optix.requests(UUID1)[2:]
    assert statuses(again) == [200, 200, 200]
    second_batch = one_batch(again)
    assert second_batch != first_batch
    assert [r["keys"][0] for r in again] == [0, 1000, 2000], "not retried from the start"
    assert optix.state(UUID1)["open_batches"] == {first_batch: 1000}
    wait_for(lambda: done_files(daemon, "products") == ["a.ndjson"], "a.ndjson archived", daemon)
    assert daemon.stop() == 0


@pytest.mark.parametrize("status", [400, 415])
def test_other_4xx_fails_the_file_without_retrying(optix, daemon, status):
    daemon.write_config([daemon.connection(optix)])
    path = daemon.drop_generated("products", "a.ndjson", 20)
    content = path.read_bytes()
    optix.add_faults({"uuid": UUID1, "status": status, "body": {"error": f"refused with {status}"}})

    run_once(daemon, 1)

    assert statuses(optix.requests(UUID1)) == [status]
    assert optix.records(UUID1) == {}
    failed = failed_dir(daemon, "products")
    assert (failed / "a.ndjson").read_bytes() == content
    err = json.loads((failed / "a.ndjson.error.json").read_text())
    assert (err["status"], err["request"], err["records_sent"]) == (status, 1, 0)
    assert json.loads(err["response"]) == {"error": f"refused with {status}"}
    assert re.search(rf"products: a\.ndjson: failed for good: the server answered HTTP {status}", daemon.log())


# --- the server is not there ----------------------------------------------------------------------

def test_server_down_at_start_then_up_on_the_same_port(optix, daemon):
    daemon.write_config([daemon.connection(optix, retry_max_seconds=0.5)])
    optix.stop()
    daemon.drop_generated("products", "a.ndjson", 500)
    daemon.start()

    daemon.wait_log(r"products: a\.ndjson: request 1 failed \([^)]*(?i:refused|connect)[^)]*\), retry 2 in")
    optix.start()

    wait_records(optix, UUID1, store(0, 500), daemon)
    reqs = optix.requests(UUID1)
    assert statuses(reqs) == [200]
    one_batch(reqs)
    wait_for(lambda: done_files(daemon, "products") == ["a.ndjson"], "a.ndjson archived", daemon)
    assert daemon.stop() == 0


# --- TLS -------------------------------------------------------------------------------------------

def test_tls_self_signed_is_refused_without_ca_file_and_accepted_with_it(optix_factory, daemon, tls_cert):
    cert, key = tls_cert
    optix = optix_factory(tls_cert=cert, tls_key=key)
    assert optix.url.startswith("https://")
    daemon.write_config([daemon.connection(optix, retry_max_elapsed_seconds=1, retry_max_seconds=0.2)])
    path = daemon.drop_generated("products", "a.ndjson", 100)
    content = path.read_bytes()

    run_once(daemon, 1)

    assert optix.requests(UUID1) == [], "a request got through an unverified certificate"
    lines = retry_lines(daemon.log(), "products", "a.ndjson")
    assert lines, daemon.log()[-3000:]
    assert all(w.startswith("TLS certificate problem: ") for w, _, _ in lines), lines
    failed = failed_dir(daemon, "products")
    err = json.loads((failed / "a.ndjson.error.json").read_text())
    assert err["status"] == 0 and "TLS certificate problem" in err["error"]
    assert (failed / "a.ndjson").read_bytes() == content

    # Trust the server's certificate and hand the file back.
    daemon.write_config([daemon.connection(optix, ca_file=cert)])
    os.rename(failed / "a.ndjson", daemon.spool("products") / "a.ndjson")
    mark = daemon.mark()

    run_once(daemon, 0)

    assert optix.records(UUID1) == store(0, 100)
    assert statuses(optix.requests(UUID1)) == [200]
    assert "TLS" not in daemon.log(mark)


def test_tls_verify_insecure_disable_works_and_warns_at_start(optix_factory, daemon, tls_cert):
    cert, key = tls_cert
    optix = optix_factory(tls_cert=cert, tls_key=key)
    daemon.write_config([daemon.connection(optix, tls_verify_insecure_disable="yes")])
    daemon.drop_generated("products", "a.ndjson", 100)

    run_once(daemon, 0)

    assert optix.records(UUID1) == store(0, 100)
    assert re.search(r"^warning: products: TLS certificate verification is DISABLED", daemon.log(), re.MULTILINE)


# --- one connection's trouble does not hold up another --------------------------------------------

def test_persistent_503_on_one_connection_does_not_stall_another(optix, daemon):
    daemon.write_config([daemon.connection(optix, name="products", uuid=UUID1, retry_max_seconds=0.5),
                         daemon.connection(optix, name="orders", uuid=UUID2)])
    optix.add_faults({"uuid": UUID1, "status": 503, "count": 10**6})
    daemon.drop_generated("products", "p.ndjson", 200)
    daemon.start()
    daemon.wait_log(r"products: p\.ndjson: request 1 failed \(HTTP 503\), retry 2 in")
    daemon.drop_generated("orders", "o.ndjson", 300, value="o")

    wait_records(optix, UUID2, store(0, 300, "o"), daemon)
    # Still retrying, nothing of products stored.
    assert optix.records(UUID1) == {}
    n = len(optix.requests(UUID1))
    wait_for(lambda: len(optix.requests(UUID1)) > n, "products to keep retrying", daemon)
    assert set(statuses(optix.requests(UUID1))) == {503}
    wait_for(lambda: done_files(daemon, "orders") == ["o.ndjson"], "o.ndjson archived", daemon)

    optix.reset()           # the fault ends (reset forgets the orders store too: checked above)
    wait_records(optix, UUID1, store(0, 200), daemon)
    assert len(retry_lines(daemon.log(), "products", "p.ndjson")) >= 2
    assert daemon.stop() == 0


def test_hung_request_on_one_connection_does_not_stall_another(optix, daemon):
    daemon.write_config([daemon.connection(optix, name="products", uuid=UUID1),
                         daemon.connection(optix, name="orders", uuid=UUID2)])
    optix.add_faults({"uuid": UUID1, "hold": True})  # products' request hangs until released
    daemon.drop_generated("products", "p.ndjson", 200)
    daemon.start()
    wait_for(lambda: optix.held() == 1, "products' request in flight, hung", daemon)
    daemon.drop_generated("orders", "o.ndjson", 300, value="o")

    wait_records(optix, UUID2, store(0, 300, "o"), daemon)
    assert optix.held() == 1 and optix.records(UUID1) == {}, "orders went up only once products' request ended"
    optix.release()
    wait_records(optix, UUID1, store(0, 200), daemon)
    assert daemon.stop() == 0


# --- the fake's reject_pk fault (added for these tests) ---------------------------------------------

def test_fake_reject_pk_refuses_only_requests_holding_that_key(optix):
    optix.add_faults({"uuid": UUID1, "reject_pk": 7, "count": 2, "body": {"error": "bad 7"}})
    assert optix.upload(UUID1, [{"id": 1}, {"id": 2}])[0] == 200
    assert optix.upload(UUID2, [{"id": 7}])[0] == 200                  # other connection
    assert optix.upload(UUID1, [{"id": "7"}])[0] == 200                 # "7" is not 7
    status, _, body = optix.upload(UUID1, [{"id": 6}, {"id": 7}])
    assert (status, json.loads(body)) == (422, {"error": "bad 7"})
    status, _, body = optix.upload(UUID1, [{"id": 7}])
    assert status == 422
    assert optix.pending_faults() == []                                  # count used up
    assert optix.upload(UUID1, [{"id": 7}])[0] == 200
    reqs = optix.requests(UUID1)
    assert [r["status"] for r in reqs] == [200, 200, 422, 422, 200]
    assert reqs[2]["sent"]["keys"] == [6, 7]


# --- SIGTERM while a batch waits ---------------------------------------------------------------

@pytest.mark.parametrize("wait", ["retry", "rate", "pause"])
def test_sigterm_while_the_batch_waits_leaves_it_to_the_journal_and_the_restart_finishes_it(optix, daemon, wait):
    """Request 1 acknowledged, request 2 waits (a retry, the API key's budget, refused keys): SIGTERM
    ends the wait at once (no drain timeout), the batch stays open in the journal, and the next
    start sends request 2 of the same batch, nothing twice. The next bodies may be cut ahead
    during the wait: the stop must take them back before the file is closed (ASan, TSan)."""
    keys = {"batch_records": 1000, "retry_initial_seconds": 300, "retry_max_seconds": 300}
    if wait == "rate":
        keys["rate_limit"] = "1/300s"
    daemon.write_config([daemon.connection(optix, **keys)], drain_timeout_seconds=120)
    daemon.drop_generated("products", "a.ndjson", 3000)
    if wait == "retry":
        optix.add_faults({"uuid": UUID1, "status": 503, "after": 1})
    elif wait == "pause":
        optix.add_faults({"uuid": UUID1, "status": 401, "after": 1,
                          "body": {"status": 401, "error": "Unauthorized"}})
    daemon.start()

    daemon.wait_log({"retry": r"products: a\.ndjson: request 2 failed \(HTTP 503\), retry 1 in",
                     "rate": r"request idle -> rate wait",
                     "pause": PAUSE_RE.format(status=401)}[wait])
    assert [sent_keys(r)[0] for r in optix.requests(UUID1) if r["status"] == 200] == [0]
    mark = daemon.mark()
    assert daemon.stop(timeout=60) == 0
    assert "drain timeout reached" not in daemon.log(since=mark)
    assert work_files(daemon, "products") != [] and spool_files(daemon, "products") == []

    assert optix.pending_faults() == []
    daemon.write_config([daemon.connection(optix, batch_records=1000)])
    mark = daemon.mark()
    daemon.start()
    wait_records(optix, UUID1, store(0, 3000), daemon)
    daemon.wait_log(r"resuming batch .* at request 2", since=mark)
    ok = [r for r in optix.requests(UUID1) if r["status"] == 200]
    assert [sent_keys(r)[0] for r in ok] == [0, 1000, 2000]
    one_batch(ok)
    wait_for(lambda: done_files(daemon, "products") == ["a.ndjson"], "a.ndjson archived", daemon)
    assert daemon.stop() == 0


# --- durability steps that fail ------------------------------------------------------------------

SHIM = Path(__file__).resolve().parent.parent / "build" / "tests" / "libfailfsync.so"


def fsync_failing(directory_suffix):
    if not SHIM.exists():
        pytest.skip(f"{SHIM} not built (meson builds it with the tests)")
    # Under AddressSanitizer the shim loads before ASan's runtime, which ASan refuses unless told.
    asan = ":".join(o for o in (os.environ.get("ASAN_OPTIONS"), "verify_asan_link_order=0") if o)
    return {"LD_PRELOAD": str(SHIM), "DCSYNCD_FAIL_FSYNC_DIR": directory_suffix, "ASAN_OPTIONS": asan}


def test_an_archive_that_cannot_be_made_durable_is_not_journaled_archived(optix, daemon):
    """fsync of done/<conn>/ fails: the batch stays COMPLETED in the journal (ARCHIVED would name
    a move a crash may undo), said so; the next start archives it again, and nothing is sent twice."""
    daemon.write_config([daemon.connection(optix)])
    daemon.drop_generated("products", "a.ndjson", 300)
    proc = daemon.run_once(env=fsync_failing("/done/products"))
    assert optix.records(UUID1) == store(0, 300)
    assert "a.ndjson: uploaded, but cannot make its archiving durable: Input/output error" in daemon.log(), \
        daemon.log()[-3000:]
    sent = len(optix.requests(UUID1))
    proc = daemon.run_once()
    assert proc.returncode == 0, daemon.log()[-3000:]
    assert "was completed before the restart" in daemon.log() or "resuming batch" not in daemon.log()
    assert len(optix.requests(UUID1)) == sent, "a completed batch was sent again"
    assert (daemon.state_dir / "done" / "products" / "a.ndjson").exists()


def test_a_failed_file_whose_move_cannot_be_made_durable_keeps_its_batch_open(optix, daemon):
    """fsync of failed/ fails after a 4xx: FAILED is not journaled (it would name a move a crash
    may undo); the log says the journal keeps the batch open."""
    optix.add_faults({"uuid": UUID1, "status": 404})
    daemon.write_config([daemon.connection(optix)])
    daemon.drop_generated("products", "a.ndjson", 10)
    daemon.run_once(env=fsync_failing("/products/failed"))
    log = daemon.log()
    assert "a.ndjson: cannot make the move to failed/ durable: Input/output error; the journal keeps the batch open" \
        in log, log[-3000:]
    assert (daemon.spool("products") / "failed" / "a.ndjson").exists()


def test_a_batch_whose_move_into_work_cannot_be_made_durable_is_never_opened(optix, daemon):
    """fsync of .work/ fails after the file was taken: no batch names a move a crash may undo, so
    nothing is journaled or sent; the file goes to failed/ saying why."""
    daemon.write_config([daemon.connection(optix)])
    daemon.drop_generated("products", "a.ndjson", 10)
    proc = daemon.run_once(env=fsync_failing("/products/.work"))
    assert proc.returncode == 1, daemon.log()[-3000:]
    assert optix.requests(UUID1) == []
    moved, err = (daemon.spool("products") / "failed" / "a.ndjson").exists(), \
        json.loads((daemon.spool("products") / "failed" / "a.ndjson.error.json").read_text())
    assert moved and err["error"] == "cannot make its move into .work/ durable: Input/output error", err
    assert "a.ndjson: failed for good: cannot make its move into .work/ durable" in daemon.log(), daemon.log()[-3000:]


def test_drop_says_so_when_its_rename_cannot_be_made_durable(optix, daemon, tmp_path):
    """The directory's fsync after the rename fails: the exporter is told, not "done"."""
    daemon.write_config([daemon.connection(optix)])
    assert daemon.run_once().returncode == 0        # makes the connection's directory
    src = tmp_path / "src.ndjson"
    src.write_text('{"id":1}\n')
    src.chmod(0o644)
    tmp_path.chmod(0o755)
    out = subprocess.run(daemon.command("drop", "products", str(src)), capture_output=True, text=True, timeout=30,
                         env=daemon.env(fsync_failing("/products")), stdin=subprocess.DEVNULL)
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "cannot be written to the disk: Input/output error; drop it again to be sure" in out.stderr


# --- a connection directory the daemon cannot use -------------------------------------------------

def unusable_products(daemon, optix):
    """products' directory made by someone else, 0700: the daemon (unprivileged) cannot enter it.
    A file waits in it; orders is healthy."""
    if not daemon.priv.unprivileged:
        pytest.skip("root enters any directory")
    daemon.write_config([daemon.connection(optix, name="products", uuid=UUID1),
                         daemon.connection(optix, name="orders", uuid=UUID2)])
    products = daemon.spool("products")
    daemon.drop_generated("products", "p.ndjson", 20)
    os.chown(products, 0, 0)
    os.chmod(products, 0o700)
    return products


def test_a_connection_directory_that_cannot_be_used_at_start_waits_alone_and_is_taken_up(optix, daemon):
    """An environment problem, not bad configuration: the daemon starts, the other connection
    uploads, and the directory is used once it can be (tried every few seconds), loudly."""
    products = unusable_products(daemon, optix)
    daemon.drop_generated("orders", "o.ndjson", 30, value="o")
    daemon.start()
    daemon.wait_log(r"products: .*/products cannot be used \(Permission denied\): trying every 5 s; the other "
                    r"connections go on")
    wait_records(optix, UUID2, store(0, 30, "o"), daemon)
    assert optix.records(UUID1) == {}
    daemon.priv.give_to_daemon(products, 0o2770)
    daemon.wait_log(r"products: .*/products can be used now: watching it", timeout=WAIT)
    wait_records(optix, UUID1, store(0, 20), daemon)
    assert daemon.stop() == 0


def test_once_with_a_connection_directory_that_cannot_be_used_sends_the_others_and_exits_1(optix, daemon):
    unusable_products(daemon, optix)
    daemon.drop_generated("orders", "o.ndjson", 30, value="o")
    proc = run_once(daemon, 1)
    assert "products: 0 file(s) done" in proc.stdout and "WAITING: its directory cannot be used" in proc.stdout
    assert optix.records(UUID2) == store(0, 30, "o") and optix.records(UUID1) == {}
