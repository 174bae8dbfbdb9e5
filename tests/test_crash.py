"""Crash safety of dcsyncd: SIGKILL at every named step, random kill -9, torn journal tails, ENOSPC.

Needs a build with crash points for the deterministic tests (the others run on any build):
    meson setup build-crash -Dcrashpoints=true && ninja -C build-crash
    DCSYNCD=$PWD/build-crash/src/dcsyncd /usr/bin/python3 -m pytest -q tests/test_crash.py

Tests:
  1. test_crash_point: DCSYNCD_CRASH_AT at every crash point (N-th hits mid-batch), over two
     multi-request files and over small files that share a batch; then a clean --once.
     test_crash_then_same_name_dropped_again: a new file under the name of one left in .work/.
  2. test_random_kills: kill -9 at seeded random moments of a running daemon, then a clean run.
  3. test_torn_journal_tail*: the journal cut at every byte of its last record (and corrupted),
     and cut anywhere in the in-flight write of a multi-file batch's OPEN.
  4. test_journal_enospc*: state_dir on a full tmpfs (root only, else skipped), at start and
     mid-batch: nothing leaves that is not durable, and the daemon resumes by itself.
  5. test_archive_copy_interrupted: done/ on another filesystem, the archive copy interrupted.

What every test checks after the dust settles (see check_final):
  * the fake store equals the union of the files, the newest file (by mtime) winning per key;
  * no batch is left open at the server, every batch_uuid the server saw is completed, and no
    request was refused;
  * every file went up under exactly one batch_uuid (so an interrupted batch was resumed under
    its own uuid), and a batch_uuid holds several files only as a multi-file batch: one request
    of whole files, re-sent identically if at all;
  * every file is in <state_dir>/done/<conn>/, none is left in the spool or in .work/.

Environment:
  DCSYNCD_KILLS         rounds of the randomized kill -9 test (default 10; use 50+ for a full run)
  DCSYNCD_SEED          seed of that test (default: random, printed with the figures; run with -s)
  DCSYNCD_ONCE_TIMEOUT  seconds a --once run may take before it counts as hung (default 6)
"""
import errno
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time

import pytest

from harness import UUID1, Daemon

CONN = "products"
PRIMARY = "id"
# Records carry a little padding so requests and journal offsets are not trivially small.
PAD = "p" * 24


# --- helpers -------------------------------------------------------------------------------------

def crashpoints_built(daemon):
    """True when the binary under test honours DCSYNCD_CRASH_AT (built with -Dcrashpoints=true)."""
    # The default build is the plain one; a crash build is recognisable by the strings it carries.
    try:
        return b"DCSYNCD_CRASH_AT" in daemon.binary.read_bytes()
    except OSError:
        return False


def need_crashpoints(daemon):
    if not crashpoints_built(daemon):
        pytest.skip(f"{daemon.binary} was built without crash points (meson -Dcrashpoints=true)")


class SpoolFile:
    """One file of the test: its name, its keys in file order and the value it sets. The name says
    the format: NDJSON, or CSV/TSV with a header (id typed integer by configure), each gzip- or
    zstd-compressed when it ends in .gz or .zst."""

    def __init__(self, name, keys, value, mtime_ns):
        self.name, self.keys, self.value, self.mtime_ns = name, list(keys), value, mtime_ns
        self.pos = {k: i for i, k in enumerate(self.keys)}
        self.tag = f"{name}(v={value})"     # a name may be dropped twice

    def lines(self):
        return [json.dumps({PRIMARY: k, "v": self.value, "pad": PAD}) for k in self.keys]

    def data(self):
        base = re.sub(r"\.(gz|zst)$", "", self.name)
        if base.endswith((".csv", ".tsv")):
            d = "," if base.endswith(".csv") else "\t"
            # A quoted cell over two lines, so offsets and line numbers of rows differ.
            text = d.join([PRIMARY, "v", "pad"]) + "\r\n" + "".join(
                f'{k}{d}{self.value}{d}"{PAD}\n"\r\n' for k in self.keys)
        else:
            text = "".join(l + "\n" for l in self.lines())
        data = text.encode()
        if self.name.endswith(".gz"):
            data = gzip.compress(data, mtime=0)
        elif self.name.endswith(".zst"):
            data = subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout
        return data

    def drop(self, daemon):
        path = daemon.drop(CONN, self.name, self.data())
        # Spool order is mtime order: pin it so "newest file" is not left to the clock's grain.
        os.utime(path, ns=(self.mtime_ns, self.mtime_ns))
        return path


BASE_MTIME_NS = 1_700_000_000 * 10**9


def expected_store(files):
    """pk_json -> value of the newest file (highest mtime) holding the key."""
    out = {}
    for f in sorted(files, key=lambda f: f.mtime_ns):
        for k in f.keys:
            out[json.dumps(k)] = f.value
    return out


