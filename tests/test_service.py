"""dcsyncd as a systemd service: sd_notify protocol, SIGTERM drain, SIGHUP reload, `status`, metrics_file.

Run with:  DCSYNCD=build/src/dcsyncd /usr/bin/python3 -m pytest -q tests/test_service.py

Each test binds its own NOTIFY_SOCKET (AF_UNIX datagrams of KEY=VALUE lines, as systemd does)
and passes it, with WATCHDOG_USEC where the watchdog is under test, to the daemon. Nothing
sleeps to synchronise: tests wait on notify messages, the daemon's log, the fake server's state
or the metrics file, with timeouts.
"""

import gzip
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness import UUID1, UUID2, _write_secret, acked, gen_lines, gen_store, wait_for

WAIT = 30.0
WATCHDOG_USEC = 400000


# --- the notify socket -------------------------------------------------------------------------

class NotifySocket:
    """A bound AF_UNIX SOCK_DGRAM socket playing systemd's side of sd_notify(3).

    Every KEY=VALUE line of every datagram becomes an entry (monotonic time, key, value), in
    arrival order; mark() and the since= arguments index that list."""

    def __init__(self, directory):
        path = Path(directory) / "notify.sock"
        self._tmpdir = None
        if len(os.fsencode(str(path))) > 100:          # sun_path holds 108 bytes
            self._tmpdir = tempfile.mkdtemp(prefix="dcsyncd-notify-")
            path = Path(self._tmpdir) / "notify.sock"
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        # Anyone may send, as to systemd's own socket: the daemon may run as another user.
        os.chmod(path, 0o666)
        if self._tmpdir:
            os.chmod(self._tmpdir, 0o711)
        self.sock.settimeout(0.05)
        self.entries = []
        self.datagrams = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            t = time.monotonic()
            text = data.decode(errors="replace")
            with self.lock:
                self.datagrams.append((t, text))
                for line in text.split("\n"):
                    if line:
                        key, _, value = line.partition("=")
                        self.entries.append((t, key, value))

    def env(self, watchdog_usec=None):
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def mark(self):
        with self.lock:
            return len(self.entries)

    def snapshot(self, since=0):
        with self.lock:
            return list(self.entries[since:])

    def values(self, key, since=0):
        return [v for _, k, v in self.snapshot(since) if k == key]

    def wait(self, key, value=None, since=0, timeout=WAIT, daemon=None):
        """Wait for an entry KEY whose value matches the regex value (any value if None), at
        index >= since. Returns (index, value). Fails early if the daemon exits."""
        pattern = re.compile(value) if value is not None else None
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                for i in range(since, len(self.entries)):
                    _, k, v = self.entries[i]
                    if k == key and (pattern is None or pattern.search(v)):
                        return i, v
            exited = daemon is not None and daemon.proc is not None and daemon.proc.poll() is not None
            if exited or time.monotonic() > deadline:
                why = (f"daemon exited with {daemon.proc.returncode}" if exited
                       else f"timed out after {timeout}s")
                tail = "\n".join(f"  {k}={v}" for _, k, v in self.snapshot(since)[-30:])
                log = daemon.log()[-3000:] if daemon is not None else ""
                raise AssertionError(f"{why} waiting for {key}={value or '*'} on NOTIFY_SOCKET; "
                                     f"got:\n{tail}\nlog tail:\n{log}")
            time.sleep(0.02)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        if self._tmpdir:
            os.rmdir(self._tmpdir)


@pytest.fixture
def notify(tmp_path):
    n = NotifySocket(tmp_path)
    yield n
    n.close()


# --- helpers -------------------------------------------------------------------------------------

def start_ready(daemon, notify, watchdog_usec=None):
    """Start the daemon on our notify socket and wait for READY=1; returns READY's entry index."""
    daemon.start(env=notify.env(watchdog_usec))
    idx, _ = notify.wait("READY", "^1$", daemon=daemon)
    return idx


def run_status(daemon):
    """`dcsyncd -c CONF status` -> CompletedProcess (text)."""
    return subprocess.run(daemon.command("status"), capture_output=True, text=True, timeout=30,
                          env=daemon.env(), stdin=subprocess.DEVNULL)


def status_section(stdout, conn):
    """The lines of `status` output that belong to connection conn (its header and indented lines)."""
    lines = stdout.splitlines()
    out, inside = [], False
    for line in lines:
        if not line.startswith(" "):
            inside = line.startswith(f"{conn} (")
            if inside:
                out.append(line)
        elif inside:
            out.append(line)
    assert out, f"no section for {conn} in status output:\n{stdout}"
    return "\n".join(out)


def config_line_of(conf_path, section, key):
    """1-based line number of `key = ...` inside [section] of the INI file."""
    current = None
    for no, line in enumerate(Path(conf_path).read_text().splitlines(), 1):
        s = line.strip()
        if s.startswith("["):
            current = s.strip("[]")
        elif current == section and re.match(rf"{re.escape(key)}\s*=", s):
            return no
    raise AssertionError(f"{key} not in [{section}] of {conf_path}")


