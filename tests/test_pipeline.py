"""End-to-end pipeline of dcsyncd against the fake Opti-X server: spool file in, exact records out.

Run with:  DCSYNCD=build/src/dcsyncd /usr/bin/python3 -m pytest -q tests/test_pipeline.py

Every test ends by comparing what the fake server stores with what the spool files say: parsed
records by primary key, or (byte-exactness) the server's raw view / the request bodies on the wire.
No test sleeps to synchronise: they wait on the server's state or the daemon's log, with timeouts.
"""

import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import gen_ndjson
from fakeoptix import loads_raw, pk_key
from harness import UUID1, UUID2, Daemon, Privileges, gen_lines, gen_store, wait_for

WAIT = 30.0     # generous bound for anything the daemon does with a few small files


# --- helpers -----------------------------------------------------------------------------------

def lines_of(records):
    """NDJSON bytes of records given as JSON text or dicts."""
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def store_of_lines(lines):
    """{pk_json: parsed record} of NDJSON text lines, as the fake keys them (1 and "1" differ)."""
    out = {}
    for line in lines:
        rec = json.loads(line)
        out[json.dumps(rec["id"])] = rec
    return out


def raw_store_of_lines(lines):
    """{pk_text: the line itself}: what state(raw=True) must show for canonical lines."""
    return {pk_key(loads_raw(line)["id"]): line for line in lines}


def set_mtime(path, epoch_ns):
    os.utime(path, ns=(epoch_ns, epoch_ns))


def summary_line(stdout, conn):
    m = re.search(rf"^{re.escape(conn)}: .*$", stdout, re.MULTILINE)
    assert m, f"no summary line for {conn} in stdout:\n{stdout}"
    return m.group(0)


def summary_counts(stdout, conn):
    """(done, failed, sent, rejected, requests, retries) from the --once summary line."""
    line = summary_line(stdout, conn)
    m = re.match(rf"^{re.escape(conn)}: (\d+) file\(s\) done, (\d+) failed, (\d+) records sent, "
                 rf"(\d+) rejected, (\d+) requests, (\d+) retries", line)
    assert m, f"summary line not in the documented form: {line!r}"
    return tuple(int(g) for g in m.groups())


def batches(requests):
    """{batch_uuid: [requests in arrival order]} of successful upload requests."""
    out = {}
    for r in requests:
        if r["status"] == 200:
            out.setdefault(r["batch_uuid"], []).append(r)
    return out


def assert_well_formed_batch(reqs):
    """One batch: batch_completed false on every request but the last, true on the last."""
    flags = [r["batch_completed"] for r in reqs]
    assert flags == [False] * (len(reqs) - 1) + [True], f"batch_completed flags {flags}"


def spool_leftovers(daemon, conn):
    """Eligible files still in the spool or in .work/ (both must be empty after a clean run)."""
    spool = daemon.spool(conn)
    left = [p.name for p in spool.iterdir() if p.is_file() and not p.name.startswith(".")]
    work = spool / ".work"
    if work.exists():
        left += [f".work/{p.name}" for p in work.iterdir()]
    return sorted(left)


def wait_done(daemon, conn, *names, timeout=WAIT):
    """Wait until each file is archived in <state_dir>/done/<conn>/ (after_upload=archive): the
    daemon's own word that the file's batch is complete at the server."""
    done = daemon.state_dir / "done" / conn
    wait_for(lambda: all((done / n).exists() for n in names), what=f"{list(names)} in {done}",
             daemon=daemon, timeout=timeout)


def run_once_ok(daemon, expect_status=0):
    proc = daemon.run_once()
    assert proc.returncode == expect_status, (
        f"exit {proc.returncode}, want {expect_status}\nstdout:\n{proc.stdout}\nlog:\n{daemon.log()[-4000:]}")
    return proc


class CaptureServer:
    """A minimal Opti-X stand-in that keeps every request body exactly as received and answers 200.
    The fake server stores parsed records; this one proves what went over the wire, byte for byte."""

    def __init__(self):
        self.bodies = []
        self.lock = threading.Lock()
        capture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with capture.lock:
                    capture.bodies.append(body)
                out = b'{"status":"ok"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/data-connections/v1"

    def connection(self, name="products", uuid=UUID1, **keys):
        conn = {"name": name, "uuid": uuid, "base_url": self.url, "api_key": "k", "brand_key": "b"}
        conn.update(keys)
        return conn

    def requests(self):
        with self.lock:
            return list(self.bodies)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def capture():
    c = CaptureServer()
    yield c
    c.stop()


