"""The spool is a trust boundary: files written in place, links, FIFOs, planted links in the
directories dcsyncd writes into, a spool directory removed under it, odd names and odd lines.

Run with:  DCSYNCD=build/src/dcsyncd /usr/bin/python3 -m pytest -q tests/test_spool_boundary.py

Exporters are other users than the daemon: where the harness runs the daemon unprivileged
(see tests/harness.py), the writers here run as the exporter user too, so the daemon cannot ask
the kernel for a read lease on their files, as in the shipped unit. No test sleeps to
synchronise: the fake server is stopped (SIGSTOP) to hold a request in flight, and the tests
poll the log, the server or the file system.
"""

import json
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

import gen_ndjson
from harness import UUID1, acked, gen_lines, wait_for

WAIT = 30.0


def store(start, n, value=0):
    return {str(i): gen_ndjson.expected(i, value) for i in range(start, start + n)}


def records_text(start, n, value=0):
    return "".join(gen_ndjson.record(i, value) + "\n" for i in range(start, start + n))


def wait_done(daemon, conn, name, timeout=WAIT):
    done = daemon.state_dir / "done" / conn / name
    wait_for(done.exists, f"{name} archived", daemon, timeout)
    return done


def batches_of(optix, uuid=UUID1):
    """{batch_uuid: [requests...]} of the acknowledged requests."""
    out = {}
    for r in acked(optix, uuid):
        out.setdefault(r["batch_uuid"], []).append(r)
    return out


WRITER = textwrap.dedent("""
    import sys
    path, first, rest = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(path, "w") as f:
        f.write(open(first).read())
        f.flush()
        print("half", flush=True)
        sys.stdin.readline()
        f.write(open(rest).read())
    print("done", flush=True)
""")