def set_config_key(conf_path, section, key, value):
    """Rewrite one key of one section in place; returns its line number."""
    no = config_line_of(conf_path, section, key)
    lines = Path(conf_path).read_text().splitlines()
    lines[no - 1] = f"{key} = {value}"
    Path(conf_path).write_text("\n".join(lines) + "\n")
    return no


# --- 1. READY, STATUS, WATCHDOG, STOPPING ------------------------------------------------------

def test_ready_status_watchdog_and_stopping(optix, daemon, notify):
    optix.configure(delay=0.3)
    daemon.write_config([daemon.connection(optix, batch_records=1000)])
    # Present before the start: READY=1 comes only after the spool scan, so the first STATUS
    # after it already knows about them.
    for i in range(3):
        daemon.drop_generated("products", f"pre-{i}.ndjson", 1500, start=i * 1500)

    ready = start_ready(daemon, notify, WATCHDOG_USEC)
    assert notify.values("READY").count("1") == 1

    # The first real STATUS (the READY datagram carries STATUS=started) shows the queue or the
    # batch in flight: the files were found before READY=1.
    _, first = notify.wait("STATUS", r"file\(s\) queued", since=ready, daemon=daemon)
    m = re.match(r"^(\d+) file\(s\) queued · (\d+) records sent", first)
    assert m, f"STATUS not in the documented form: {first!r}"
    assert int(m.group(1)) > 0 or re.search(r" · products: .+ \d+%", first), \
        f"first STATUS after READY does not mention the files dropped before start: {first!r}"

    # WATCHDOG=1 keeps coming (at WATCHDOG_USEC / 2; how often is the loop's business, not a
    # pass/fail check: test_systemd.py has systemd kill a daemon that stops sending it).
    since = notify.mark()
    wait_for(lambda: len(notify.values("WATCHDOG", since)) >= 3, interval=0.02, what="3 more WATCHDOG=1")
    assert set(notify.values("WATCHDOG", since)) == {"1"}

    # Everything goes up; STATUS follows.
    optix.wait_records(UUID1, 4500, timeout=WAIT)
    notify.wait("STATUS", r"^0 file\(s\) queued · 4500 records sent", daemon=daemon)
    assert optix.records(UUID1) == gen_store(0, 4500)

    # Pings continue while idle.
    since = notify.mark()
    wait_for(lambda: len(notify.values("WATCHDOG", since)) >= 3, timeout=1.5,
             interval=0.02, what="3 more WATCHDOG=1 within 1.5 s while idle")

    print("\nSTATUS lines seen (pytest -s shows them):")
    for s in notify.values("STATUS"):
        print(f"  STATUS={s}")

    # SIGTERM: STOPPING=1, exit 0.
    since = notify.mark()
    daemon.signal(signal.SIGTERM)
    notify.wait("STOPPING", "^1$", since=since, daemon=None, timeout=10)
    assert daemon.wait_exit(timeout=15) == 0


# --- 2. SIGTERM during an upload -----------------------------------------------------------------

def start_big_batch(optix, daemon, notify, n, per_request, delay, drain):
    """A file of n records in requests of per_request, the fake slowed by delay: start the daemon
    and return once its first request is acknowledged (the batch is under way)."""
    optix.configure(delay=delay)
    daemon.write_config([daemon.connection(optix, batch_records=per_request)], drain_timeout_seconds=drain)
    daemon.drop_generated("products", "big.ndjson", n)
    start_ready(daemon, notify)
    wait_for(lambda: len(acked(optix)) >= 1, what="the first request acknowledged")


def sigterm_and_wait_exit(daemon, notify, drain):
    """SIGTERM: STOPPING=1, then exit 0 (the hang guard: drain + 10 s)."""
    since = notify.mark()
    daemon.signal(signal.SIGTERM)
    notify.wait("STOPPING", "^1$", since=since, timeout=10)
    rc = daemon.wait_exit(timeout=drain + 10)
    assert rc == 0, daemon.log()[-3000:]


def the_one_batch(reqs):
    """The batch_uuid every request carried: there must be exactly one."""
    uuids = {r["batch_uuid"] for r in reqs}
    assert len(uuids) == 1, uuids
    return uuids.pop()