# --- batching ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, batch_records, sizes", [
    (12345, 5000, [5000, 5000, 2345]),
    (10, 5, [5, 5]),
], ids=["12345-records-in-requests-5000-5000-2345", "exact-multiple-sends-no-empty-trailing-request"])
def test_a_file_goes_as_one_batch_of_requests_cut_at_batch_records(optix, daemon, n, batch_records, sizes):
    daemon.write_config([daemon.connection(optix, batch_records=batch_records)])
    daemon.drop_generated("products", "big.ndjson", n)

    proc = run_once_ok(daemon)

    reqs = optix.requests(UUID1)
    assert [r["status"] for r in reqs] == [200] * len(sizes)
    assert [r["n_records"] for r in reqs] == sizes
    assert len({r["batch_uuid"] for r in reqs}) == 1
    assert [r["batch_completed"] for r in reqs] == [False] * (len(sizes) - 1) + [True]
    # In file order: the requests are consecutive slices of the file.
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    assert [r["keys"] for r in reqs] == [list(range(s, s + k)) for s, k in zip(starts, sizes)]
    state = optix.state(UUID1)
    assert state["open_batches"] == {}
    assert state["records"] == gen_store(0, n)
    assert (daemon.state_dir / "done" / "products" / "big.ndjson").is_file()
    assert spool_leftovers(daemon, "products") == []
    assert summary_counts(proc.stdout, "products") == (1, 0, n, 0, len(sizes), 0)
    assert re.search(rf"^info: products: big\.ndjson: {n} records sent, 0 rejected, {len(sizes)} requests, [\d.]+ s$",
                     daemon.log(), re.MULTILINE)


def test_small_batch_bytes_cuts_requests_by_size_and_none_exceeds_it(optix, daemon):
    daemon.write_config([daemon.connection(optix, batch_bytes=4096, max_record_bytes=1024)])
    lines = gen_lines(0, 120)
    path = daemon.drop("products", "sized.ndjson", lines)
    assert path.stat().st_size > 3 * 4096   # so the cap has to cut several times

    run_once_ok(daemon)

    reqs = optix.requests(UUID1)
    assert len(reqs) >= 4
    assert all(r["status"] == 200 for r in reqs)
    assert max(r["bytes"] for r in reqs) <= 4096, [r["bytes"] for r in reqs]
    assert len({r["batch_uuid"] for r in reqs}) == 1
    assert_well_formed_batch(reqs)
    assert [k for r in reqs for k in r["keys"]] == list(range(120))
    assert optix.records(UUID1) == gen_store(0, 120)


