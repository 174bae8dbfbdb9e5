"""The run history: one entry per file (or gathered group) that ends, `dcsyncd history` and the
last entry in `status`; bounded, crash-safe (a torn entry never shown, never hiding the ones before
it, an end replayed after a crash recorded once), kept across restarts and reloads.

Run with:  DCSYNCD=build/src/dcsyncd /usr/bin/python3 -m pytest -q tests/test_history.py

The commands run as the daemon's user (the harness's unprivileged mode by default). No test sleeps
to synchronise: they wait for the log, the fake's state or the history itself, with timeouts.
"""

import json
import os
import re
import subprocess

import pytest

import gen_ndjson
from harness import UUID1, UUID2, wait_for

TIMEOUT = 30


def as_daemon_user(daemon, *args):
    return subprocess.run(daemon.command(*args), capture_output=True, text=True, timeout=TIMEOUT,
                          env=daemon.env(), stdin=subprocess.DEVNULL)


def history(daemon, *args):
    """`dcsyncd history --json ARGS`: the entries, newest first."""
    proc = as_daemon_user(daemon, "history", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def history_file(daemon, conn="products"):
    return daemon.state_dir / "history" / f"{conn}.history"


def run_once(daemon, expect, env=None):
    proc = daemon.run_once(env=env)
    assert proc.returncode == expect, f"exit {proc.returncode}, want {expect}\nlog tail:\n{daemon.log()[-3000:]}"
    return proc


def batch_uuids(optix, uuid=UUID1):
    return [r["batch_uuid"] for r in optix.requests(uuid) if r["status"] == 200]


def crashpoints_built(daemon):
    return b"DCSYNCD_CRASH_AT" in daemon.binary.read_bytes()


# --- outcomes ------------------------------------------------------------------------------------

def test_an_archived_file_gets_one_entry_with_its_counts(daemon, optix):
    daemon.write_config([daemon.connection(optix, batch_records=4)])
    path = daemon.drop("products", "a.ndjson", [gen_ndjson.record(i) for i in range(10)] + ["{broken"])
    size = path.stat().st_size

    run_once(daemon, 1)     # 1: a line was rejected

    (e,) = history(daemon)
    assert e["connection"] == "products" and e["outcome"] == "archived" and e["reason"] == ""
    assert e["names"] == ["a.ndjson"] and e["files"] == 1
    assert e["records_sent"] == 10 and e["records_unchanged"] == 0 and e["records_rejected"] == 1
    assert e["requests"] == 3 and e["retries"] == 0 and e["http_status"] is None
    assert e["bytes_read"] == size
    assert set(batch_uuids(optix)) == {e["batch_uuid"]}
    assert 0 < e["started"] <= e["finished"]


@pytest.mark.parametrize("status", [404, 400])
def test_a_file_failed_by_the_server_gets_a_failed_entry_with_the_status(daemon, optix, status):
    daemon.write_config([daemon.connection(optix)])
    optix.add_faults({"uuid": UUID1, "status": status, "count": 1})
    daemon.drop_generated("products", "f.ndjson", 5)

    run_once(daemon, 1)

    (e,) = history(daemon)
    assert e["outcome"] == "failed" and e["http_status"] == status and e["names"] == ["f.ndjson"]
    assert e["records_sent"] == 0 and e["requests"] == 1 and e["reason"]
    assert (daemon.spool() / "failed" / "f.ndjson").exists()


def test_retries_are_counted_in_the_entry(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    optix.add_faults({"uuid": UUID1, "status": 503, "count": 2})
    daemon.drop_generated("products", "r.ndjson", 5)

    run_once(daemon, 0)

    (e,) = history(daemon)
    assert e["outcome"] == "archived" and e["retries"] == 2 and e["requests"] == 3


def test_files_handed_back_after_refused_keys_get_a_handed_back_entry(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    daemon.drop_generated("products", "k.ndjson", 5)
    optix.configure(api_key="rotated-key")

    run_once(daemon, 1)

    (e,) = history(daemon)
    assert e["outcome"] == "handed back" and e["http_status"] == 401 and e["names"] == ["k.ndjson"]
    assert e["records_sent"] == 0 and "refused the keys" in e["reason"]
    assert (daemon.spool() / "k.ndjson").exists()


def test_small_files_gathered_into_one_batch_get_one_entry_naming_each(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    names = [f"s{i}.ndjson" for i in range(3)]
    for i, n in enumerate(names):
        daemon.drop_generated("products", n, 4, start=i * 10)

    run_once(daemon, 0)

    (e,) = history(daemon)
    assert e["files"] == 3 and sorted(e["names"]) == names and e["records_sent"] == 12 and e["requests"] == 1
    text = as_daemon_user(daemon, "history").stdout.splitlines()
    assert len(text) == 1 and "archived 3 files (" in text[0]


# --- bound, damage, crashes ------------------------------------------------------------------------

def test_the_history_keeps_the_last_history_entries_of_a_connection(daemon, optix):
    daemon.write_config([daemon.connection(optix, history_entries=3)])
    for i in range(8):
        daemon.drop_generated("products", f"n{i}.ndjson", 2, start=i * 10)
        run_once(daemon, 0)

    entries = history(daemon)
    assert [e["names"] for e in entries] == [["n7.ndjson"], ["n6.ndjson"], ["n5.ndjson"]]
    # Never more than twice the bound on disk: the file is shortened to the bound as it gets there.
    assert len(history_file(daemon).read_bytes().splitlines()) < 6


def three_entries(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    for i in range(3):
        daemon.drop_generated("products", f"t{i}.ndjson", 2, start=i * 10)
        run_once(daemon, 0)
    return history_file(daemon).read_bytes()


@pytest.mark.parametrize("cut", [1, 9, 40, -2, -1])
def test_a_torn_last_entry_is_not_shown_and_the_earlier_ones_are(daemon, optix, cut):
    data = three_entries(daemon, optix)
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    torn = data[:last + cut] if cut > 0 else data[:len(data) + cut]
    assert last < len(torn) < len(data)
    history_file(daemon).write_bytes(torn)

    assert [e["names"] for e in history(daemon)] == [["t1.ndjson"], ["t0.ndjson"]]

    # The daemon cuts the torn tail before it appends: the next entry is whole and readable.
    daemon.drop_generated("products", "t3.ndjson", 2, start=90)
    run_once(daemon, 0)
    assert [e["names"] for e in history(daemon)] == [["t3.ndjson"], ["t1.ndjson"], ["t0.ndjson"]]
    assert re.search(r"products: the run history .* ends in an entry cut short \(\d+ bytes\): cut off", daemon.log())


def test_a_damaged_entry_in_the_middle_is_left_out_and_said_so(daemon, optix):
    data = bytearray(three_entries(daemon, optix))
    at = data.find(b"t1.ndjson")
    data[at] = ord("T")             # same length, the CRC no longer checks out
    history_file(daemon).write_bytes(bytes(data))

    proc = as_daemon_user(daemon, "history", "--json")
    assert proc.returncode == 0
    assert [json.loads(line)["names"] for line in proc.stdout.splitlines()] == [["t2.ndjson"], ["t0.ndjson"]]
    assert "products: 1 entry of the run history does not check out: left out" in proc.stderr


@pytest.mark.parametrize("point", ["after-archive", "after-history"])
def test_an_end_replayed_after_a_crash_is_recorded_once(daemon, optix, point):
    """Killed after the archive (before the history entry) or after the entry (before the journal
    says ARCHIVED): the restart finishes the batch again, and the history holds it once."""
    if not crashpoints_built(daemon):
        pytest.skip("needs a build with -Dcrashpoints=true")
    daemon.write_config([daemon.connection(optix)])
    daemon.drop_generated("products", "c.ndjson", 5)
    proc = daemon.run_once(env={"DCSYNCD_CRASH_AT": point})
    assert proc.returncode == -9, f"exit {proc.returncode}: the crash point {point} was not reached"

    run_once(daemon, 0)

    entries = history(daemon)
    assert [(e["outcome"], e["names"]) for e in entries] == [("archived", ["c.ndjson"])], entries
    assert entries[0]["batch_uuid"] in batch_uuids(optix) and entries[0]["records_sent"] == 5


def test_the_history_survives_a_reload_and_a_restart(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    daemon.start()
    daemon.drop_generated("products", "h0.ndjson", 2)
    wait_for(lambda: len(history(daemon)) == 1, "the first entry", daemon)
    daemon.write_config([daemon.connection(optix, history_entries=5)])
    mark = daemon.mark()
    daemon.reload()
    daemon.wait_log(r"configuration reloaded", since=mark)
    daemon.drop_generated("products", "h1.ndjson", 2, start=10)
    wait_for(lambda: len(history(daemon)) == 2, "the entry after the reload", daemon)
    assert daemon.stop() == 0
    daemon.start()
    daemon.drop_generated("products", "h2.ndjson", 2, start=20)
    wait_for(lambda: len(history(daemon)) == 3, "the entry after the restart", daemon)
    assert daemon.stop() == 0

    assert [e["names"] for e in history(daemon)] == [["h2.ndjson"], ["h1.ndjson"], ["h0.ndjson"]]


# --- the command ---------------------------------------------------------------------------------

def test_history_limit_and_connection_select_the_newest_entries(daemon, optix):
    daemon.write_config([daemon.connection(optix), daemon.connection(optix, name="orders", uuid=UUID2)])
    for i, conn in enumerate(["products", "orders", "products", "orders"]):
        daemon.drop_generated(conn, f"{conn}-{i}.ndjson", 2, start=i * 10)
        run_once(daemon, 0)

    assert [e["names"][0] for e in history(daemon)] == ["orders-3.ndjson", "products-2.ndjson",
                                                         "orders-1.ndjson", "products-0.ndjson"]
    assert [e["names"][0] for e in history(daemon, "--limit", "2")] == ["orders-3.ndjson", "products-2.ndjson"]
    assert [e["names"][0] for e in history(daemon, "products", "--limit", "1")] == ["products-2.ndjson"]
    text = as_daemon_user(daemon, "history", "orders")
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert len(lines) == 2 and all(" orders archived orders-" in line for line in lines)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC orders archived orders-3\.ndjson: 2 sent, 0 unchanged, "
                        r"0 rejected; 1 request, 0 retries; \d+ bytes read; \d+\.\d\d s; batch [0-9a-f-]{36}", lines[0])


@pytest.mark.parametrize("args", [["--limit", "0"], ["--limit", "x"], ["--limit"], ["a", "b"], ["--bogus"]])
def test_history_with_bad_arguments_exits_2(daemon, optix, args):
    daemon.write_config([daemon.connection(optix)])
    assert as_daemon_user(daemon, "history", *args).returncode == 2


def test_history_of_an_unknown_connection_exits_1_and_an_empty_one_0(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    proc = as_daemon_user(daemon, "history", "nosuch")
    assert proc.returncode == 1 and "no connection 'nosuch'" in proc.stderr
    proc = as_daemon_user(daemon, "history")
    assert proc.returncode == 0 and proc.stdout == "" and "no run history yet" in proc.stderr


def test_a_hostile_file_name_is_printed_escaped(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    name = "evil\x1b[31m\nred.ndjson"
    daemon.drop("products", name, [gen_ndjson.record(1)])
    run_once(daemon, 0)

    text = as_daemon_user(daemon, "history")
    assert text.returncode == 0
    assert "\x1b" not in text.stdout and len(text.stdout.splitlines()) == 1
    assert "evil\\x1b[31m\\x0ared.ndjson" in text.stdout
    (e,) = history(daemon)
    assert e["names"] == [name]
    status = as_daemon_user(daemon, "status").stdout
    assert "\x1b" not in status and "evil\\x1b[31m\\x0ared.ndjson" in status


def test_status_shows_each_connections_last_entry(daemon, optix):
    daemon.write_config([daemon.connection(optix), daemon.connection(optix, name="orders", uuid=UUID2)])
    daemon.drop_generated("products", "p0.ndjson", 2)
    run_once(daemon, 0)
    optix.add_faults({"uuid": UUID1, "status": 404, "count": 1})
    daemon.drop_generated("products", "p1.ndjson", 2, start=10)
    run_once(daemon, 1)

    doc = json.loads(as_daemon_user(daemon, "status", "--json").stdout)
    products, orders = doc["connections"]
    assert products["last_run"] == history(daemon, "products", "--limit", "1")[0]
    assert products["last_run"]["outcome"] == "failed" and products["last_run"]["names"] == ["p1.ndjson"]
    assert orders["last_run"] is None
    text = as_daemon_user(daemon, "status").stdout
    (line,) = [ln for ln in text.splitlines() if ln.startswith("  last run:")]
    assert line == "  last run:     " + as_daemon_user(daemon, "history", "products", "--limit", "1").stdout.strip()
    assert " products failed p1.ndjson: " in line and "; HTTP 404" in line