def segments(request, files):
    """Split a request's keys into runs of files: [(file, first position, length)]. A request holds
    part of one file, or several whole small files (a multi-file batch). Fails when ambiguous."""
    keys, out, i = request["keys"], [], 0
    while i < len(keys):
        runs = []
        for f in files:
            p = f.pos.get(keys[i])
            if p is None:
                continue
            j = i
            while j < len(keys) and f.pos.get(keys[j]) == p + (j - i):
                j += 1
            runs.append((j - i, f, p))
        assert runs, f"request seq={request['seq']}: key {keys[i]} is in no file"
        runs.sort(key=lambda r: -r[0])
        assert len(runs) == 1 or runs[0][0] > runs[1][0], (
            f"request seq={request['seq']} batch={request['batch_uuid']}: keys from {i} on match "
            f"{[(r[1].tag, r[0]) for r in runs]} equally")
        n, f, p = runs[0]
        out.append((f, p, n))
        i += n
    return out


def batches_by_file(requests, files):
    """(file name -> set of batch_uuids, batch_uuid -> set of file names, batch_uuid -> set of the
    distinct key lists its requests carried), over the requests that carried records."""
    per_file, per_batch, bodies = {}, {}, {}
    for r in requests:
        if not r["keys"] or r["batch_uuid"] is None:
            continue
        segs = segments(r, files)
        if len(segs) > 1:
            partial = [(f.tag, p, n) for f, p, n in segs if p != 0 or n != len(f.keys)]
            assert not partial, f"request seq={r['seq']} mixes files but holds only part of {partial}"
        for f, _, _ in segs:
            per_file.setdefault(f.tag, set()).add(r["batch_uuid"])
            per_batch.setdefault(r["batch_uuid"], set()).add(f.tag)
        bodies.setdefault(r["batch_uuid"], set()).add(tuple(json.dumps(k) for k in r["keys"]))
    return per_file, per_batch, bodies


def compare_store(optix, files):
    """(records checked, lost keys, stale keys, unexpected keys) of the store against the files."""
    want = expected_store(files)
    have = optix.state(UUID1)["records"]
    lost = sorted(k for k in want if k not in have)
    stale = sorted(k for k in want if k in have and have[k].get("v") != want[k])
    extra = sorted(k for k in have if k not in want)
    return len(want), lost, stale, extra


def check_final(daemon, optix, files, where=""):
    """Every invariant of a finished upload (see the module docstring)."""
    n, lost, stale, extra = compare_store(optix, files)
    assert not lost and not stale and not extra, (
        f"{where}store differs from the newest-file-wins union of {n} records: {len(lost)} lost "
        f"(e.g. {lost[:5]}), {len(stale)} stale (e.g. {stale[:5]}), {len(extra)} unexpected")
    st = optix.state(UUID1)
    assert st["open_batches"] == {}, f"{where}batches left open at the server: {st['open_batches']}"
    requests = optix.requests(UUID1)
    completed = set(st["completed_batches"])
    seen = {r["batch_uuid"] for r in requests if r["batch_uuid"]}
    assert seen <= completed, f"{where}batches seen but never completed: {seen - completed}"
    bad_status = [(r["seq"], r["status"], r.get("error")) for r in requests if r["status"] not in (200, None)]
    assert not bad_status, f"{where}requests the server refused: {bad_status[:5]}"
    per_file, per_batch, bodies = batches_by_file(requests, files)
    # Several files share a batch only as a multi-file batch: one request of whole files, which a
    # resume may re-send, but never with other contents.
    shared = {b: sorted(fs) for b, fs in per_batch.items() if len(fs) > 1 and len(bodies[b]) > 1}
    assert not shared, f"{where}batch_uuid used for different files: {shared}"
    several = {f: bs for f, bs in per_file.items() if len(bs) > 1}
    assert not several, f"{where}a file went up under several batch_uuids (resume lost its uuid): {several}"
    spool = daemon.spool(CONN)
    left = sorted(p.name for p in spool.iterdir() if p.is_file())
    assert not left, f"{where}files left in the spool: {left}"
    work = spool / ".work"
    in_work = sorted(p.name for p in work.iterdir()) if work.exists() else []
    assert not in_work, f"{where}files left in .work/: {in_work}"
    done = daemon.state_dir / "done" / CONN
    archived = sorted(p.name for p in done.iterdir()) if done.exists() else []
    # A name taken twice is archived the second time as <id>-<name>.
    assert sorted(re.sub(r"^[0-9]+-", "", a) for a in archived) == sorted(f.name for f in files), \
        f"{where}done/ holds {archived}"
    assert not (spool / "failed").exists() or not any((spool / "failed").iterdir()), \
        f"{where}files failed: {sorted(p.name for p in (spool / 'failed').iterdir())}"
    return per_file


def configure(daemon, optix, **keys):
    keys.setdefault("batch_records", 1000)
    keys.setdefault("csv_columns", "id:integer")
    keys.setdefault("rate_limit", "off")
    daemon.write_config([daemon.connection(optix, name=CONN, uuid=UUID1, **keys)])