def test_small_files_queued_together_share_one_request_and_keep_their_own_line_numbers(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    base = time.time_ns() - 100 * 10**9
    b_lines = [gen_ndjson.record(10), '{"name":"no key"}', gen_ndjson.record(11), "[1]", gen_ndjson.record(12)]
    for i, (name, lines) in enumerate((("a.ndjson", gen_lines(0, 10)), ("b.ndjson", b_lines),
                                       ("c.ndjson", gen_lines(20, 10)))):
        set_mtime(daemon.drop("products", name, lines), base + i * 10**9)

    proc = run_once_ok(daemon, expect_status=1)     # b.ndjson has rejected lines

    reqs = optix.requests(UUID1)
    assert len(reqs) == 1, f"{len(reqs)} requests for three small files"
    assert reqs[0]["batch_completed"] is True
    assert reqs[0]["keys"] == list(range(0, 13)) + list(range(20, 30))
    assert optix.records(UUID1) == {**gen_store(0, 13), **gen_store(20, 10)}
    rejected_dir = daemon.spool("products") / "rejected"
    assert sorted(p.name for p in rejected_dir.iterdir()) == ["b.ndjson.rejected.ndjson"]
    rejected = [json.loads(l) for l in (rejected_dir / "b.ndjson.rejected.ndjson").read_text().splitlines()]
    assert [(r["line"], r["record"]) for r in rejected] == [(2, '{"name":"no key"}'), (4, "[1]")]
    assert sorted(p.name for p in (daemon.state_dir / "done" / "products").iterdir()) == \
        ["a.ndjson", "b.ndjson", "c.ndjson"]
    assert summary_counts(proc.stdout, "products") == (3, 0, 23, 2, 1, 0)


def test_a_file_larger_than_one_request_keeps_a_batch_of_its_own(optix, daemon):
    daemon.write_config([daemon.connection(optix, batch_records=100)])
    base = time.time_ns() - 100 * 10**9
    for i, (name, start, n) in enumerate((("a.ndjson", 0, 10), ("b.ndjson", 1000, 250), ("c.ndjson", 2000, 10))):
        set_mtime(daemon.drop("products", name, gen_lines(start, n)), base + i * 10**9)

    run_once_ok(daemon)

    assert optix.records(UUID1) == {**gen_store(0, 10), **gen_store(1000, 250), **gen_store(2000, 10)}
    big = set(range(1000, 1250))
    for reqs in batches(optix.requests(UUID1)).values():
        assert_well_formed_batch(reqs)
        keys = [k for r in reqs for k in r["keys"]]
        if set(keys) & big:
            assert keys == sorted(big), "the large file shares its batch or lost records"
            assert [r["n_records"] for r in reqs] == [100, 100, 50]
    assert _file_order(optix, {"a": 0, "b": 1000, "c": 2000}) == ["a", "b", "c"]


# --- connections -----------------------------------------------------------------------------------

def test_two_connections_upload_their_own_files_to_their_own_stores(optix, daemon):
    daemon.write_config([daemon.connection(optix, name="products", uuid=UUID1, batch_records=1000),
                         daemon.connection(optix, name="users", uuid=UUID2, batch_records=1000)])
    # Overlapping keys on purpose: a record that crossed over would change the other store.
    daemon.drop_generated("products", "p1.ndjson", 3000, 0, value="p1")
    daemon.drop_generated("products", "p2.ndjson", 3000, 3000, value="p2")
    daemon.drop_generated("users", "u1.ndjson", 2500, 0, value="u1")
    daemon.drop_generated("users", "u2.ndjson", 2500, 1000, value="u2")

    proc = run_once_ok(daemon)

    assert optix.records(UUID1) == {**gen_store(0, 3000, "p1"), **gen_store(3000, 3000, "p2")}
    assert optix.records(UUID2) == {**gen_store(0, 2500, "u1"), **gen_store(1000, 2500, "u2")}
    for uuid, n_files in ((UUID1, 2), (UUID2, 2)):
        bs = batches(optix.requests(uuid))
        assert len(bs) == n_files
        for reqs in bs.values():
            assert_well_formed_batch(reqs)
    all_reqs = optix.requests()
    assert {r["uuid"] for r in all_reqs} == {UUID1, UUID2}
    assert all(r["status"] == 200 for r in all_reqs)
    assert summary_counts(proc.stdout, "products") == (2, 0, 6000, 0, 6, 0)
    assert summary_counts(proc.stdout, "users") == (2, 0, 5000, 0, 6, 0)
    assert re.search(r"^total: 11000 records", proc.stdout, re.MULTILINE)
    for conn in ("products", "users"):
        assert spool_leftovers(daemon, conn) == []


# --- rejected lines ------------------------------------------------------------------------------------

BAD_FILE = [
    # (line bytes without newline, reason the line is bad or None if it is a good record)
    (b'{"id":1,"name":"first"}', None),
    (b'{"id":2,"name":', "invalid JSON"),
    (b'{"name":"no key"}', "missing primary key"),
    (b'{"id":null,"name":"null key"}', "primary key null"),
    (b'{"id":{"a":1},"name":"object key"}', "primary key is an object"),
    (b'[{"id":6}]', "array line"),
    (b'{"id":7}{"id":8}', "two objects on one line"),
    (b'{"id":9,"name":"\xff\xfe"}', "invalid UTF-8"),
    (b'{"id":10,"name":"crlf"}\r', None),            # CRLF ending: fine
    (b'', None),                                      # blank line: fine, counts for numbering
    (b'   \t', None),                                 # whitespace only: a blank line
    (b'{"id":true,"name":"bool key"}', "primary key is a boolean"),
    (b'"just a string"', "not an object"),
    (b'{"id":14,"name":"after the bad ones"}', None),
    (b'{"id":15,"name":"last line, no newline"}', None),
]


def bad_file_bytes():
    return b"\n".join(line for line, _ in BAD_FILE)     # the last line has no newline


def test_bad_lines_are_rejected_with_line_numbers_and_the_rest_is_stored(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", "mixed.ndjson", bad_file_bytes())

    proc = run_once_ok(daemon, expect_status=1)     # 1: records were rejected

    good = [line.rstrip(b"\r").decode() for line, why in BAD_FILE if why is None and line.strip()]
    assert optix.records(UUID1) == store_of_lines(good)
    assert optix.state(UUID1, raw=True)["records"] == raw_store_of_lines(good)

    rejected_path = daemon.spool("products") / "rejected" / "mixed.ndjson.rejected.ndjson"
    assert rejected_path.is_file()
    rejected = [json.loads(l) for l in rejected_path.read_text().splitlines()]
    want = [(n, why) for n, (line, why) in enumerate(BAD_FILE, 1) if why is not None]
    assert [r["line"] for r in rejected] == [n for n, _ in want], \
        f"rejected lines {[(r['line'], r['record']) for r in rejected]}, want {want}"
    for r, (n, _why) in zip(rejected, want):
        assert isinstance(r["error"], str) and r["error"], r
        original = BAD_FILE[n - 1][0]
        try:
            assert r["record"] == original.decode(), f"line {n}: record text changed: {r['record']!r}"
        except UnicodeDecodeError:
            assert '"id":9' in r["record"], r       # not UTF-8: only its readable part is checked

    reqs = optix.requests(UUID1)
    assert len(reqs) == 1 and reqs[0]["batch_completed"] is True
    assert summary_counts(proc.stdout, "products") == (1, 0, len(good), len(want), 1, 0)
    assert (daemon.state_dir / "done" / "products" / "mixed.ndjson").is_file()
    assert re.search(rf"^info: products: mixed\.ndjson: {len(good)} records sent, {len(want)} rejected, 1 requests",
                     daemon.log(), re.MULTILINE)


def test_file_with_only_bad_lines_sends_no_request_and_is_archived(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    bad = [b'{"name":"no key"}', b'not json', b'{"id":null}']
    daemon.drop("products", "allbad.ndjson", b"\n".join(bad) + b"\n")

    proc = run_once_ok(daemon, expect_status=1)

    assert optix.requests() == []
    assert optix.records(UUID1) == {}
    rejected_path = daemon.spool("products") / "rejected" / "allbad.ndjson.rejected.ndjson"
    assert [json.loads(l)["line"] for l in rejected_path.read_text().splitlines()] == [1, 2, 3]
    assert (daemon.state_dir / "done" / "products" / "allbad.ndjson").is_file()
    assert spool_leftovers(daemon, "products") == []
    assert summary_counts(proc.stdout, "products") == (1, 0, 0, 3, 0, 0)


# A file of blank lines only is not empty: it goes to failed/ (test_formats.py,
# test_a_file_that_yields_no_record_is_not_a_success).
@pytest.mark.parametrize("content", [b""], ids=["empty"])
def test_empty_file_sends_no_request_and_is_archived(optix, daemon, content):
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", "empty.ndjson", content)

    proc = run_once_ok(daemon)

    assert optix.requests() == []
    assert (daemon.state_dir / "done" / "products" / "empty.ndjson").read_bytes() == content
    assert not (daemon.spool("products") / "rejected").exists()
    assert summary_counts(proc.stdout, "products") == (1, 0, 0, 0, 0, 0)


def test_line_longer_than_max_record_bytes_is_rejected_and_the_rest_goes_up(optix, daemon):
    daemon.write_config([daemon.connection(optix, max_record_bytes=256)])
    long_line = json.dumps({"id": 2, "pad": "x" * 1000})
    lines = [gen_ndjson.record(1), long_line, gen_ndjson.record(3)]
    daemon.drop("products", "long.ndjson", lines)

    run_once_ok(daemon, expect_status=1)

    assert optix.records(UUID1) == {**gen_store(1, 1), **gen_store(3, 1)}
    rejected_path = daemon.spool("products") / "rejected" / "long.ndjson.rejected.ndjson"
    assert [json.loads(l)["line"] for l in rejected_path.read_text().splitlines()] == [2]


# --- the drop protocol -----------------------------------------------------------------------------------

def test_files_present_at_start_and_dropped_while_running_are_all_uploaded(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    daemon.drop_generated("products", "early.ndjson", 100, 0)

    daemon.start()
    optix.wait_records(UUID1, 100, timeout=WAIT)
    wait_done(daemon, "products", "early.ndjson")
    daemon.drop("products", "late1.ndjson", gen_lines(100, 50))
    daemon.drop_generated("products", "late2.jsonl", 50, 150)      # .jsonl counts too
    optix.wait_records(UUID1, 200, timeout=WAIT)
    wait_done(daemon, "products", "late1.ndjson", "late2.jsonl")

    assert daemon.stop() == 0
    assert optix.records(UUID1) == gen_store(0, 200)
    bs = batches(optix.requests(UUID1))
    assert 2 <= len(bs) <= 3        # the two late files may share a batch
    for reqs in bs.values():
        assert_well_formed_batch(reqs)
    assert optix.state(UUID1)["open_batches"] == {}
    done = daemon.state_dir / "done" / "products"
    assert sorted(p.name for p in done.iterdir()) == ["early.ndjson", "late1.ndjson", "late2.jsonl"]
    assert spool_leftovers(daemon, "products") == []


def _assert_written_whole(optix, first_keys, second_keys):
    """The file's records went up in one batch holding every record once: nothing of it was read early."""
    all_keys = set(first_keys) | set(second_keys)
    reqs = [r for r in optix.requests(UUID1) if set(r["keys"]) & all_keys]
    assert reqs, "nothing of the slowly written file was sent"
    assert len({r["batch_uuid"] for r in reqs}) == 1, \
        f"the slow file went up as several batches (read before it was closed): {reqs}"
    assert_well_formed_batch(batches(optix.requests(UUID1))[reqs[0]["batch_uuid"]])
    assert sorted(k for r in reqs for k in r["keys"] if k in all_keys) == sorted(all_keys)


@pytest.mark.parametrize("at_startup", [True, False], ids=["open-at-startup", "written-in-place-while-running"])
def test_file_open_for_writing_is_read_only_after_close(optix, daemon, at_startup):
    spool = daemon.spool("products")
    if at_startup:
        # Unprivileged, nobody can tell the daemon the file is open: only its writer closing it
        # (inotify) may make it ready, not a pause (settle_seconds is long).
        daemon.write_config([daemon.connection(optix)], settle_seconds=600)
        before = {}
    else:
        daemon.write_config([daemon.connection(optix)])
        daemon.start()
        daemon.drop("products", "first.ndjson", gen_lines(1000, 10))
        wait_done(daemon, "products", "first.ndjson")
        before = gen_store(1000, 10)
    with daemon.exporter_open(spool / "slow.ndjson") as f:
        f.write(lines_of(gen_lines(0, 50)))
        f.flush()
        if at_startup:
            # The start-up scan finds the file open for writing; a file dropped after it shows
            # when the daemon has got past it.
            daemon.start()
            daemon.wait_log(r"dcsyncd .*connection")
        daemon.drop("products", "marker.ndjson", gen_lines(2000, 10))
        if at_startup and daemon.priv.unprivileged:
            # Nobody can say it is open: the older file holds the newer marker back (it would go
            # first if it were still); the line says the daemon has got past it. (As root the
            # kernel says it is open for writing: it holds nothing back.)
            daemon.wait_log(r"marker\.ndjson waits for slow\.ndjson, older and not ready yet")
        else:
            wait_done(daemon, "products", "marker.ndjson")
        sent = {k for r in optix.requests(UUID1) for k in r["keys"]}
        assert not sent & set(range(0, 50)), "the half-written file was uploaded before it was closed"
        assert (spool / "slow.ndjson").is_file(), "the half-written file was taken before it was closed"
        f.write(lines_of(gen_lines(50, 50)))
    wait_done(daemon, "products", "slow.ndjson")
    wait_done(daemon, "products", "marker.ndjson")

    assert daemon.stop() == 0
    assert optix.records(UUID1) == {**gen_store(0, 100), **before, **gen_store(2000, 10)}
    _assert_written_whole(optix, range(0, 50), range(50, 100))


IGNORED_NAMES = [".hidden.ndjson", ".hidden.jsonl", "export.ndjson.tmp", "export.tmp", "data.json",
                 "data.csv.bz2", "data.ndjson.bak", "data.ndjson~", "README", "ndjson"]


def _drop_ignored(daemon, spool, prefix=""):
    contents = {}
    for i, name in enumerate(IGNORED_NAMES):
        name = name if not prefix else (f".{prefix}{name[1:]}" if name.startswith(".") else prefix + name)
        data = lines_of(gen_lines(10000 + 100 * i + (500 if prefix else 0), 3))
        daemon.drop("products", name, data)
        contents[name] = data
    # Written in place and closed (IN_CLOSE_WRITE) rather than renamed:
    for name in (f"{prefix}inplace.tmp", f".{prefix}inplace.ndjson"):
        data = lines_of(gen_lines(20000 + (500 if prefix else 0) + len(contents), 3))
        with daemon.exporter_open(spool / name) as f:
            f.write(data)
        contents[name] = data
    d = spool / f"{prefix}directory.ndjson"
    d.mkdir()
    daemon.priv.give_to_exporter(d)
    return contents, d


def test_dotfiles_tmp_files_and_other_suffixes_are_ignored_and_left_in_place(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    spool = daemon.spool("products")
    at_start, dir_at_start = _drop_ignored(daemon, spool)
    daemon.drop("products", "good.ndjson", gen_lines(0, 5))

    daemon.start()
    wait_done(daemon, "products", "good.ndjson")
    while_running, dir_while_running = _drop_ignored(daemon, spool, prefix="run-")
    daemon.drop("products", "good2.ndjson", gen_lines(5, 5))
    wait_done(daemon, "products", "good2.ndjson")
    assert daemon.stop() == 0

    assert optix.records(UUID1) == gen_store(0, 10)
    for name, data in {**at_start, **while_running}.items():
        assert (spool / name).is_file(), f"{name} was taken"
        assert (spool / name).read_bytes() == data, f"{name} was changed"
    assert dir_at_start.is_dir() and dir_while_running.is_dir()
    assert not (daemon.spool("products") / "rejected").exists()
    assert sorted(p.name for p in (daemon.state_dir / "done" / "products").iterdir()) == \
        ["good.ndjson", "good2.ndjson"]


# --- order -------------------------------------------------------------------------------------------

def _file_order(optix, markers):
    """Order in which files (identified by a marker key each) were sent: by request, then by the
    record's place in the request (small files may share one request)."""
    where = {}
    for r in optix.requests(UUID1):
        for name, key in markers.items():
            if key in r["keys"] and name not in where:
                where[name] = (r["seq"], r["keys"].index(key))
    assert set(where) == set(markers), f"markers never sent: {set(markers) - set(where)}"
    return sorted(where, key=where.get)


def test_files_are_sent_in_mtime_order_not_name_order(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    base = time.time_ns() - 100 * 10**9
    # The older file has the later name: name order would be wrong.
    older = daemon.drop("products", "z-older.ndjson", gen_lines(0, 100, value=1) + gen_lines(1000, 1, value=1))
    newer = daemon.drop("products", "a-newer.ndjson", gen_lines(0, 100, value=2) + gen_lines(1001, 1, value=2))
    set_mtime(older, base)
    set_mtime(newer, base + 10**9)

    run_once_ok(daemon)

    assert optix.records(UUID1) == {**gen_store(0, 100, 2), **gen_store(1000, 1, 1), **gen_store(1001, 1, 2)}
    assert _file_order(optix, {"z-older": 1000, "a-newer": 1001}) == ["z-older", "a-newer"]


def test_files_with_equal_mtime_are_sent_in_name_order(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    same = time.time_ns() - 100 * 10**9
    # Created in an order that is neither name order nor its reverse.
    for name, v in (("b.ndjson", 2), ("c.ndjson", 3), ("a.ndjson", 1)):
        path = daemon.drop("products", name, gen_lines(0, 100, value=v) + gen_lines(1000 + v, 1, value=v))
        set_mtime(path, same)

    run_once_ok(daemon)

    assert optix.records(UUID1) == {**gen_store(0, 100, 3), **gen_store(1001, 1, 1), **gen_store(1002, 1, 2),
                                    **gen_store(1003, 1, 3)}
    assert _file_order(optix, {"a": 1001, "b": 1002, "c": 1003}) == ["a", "b", "c"]


# --- after the upload ------------------------------------------------------------------------------------

@pytest.mark.parametrize("after_upload", ["delete", "archive"])
def test_after_upload_empties_the_spool_and_deletes_or_archives_to_state_done(optix, daemon, after_upload):
    daemon.write_config([daemon.connection(optix)], after_upload=after_upload)
    data = lines_of(gen_lines(0, 20))
    daemon.drop("products", "up.ndjson", data)

    run_once_ok(daemon)

    assert optix.records(UUID1) == gen_store(0, 20)
    assert spool_leftovers(daemon, "products") == []
    archived = daemon.state_dir / "done" / "products" / "up.ndjson"
    if after_upload == "archive":
        assert archived.read_bytes() == data
    else:
        assert not archived.exists()
        assert not any(p.name.startswith("up") for p in daemon.state_dir.rglob("*")), \
            "a copy of the deleted file was kept in the state directory"


# --- exact bytes -------------------------------------------------------------------------------------

# Lines already in the canonical compact form the fake's raw view prints (ASCII, \u escapes), so the
# raw state must equal them character for character.
CANONICAL_LINES = [
    '{"id":1,"big":123456789012345678901234567890123456789,"neg":-98765432109876543210987654321}',
    '{"id":2,"dec":3.14159265358979323846264338327950288419716939937510,"tiny":1e-400,"huge":1.5E+400}',
    '{"id":3,"cents":0.10,"trail":2.500000000000000000000,"negzero":-0,"negzerof":-0.0,"e":6.02e23}',
    '{"id":"3","note":"the string \\"3\\" is another key than 3"}',
    '{"id":123456789012345678901234567890,"what":"a big-integer primary key"}',
    '{"id":4.50,"what":"a decimal primary key"}',
    '{"id":5,"s":"caf\\u00e9 \\ud83d\\ude00 tab\\t nl\\n quote\\" bs\\\\","z":1,"a":2}',
    '{"id":6,"nested":{"deep":[1,2.0,{"x":null,"y":[true,false]}],"n":-1E-7},"arr":[]}',
]


def test_records_arrive_byte_exact_in_the_servers_raw_view(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", "exact.ndjson", lines_of(CANONICAL_LINES))

    run_once_ok(daemon)

    assert optix.state(UUID1, raw=True)["records"] == raw_store_of_lines(CANONICAL_LINES)
    big = optix.record(UUID1, 1, exact=True)
    assert big["big"] == 123456789012345678901234567890123456789
    assert str(optix.record(UUID1, 2, exact=True)["dec"]) == "3.14159265358979323846264338327950288419716939937510"


# Lines a re-serialising sender would change: blanks, literal UTF-8, needless escapes, key order,
# duplicate keys, number spellings.
WIRE_LINES = [
    b'{ "id" : 1 ,  "a" : [ 1 , 2 ] }',
    '{"id":2,"city":"Zürich","emoji":"😀","escaped":"caf\\u00E9","slash":"a\\/b"}'.encode(),
    b'{"id":3,"z":1,"a":2,"m":{"b":1,"a":2},"dup":1,"dup":2}',
    b'{"id":4,"n":1.0e+10,"m":1E-5,"k":-0,"big":98765432109876543210987654321098765432109876543210}',
    b'{"id":5}',
]


def _assert_lines_in_bodies(bodies, lines):
    """Every line appears verbatim, in order, inside the request bodies' data arrays."""
    joined = b"\n".join(bodies)
    pos = 0
    for line in lines:
        i = joined.find(line, pos)
        assert i >= 0, f"line not sent byte for byte: {line!r}\nbodies: {bodies!r}"
        pos = i + len(line)


def test_records_are_sent_byte_for_byte_on_the_wire(capture, daemon):
    daemon.write_config([capture.connection()])
    daemon.drop("products", "wire.ndjson", b"\n".join(WIRE_LINES[:2]) + b"\r\n" +
                b"\n".join(WIRE_LINES[2:]) + b"\n")

    run_once_ok(daemon)

    bodies = capture.requests()
    assert len(bodies) == 1
    doc = json.loads(bodies[0])
    assert len(doc["data"]) == len(WIRE_LINES)
    _assert_lines_in_bodies(bodies, WIRE_LINES)


@pytest.mark.parametrize("ttl, expiry", [(3600, 3600), ("", None)],
                         ids=["ttl_seconds-set-is-sent", "ttl_seconds-empty-stores-no-expiry"])
def test_ttl_seconds_is_sent_when_set_and_the_fake_stores_its_expiry(optix, daemon, ttl, expiry):
    daemon.write_config([daemon.connection(optix, ttl_seconds=ttl, batch_records=4)])
    daemon.drop("products", "ttl.ndjson", gen_lines(0, 10))
    before = time.time()

    run_once_ok(daemon)

    reqs = optix.requests(UUID1)
    assert len(reqs) == 3
    assert [r["ttl_seconds"] for r in reqs] == [expiry] * 3
    state = optix.state(UUID1)
    assert state["records"] == gen_store(0, 10)
    if expiry is None:
        assert state["expires"] == {}
        return
    assert set(state["expires"]) == set(state["records"])
    for exp in state["expires"].values():
        assert before + expiry - 5 <= exp <= time.time() + expiry + 5


@pytest.mark.parametrize("ttl", ["", None], ids=["ttl_seconds-empty", "ttl_seconds-not-given"])
def test_ttl_seconds_is_absent_from_the_request_when_not_set(capture, daemon, ttl):
    daemon.write_config([capture.connection(ttl_seconds=ttl, batch_records=4)])
    daemon.drop("products", "nottl.ndjson", gen_lines(0, 10))

    run_once_ok(daemon)

    docs = [json.loads(b) for b in capture.requests()]
    assert len(docs) == 3
    for doc in docs:
        assert "ttl_seconds" not in doc, f"ttl_seconds sent although not configured: {doc['ttl_seconds']!r}"
    assert [doc["batch_completed"] for doc in docs] == [False, False, True]
    assert sum(len(doc["data"]) for doc in docs) == 10


@pytest.mark.skipif(os.geteuid() != 0 or not (shutil.which("setpriv") and shutil.which("prlimit")),
                    reason="needs root, setpriv and prlimit to run the daemon as nobody with RLIMIT_NPROC=1")
def test_without_a_parse_thread_it_parses_on_the_loop_and_says_so(optix):
    """A cut thread that cannot start (RLIMIT_NPROC, TasksMax) costs speed, never data."""
    n = 5000
    root = Path(tempfile.mkdtemp(prefix="dcsyncd-nproc-"))     # tmp_path is not open to nobody
    try:
        root.chmod(0o755)
        d = Daemon(root, priv=Privileges("root"))       # as nobody, below, in either mode
        d.write_config([d.connection(optix, batch_records=1000)])
        d.drop_generated("products", "a.ndjson", n)
        nobody = pwd.getpwnam("nobody")
        for p in [root, *root.rglob("*")]:
            os.chown(p, nobody.pw_uid, nobody.pw_gid)
        argv = ["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                "prlimit", "--nproc=1", *d.command("--once")]
        # LeakSanitizer needs a thread of its own to check at exit: not here.
        asan = os.environ.get("ASAN_OPTIONS", "")
        env = d.env({"ASAN_OPTIONS": (asan + ":" if asan else "") + "detect_leaks=0"})
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stderr.count("cannot start a cut thread") == 1, proc.stderr[-3000:]
        assert len(optix.records(UUID1)) == n
        reqs = optix.requests(UUID1)
        assert [r["n_records"] for r in reqs] == [1000] * 5 and all(r["status"] == 200 for r in reqs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