def test_sigterm_mid_batch_stops_after_the_request_in_flight_and_restart_resumes_the_batch(
        optix, daemon, notify):
    n, per_request, drain = 8000, 1000, 10
    start_big_batch(optix, daemon, notify, n, per_request, delay=0.4, drain=drain)
    before = len(optix.requests(UUID1))
    mark = daemon.mark()
    sigterm_and_wait_exit(daemon, notify, drain)
    assert "drain timeout reached" not in daemon.log(mark)

    reqs = optix.requests(UUID1)
    assert all(r["status"] == 200 for r in reqs), reqs
    batch = the_one_batch(reqs)
    # Documented (dcsyncd(8) SIGTERM, dcsyncd.conf(5) drain_timeout_seconds): the requests in
    # flight are acknowledged, progress recorded, and the unfinished file resumes at the next
    # start. Requests sent after SIGTERM: the one in flight (and at most one begun as the
    # signal arrived), not the rest of the batch.
    state = optix.state(UUID1)
    assert len(reqs) <= before + 2, (
        f"{before} request(s) answered at SIGTERM, {len(reqs)} of the batch's {n // per_request} by the "
        f"exit: the daemon went on with the batch instead of stopping after the request in flight")
    assert state["open_batches"] == {batch: len(reqs) * per_request}
    assert state["records"] == {}
    assert (daemon.spool("products") / ".work").exists()

    # Restart (--once): the same batch goes on from where it stopped and completes.
    check_resumed(optix, daemon, batch, n)


def test_sigterm_drain_timeout_cuts_the_batch_and_restart_resumes_it(optix, daemon, notify):
    """A request outlasting drain_timeout_seconds: exit 0 at the timeout, the journal resumes."""
    n, per_request, drain = 6000, 1000, 1
    # Each request takes longer than the whole drain.
    start_big_batch(optix, daemon, notify, n, per_request, delay=2.0, drain=drain)
    sigterm_and_wait_exit(daemon, notify, drain)
    daemon.wait_log(r"drain timeout reached")

    # Wait for the server to finish the request the daemon walked away from: every request the
    # daemon logged as sent has arrived (a slow daemon's last one may arrive after it exited)
    # and been answered, or it could land after the resumed batch's completion.
    sent = len(re.findall(r"big\.ndjson: request \d+: records", daemon.log()))
    wait_for(lambda: len(optix.requests(UUID1)) >= sent and all(r["status"] is not None for r in optix.requests(UUID1)),
             what="the server done with the abandoned request")
    reqs = optix.requests(UUID1)
    assert 0 < len(reqs) < n // per_request
    batch = the_one_batch(reqs)
    state = optix.state(UUID1)
    assert list(state["open_batches"]) == [batch]
    assert state["records"] == {}

    optix.configure(delay=0)
    check_resumed(optix, daemon, batch, n)


def test_second_sigterm_stops_at_once_and_restart_resumes(optix, daemon, notify):
    n, per_request = 3000, 1000
    # Request 2 is held until the test ends: with drain_timeout_seconds = 600, only the second
    # SIGTERM can end the wait for it.
    optix.add_faults([{"uuid": UUID1}, {"uuid": UUID1, "hold": True}])
    start_big_batch(optix, daemon, notify, n, per_request, delay=0, drain=600)
    wait_for(lambda: optix.held() == 1, what="request 2 in flight, held", daemon=daemon)

    since = notify.mark()
    daemon.signal(signal.SIGTERM)
    notify.wait("STOPPING", "^1$", since=since, timeout=10)
    daemon.wait_log(r"SIGTERM: taking no new files")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=60) == 0, "a second SIGTERM should stop at once"
    daemon.wait_log(r"SIGTERM again: stopping now")
    assert notify.values("STOPPING") == ["1"]

    optix.release()
    wait_for(lambda: optix.held() == 0 and all(r["status"] is not None for r in optix.requests(UUID1)),
             what="the server done with the abandoned request")
    batch = optix.requests(UUID1)[0]["batch_uuid"]
    check_resumed(optix, daemon, batch, n)


def check_resumed(optix, daemon, batch, n):
    """Restart with --once: the open batch completes under the same batch_uuid, store exact."""
    before = len(optix.requests(UUID1))
    proc = daemon.run_once()
    assert proc.returncode == 0, f"{proc.stdout}\n{daemon.log()[-3000:]}"
    assert re.search(r"resuming batch " + re.escape(batch), daemon.log())
    reqs = optix.requests(UUID1)
    assert len(reqs) > before, "the restart sent nothing"
    assert {r["batch_uuid"] for r in reqs} == {batch}
    assert all(r["status"] == 200 for r in reqs), [(r["seq"], r["status"]) for r in reqs]
    assert all(r["batch_completed"] is False for r in reqs[:-1]) and reqs[-1]["batch_completed"] is True
    # Consecutive slices of the file; a request the server applied but never answered may be
    # sent again (same slice, same batch), nothing else repeats and nothing is skipped.
    slices = []
    for r in reqs:
        if not slices or slices[-1] != r["keys"]:
            slices.append(r["keys"])
    assert [k for s in slices for k in s] == list(range(n))
    state = optix.state(UUID1)
    assert state["open_batches"] == {}
    assert state["completed_batches"] == [batch]
    assert state["records"] == gen_store(0, n)
    assert (daemon.state_dir / "done" / "products" / "big.ndjson").is_file()
    assert not any((daemon.spool("products") / ".work").glob("*"))