class InPlaceWriter:
    """An exporter writing a file in place in two halves, holding it open in between."""

    def __init__(self, daemon, tmp_path, path, first, rest):
        a, b = tmp_path / "first.part", tmp_path / "rest.part"
        a.write_text(first)
        b.write_text(rest)
        for p in (a, b):
            os.chmod(p, 0o644)
        argv = [sys.executable, "-c", WRITER, str(path), str(a), str(b)]
        popen = getattr(daemon, "exporter_popen", None)
        kw = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.proc = popen(argv, **kw) if popen else subprocess.Popen(argv, **kw)
        assert self.proc.stdout.readline().strip() == "half"

    def finish(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "done"
        assert self.proc.wait(WAIT) == 0


# --- files written in place ----------------------------------------------------------------------

def test_a_file_open_for_writing_at_start_is_uploaded_whole_once(optix, daemon, tmp_path):
    """Found by the start-up scan while its writer still holds it open: not taken until closed
    (settle_seconds is long here, so only the writer closing can make it ready)."""
    daemon.write_config([daemon.connection(optix, batch_records=1000)], settle_seconds=600)
    w = InPlaceWriter(daemon, tmp_path, daemon.spool("products") / "inplace.ndjson",
                      records_text(0, 10000), records_text(10000, 10000))
    daemon.start()
    daemon.wait_log(r"dcsyncd .*connection")
    daemon.drop_generated("products", "marker.ndjson", 10, start=50000)
    if daemon.priv.unprivileged:
        # Nobody can say the older file is open: it could be still, and would then go first, so
        # the newer marker waits for it (the line says the daemon has got past the scan).
        daemon.wait_log(r"marker\.ndjson waits for inplace\.ndjson, older and not ready yet")
        assert not optix.requests(UUID1), "a file went up while an older one had not been seen still"
    else:
        # The kernel says it is open for writing: its writer is not done, it holds nothing back.
        wait_done(daemon, "products", "marker.ndjson")
    # Written again and closed, the in-place file is newer than the marker: the marker goes first.
    w.finish()
    wait_done(daemon, "products", "marker.ndjson")
    wait_done(daemon, "products", "inplace.ndjson")
    want = store(0, 20000)
    want.update(store(50000, 10))
    assert optix.records(UUID1) == want
    sizes = [sum(r["n_records"] for r in reqs) for reqs in batches_of(optix).values()]
    assert sorted(sizes) == [10, 20000], f"one batch of the whole file, once: {sizes}"
    assert daemon.stop() == 0


def test_a_file_written_in_place_while_running_is_uploaded_whole_once(optix, daemon, tmp_path):
    daemon.write_config([daemon.connection(optix, batch_records=1000)], settle_seconds=600)
    daemon.spool("products")
    daemon.start()
    daemon.wait_log(r"dcsyncd .*connection")
    w = InPlaceWriter(daemon, tmp_path, daemon.spool("products") / "inplace.ndjson",
                      records_text(0, 5000), records_text(5000, 5000))
    daemon.drop_generated("products", "marker.ndjson", 10, start=50000)
    wait_done(daemon, "products", "marker.ndjson")
    w.finish()
    wait_done(daemon, "products", "inplace.ndjson")
    assert len(optix.records(UUID1)) == 10010
    sizes = sorted(sum(r["n_records"] for r in reqs) for reqs in batches_of(optix).values())
    assert sizes == [10, 10000]
    assert daemon.stop() == 0


def hold_mid_batch(optix, daemon, name, n=50000):
    """Start a batch of n records in requests of 1000 and hold request 3 in flight (server stopped)."""
    daemon.write_config([daemon.connection(optix, batch_records=1000)])
    daemon.drop_generated("products", name, n)
    daemon.start()
    daemon.wait_log(rf"{name}: request 3:")
    optix.suspend()
    work = daemon.spool("products") / ".work"
    return next(p for p in work.iterdir() if p.name.endswith(name))


@pytest.mark.parametrize("how", ["truncated", "deleted"])
def test_a_file_changed_in_work_mid_batch_is_never_completed(optix, daemon, how):
    path = hold_mid_batch(optix, daemon, "big.ndjson")
    try:
        if how == "truncated":
            os.truncate(path, path.stat().st_size // 2)
        else:
            os.unlink(path)
    finally:
        optix.resume()
    m = daemon.wait_log(r"big\.ndjson: failed for good: (.*)", timeout=WAIT)
    assert ("truncated" if how == "truncated" else "deleted") in m.group(1)
    st = optix.state(UUID1)
    assert st["completed_batches"] == [], "a batch with partial data was completed"
    assert len(st["open_batches"]) == 1
    error = daemon.spool("products") / "failed" / "big.ndjson.error.json"
    wait_for(error.exists, "error.json", daemon)
    assert how in json.loads(error.read_text())["error"]
    assert daemon.stop() == 0


# --- links and special files ---------------------------------------------------------------------

def swap_queued(optix, daemon, tmp_path, make):
    """a.ndjson is queued behind a batch in flight; make(path) puts something else in its place."""
    daemon.write_config([daemon.connection(optix, batch_records=1000)])
    big = daemon.drop_generated("products", "big.ndjson", 3000)
    a = daemon.drop_generated("products", "a.ndjson", 5, start=100)
    os.utime(big, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    os.utime(a, ns=(1_100_000_000_000_000_000, 1_100_000_000_000_000_000))
    optix.suspend()
    try:
        daemon.start()
        daemon.wait_log(r"big\.ndjson: request 1:")     # the start-up scan queued a.ndjson too
        tmp = daemon.spool("products") / ".a.swap"
        make(tmp)
        os.rename(tmp, a)
    finally:
        optix.resume()


def test_a_queued_file_replaced_by_a_symlink_is_refused_never_followed(optix, daemon, tmp_path):
    outside = tmp_path / "outside.ndjson"
    outside.write_text(records_text(900000, 3))
    os.chmod(outside, 0o644)
    swap_queued(optix, daemon, tmp_path, lambda p: os.symlink(outside, p))
    daemon.wait_log(r"a\.ndjson: refused: a symbolic link")
    wait_done(daemon, "products", "big.ndjson")
    assert daemon.stop() == 0
    assert optix.records(UUID1) == store(0, 3000), "nothing read through the link"
    assert outside.read_text() == records_text(900000, 3)
    assert os.path.islink(daemon.spool("products") / "a.ndjson"), "the link is left where it is"
    assert not (daemon.spool("products") / "rejected").exists() or not any(
        (daemon.spool("products") / "rejected").iterdir())


def test_a_queued_file_replaced_by_a_fifo_does_not_block_the_daemon(optix, daemon, tmp_path):
    swap_queued(optix, daemon, tmp_path, os.mkfifo)
    daemon.wait_log(r"a\.ndjson: refused: a FIFO")
    wait_done(daemon, "products", "big.ndjson")
    daemon.drop_generated("products", "after.ndjson", 5, start=200)
    wait_done(daemon, "products", "after.ndjson")
    assert daemon.stop(timeout=10) == 0
    assert stat.S_ISFIFO(os.lstat(daemon.spool("products") / "a.ndjson").st_mode)


def test_what_is_not_a_drop_is_named_in_the_log_and_left_alone(optix, daemon, tmp_path):
    spool = daemon.spool("products")
    os.mkfifo(spool / "fifo.ndjson")
    (spool / "dir.ndjson").mkdir()
    (spool / "LOUD.NDJSON").write_text(records_text(0, 1))
    os.symlink("/etc/passwd", spool / "passwd.ndjson")
    daemon.write_config([daemon.connection(optix)])
    daemon.drop_generated("products", "good.ndjson", 3)
    proc = daemon.run_once(timeout=60)
    log = daemon.log()
    assert proc.returncode == 1, log[-3000:]        # --once says something in the spool was refused
    assert "fifo.ndjson: refused: a FIFO" in log
    assert "dir.ndjson: refused: a directory" in log
    assert "passwd.ndjson: refused: a symbolic link" in log
    assert "LOUD.NDJSON: ignored: only names ending in .ndjson, .jsonl, .csv or .tsv (each maybe followed by .gz or .zst; lower case)" in log
    assert optix.records(UUID1) == store(0, 3)


def test_links_planted_where_dcsyncd_writes_are_never_written_through(optix, daemon, tmp_path):
    """An older version left rejected/ and failed/ group-writable: links planted there by an
    exporter are removed, not followed; the directories are made private again."""
    spool = daemon.spool("products")
    victims = {}
    for sub, name in (("failed", "f.ndjson.error.json"), ("rejected", "r.ndjson.rejected.ndjson")):
        daemon.make_daemon_dir(spool / sub)
        os.chmod(spool / sub, 0o770)
        victim = tmp_path / f"victim-{sub}"
        victim.write_text("precious\n")
        os.symlink(victim, spool / sub / name)
        victims[sub] = victim
    daemon.write_config([daemon.connection(optix)])
    optix.add_faults({"uuid": UUID1, "status": 400, "count": 1})
    daemon.drop("products", "f.ndjson", records_text(0, 2))
    proc = daemon.run_once()
    assert proc.returncode == 1
    daemon.drop("products", "r.ndjson", records_text(10, 2) + "not json\n")
    daemon.run_once()
    for sub, victim in victims.items():
        assert victim.read_text() == "precious\n", f"written through a link in {sub}/"
        assert stat.S_IMODE(os.stat(spool / sub).st_mode) & 0o022 == 0, f"{sub}/ still writable by others"
    error = spool / "failed" / "f.ndjson.error.json"
    assert not error.is_symlink() and json.loads(error.read_text())["status"] == 400
    rejected = spool / "rejected" / "r.ndjson.rejected.ndjson"
    assert not rejected.is_symlink() and json.loads(rejected.read_text())["line"] == 3
    assert "was not a file dcsyncd made" in daemon.log()


def test_what_dcsyncd_creates_is_private_whatever_the_umask(optix, daemon):
    metrics = daemon.make_daemon_dir(daemon.dir / "metrics") / "dcsyncd.prom"
    done = daemon.make_daemon_dir(daemon.state_dir / "done" / "products")
    os.chmod(done, 0o770)           # as an older version made it
    daemon.write_config([daemon.connection(optix)], metrics_file=metrics)
    optix.add_faults({"uuid": UUID1, "status": 400, "count": 1})
    daemon.drop("products", "f.ndjson", records_text(0, 2) + "bad\n")
    old = os.umask(0o022)
    try:
        daemon.run_once()
        daemon.drop("products", "g.ndjson", records_text(5, 2))
        daemon.run_once()
    finally:
        os.umask(old)
    spool = daemon.spool("products")
    modes = {p: stat.S_IMODE(os.stat(p).st_mode) for p in (
        spool / ".work", spool / "failed", spool / "rejected", daemon.state_dir / "done" / "products",
        spool / "failed" / "f.ndjson.error.json", spool / "rejected" / "f.ndjson.rejected.ndjson", metrics)}
    # The metrics file is the one meant for another user (node-exporter's): exactly 0644.
    assert modes.pop(metrics) == 0o644, oct(stat.S_IMODE(os.stat(metrics).st_mode))
    for p, mode in modes.items():
        assert mode & 0o027 == 0 or (p.is_dir() and mode & 0o022 == 0 and mode & 0o005 == 0), \
            f"{p}: {oct(mode)}"


# --- the directory itself --------------------------------------------------------------------------

def test_a_spool_directory_removed_and_made_again_is_watched_again(optix, daemon):
    import shutil
    daemon.write_config([daemon.connection(optix)])
    daemon.spool("products")
    daemon.start()
    daemon.wait_log(r"dcsyncd .*connection")
    mark = daemon.mark()
    shutil.rmtree(daemon.spool("products"))
    daemon.wait_log(r"products: .*products was removed or moved away: made again and watched", since=mark)
    daemon.drop_generated("products", "after.ndjson", 7)
    wait_done(daemon, "products", "after.ndjson")
    assert optix.records(UUID1) == store(0, 7)
    assert daemon.stop() == 0


# --- --once and names ------------------------------------------------------------------------------

def test_once_stopped_by_sigterm_while_retrying_exits_non_zero(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    optix.add_faults({"uuid": UUID1, "status": 503, "count": 100000})
    daemon.drop_generated("products", "a.ndjson", 5)
    daemon.start(args=["--once"])
    daemon.wait_log(r"a\.ndjson: request 1 failed \(HTTP 503\), retry")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(WAIT) != 0
    assert "not finished" in daemon.log()


def test_a_255_byte_name_goes_up_and_is_archived_under_its_name(optix, daemon):
    name = "n" * (255 - len(".ndjson")) + ".ndjson"
    daemon.write_config([daemon.connection(optix)])
    tmp = daemon.spool("products") / ".long.tmp"
    with daemon.exporter_open(tmp) as f:
        f.write(records_text(0, 4).encode())
    os.rename(tmp, daemon.spool("products") / name)
    proc = daemon.run_once()
    assert proc.returncode == 0, daemon.log()[-3000:]
    assert optix.records(UUID1) == store(0, 4)
    assert (daemon.state_dir / "done" / "products" / name).exists()
    assert list(daemon.spool("products").glob("n*")) == []


# --- odd lines and odd names -----------------------------------------------------------------------

def test_a_binary_bad_line_is_kept_bounded_in_rejected(optix, daemon):
    junk = bytes(b for b in range(256) if b != 10) * 400
    daemon.write_config([daemon.connection(optix, max_record_bytes=1 << 20)])
    daemon.drop("products", "bin.ndjson", records_text(0, 2).encode() + junk + b"\n" + records_text(2, 2).encode())
    proc = daemon.run_once()
    assert proc.returncode == 1      # a line was rejected
    assert optix.records(UUID1) == store(0, 4)
    rejected = daemon.spool("products") / "rejected" / "bin.ndjson.rejected.ndjson"
    entry = json.loads(rejected.read_text())
    assert entry["line"] == 3 and entry["truncated"] is True and entry["bytes"] == len(junk)
    assert rejected.stat().st_size < 4096, f"{rejected.stat().st_size} bytes kept of a {len(junk)}-byte line"


def test_control_characters_in_a_file_name_never_reach_the_log_raw(optix, daemon):
    name = "a\x1b[31mred\x07.ndjson"
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", name, records_text(0, 2) + "bad\n")
    daemon.run_once()
    log = daemon.log()
    assert "\x1b" not in log and "\x07" not in log
    assert "a\\x1b[31mred\\x07.ndjson" in log


def test_small_files_sharing_a_request_report_their_own_rejected_lines(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    for i in range(3):
        daemon.drop("products", f"s{i}.ndjson", records_text(10 * i, 1) + "bad\n" + records_text(10 * i + 1, 1))
    daemon.run_once()
    log = daemon.log()
    for i in range(3):
        assert f"s{i}.ndjson: 1 line(s) rejected between lines 2 and 2" in log
    assert "between lines 1 and 0" not in log


def test_trailing_rejected_lines_never_make_a_request_with_empty_data(optix, daemon):
    daemon.write_config([daemon.connection(optix, batch_records=2)])
    daemon.drop("products", "t.ndjson", records_text(0, 4) + "bad\nworse\n")
    proc = daemon.run_once()
    assert proc.returncode == 1
    reqs = optix.requests(UUID1)
    assert all(r["n_records"] > 0 for r in reqs), [r["n_records"] for r in reqs]
    st = optix.state(UUID1)
    assert len(st["completed_batches"]) == 1 and st["open_batches"] == {}
    assert optix.records(UUID1) == store(0, 4)
    assert reqs[-1]["batch_completed"] is True and reqs[-1]["last_pk"] == 3


# --- files that wait are looked at again ----------------------------------------------------------

STALE_COUNT = textwrap.dedent("""
    import os, sys
    spool, n = sys.argv[1], int(sys.argv[2])
    for i in range(n):
        tmp, final = f"{spool}/.s{i}.tmp", f"{spool}/s{i}.ndjson"
        with open(tmp, "w") as f:
            f.write('{"id": %d, "n": 1}\\n' % (100000 + i))
        os.chmod(tmp, 0o640)
        # Two readers open it, another name's events between their opens (so both opens are
        # queued); it is renamed into place and both close: the kernel merges the two
        # identical closes, not yet read, into one. Counted: 2 opens, 1 close.
        a = os.open(tmp, os.O_RDONLY)
        os.close(os.open(f"{spool}/.spacer{i}", os.O_WRONLY | os.O_CREAT, 0o600))
        b = os.open(tmp, os.O_RDONLY)
        os.rename(tmp, final)
        os.close(a)
        os.close(b)
        os.unlink(f"{spool}/.spacer{i}")
    print("dropped", flush=True)
""")


def test_renamed_in_files_whose_open_count_went_stale_are_taken_and_it_is_said(optix, daemon):
    """inotify merges a close with an identical one not read yet: two readers closing a renamed-in
    file at once read as one close, and the count of opens sticks at 1 with nobody holding it.
    The daemon is stopped (SIGSTOP) while the exporter drops, so every pair of closes merges; a
    file counted open but unchanged is looked at again and taken, said at info."""
    if not daemon.priv.unprivileged:
        pytest.skip("as root the daemon takes a read lease: an open count never decides, so none goes stale")
    n = 40
    daemon.write_config([daemon.connection(optix)])
    spool = daemon.spool("products")
    daemon.start()
    daemon.wait_log(r"dcsyncd .*connection")
    os.kill(daemon.pid, signal.SIGSTOP)
    try:
        p = daemon.exporter_popen([sys.executable, "-c", STALE_COUNT, spool, n], stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "dropped"
        assert p.wait(WAIT) == 0
    finally:
        os.kill(daemon.pid, signal.SIGCONT)
    for i in range(n):
        wait_done(daemon, "products", f"s{i}.ndjson")
    assert set(optix.records(UUID1)) == {str(100000 + i) for i in range(n)}
    assert re.search(r"s\d+\.ndjson: counted open for .* \(the count was stale\)", daemon.log())
    assert daemon.stop() == 0


def test_a_file_kept_open_idle_in_place_is_not_taken_before_open_recheck_seconds(optix, daemon):
    """An exporter writes a file in place, keeps it open and idle past 10 x settle_seconds (2 s
    here), then writes the rest. The count of opens is right (1), yet after the default recheck
    it would be taken as stale, half written (the rest lost: what the key is for, documented).
    open_recheck_seconds gives such writers the time they need: all 20 records go up."""
    if not daemon.priv.unprivileged:
        pytest.skip("as root the daemon takes a read lease: an open count never decides")
    daemon.write_config([daemon.connection(optix)], open_recheck_seconds=60)
    spool = daemon.spool("products")
    daemon.start()
    daemon.wait_log(r"dcsyncd .*connection")
    path = spool / "slow.ndjson"
    with daemon.exporter_open(path) as f:
        gen_ndjson.write(f, 10, 0)
        f.flush()
        open(path, "ab").close()        # an open and close of its own: the daemon looks, counts 1
        daemon.wait_log(r"slow\.ndjson: still open: waiting for it to be closed")
        time.sleep(3)                   # the writer idles past the default recheck (the scenario)
        gen_ndjson.write(f, 10, 10)
    wait_done(daemon, "products", "slow.ndjson")
    got = len(optix.records(UUID1))
    assert got == 20, f"{got} of 20 records went up:\n{daemon.log()[-3000:]}"
    assert "the count was stale" not in daemon.log()
    assert daemon.stop() == 0


def unprivileged_only(daemon):
    if not daemon.priv.unprivileged:
        pytest.skip("the daemon must be another user than the exporter (it reads any file as root)")


def test_a_refused_unreadable_drop_is_taken_once_made_readable(optix, daemon):
    """A 0600 drop is refused (the daemon's group cannot read it); the exporter's chmod 0640
    (IN_ATTRIB) makes it go up, without another drop or a restart."""
    unprivileged_only(daemon)
    daemon.write_config([daemon.connection(optix)])
    spool = daemon.spool("products")
    daemon.start()
    daemon.wait_log(r"dcsyncd .*connection")
    tmp = spool / ".private2.tmp"
    with daemon.exporter_open(tmp) as f:
        gen_ndjson.write(f, 5, 0)
    os.chmod(tmp, 0o600)
    os.rename(tmp, spool / "private2.ndjson")       # renamed in as 0600: looked at, refused
    daemon.wait_log(r"private2\.ndjson: refused: not readable by dcsyncd \(give its group read access\)")
    os.chmod(spool / "private2.ndjson", 0o640)
    wait_done(daemon, "products", "private2.ndjson")
    assert optix.records(UUID1) == store(0, 5)
    assert daemon.stop() == 0


def test_drops_that_could_not_be_opened_for_lack_of_descriptors_are_tried_again(optix, daemon):
    """EMFILE while looking at new drops: the names stay waiting and go up once descriptors are
    free again (a timer tries them), not only after the next drop or a restart."""
    daemon.write_config([daemon.connection(optix)])
    daemon.spool("products")
    daemon.start()
    daemon.wait_log(r"dcsyncd .*connection")
    used = len(os.listdir(f"/proc/{daemon.pid}/fd"))

    def nofile(soft):
        # As the daemon's own user: changing another user's limits takes CAP_SYS_RESOURCE.
        subprocess.run([*daemon.priv.daemon_prefix(), "prlimit", f"--pid={daemon.pid}", f"--nofile={soft}:"],
                       check=True, timeout=WAIT)

    limits = open(f"/proc/{daemon.pid}/limits").read()
    soft = int(re.search(r"^Max open files\s+(\d+)", limits, re.M).group(1))
    nofile(used)
    try:
        for i in range(5):
            daemon.drop_generated("products", f"e{i}.ndjson", 2, start=10 * i)
        daemon.wait_log(r"e4\.ndjson: cannot look at it: Too many open files")
    finally:
        nofile(soft)
    for i in range(5):
        wait_done(daemon, "products", f"e{i}.ndjson")
    assert len(optix.records(UUID1)) == 10
    assert daemon.stop() == 0


def test_a_file_with_a_future_mtime_found_at_start_goes_up_at_once(optix, daemon):
    """cp -p or tar from a host whose clock is a day ahead: stillness is seen by the daemon's own
    clock over settle_seconds, the mtime is never compared with the wall clock."""
    unprivileged_only(daemon)
    daemon.write_config([daemon.connection(optix)])
    path = daemon.drop_generated("products", "ahead.ndjson", 7)
    future = time.time() + 86400
    os.utime(path, (future, future))
    proc = daemon.run_once(timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert optix.records(UUID1) == store(0, 7)


def test_a_file_that_waits_to_be_seen_still_goes_up_before_newer_ready_files(optix, daemon):
    """Found by the start-up scan (or the rescan of a reload), a file nobody can vouch for waits
    settle_seconds to be seen still; a newer drop renamed in meanwhile is ready at once (inotify
    saw its writer close it). The newer one waits: sent first, the older file's values would
    overwrite its newer ones at the API."""
    unprivileged_only(daemon)
    daemon.write_config([daemon.connection(optix, batch_records=1000)], settle_seconds=2)
    daemon.drop("products", "old.ndjson", gen_lines(0, 50, value=1))
    daemon.start()
    daemon.wait_log(r"old\.ndjson: nobody can say it is closed")
    daemon.drop("products", "new.ndjson", gen_lines(0, 50, value=2))
    wait_done(daemon, "products", "old.ndjson")
    wait_done(daemon, "products", "new.ndjson")
    assert optix.records(UUID1) == store(0, 50, value=2), "the older file's records went up after the newer's"
    assert re.search(r"new\.ndjson waits for old\.ndjson, older and not ready yet", daemon.log())
    assert daemon.stop() == 0


def test_a_stale_temporary_of_a_killed_drop_is_removed_and_a_fresh_one_kept(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    spool = daemon.spool("products")
    stale, fresh = spool / ".dcsyncd-drop-4242.tmp", spool / ".dcsyncd-drop-4243-00ff00ff00ff00ff.tmp"
    for p in (stale, fresh):
        with daemon.exporter_open(p) as f:
            f.write(b'{"id": "half"')
    old = time.time() - 7200
    os.utime(stale, (old, old))
    proc = daemon.run_once()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not stale.exists() and fresh.exists()
    assert re.search(r"\.dcsyncd-drop-4242\.tmp: removed: a temporary of dcsyncd drop", daemon.log())
    assert optix.records(UUID1) == {}


def grow_while_held(daemon, optix, name, head, tail, after):
    """Drop @name (@head) before the daemon starts, so it is taken by its stillness; while its
    request @after + 1 is held at the server, append @tail to it in .work/; run to the end."""
    daemon.drop("products", name, head)
    optix.add_faults({"uuid": UUID1, "hold": True, "after": after})
    daemon.start(args=["--once"])
    wait_for(lambda: optix.held() >= 1, "a request held", daemon)
    work = [p for p in (daemon.spool("products") / ".work").iterdir() if p.name.endswith(f"-{name}")]
    assert len(work) == 1, work
    with open(work[0], "a") as f:
        f.write(tail)
    optix.release(1)
    assert daemon.proc.wait(WAIT) == 0, daemon.log()[-3000:]


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_a_line_its_writer_paused_in_goes_up_whole_when_the_file_grows(optix, daemon, fmt):
    """A file found at start-up (taken once still) ends in the middle of a line: its writer
    paused there. While the batch's second request is held at the server the writer finishes
    the line and adds one more; the last request is cut again from its start, so the line goes
    up whole, not cut in two (a CSV row with half its value, or two rejected NDJSON halves)."""
    daemon.write_config([daemon.connection(optix, batch_records=1000, csv_columns="id:integer")])
    if fmt == "csv":
        head = "id,v\n" + "".join(f"{k},a\n" for k in range(2500)) + "2500,ab"
        tail = "c\n2501,x\n"
    else:
        head = "".join(json.dumps({"id": k, "v": "a"}) + "\n" for k in range(2500)) + '{"id": 2500, "v": "ab'
        tail = 'c"}\n{"id": 2501, "v": "x"}\n'
    grow_while_held(daemon, optix, f"a.{fmt}", head, tail, after=1)
    recs = optix.records(UUID1)
    assert len(recs) == 2502 and recs["2500"]["v"] == "abc" and recs["2501"]["v"] == "x", \
        (len(recs), recs.get("2500"), daemon.log()[-3000:])
    assert not (daemon.spool("products") / "rejected").exists() or \
        not any(p.stat().st_size for p in (daemon.spool("products") / "rejected").iterdir())
    assert "cut mid-line" in daemon.log()


@pytest.mark.parametrize("more", [1, 1500])
def test_a_last_request_of_only_a_half_line_is_cut_again_and_sent(optix, daemon, more):
    """The file's last request holds nothing but the half line its writer paused in (rejected as
    it stood): when the file grows, that request is cut again and sent, whole line and all that
    follows, never taken as done for having had no record."""
    daemon.write_config([daemon.connection(optix, batch_records=1000)])
    head = "".join(json.dumps({"id": k, "v": "a"}) + "\n" for k in range(1000)) + '{"id": 1000, "v": "ab'
    tail = 'c"}\n' + "".join(json.dumps({"id": k, "v": "x"}) + "\n" for k in range(1001, 1001 + more))
    grow_while_held(daemon, optix, "a.ndjson", head, tail, after=0)
    recs = optix.records(UUID1)
    assert len(recs) == 1001 + more and recs["1000"]["v"] == "abc", (len(recs), daemon.log()[-3000:])
    assert optix.state(UUID1)["open_batches"] == {}