# A --once run of these tests takes well under a second; a run that has not exited by then hangs.
ONCE_TIMEOUT = float(os.environ.get("DCSYNCD_ONCE_TIMEOUT", "6"))


def run_once(daemon, crash_at=None, timeout=ONCE_TIMEOUT):
    env = {"DCSYNCD_CRASH_AT": crash_at} if crash_at else {}
    mark = daemon.mark()
    try:
        proc = daemon.run_once(timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        pytest.fail(f"dcsyncd --once{' with DCSYNCD_CRASH_AT=' + crash_at if crash_at else ''} did not exit "
                    f"within {timeout} s; its log:\n{err[-3000:]}")
    return proc, daemon.log(mark)


@pytest.fixture(autouse=True)
def _no_inherited_crash(monkeypatch):
    # A crash point armed in the caller's environment would leak into the "clean" runs.
    monkeypatch.delenv("DCSYNCD_CRASH_AT", raising=False)


# --- 1. every crash point --------------------------------------------------------------------------

# Two files, batch_records=1000: A = keys 0..3499 ascending (4 requests), B = keys 4499..2000
# descending (3 requests; its first keys never start a request of A). B is newer and overwrites
# A on 2000..3499. Journal syncs in a clean run: OPEN A, 3 acks, COMPLETED A, OPEN B (carrying
# ARCHIVED A), 2 acks, COMPLETED B, final sync (ARCHIVED B) = 10. Responses: 7. Acks followed by
# a next request (after-ack): 5.
def two_files():
    return [SpoolFile("a.ndjson", range(0, 3500), "a", BASE_MTIME_NS),
            SpoolFile("b.ndjson", range(4499, 1999, -1), "b", BASE_MTIME_NS + 10**9)]


def shuffled(keys, seed):
    keys = list(keys)
    random.Random(seed).shuffle(keys)
    return keys


# Small files that group, then a large one: batch_records=1000; S1..S4 = 300 records each, S_k on
# keys [200k, 200k+300) shuffled (each overwrites 100 keys of the previous one), B = keys
# 3499..1000 descending (overwrites S4 on 1000..1099). Batch 1 = S1+S2+S3 in one request, S4 taken
# but carried over (not journaled); batch 2 = S4 alone (B does not fit: carried); batch 3 = B,
# 3 requests. Hits: after-rename 5, after-open 3, after-response 5, after-ack 2, archive 3, journal
# syncs 9 (OPEN 1, COMPLETED 1, OPEN 2, COMPLETED 2, OPEN 3, 2 acks, COMPLETED 3, final).
def grouped_files():
    small = [SpoolFile(f"s{k}.ndjson", shuffled(range(200 * k, 200 * k + 300), k), f"s{k}",
                       BASE_MTIME_NS + k * 10**9) for k in range(1, 5)]
    return small + [SpoolFile("b.ndjson", range(3499, 999, -1), "b", BASE_MTIME_NS + 10 * 10**9)]


# The same as two_files, in the other formats (issue 15): offsets are those of the decompressed
# (CSV: the file's) bytes, a resume decompresses again from the start and re-reads the header.
def formats_files():
    return [SpoolFile("a.csv.gz", range(0, 3500), "a", BASE_MTIME_NS),
            SpoolFile("b.ndjson.zst", range(4499, 1999, -1), "b", BASE_MTIME_NS + 10**9)]


def csv_files():
    return [SpoolFile("a.csv", range(0, 3500), "a", BASE_MTIME_NS),
            SpoolFile("b.tsv.zst", range(4499, 1999, -1), "b", BASE_MTIME_NS + 10**9)]


SCENARIOS = {"big": two_files, "grouped": grouped_files, "formats": formats_files, "csv": csv_files}

# (scenario, point, N, pre-crash that leaves journal state to compact, True when the point is hit)
CASES = (
    [("big", "after-rename", n, None, True) for n in (1, 2)]
    + [("big", "after-open", n, None, True) for n in (1, 2)]
    + [("big", "after-response", n, None, True) for n in (1, 2, 4, 5, 7)]
    + [("big", "after-ack", n, None, True) for n in (1, 3, 4, 5)]
    + [("big", "before-archive", n, None, True) for n in (1, 2)]
    + [("big", "after-archive", n, None, True) for n in (1, 2)]
    + [("big", p, n, None, True) for p in ("journal-before-write", "journal-before-fsync", "journal-after-fsync")
       for n in (1, 2, 5, 6, 10)]
    # Compaction runs forced at every start: on an empty journal, and over an open batch.
    + [("big", p, 1, pre, True) for p in ("compact-before-fsync", "compact-before-rename", "compact-after-rename")
       for pre in (None, "after-ack:1")]
    # Never reached: the run must finish normally.
    + [("big", "after-ack", 99, None, False)]
    # Multi-file batches and the carried-over file.
    + [("grouped", "after-rename", n, None, True) for n in (1, 3, 4, 5)]
    + [("grouped", "after-open", n, None, True) for n in (1, 2, 3)]
    + [("grouped", "after-response", n, None, True) for n in (1, 2, 3, 5)]
    + [("grouped", "after-ack", n, None, True) for n in (1, 2)]
    + [("grouped", p, n, None, True) for p in ("before-archive", "after-archive") for n in (1, 2, 3)]
    + [("grouped", p, n, None, True) for p in ("journal-before-write", "journal-before-fsync", "journal-after-fsync")
       for n in (1, 2, 3, 4)]
    + [("grouped", "journal-before-fsync", 9, None, True), ("grouped", "after-response", 6, None, False)]
    + [("grouped", p, 1, "after-open:1", True) for p in ("compact-before-rename", "compact-after-rename")]
    # Compressed and CSV files resume at the same cut (issue 15).
    + [(sc, "after-open", n, None, True) for sc in ("formats", "csv") for n in (1, 2)]
    + [(sc, "after-response", n, None, True) for sc in ("formats", "csv") for n in (2, 5)]
    + [(sc, "after-ack", n, None, True) for sc in ("formats", "csv") for n in (1, 3, 4)]
    + [(sc, "journal-after-fsync", n, None, True) for sc in ("formats", "csv") for n in (2, 6)]
    + [(sc, "before-archive", 1, None, True) for sc in ("formats", "csv")]
)


def case_id(case):
    scenario, point, n, pre, _ = case
    return f"{scenario}-{point}:{n}" + (f"-after-{pre}" if pre else "")


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_crash_point(daemon, optix, case):
    scenario, point, n, pre, reached = case
    need_crashpoints(daemon)
    configure(daemon, optix)
    files = SCENARIOS[scenario]()
    for f in files:
        f.drop(daemon)

    crash_at = f"{point}:{n}" if n is not None else point
    if pre:
        proc, _ = run_once(daemon, pre)
        assert proc.returncode == -9, f"pre-crash {pre}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    opened_before = set(re.findall(r"batch ([0-9a-f-]{36}) opened", daemon.log()))
    proc, log1 = run_once(daemon, crash_at)
    if reached:
        assert proc.returncode == -9, (f"{crash_at}: expected death by SIGKILL, got exit {proc.returncode}\n"
                                       f"{log1[-3000:]}")
    else:
        assert proc.returncode == 0, f"{crash_at} is never reached: expected exit 0, got {proc.returncode}\n{log1[-3000:]}"
    opened = opened_before | set(re.findall(r"batch ([0-9a-f-]{36}) opened", log1))
    seq_at_crash = max((r["seq"] for r in optix.requests(UUID1)), default=0)
    open_at_crash = set(optix.state(UUID1)["open_batches"])

    proc, log2 = run_once(daemon)
    assert proc.returncode == 0, f"restart after {crash_at}: exit {proc.returncode}\n{log2[-4000:]}"
    # SIGKILL loses no written byte (the page cache survives the process): nothing is torn.
    assert "torn or corrupt tail" not in log2, f"a journal tail was cut after {crash_at}:\n{log2[-3000:]}"

    per_file = check_final(daemon, optix, files, where=f"after {crash_at}: ")
    # A batch the server holds open must be finished under its own uuid, first thing after the restart.
    after = optix.requests(UUID1, since=seq_at_crash)
    for b in open_at_crash:
        assert any(r["batch_uuid"] == b for r in after), f"open batch {b} was not resumed after {crash_at}"
    if open_at_crash:
        assert after and after[0]["batch_uuid"] in open_at_crash, \
            f"after {crash_at} the first request went to {after[0]['batch_uuid'] if after else None}, " \
            f"not to the open batch {open_at_crash}"
    # Every resume names a batch that was opened before the crash, and keeps its uuid.
    for m in re.finditer(r"resuming batch ([0-9a-f-]{36})", log2):
        assert m.group(1) in opened, f"resumed batch {m.group(1)} was never opened"
    if reached and (point in ("after-open", "after-ack", "after-response") or pre):
        assert "resuming batch" in log2, f"nothing resumed after {crash_at}:\n{log2[-3000:]}"
    opened |= set(re.findall(r"batch ([0-9a-f-]{36}) opened", log2))
    assert set().union(*per_file.values()) <= opened, "a batch_uuid reached the server that no log line opened"


@pytest.mark.parametrize("crash_at", ["after-rename:1", "after-open:1", "after-ack:1", "before-archive:1"])
def test_crash_then_same_name_dropped_again(daemon, optix, crash_at):
    """The exporter drops a new version under the same name while the old one sits in .work/
    after a crash: both go up, old first, and the new one's values win."""
    need_crashpoints(daemon)
    configure(daemon, optix)
    old = SpoolFile("a.ndjson", range(0, 2500), "old", BASE_MTIME_NS)
    new = SpoolFile("a.ndjson", range(2999, 499, -1), "new", BASE_MTIME_NS + 10**9)
    old.drop(daemon)
    proc, log = run_once(daemon, crash_at)
    assert proc.returncode == -9, f"exit {proc.returncode}\n{log[-3000:]}"
    new.drop(daemon)
    proc, log = run_once(daemon)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{log[-3000:]}"
    check_final(daemon, optix, [old, new], where=f"after {crash_at} and a new a.ndjson: ")


@pytest.mark.parametrize("name,change,resumed", [
    ("a.csv", {"csv_columns": "id:string"}, False),
    ("a.csv", {"csv_empty": "null"}, False),
    ("a.tsv", {"csv_delimiter": "semicolon"}, False),
    ("a.ndjson", {"csv_columns": "id:string"}, True),
], ids=["csv_columns", "csv_empty", "csv_delimiter", "ndjson-unaffected"])
def test_a_csv_batch_is_not_resumed_under_other_csv_options(daemon, optix, name, change, resumed):
    """A crash mid-batch, then csv_columns, csv_empty or csv_delimiter changed: the rest of its rows
    would go under the same batch_uuid with other types or fields; the file fails as at a changed
    destination, the batch left open. An NDJSON batch, which no CSV option cuts, resumes."""
    need_crashpoints(daemon)
    configure(daemon, optix)
    f = SpoolFile(name, range(0, 2500), "a", BASE_MTIME_NS)
    f.drop(daemon)
    proc, log = run_once(daemon, "after-ack:1")
    assert proc.returncode == -9, f"exit {proc.returncode}\n{log[-3000:]}"
    assert len(optix.requests(UUID1)) == 1
    configure(daemon, optix, **change)
    proc, log = run_once(daemon)
    if resumed:
        assert proc.returncode == 0, f"exit {proc.returncode}\n{log[-3000:]}"
        check_final(daemon, optix, [f], where=f"{name} after {change}: ")
        return
    assert proc.returncode == 1, f"exit {proc.returncode}\n{log[-3000:]}"
    assert len(optix.requests(UUID1)) == 1, "the batch went on with rows cut by other CSV options"
    error = daemon.spool(CONN) / "failed" / f"{name}.error.json"
    assert error.exists(), log[-3000:]
    assert "other CSV options" in json.loads(error.read_text())["error"]
    assert optix.state(UUID1)["open_batches"], "the batch was completed"


# --- 2. random kill -9 ------------------------------------------------------------------------------

def test_random_kills(daemon, optix):
    kills = int(os.environ.get("DCSYNCD_KILLS", "10"))
    seed = int(os.environ.get("DCSYNCD_SEED") or random.randrange(1 << 32))
    rng = random.Random(seed)
    print(f"\nrandom kill test: DCSYNCD_KILLS={kills} DCSYNCD_SEED={seed}")
    # Slow answers so kills land while requests are in flight.
    optix.configure(delay=0.05)
    configure(daemon, optix, batch_records=400)

    files = []

    def drop_next():
        # File k covers keys [k*500, k*500+1000) with "v": k (3 requests), shuffled per file so a
        # request's keys name their file; file k+1 overwrites the upper half of file k. Files
        # 2 and 3 of every 4 are small (150 keys): they share one request, the next one is carried.
        k = len(files)
        keys = shuffled(range(k * 500, k * 500 + (150 if k % 4 in (2, 3) else 1000)), seed * 1000 + k)
        f = SpoolFile(f"f{k:04d}.ndjson", keys, k, BASE_MTIME_NS + k * 10**9)
        f.drop(daemon)
        files.append(f)

    def pending():
        spool = daemon.spool(CONN)
        work = spool / ".work"
        return (sum(1 for p in spool.iterdir() if p.is_file())
                + (sum(1 for _ in work.iterdir()) if work.exists() else 0))

    for _ in range(4):
        drop_next()
    survived = 0
    for i in range(kills):
        # Keep work in the spool so every kill lands on an upload, not on an idle daemon.
        while pending() < 3:
            drop_next()
        daemon.start(env={})
        # Half the kills early (replay, orphan release, compaction, first OPEN), half anywhere.
        time.sleep(rng.uniform(0.0, 0.1) if rng.random() < 0.5 else rng.uniform(0.0, 0.6))
        status = daemon.kill9()
        if status == -9:
            survived += 1
        else:
            pytest.fail(f"round {i}: the daemon exited with {status} before the kill:\n{daemon.log()[-3000:]}")

    proc, log = run_once(daemon, timeout=120)
    n, lost, stale, extra = compare_store(optix, files)
    reqs = optix.requests(UUID1)
    try:
        multi = sum(1 for fs in batches_by_file(reqs, files)[1].values() if len(fs) > 1)
    except AssertionError:
        multi = "?"     # check_final below says why
    print(f"random kill test: seed={seed} kills survived={survived}/{kills} files={len(files)} "
          f"multi-file batches={multi} "
          f"requests={len(reqs)} resent-to-completed={sum(1 for r in reqs if r.get('resent_completed_batch'))} "
          f"records checked={n} records lost={len(lost)} stale overwrites={len(stale)} unexpected={len(extra)}")
    assert proc.returncode == 0, f"clean run after the kills: exit {proc.returncode}\n{log[-4000:]}"
    check_final(daemon, optix, files, where=f"seed {seed}: ")


# --- 3. torn journal tail ---------------------------------------------------------------------------

def journal_records(path):
    """[(offset, length incl. header)] of the well-formed records of a journal."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + 8 <= len(data):
        n = int.from_bytes(data[pos:pos + 4], "little")
        if n == 0 or pos + 8 + n > len(data):
            break
        out.append((pos, 8 + n))
        pos += 8 + n
    assert pos == len(data), f"journal {path} has {len(data) - pos} stray bytes"
    return out


def crc32c(data):
    """CRC-32C as src/crc32c.c computes it (journal records are small: bitwise is fine)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def without_destinations(image):
    """The journal with each batch's destination (its last 8 bytes) zeroed, as an older journal
    reads: the copies below each run against a fake server of their own (another port, so another
    base_url), and a batch resumed at another destination is refused, rightly."""
    out, pos = bytearray(image), 0
    while pos + 8 <= len(out):
        n = int.from_bytes(out[pos:pos + 4], "little")
        if n == 0 or pos + 8 + n > len(out):
            break
        if out[pos + 8] == ord("S"):
            out[pos + 8 + n - 8:pos + 8 + n] = bytes(8)
            out[pos + 4:pos + 8] = crc32c(bytes(out[pos + 8:pos + 8 + n])).to_bytes(4, "little")
        pos += 8 + n
    return bytes(out)


def test_torn_journal_tail(daemon, optix, optix_factory):
    need_crashpoints(daemon)
    configure(daemon, optix, batch_records=10)
    files = [SpoolFile("t.ndjson", range(0, 20), "t", BASE_MTIME_NS)]
    files[0].drop(daemon)
    proc, log = run_once(daemon, "after-ack:1")
    assert proc.returncode == -9, f"exit {proc.returncode}\n{log[-3000:]}"

    journal = daemon.state_dir / "journal"
    recs = journal_records(journal)
    last_off, last_len = recs[-1]
    image = without_destinations(journal.read_bytes())
    assert last_off + last_len == len(image)
    sent = optix.requests(UUID1)
    assert len(sent) == 1 and sent[0]["batch_completed"] is False, sent
    batch = sent[0]["batch_uuid"]

    saved = save_state(daemon)
    records = [json.loads(l) for l in files[0].lines()]

    # Every cut inside the last record (0 = the record is gone whole), and a few corrupted bytes.
    variants = [("cut", t) for t in range(last_off, last_off + last_len)]
    variants += [("flip", last_off + i) for i in (0, 4, 8, last_len // 2, last_len - 1)]

    def one(d, fx, variant):
        kind, at = variant
        where = f"journal {kind} at {at} (last record {last_off}+{last_len}): "
        fx.reset()
        # The server as the crash left it: request 1 of the batch staged, nothing stored.
        status, _, body = fx.upload(UUID1, data=records[:10], batch_uuid=batch, batch_completed=False)
        assert status == 200, body
        if kind == "cut":
            data = image[:at]
        else:
            data = bytearray(image)
            data[at] ^= 0x40
            data = bytes(data)
        restore_state(d, saved, data)
        expect_cut = len(data) - last_off if (kind == "flip" or at > last_off) else 0

        proc, log = run_once(d)
        assert proc.returncode == 0, f"{where}exit {proc.returncode}\n{log[-3000:]}"
        cuts = re.findall(r"cut (\d+) bytes of torn or corrupt tail", log)
        if expect_cut:
            assert cuts == [str(expect_cut)], f"{where}expected one warning cutting {expect_cut} bytes:\n{log[-2000:]}"
        else:
            assert not cuts, f"{where}a clean journal was cut:\n{log[-2000:]}"
        assert f"resuming batch {batch}" in log, f"{where}batch {batch} not resumed:\n{log[-2000:]}"
        check_final(d, fx, files, where=where)

    in_parallel(daemon, optix_factory, variants, one, batch_records=10)


def save_state(daemon):
    """Keep the state dir and spool as the crash left them; returns the copy's directory."""
    saved = daemon.dir / "saved"
    saved.mkdir()
    copy_tree(daemon.state_dir, saved / "state")
    # Hard links: the file in .work/ must keep its identity (inode, mtime) or a resume refuses it.
    copy_tree(daemon.spool(CONN), saved / "spool", link=True)
    return saved


def copy_tree(src, dst, link=False):
    """cp -a (owners and modes kept: the daemon may run as another user), hard links if link."""
    subprocess.run(["cp", "-al" if link else "-a", "--", str(src), str(dst)], check=True)


def restore_state(d, saved, journal_bytes):
    """Put a daemon's state dir and spool back as saved (any daemon: paths are not journaled),
    with the journal replaced by journal_bytes."""
    spool = d.spool(CONN)
    shutil.rmtree(d.state_dir)
    shutil.rmtree(spool)
    copy_tree(saved / "state", d.state_dir)
    copy_tree(saved / "spool", spool, link=True)
    (d.state_dir / "journal").write_bytes(journal_bytes)
    d.priv.give_to_daemon(d.state_dir / "journal")


TORN_WORKERS = 4


def in_parallel(daemon, optix_factory, variants, one, **conn_keys):
    """Run one(daemon, fake, variant) for every variant on TORN_WORKERS daemon/fake pairs of
    their own (each a copy of the crashed one), in threads; re-raises the first failure."""
    pairs = []
    for i in range(TORN_WORKERS):
        d = Daemon(daemon.dir / f"worker{i}", binary=daemon.binary)
        fx = optix_factory()
        configure(d, fx, **conn_keys)
        pairs.append((d, fx))
    errors = []

    def work(i):
        d, fx = pairs[i]
        try:
            for v in variants[i::TORN_WORKERS]:
                if errors:
                    return
                one(d, fx, v)
        except BaseException as e:      # pytest.fail raises a BaseException
            errors.append(e)
        finally:
            d.cleanup()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(TORN_WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_torn_journal_tail_multi_file_batch(daemon, optix):
    """A power cut while the OPEN of a multi-file batch (its member records, then the batch) is
    being written: whatever part of that write survives, the files go up exactly once."""
    need_crashpoints(daemon)
    configure(daemon, optix, batch_records=100)
    files = [SpoolFile(f"m{k}.ndjson", shuffled(range(20 * k, 20 * k + 30), k), f"m{k}", BASE_MTIME_NS + k * 10**9)
             for k in range(3)]
    for f in files:
        f.drop(daemon)
    proc, log = run_once(daemon, "journal-before-fsync:1")
    assert proc.returncode == -9, f"exit {proc.returncode}\n{log[-3000:]}"
    assert optix.requests(UUID1) == [], "a request left before its batch's OPEN was durable"
    batch = re.search(r"batch ([0-9a-f-]{36}) opened \(3 file", log)
    assert batch, f"the three files did not open one batch:\n{log[-2000:]}"

    journal = daemon.state_dir / "journal"
    image = journal.read_bytes()
    recs = journal_records(journal)
    assert len(recs) >= 5, f"expected META, 3 members and the batch, got {len(recs)} records"
    first_off = recs[-4][0]         # the write that was in flight: 3 members + OPEN
    saved = save_state(daemon)

    cuts = sorted({off + d for off, n in recs[-4:] for d in (0, 1, n // 2, n - 1)} | {len(image)})
    assert cuts[0] == first_off and len(cuts) >= 17, cuts
    for at in cuts:
        where = f"journal cut at {at} (in-flight write {first_off}..{len(image)}): "
        optix.reset()
        restore_state(daemon, saved, image[:at])
        boundaries = {off for off, _ in recs} | {len(image)}
        proc, log = run_once(daemon)
        assert proc.returncode == 0, f"{where}exit {proc.returncode}\n{log[-3000:]}"
        cut = re.findall(r"cut (\d+) bytes of torn or corrupt tail", log)
        if at in boundaries:
            assert not cut, f"{where}a well-formed journal was cut:\n{log[-2000:]}"
        else:
            last_start = max(off for off in boundaries if off < at)
            assert cut == [str(at - last_start)], f"{where}expected a cut of {at - last_start} bytes:\n{log[-2000:]}"
        if at == len(image):
            assert f"resuming batch {batch.group(1)}" in log, f"{where}the durable batch was not resumed"
        else:
            assert "resuming batch" not in log, f"{where}a batch that never became durable was resumed"
        check_final(daemon, optix, files, where=where)


# --- 4. ENOSPC on the journal -----------------------------------------------------------------------

@pytest.fixture
def small_state_fs(daemon):
    """state_dir on a 256 KiB tmpfs (root only); unmounted at teardown."""
    st = daemon.make_daemon_dir(daemon.state_dir).stat()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=256k,mode=0750,uid={st.st_uid},gid={st.st_gid}",
                        "tmpfs", str(daemon.state_dir)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    yield daemon.state_dir
    daemon.cleanup()
    subprocess.run(["umount", "-l", str(daemon.state_dir)], capture_output=True)


def fill(directory):
    """Fill a filesystem with one file until ENOSPC; returns its path."""
    path = directory / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    finally:
        os.close(fd)
    return path


def recover_from_full_disk(daemon, optix, filler, files, where):
    """Free the disk: the daemon says the journal is writable again, finishes, and the error was
    logged once; everything ends as in a run without the full disk."""
    filler.unlink()
    daemon.wait_log(r"journal is writable again")
    status = daemon.wait_exit(timeout=60)
    log = daemon.log()
    assert status == 0, f"exit {status}\n{log[-3000:]}"
    assert len(re.findall(r"cannot make the journal durable", log)) == 1, \
        f"the journal error was not logged exactly once:\n{log[-3000:]}"
    check_final(daemon, optix, files, where=where)


def test_journal_enospc(daemon, optix, small_state_fs):
    configure(daemon, optix, batch_records=100)
    files = [SpoolFile("e1.ndjson", range(0, 250), "one", BASE_MTIME_NS),
             SpoolFile("e2.ndjson", range(399, 199, -1), "two", BASE_MTIME_NS + 10**9)]
    for f in files:
        f.drop(daemon)
    filler = fill(small_state_fs)

    daemon.start(args=("--once",))
    daemon.wait_log(r"cannot make the journal durable")
    # Observation window (not synchronisation): the daemon retries the sync on a 0.25-1 s timer,
    # and no request may leave while nothing is durable.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert daemon.running(), f"daemon exited while the journal was full:\n{daemon.log()[-3000:]}"
        assert optix.requests(UUID1) == [], "a request left before its batch's OPEN record was durable"
        time.sleep(0.1)

    recover_from_full_disk(daemon, optix, filler, files, where="after ENOSPC: ")


def test_journal_enospc_mid_batch(daemon, optix, small_state_fs):
    """The journal fills up between two requests of a batch: the acknowledgement cannot be made
    durable, so the next request must not leave until it can."""
    configure(daemon, optix, batch_records=50)
    files = [SpoolFile("big.ndjson", range(0, 3000), "big", BASE_MTIME_NS)]
    files[0].drop(daemon)
    daemon.start(args=("--once",))
    optix.wait_until(lambda: len(optix.requests(UUID1)) >= 3, what="three requests")
    filler = fill(small_state_fs)
    # The journal's last page may still hold a few records: the error comes within a page's worth.
    daemon.wait_log(r"cannot make the journal durable")
    held = len(optix.requests(UUID1))
    assert held < 60, "the whole batch went up though the journal was full"
    # Observation window: while the acknowledgement is not durable, nothing more may leave.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert daemon.running(), f"daemon exited while the journal was full:\n{daemon.log()[-3000:]}"
        n = len(optix.requests(UUID1))
        assert n == held, f"{n - held} request(s) left after the journal could not be made durable"
        time.sleep(0.1)

    recover_from_full_disk(daemon, optix, filler, files, where="after ENOSPC mid-batch: ")
    batches = {r["batch_uuid"] for r in optix.requests(UUID1)}
    assert len(batches) == 1, f"the batch changed uuid across the full disk: {batches}"


# --- 5. archive across filesystems --------------------------------------------------------------------

@pytest.mark.parametrize("left", ["partial", "complete"])
def test_archive_copy_interrupted(daemon, optix, small_state_fs, left):
    """done/ on another filesystem than the spool (state_dir on a tmpfs): the archive is a copy
    then an unlink. A crash inside it leaves done/.<name>.partial (killed mid-copy) or a whole
    done/<name> (killed before the unlink) beside the file still in .work/. The state is made exactly as the
    crash leaves it (crash at before-archive, then the copy's leftovers written by hand; there
    is no crash point inside the copy). After the restart done/ must hold the file once, whole."""
    need_crashpoints(daemon)
    configure(daemon, optix)
    files = [SpoolFile("x.ndjson", range(0, 1500), "x", BASE_MTIME_NS)]
    files[0].drop(daemon)
    proc, log = run_once(daemon, "before-archive:1")
    assert proc.returncode == -9, f"exit {proc.returncode}\n{log[-3000:]}"
    work = list((daemon.spool(CONN) / ".work").iterdir())
    assert len(work) == 1, work
    original = work[0].read_bytes()
    done = daemon.make_daemon_dir(daemon.state_dir / "done" / CONN)
    # The copy goes to a hidden temporary, linked into place only once whole and fsynced: a crash
    # mid-copy leaves that temporary, one before the unlink leaves the whole file under its name.
    if left == "partial":
        leftover = done / ".x.ndjson.partial"
        leftover.write_bytes(original[:len(original) // 2])
    else:
        leftover = done / "x.ndjson"
        leftover.write_bytes(original)
    daemon.priv.give_to_daemon(leftover)      # the daemon's own leftover

    proc, log = run_once(daemon)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{log[-3000:]}"
    archived = sorted(p.name for p in done.iterdir())
    contents = {p.name: p.read_bytes() == original for p in done.iterdir()}
    assert not list((daemon.spool(CONN) / ".work").iterdir()), "the file is still in .work/"
    assert archived == ["x.ndjson"] and contents["x.ndjson"], (
        f"done/ after an interrupted cross-filesystem archive ({left} copy left): "
        f"{ {n: ('whole' if ok else 'NOT the file') for n, ok in contents.items()} }")