# --- 3. SIGHUP: new keys, broken file ------------------------------------------------------------

def reload_and_wait(daemon, notify):
    """SIGHUP; wait for RELOADING=1 then READY=1 after it. Returns (notify mark, log mark) taken
    before the signal."""
    since, mark = notify.mark(), daemon.mark()
    daemon.reload()
    i, _ = notify.wait("RELOADING", "^1$", since=since, daemon=daemon)
    notify.wait("READY", "^1$", since=i + 1, daemon=daemon)
    return since, mark


def test_sighup_with_fixed_key_file_resumes_a_connection_paused_by_401(optix, daemon, notify):
    metrics = daemon.dir / "dcsyncd.prom"
    daemon.write_config([daemon.connection(optix, api_key="wrong-api-key-xyz")], metrics_file=metrics)
    daemon.drop("products", "a.ndjson", gen_lines(0, 10))
    start_ready(daemon, notify)

    daemon.wait_log(r"^error: products: the API refused the keys \(HTTP 401\)")
    _, paused = notify.wait("STATUS", r"products: paused \(keys refused\)", daemon=daemon)
    print(f"\n  STATUS={paused}")
    assert optix.records(UUID1) == {}
    # Nothing was acknowledged: the file went back to the spool, untouched.
    wait_for(lambda: (daemon.spool("products") / "a.ndjson").is_file(), what="a.ndjson back in the spool")
    # dcsyncd status shows the refusal too.
    out = run_status(daemon).stdout
    assert re.search(r"last error: +.*HTTP 401, .*the API refused the keys", status_section(out, "products")), out

    def paused_metric():
        if not metrics.exists():
            return None
        samples, _ = parse_prometheus(metrics.read_text())
        return metric(samples, "dcsyncd_paused", connection="products") == 1
    wait_for(paused_metric, timeout=10, what="dcsyncd_paused{connection=\"products\"} 1 in the metrics file")

    # Fix the key file only, then reload.
    _write_secret(daemon.keys_dir / "products.api_key", optix.api_key)
    since, mark = reload_and_wait(daemon, notify)
    daemon.wait_log(r"products: configuration reloaded: trying the keys again", since=mark)
    optix.wait_records(UUID1, 10)
    assert optix.records(UUID1) == gen_store(0, 10)
    assert optix.state(UUID1)["open_batches"] == {}
    # Pause lifted in STATUS, keys never logged, no watchdog pings without WATCHDOG_USEC.
    notify.wait("STATUS", r"^0 file\(s\) queued · 10 records sent", since=since, daemon=daemon)
    assert "wrong-api-key-xyz" not in daemon.log() and optix.api_key not in daemon.log()
    assert notify.values("WATCHDOG") == []
    assert daemon.stop() == 0


def test_sighup_with_a_broken_config_is_refused_and_the_old_one_keeps_running(optix, daemon, notify):
    daemon.write_config([daemon.connection(optix)])
    start_ready(daemon, notify)
    daemon.drop("products", "a.ndjson", gen_lines(0, 5))
    optix.wait_records(UUID1, 5)

    line = set_config_key(daemon.conf_path, "connection products", "batch_records", 0)
    since, mark = reload_and_wait(daemon, notify)
    m = daemon.wait_log(r"^error: reload refused.*$", since=mark)
    assert re.search(rf"{re.escape(str(daemon.conf_path))}:{line}: batch_records: \S.*", m.group(0)), m.group(0)
    assert daemon.running()

    # Still uploading, with the old configuration.
    daemon.drop("products", "b.ndjson", gen_lines(5, 7))
    optix.wait_records(UUID1, 12)
    assert optix.records(UUID1) == gen_store(0, 12)
    assert daemon.stop() == 0


# --- 4. SIGHUP: adding and removing a connection -------------------------------------------------

def test_sighup_adding_a_connection_starts_it(optix, daemon, notify):
    products = daemon.connection(optix)
    orders = daemon.connection(optix, name="orders", uuid=UUID2)
    daemon.write_config([products])
    start_ready(daemon, notify)
    # Dropped before the reload: the new connection's scan finds it.
    daemon.drop("orders", "o0.ndjson", gen_lines(90, 2))

    daemon.write_config([products, orders])
    _, mark = reload_and_wait(daemon, notify)
    daemon.wait_log(r"^info: orders: new connection$", since=mark)
    daemon.wait_log(r"configuration reloaded: 2 connection\(s\)", since=mark)
    daemon.drop("orders", "o1.ndjson", gen_lines(100, 8))
    daemon.drop("products", "p1.ndjson", gen_lines(0, 4))
    optix.wait_records(UUID2, 10)
    optix.wait_records(UUID1, 4)
    assert optix.records(UUID2) == {**gen_store(90, 2), **gen_store(100, 8)}
    assert optix.records(UUID1) == gen_store(0, 4)
    assert optix.state(UUID2)["open_batches"] == {}
    assert daemon.stop() == 0


def test_sighup_removing_a_connection_leaves_its_files_in_the_spool(optix, daemon, notify):
    products = daemon.connection(optix)
    orders = daemon.connection(optix, name="orders", uuid=UUID2)
    daemon.write_config([products, orders])
    start_ready(daemon, notify)
    daemon.drop("products", "p1.ndjson", gen_lines(0, 4))
    optix.wait_records(UUID1, 4)

    daemon.write_config([orders])
    _, mark = reload_and_wait(daemon, notify)
    daemon.wait_log(r"configuration reloaded: 1 connection\(s\)", since=mark)
    daemon.wait_log(r"products: removed from the configuration", since=mark)
    p2 = daemon.drop("products", "p2.ndjson", gen_lines(50, 3))
    daemon.drop("orders", "o2.ndjson", gen_lines(200, 2))
    optix.wait_records(UUID2, 2)
    # One more STATUS round after that: the loop has long seen p2's inotify event by then.
    _, st = notify.wait("STATUS", r"records sent", since=notify.mark(), daemon=daemon)
    assert "products" not in st
    assert p2.is_file()
    assert optix.records(UUID1) == gen_store(0, 4)
    assert [r["keys"] for r in optix.requests(UUID1)] == [[0, 1, 2, 3]]
    assert daemon.stop() == 0
    assert p2.is_file()


def test_sighup_removing_a_connection_mid_batch_finishes_that_batch_then_stops_it(optix, daemon, notify):
    """docs/operations.md: removed connections finish their batch in flight and stop."""
    n, per_request = 4000, 1000
    products = daemon.connection(optix, batch_records=per_request)
    orders = daemon.connection(optix, name="orders", uuid=UUID2)
    daemon.write_config([products, orders])
    optix.configure(delay=0.3)
    daemon.drop_generated("products", "big.ndjson", n)
    start_ready(daemon, notify)
    wait_for(lambda: len(acked(optix)) >= 1, what="the first request acknowledged")

    daemon.write_config([orders])
    _, mark = reload_and_wait(daemon, notify)
    daemon.wait_log(r"products: removed from the configuration, its batch in flight is done: stopped",
                    since=mark, timeout=WAIT)
    state = optix.state(UUID1)
    assert state["open_batches"] == {} and len(state["completed_batches"]) == 1
    assert state["records"] == gen_store(0, n)
    assert (daemon.state_dir / "done" / "products" / "big.ndjson").is_file()
    optix.configure(delay=0)
    daemon.drop("orders", "o.ndjson", gen_lines(0, 2))
    optix.wait_records(UUID2, 2)
    assert daemon.stop() == 0


# --- 5. dcsyncd status ---------------------------------------------------------------------------

def status_ok(daemon):
    proc = run_status(daemon)
    assert proc.returncode == 0, f"status exited {proc.returncode}: {proc.stderr}"
    return proc.stdout


def test_status_before_any_run_says_there_is_no_journal(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", "a.ndjson", gen_lines(0, 3))

    out = status_ok(daemon)
    assert f"no journal in {daemon.state_dir} yet" in out
    sec = status_section(out, "products")
    assert sec.startswith(f"products ({UUID1})")
    assert re.search(r"queued: +1 file\(s\), oldest \d+ s old", sec), sec
    assert "in flight" not in sec
    assert re.search(r"failed: +0 file\(s\)", sec) and re.search(r"rejected: +0 record\(s\) in 0 file\(s\)", sec)
    assert re.search(r"last success: never", sec) and re.search(r"last error: +none", sec)
    assert not (daemon.state_dir / "journal").exists()


def test_status_during_an_upload_shows_the_batch_in_flight_with_its_progress(optix, daemon, notify):
    daemon.write_config([daemon.connection(optix, batch_records=1000)])
    size = daemon.drop_generated("products", "big.ndjson", 5000).stat().st_size
    optix.configure(delay=0.4)
    start_ready(daemon, notify)
    wait_for(lambda: len(acked(optix)) >= 1, what="a request acknowledged")
    batch = acked(optix)[0]["batch_uuid"]

    def in_flight():
        out = status_ok(daemon)
        m = re.search(r"in flight: +big\.ndjson, batch (\S+), open: (\d+) request\(s\) acknowledged, "
                      r"(\d+) records, (\d+)% of (\d+) bytes", out)
        return (m, out) if m and int(m.group(2)) >= 1 else None

    m, out = wait_for(in_flight, what="status showing the batch in flight with progress")
    print("\n" + out)
    assert m.group(1) == batch
    acks, records, pct, total = (int(g) for g in m.group(2, 3, 4, 5))
    assert 1 <= acks < 5 and records == acks * 1000
    assert 0 < pct < 100 and total == size
    assert re.search(r"queued: +none", status_section(out, "products"))
    optix.configure(delay=0)
    optix.wait_records(UUID1, 5000)
    assert daemon.stop() == 0


def test_status_line_shows_a_compressed_files_progress_as_a_share_of_its_compressed_bytes(
        optix, daemon, notify):
    """The STATUS= line's percentage of a .gz in flight is the compressed bytes read over the
    file's size: never the decompressed offset over it (which passes 100% at once)."""
    optix.add_faults({"uuid": UUID1, "hold": True, "after": 2})     # request 3 stays in flight
    daemon.write_config([daemon.connection(optix, rate_limit="off")])
    pad = "x" * 200
    data = gzip.compress("".join(json.dumps({"id": i, "pad": pad}) + "\n" for i in range(50000)).encode())
    daemon.drop("products", "big.ndjson.gz", data)
    start_ready(daemon, notify)
    wait_for(lambda: optix.held() == 1, what="request 3 in flight", daemon=daemon)
    since = notify.mark()
    _, status = notify.wait("STATUS", r"products: big\.ndjson\.gz \d+%", since=since, daemon=daemon)
    pct = int(re.search(r"products: big\.ndjson\.gz (\d+)%", status).group(1))
    print(f"\n  STATUS={status} ({len(data)} bytes compressed)")
    # Two requests of 5000 records acknowledged: 10000 of 50000 records (2.2 of 11 MB read).
    assert 0 < pct < 100, status
    optix.release()
    optix.wait_records(UUID1, 50000, timeout=WAIT)
    assert daemon.stop() == 0


def test_status_while_the_daemon_idles_after_an_upload_shows_last_success_and_totals(optix, daemon, notify):
    daemon.write_config([daemon.connection(optix, batch_records=1000)])
    daemon.drop_generated("products", "big.ndjson", 5000)
    start_ready(daemon, notify)
    optix.wait_records(UUID1, 5000)
    daemon.wait_log(r"products: big\.ndjson: 5000 records sent")

    def settled():
        out = status_ok(daemon)
        return out if re.search(r"totals: +1 file\(s\) uploaded", out) and "in flight" not in out else None

    try:
        out = wait_for(settled, timeout=10, what="status totals after the upload")
    except AssertionError:
        raise AssertionError("10 s after the batch completed, with the daemon idle, status still says:\n"
                             + status_ok(daemon)) from None
    sec = status_section(out, "products")
    assert re.search(r"last success: \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(\d+ s ago\)", sec), sec
    assert re.search(r"totals: +1 file\(s\) uploaded, 0 failed, 5000 records sent, 0 rejected, 5 requests", sec), sec
    assert re.search(r"queued: +none", sec)
    assert daemon.stop() == 0


def test_status_counts_failed_files_and_rejected_records(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    # Two runs: small files could share one batch (and so one fate).
    optix.add_faults({"uuid": UUID1, "status": 400, "body": {"error": "injected bad request"}})
    daemon.drop("products", "bad.ndjson", gen_lines(9000, 3))
    proc = daemon.run_once()
    assert proc.returncode == 1, proc.stdout
    daemon.drop("products", "mixed.ndjson", gen_lines(7000, 3) + ["{not json", '{"no_id": 1}'])
    proc = daemon.run_once()
    assert proc.returncode == 1, proc.stdout      # rejected lines make --once exit 1
    assert (daemon.spool("products") / "failed" / "bad.ndjson").is_file()
    assert optix.records(UUID1) == gen_store(7000, 3)

    sec = status_section(status_ok(daemon), "products")
    print("\n" + sec)
    failed_dir = daemon.spool("products") / "failed"
    assert re.search(rf"failed: +1 file\(s\) in {re.escape(str(failed_dir))}$", sec, re.M), sec
    assert re.search(r"rejected: +2 record\(s\) in 1 file\(s\)", sec), sec
    assert re.search(r"last success: \d{4}-", sec), sec
    assert re.search(r"last error: +.*: HTTP 400, bad\.ndjson: ", sec), sec
    assert re.search(r"totals: +1 file\(s\) uploaded, 1 failed, 3 records sent, 2 rejected, \d+ requests", sec), sec
    assert re.search(r"queued: +none", sec) and "in flight" not in sec


def test_status_as_root_reads_nothing_through_an_exporters_rejected_directory(optix, daemon, tmp_path):
    if not daemon.priv.unprivileged:
        pytest.skip("the exporter is the daemon's user in the root mode")
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", "mixed.ndjson", gen_lines(7000, 3) + ["{not json"])
    assert daemon.run_once().returncode == 1
    conn = daemon.spool("products")
    # The exporter replaces rejected/ with a directory of its own: a link in it to a file only
    # root may read, under the name of a rejected file.
    shutil.rmtree(conn / "rejected")
    (conn / "rejected").mkdir()
    daemon.priv.give_to_exporter(conn / "rejected")
    secret = tmp_path / "root-only"
    secret.write_text("line\n" * 1000)
    os.chmod(secret, 0o600)
    os.symlink(secret, conn / "rejected" / "mixed.ndjson.rejected.ndjson")
    os.lchown(conn / "rejected" / "mixed.ndjson.rejected.ndjson", daemon.priv.exporter_uid, daemon.priv.group_gid)
    proc = subprocess.run([str(daemon.binary), "-c", str(daemon.conf_path), "status", "--json"], capture_output=True,
                          text=True, timeout=60, env=daemon.env(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    c = json.loads(proc.stdout)["connections"][0]
    assert c["rejected_records"] == 1, f"status counted what an exporter's link leads to: {c}"
    assert c["rejected_files"] == 0, c
    proc = subprocess.run([str(daemon.binary), "-c", str(daemon.conf_path), "status"], capture_output=True,
                          text=True, timeout=60, env=daemon.env(), stdin=subprocess.DEVNULL)
    assert f"{conn}/rejected/ is owned by uid {daemon.priv.exporter_uid}" in proc.stdout, proc.stdout


# --- 6. metrics_file -----------------------------------------------------------------------------

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE_RE = re.compile(rf"^({METRIC_NAME})(\{{(?:{LABEL}(?:,{LABEL})*)?,?\}})? (\S+)( -?\d+)?$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_prometheus(text):
    """Validate Prometheus text exposition format; returns {(name, frozenset(labels)): value}
    and {name: type}. Fails on any malformed line."""
    assert text.endswith("\n"), "the file must end with a newline"
    samples, types, helps, seen_samples_of = {}, {}, {}, set()
    for no, line in enumerate(text.split("\n")[:-1], 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            m = re.match(rf"^# (HELP|TYPE) ({METRIC_NAME}) (.*)$", line)
            if not m:
                continue        # a plain comment
            kind, name, rest = m.groups()
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), f"line {no}: {line!r}"
                assert name not in types, f"line {no}: second TYPE for {name}"
                assert name not in seen_samples_of, f"line {no}: TYPE after samples of {name}"
                types[name] = rest
            else:
                assert name not in helps, f"line {no}: second HELP for {name}"
                helps[name] = rest
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"line {no} is not `name{{labels}} value`: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        v = float(value)    # raises on a malformed value (NaN/+Inf/-Inf parse too)
        assert not math.isnan(v) or value == "NaN", f"line {no}: {line!r}"
        assert name in types, f"line {no}: sample of {name} before (or without) its TYPE"
        seen_samples_of.add(name)
        key = (name, frozenset(LABEL_RE.findall(labels)))
        assert key not in samples, f"line {no}: duplicate sample {line!r}"
        samples[key] = v
    for name, t in types.items():
        assert name in helps, f"no HELP for {name}"
        if t == "counter":
            assert name.endswith("_total"), f"counter {name} should end in _total"
    return samples, types


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def test_metrics_file_is_prometheus_text_with_the_counts(optix, daemon, notify):
    path = daemon.make_daemon_dir(daemon.dir / "metrics") / "dcsyncd.prom"
    daemon.write_config([daemon.connection(optix, batch_records=1000)], metrics_file=path)
    daemon.drop_generated("products", "a.ndjson", 1500)
    daemon.drop("products", "b.ndjson", gen_lines(1500, 300) + ["{broken"])
    start_ready(daemon, notify)
    optix.wait_records(UUID1, 1800)

    def counted():
        if not path.exists():
            return None
        samples, types = parse_prometheus(path.read_text())
        sent = metric(samples, "dcsyncd_records_sent_total", connection="products", status="200")
        return (samples, types) if sent == 1800 and metric(
            samples, "dcsyncd_uploaded_files_total", connection="products") == 2 else None

    samples, types = wait_for(counted, timeout=10, what="metrics with 1800 records sent")
    t = time.time()
    assert types["dcsyncd_records_sent_total"] == "counter"
    assert types["dcsyncd_spool_files"] == "gauge"
    assert metric(samples, "dcsyncd_spool_files", connection="products") == 0
    last = metric(samples, "dcsyncd_last_success_timestamp_seconds", connection="products")
    assert last is not None and 0 < last <= t + 1 and t - last < 60, last
    requests = metric(samples, "dcsyncd_requests_total", connection="products", status="200")
    assert requests == len(acked(optix))
    assert metric(samples, "dcsyncd_rejected_records_total", connection="products") == 1
    assert metric(samples, "dcsyncd_failed_files_total", connection="products") == 0
    assert metric(samples, "dcsyncd_paused", connection="products") == 0
    # Every family the daemon declares has a sample for the connection.
    for name in types:
        assert any(n == name for n, _ in samples), f"no sample of {name}"
    # Written atomically: no temporary left beside it.
    assert [p.name for p in path.parent.iterdir()] == ["dcsyncd.prom"]
    assert daemon.stop() == 0


def test_metrics_file_is_replaced_again_and_again_while_running(optix, daemon, notify):
    """docs/operations.md: 'replaced atomically (rename) every 2 s'. Each replacement is a rename: a new inode, whole
    each time. How often is measured by the clock, so it is not checked here."""
    path = daemon.dir / "dcsyncd.prom"
    daemon.write_config([daemon.connection(optix)], metrics_file=path)
    start_ready(daemon, notify)
    changes, last = [], None
    deadline = time.monotonic() + 60
    while len(changes) < 5 and time.monotonic() < deadline:
        try:
            ino = os.stat(path).st_ino
        except FileNotFoundError:
            ino = None
        if ino is not None and ino != last:
            changes.append(time.monotonic())
            last = ino
            parse_prometheus(path.read_text())
        time.sleep(0.01)
    assert len(changes) == 5, f"only {len(changes)} versions of the metrics file in 60 s"
    assert daemon.stop() == 0


def test_metrics_file_is_never_written_through_a_link_planted_beside_it(optix, daemon, notify):
    """The collector's directory is often writable by others (node_exporter's textfile directory):
    a link planted where the daemon writes its temporary must be replaced, never written through."""
    mdir = daemon.make_daemon_dir(daemon.dir / "textfile")
    daemon.priv.give_to_daemon(mdir, 0o770)      # writable by the group, as a shared directory is
    path = mdir / "dcsyncd.prom"
    victim = daemon.dir / "victim"
    victim.write_text("precious\n")
    daemon.priv.give_to_daemon(victim, 0o640)    # a file the daemon's user could write
    for tmp in ("dcsyncd.prom.tmp", ".dcsyncd.prom.tmp"):
        os.symlink(victim, mdir / tmp)
    daemon.write_config([daemon.connection(optix)], metrics_file=path)
    start_ready(daemon, notify)
    wait_for(lambda: path.exists() and not path.is_symlink() and "dcsyncd_" in path.read_text(),
             timeout=10, what="a metrics file of its own")
    assert victim.read_text() == "precious\n", "the metrics were written through a planted link"
    assert daemon.stop() == 0
    assert victim.read_text() == "precious\n"


# --- names from exporters -----------------------------------------------------------------------

HOSTILE = "x\nWATCHDOG=trigger\nSTOPPING=1\n\x1b[2J\x07.ndjson"


def test_a_file_name_cannot_speak_to_systemd(optix, daemon, notify):
    """The STATUS= line names the file in flight: a name with newlines must not add assignments
    of its own to the daemon's notify message (NotifyAccess=main accepts what the daemon sends)."""
    optix.add_faults({"uuid": UUID1, "hold": True})         # the file stays in flight
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", HOSTILE, [{"id": 1}])
    start_ready(daemon, notify)
    wait_for(lambda: optix.held() == 1, what="the hostile file's request in flight", daemon=daemon)
    _, status = notify.wait("STATUS", r"WATCHDOG=trigger", daemon=daemon)
    assert "x\\x0aWATCHDOG=trigger\\x0aSTOPPING=1\\x0a\\x1b[2J\\x07.ndjson" in status, status
    with notify.lock:
        datagrams = list(notify.datagrams)
    for _, text in datagrams:
        assert "\nWATCHDOG=trigger" not in text and "\nSTOPPING=1" not in text and "\x1b" not in text, repr(text)
    assert notify.values("STOPPING") == [] and "trigger" not in notify.values("WATCHDOG")
    optix.release()
    optix.wait_records(UUID1, 1, timeout=WAIT)
    assert daemon.stop() == 0


def test_status_and_retry_print_hostile_names_escaped(optix, daemon):
    """`status` (a file in flight, the last error) and `retry` show exporters' names as the log
    does: no ESC, BEL, CR or LF of theirs reaches root's terminal."""
    optix.add_faults({"uuid": UUID1, "status": 400, "body": {"error": "bad"}})
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", HOSTILE, [{"id": 1}])
    proc = daemon.run_once()
    assert proc.returncode != 0 or (daemon.spool("products") / "failed").exists(), proc.stderr
    failed = [p.name for p in (daemon.spool("products") / "failed").iterdir() if not p.name.startswith(".")]
    assert HOSTILE in failed, failed
    for args in (("status",), ("retry", "products", "--all")):
        out = subprocess.run(daemon.command(*args), capture_output=True, text=True, timeout=30, env=daemon.env(),
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 0, (args, out.stderr)
        text = out.stdout + out.stderr
        assert "\x1b" not in text and "\x07" not in text and "\r" not in text, (args, repr(text))
        assert "x\\x0aWATCHDOG=trigger" in text, (args, text)
