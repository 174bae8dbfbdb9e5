"""The operators' commands: drop (as the exporter, keys unreadable), retry, status --json,
connection create (against the fake's POST /connections), and list values over indented lines.

Run with:  DCSYNCD=build/src/dcsyncd python3 -m pytest -q tests/test_commands.py
"""

import json
import os
import re
import signal
import stat
import subprocess
import time

import gen_ndjson
from harness import UUID1, UUID2, acked, wait_for

TIMEOUT = 30


def as_exporter(daemon, *args, stdin=None, input=None):
    """dcsyncd -c CONF ARGS as the exporter (EXPORTER_USER in the unprivileged mode)."""
    p = daemon.exporter_popen([daemon.binary, "-c", daemon.conf_path, *args], stdin=stdin or subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=daemon.env())
    out, err = p.communicate(input, timeout=TIMEOUT)
    return p.returncode, out, err


def as_daemon_user(daemon, *args):
    """dcsyncd -c CONF ARGS as the daemon's user (root in the root mode)."""
    return subprocess.run(daemon.command(*args), capture_output=True, text=True, timeout=TIMEOUT,
                          env=daemon.env(), stdin=subprocess.DEVNULL)


def source_file(daemon, name, n, start=0):
    """A file the exporter can read, outside the spool: n gen_ndjson records."""
    d = daemon.dir / "src"
    d.mkdir(exist_ok=True)
    d.chmod(0o755)
    path = d / name
    with open(path, "wb") as f:
        gen_ndjson.write(f, n, start)
    path.chmod(0o644)
    return path


def visible(spool):
    return sorted(p.name for p in spool.iterdir() if p.is_file())


def everything(spool):
    return sorted(p.name for p in spool.iterdir())


# --- drop --------------------------------------------------------------------------------------

def test_drop_file_and_stdin_as_the_exporter_with_unreadable_keys(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    key = daemon.keys_dir / "products.api_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600      # the exporter cannot read it (unprivileged)
    daemon.start()
    daemon.wait_log(r"dcsyncd .*connection")
    src = source_file(daemon, "a.ndjson", 300)
    rc, out, err = as_exporter(daemon, "drop", "products", str(src))
    assert rc == 0, err
    spool = daemon.spool()
    assert out == f"{spool}/a.ndjson\n"
    data = "".join(json.dumps({"id": f"s{i}", "v": i}) + "\n" for i in range(200))
    rc, out, err = as_exporter(daemon, "drop", "products", "-", "--name", "daily.ndjson", input=data)
    assert rc == 0, err
    assert out == f"{spool}/daily.ndjson\n"
    records = optix.wait_records(UUID1, 500)
    assert json.loads(json.dumps(records[json.dumps("s199")]))["v"] == 199


def test_drop_is_group_readable_and_never_replaces_a_waiting_file(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    spool = daemon.spool()
    outs = []
    for i in range(2):
        rc, out, err = as_exporter(daemon, "drop", "products", "-", "--name", "daily.ndjson",
                                   input=json.dumps({"id": i}) + "\n")
        assert rc == 0, err
        outs.append(out.strip())
    assert outs == [f"{spool}/daily.ndjson", f"{spool}/daily-2.ndjson"]
    assert everything(spool) == ["daily-2.ndjson", "daily.ndjson"]      # no temporary left
    for name, i in (("daily.ndjson", 0), ("daily-2.ndjson", 1)):
        st = (spool / name).stat()
        assert stat.S_IMODE(st.st_mode) == 0o640
        assert st.st_gid == spool.stat().st_gid
        assert (spool / name).read_text() == json.dumps({"id": i}) + "\n"
    proc = daemon.run_once()
    assert proc.returncode == 0, proc.stderr
    assert set(optix.records(UUID1)) == {"0", "1"}


def test_drop_refuses_unknown_connection_wrong_suffix_and_stdin_without_name(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    spool = daemon.spool()
    src = source_file(daemon, "a.json", 3)
    rc, _, err = as_exporter(daemon, "drop", "nope", str(src))
    assert rc == 1 and "no connection 'nope'" in err and "products" in err
    rc, _, err = as_exporter(daemon, "drop", "products", str(src))
    assert rc == 1 and ("a.json: the daemon takes only names ending in one of .ndjson, .ndjson.gz, .ndjson.zst, "
                        ".jsonl, .jsonl.gz, .jsonl.zst, .csv, .csv.gz, .csv.zst, .tsv, .tsv.gz, .tsv.zst "
                        "(lower case)") in err, err
    rc, _, err = as_exporter(daemon, "drop", "products", "-", "--name", "x.NDJSON", input="{}\n")
    assert rc == 1 and "x.NDJSON" in err
    rc, _, err = as_exporter(daemon, "drop", "products", "-", input="{}\n")
    assert rc == 2 and "--name" in err
    rc, _, err = as_exporter(daemon, "drop", "products", "-", "--name", "e.ndjson", input="")
    assert rc == 1 and "empty" in err
    assert everything(spool) == []


def test_drop_interrupted_leaves_nothing_visible(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    spool = daemon.spool()
    p = daemon.exporter_popen([daemon.binary, "-c", daemon.conf_path, "drop", "products", "-", "--name",
                               "big.ndjson"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=daemon.env())
    p.stdin.write(b'{"id": 1}\n' * 10000)
    p.stdin.flush()
    # The copy is under way once its hidden temporary holds what was written.
    wait_for(lambda: any(q.name.startswith(".") and q.stat().st_size >= 100000 for q in spool.iterdir()),
             "the hidden temporary")
    assert visible(spool) == [n for n in visible(spool) if n.startswith(".")]
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=TIMEOUT)
    assert p.returncode == 1 and b"interrupted" in err and out == b""
    assert everything(spool) == []


# --- retry -------------------------------------------------------------------------------------

def fail_one(daemon, optix, name="a.ndjson", n=10):
    """Drop a file and let a 404 fail it for good (in failed/ with its error.json)."""
    optix.add_faults({"status": 404, "count": 1})
    daemon.drop_generated("products", name, n)
    proc = daemon.run_once()
    assert proc.returncode == 1
    failed = daemon.spool() / "failed"
    assert (failed / name).exists() and (failed / f"{name}.error.json").exists()
    return failed


def test_retry_while_the_daemon_runs_keeps_the_error_aside(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    failed = fail_one(daemon, optix)
    error = (failed / "a.ndjson.error.json").read_text()
    daemon.start()
    daemon.wait_log(r"dcsyncd .*connection")
    proc = as_daemon_user(daemon, "retry", "products", "a.ndjson")
    assert proc.returncode == 0, proc.stderr
    m = re.fullmatch(r"products: failed/a\.ndjson -> a\.ndjson \(its error kept as failed/\.retried/"
                     r"(\d{8}T\d{6}Z-a\.ndjson\.error\.json)\)\n", proc.stdout)
    assert m, proc.stdout
    assert (failed / ".retried" / m.group(1)).read_text() == error
    optix.wait_records(UUID1, 10)
    wait_for(lambda: not (failed / "a.ndjson").exists() and not (failed / "a.ndjson.error.json").exists(),
             "failed/ emptied", daemon)
    proc = as_daemon_user(daemon, "retry", "products", "--all")
    assert proc.returncode == 0 and "nothing in" in proc.stdout
    proc = as_daemon_user(daemon, "retry", "products", "zz.ndjson")
    assert proc.returncode == 1 and "zz.ndjson: no such file" in proc.stderr


def test_retry_never_replaces_a_waiting_file_and_all_moves_every_failed_file(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    failed = fail_one(daemon, optix, "a.ndjson", 10)
    optix.add_faults({"status": 404, "count": 1})
    daemon.drop_generated("products", "b.ndjson", 5, start=100)
    assert daemon.run_once().returncode == 1
    daemon.drop_generated("products", "a.ndjson", 3, start=200)       # a new a.ndjson waits
    proc = as_daemon_user(daemon, "retry", "products", "--all")
    assert proc.returncode == 0, proc.stderr
    assert "failed/a.ndjson -> a-2.ndjson" in proc.stdout and "failed/b.ndjson -> b.ndjson" in proc.stdout
    assert visible(daemon.spool()) == ["a-2.ndjson", "a.ndjson", "b.ndjson"]
    assert visible(failed) == []
    assert len(list((failed / ".retried").iterdir())) == 2
    assert (daemon.spool() / "a.ndjson").read_bytes().count(b"\n") == 3
    assert daemon.run_once().returncode == 0
    assert len(optix.records(UUID1)) == 18


def test_retry_as_root_leaves_failed_retried_to_the_daemons_user_who_can_retry_after(daemon, optix):
    if not daemon.priv.unprivileged:
        import pytest
        pytest.skip("root is the daemon's user in the root mode")
    daemon.write_config([daemon.connection(optix)])
    failed = fail_one(daemon, optix, "a.ndjson")
    proc = subprocess.run(daemon.command("retry", "products", "a.ndjson")[len(daemon.priv.daemon_prefix()):],
                          capture_output=True, text=True, timeout=60, env=daemon.env(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    st = os.stat(failed / ".retried")
    assert (st.st_uid, st.st_gid) == (os.stat(failed).st_uid, os.stat(failed).st_gid), "root's failed/.retried"
    assert daemon.run_once().returncode == 0
    fail_one(daemon, optix, "b.ndjson")
    proc = as_daemon_user(daemon, "retry", "products", "b.ndjson")
    assert proc.returncode == 0, proc.stderr


def test_retry_by_the_exporter_is_refused_naming_who_may(daemon, optix):
    if not daemon.priv.unprivileged:
        import pytest
        pytest.skip("the exporter is the daemon's user in the root mode")
    daemon.write_config([daemon.connection(optix)])
    failed = fail_one(daemon, optix)
    rc, _, err = as_exporter(daemon, "retry", "products", "a.ndjson")
    assert rc == 1 and "run retry as root or as the daemon's user" in err
    assert (failed / "a.ndjson").exists() and (failed / "a.ndjson.error.json").exists()


# --- status --json -----------------------------------------------------------------------------

def test_status_json_has_the_same_facts_as_status(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    fail_one(daemon, optix, "f.ndjson", 4)
    daemon.drop_generated("products", "ok.ndjson", 7, start=50)
    assert daemon.run_once().returncode == 0
    daemon.drop_generated("products", "waiting.ndjson", 2, start=90)
    proc = as_daemon_user(daemon, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["format"] == 1 and doc["journal"] is True
    (c,) = doc["connections"]
    assert c["name"] == "products" and c["uuid"] == UUID1
    assert c["queued_files"] == 1 and isinstance(c["oldest_queued_seconds"], int)
    assert c["in_flight"] == [] and c["failed_files"] == 1
    assert c["rejected_records"] == 0 and c["rejected_files"] == 0
    assert c["last_error"]["http_status"] == 404 and isinstance(c["last_error"]["time"], int)
    assert isinstance(c["last_success"], int)
    assert c["rate_limit"] == {"requests": 50, "window_seconds": 10, "budget": 50, "waiting": False}
    assert c["totals"] == {"files_uploaded": 1, "files_failed": 1, "records_sent": 7, "records_rejected": 0,
                           "records_unchanged": 0, "requests": acked(optix).__len__() + 1}
    text = as_daemon_user(daemon, "status").stdout
    assert "queued:       1 file(s)" in text and "failed:       1 file(s)" in text
    assert doc["unconfigured"] == []


def status_text_of_json(c, now):
    """The text `status` prints for a connection's --json object (times as seen at @now)."""
    def when(t):
        return "never" if t is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))

    lines = [f"{c['name']} ({c['uuid']})"]
    if c["queued_files"]:
        lines.append(f"  queued:       {c['queued_files']} file(s), oldest {c['oldest_queued_seconds']} s old")
    else:
        lines.append("  queued:       none")
    for b in c["in_flight"]:
        state = "open" if b["state"] == "open" else "completed, archiving"
        if b["file"].endswith((".gz", ".zst")):
            read = f"{b['bytes_read']} bytes read (decompressed) of {b['bytes']} compressed"
        else:
            read = f"{b['bytes_read'] * 100 // b['bytes'] if b['bytes'] else 100}% of {b['bytes']} bytes"
        lines.append(f"  in flight:    {b['file']}, batch {b['batch_uuid']}, {state}: {b['requests_acknowledged']} "
                     f"request(s) acknowledged, {b['records']} records, {read}")
    n = c["failed_files"]
    lines.append(f"  failed:       {n} file(s)" + (f" in {c['spool']}/failed" if n else ""))
    lines.append(f"  rejected:     {c['rejected_records']} record(s) in {c['rejected_files']} file(s)")
    t = c["last_success"]
    lines.append(f"  last success: {when(t)}" + ("" if t is None else f" ({now - t} s ago)"))
    e = c["last_error"]
    if e is None:
        lines.append("  last error:   none")
    else:
        lines.append(f"  last error:   {when(e['time'])} ({now - e['time']} s ago): "
                     + (f"HTTP {e['http_status']}" if e["http_status"] else "no answer") + f", {e['text']}")
    rl = c["rate_limit"]
    if rl is None:
        lines.append("  rate limit:   off")
    else:
        lines.append(f"  rate limit:   {rl['requests']} requests / {rl['window_seconds']:g} s per API key; budget now "
                     f"{rl['budget']}" + (", a request is waiting for a slot" if rl["waiting"] else ", no request waiting"))
    tt = c["totals"]
    if tt is not None:
        unchanged = f"{tt['records_unchanged']} unchanged (not sent), " if tt["records_unchanged"] or c["store"] else ""
        lines.append(f"  totals:       {tt['files_uploaded']} file(s) uploaded, {tt['files_failed']} failed, "
                     f"{tt['records_sent']} records sent, {tt['records_rejected']} rejected, {unchanged}"
                     f"{tt['requests']} requests")
    r = c["last_run"]
    if r is not None:
        names = ", ".join(r["names"] + ([f"{r['files'] - len(r['names'])} more"] if r["files"] > len(r["names"]) else []))
        lines.append(f"  last run:     {when(r['finished'])} {r['connection']} {r['outcome']} "
                     + (names if r["files"] == 1 else f"{r['files']} files ({names})")
                     + f": {r['records_sent']} sent, {r['records_unchanged']} unchanged, {r['records_rejected']} rejected; "
                     f"{r['requests']} request{'' if r['requests'] == 1 else 's'}, "
                     f"{r['retries']} retr{'y' if r['retries'] == 1 else 'ies'}; {r['bytes_read']} bytes read; "
                     f"{max(r['finished'] - r['started'], 0):.2f} s; batch {r['batch_uuid']}"
                     + (f"; HTTP {r['http_status']}" if r["http_status"] else "") + (f"; {r['reason']}" if r["reason"] else ""))
    return lines


def test_status_text_and_json_say_the_same_of_every_field_for_the_same_state(daemon, optix):
    """Queued, in flight, failed, rejected, last success and error, rate limit, totals and a batch
    of a connection no longer configured: each text line is what the --json object says."""
    products = daemon.connection(optix, batch_records=100)
    orders = daemon.connection(optix, name="orders", uuid=UUID2, batch_records=100)
    daemon.write_config([products, orders])
    fail_one(daemon, optix, "f.ndjson", 4)
    daemon.drop("products", "mixed.ndjson", [gen_ndjson.record(i) for i in range(20, 25)] + ["{broken"])
    assert daemon.run_once().returncode == 1       # the rejected line
    # A crash with both connections' batches open: the journal keeps them.
    optix.configure(delay=0.3)
    daemon.drop_generated("products", "big.ndjson", 1000, start=1000)
    daemon.drop_generated("orders", "big-orders.ndjson", 1000, start=5000)
    daemon.start()
    wait_for(lambda: acked(optix, UUID1) and acked(optix, UUID2), "a request of each batch acknowledged", daemon)
    daemon.kill9()
    daemon.write_config([products])                 # orders' batch: no longer configured
    daemon.drop_generated("products", "waiting.ndjson", 2, start=90)

    t0 = int(time.time())
    text = as_daemon_user(daemon, "status")
    js = as_daemon_user(daemon, "status", "--json")
    t1 = int(time.time())
    assert text.returncode == 0 and js.returncode == 0, text.stderr + js.stderr
    doc = json.loads(js.stdout)
    (c,) = doc["connections"]
    assert c["in_flight"] and c["failed_files"] and c["rejected_records"] and c["last_error"] and c["totals"]
    assert c["queued_files"] and c["rate_limit"] and c["last_success"]
    # The "N s old" / "N s ago" figures: the two commands ran within [t0, t1], so each may be off
    # by that much; everything else is compared to the letter.
    ago = re.compile(r"\d+(?= s (?:old|ago))")
    want = status_text_of_json(c, doc["time"])
    got = text.stdout.splitlines()
    for i, (g, w) in enumerate(zip(got, want)):
        assert ago.sub("N", g) == ago.sub("N", w), f"line {i + 1} of status:\n  text: {g!r}\n  json: {w!r}"
        for gn, wn in zip(ago.findall(g), ago.findall(w)):
            assert abs(int(gn) - int(wn)) <= t1 - t0 + 1, f"line {i + 1}: {g!r} against {w!r}"
    assert doc["unconfigured"] and all(u["connection"] == "orders" for u in doc["unconfigured"])
    assert got[len(want):] == [f"{u['connection']} (no longer configured): batch {u['batch_uuid']} of {u['file']} "
                               "kept with its file" for u in doc["unconfigured"]]


def test_status_gives_a_compressed_file_in_flight_no_percentage(daemon, optix):
    """Its journal offset counts decompressed bytes: over the compressed size it passed 100%."""
    daemon.write_config([daemon.connection(optix, batch_records=100)])
    plain = "".join(json.dumps({"id": i, "pad": "x" * 200}) + "\n" for i in range(1000)).encode()
    daemon.drop("products", "big.ndjson.zst",
                subprocess.run(["zstd", "-q", "-c"], input=plain, stdout=subprocess.PIPE, check=True).stdout)
    optix.configure(delay=0.3)
    daemon.start()
    wait_for(lambda: acked(optix, UUID1), "a request acknowledged", daemon)
    daemon.kill9()

    text = as_daemon_user(daemon, "status")
    assert text.returncode == 0, text.stderr
    (line,) = [l for l in text.stdout.splitlines() if "in flight:" in l]
    assert "%" not in line and re.search(r"\d+ bytes read \(decompressed\) of \d+ compressed$", line), line


# --- connection create -------------------------------------------------------------------------

def test_connection_create_like_an_existing_section_prints_a_working_section(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    proc = as_daemon_user(daemon, "connection", "create", "orders", "--primary-key", "order_id",
                          "--description", "orders from the ERP", "--like", "products")
    assert proc.returncode == 0, proc.stderr
    (uuid, meta), = optix.created().items()
    assert meta == {"name": "orders", "description": "orders from the ERP", "primary_key": "order_id"}
    assert f"[connection orders]\nuuid = {uuid}\nprimary_key = order_id\nbase_url = {optix.url}\n" in proc.stdout
    assert "api_key_file = " in proc.stdout and optix.api_key not in proc.stdout
    # The printed section, appended as it is, uploads.
    text = daemon.conf_path.read_text() + "\n" + "\n".join(
        l for l in proc.stdout.splitlines() if not l.startswith("#")) + "\nretry_initial_seconds = 0.05\n"
    daemon.conf_path.write_text(text)
    daemon.drop("orders", "o.ndjson", [{"order_id": i, "total": i * 3} for i in range(25)])
    run = daemon.run_once()
    assert run.returncode == 0, run.stderr
    assert len(optix.records(uuid)) == 25


def test_connection_create_refusals(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    proc = as_daemon_user(daemon, "connection", "create", "products", "--primary-key", "id", "--like", "products")
    assert proc.returncode == 1 and "already has a [connection products]" in proc.stderr
    proc = as_daemon_user(daemon, "connection", "create", "x", "--primary-key", "id", "--like", "nope")
    assert proc.returncode == 1 and "no connection 'nope'" in proc.stderr
    proc = as_daemon_user(daemon, "connection", "create", "../x", "--primary-key", "id", "--like", "products")
    assert proc.returncode == 2
    bad = daemon.keys_dir / "bad.key"
    bad.write_text("wrong-key\n")
    good_brand = daemon.keys_dir / "products.brand_key"
    proc = subprocess.run([str(daemon.binary), "connection", "create", "x", "--primary-key", "id", "--base-url",
                           optix.url, "--api-key-file", str(bad), "--brand-key-file", str(good_brand)],
                          capture_output=True, text=True, timeout=TIMEOUT, env=daemon.env())
    assert proc.returncode == 1 and "the API refused the keys (HTTP 401)" in proc.stderr
    assert "wrong-key" not in proc.stderr
    assert optix.created() == {}


# --- long lists --------------------------------------------------------------------------------

def test_required_fields_continue_on_indented_lines(daemon, optix):
    fields = [f"field_{i:03d}_with_a_long_name" for i in range(12)]      # ~380 bytes: over inih's 199
    daemon.write_config([daemon.connection(optix, required_fields="\n    ".join(
        ", ".join(fields[i:i + 4]) for i in range(0, 12, 4)))])
    proc = as_daemon_user(daemon, "--check-config")
    assert proc.returncode == 0, proc.stderr
    full = {f: 1 for f in fields}
    daemon.drop("products", "r.ndjson", [{"id": 1, **full},
                                         {"id": 2, **{f: 1 for f in fields[:-1]}}])   # lacks the last one
    run = daemon.run_once()
    assert run.returncode == 1
    assert set(optix.records(UUID1)) == {"1"}
    rejected = (daemon.spool() / "rejected" / "r.ndjson.rejected.ndjson").read_text()
    assert fields[-1] in rejected and '"line": 2' in rejected.replace('"line":2', '"line": 2')


def test_an_indented_key_line_is_refused_naming_the_line(daemon, optix):
    daemon.write_config([daemon.connection(optix)])
    text = daemon.conf_path.read_text().replace("\nprimary_key = id", "\n  primary_key = id")
    daemon.conf_path.write_text(text)
    line = text.splitlines().index("  primary_key = id") + 1
    proc = as_daemon_user(daemon, "--check-config")
    assert proc.returncode == 2
    assert re.search(rf":{line}: \w+: an indented line continues the value of the key above.*unindent "
                     r"'primary_key = id'", proc.stderr), proc.stderr


# --- check ---------------------------------------------------------------------------------------

def test_check_reads_files_as_the_daemon_would_as_an_exporter_who_cannot_read_the_keys(daemon, optix, tmp_path):
    """`dcsyncd check`: records, rejected lines with line and reason, a header that fails the file,
    the fields; exit 0 / 1 / 2; run by the exporter (no key readable), with no request sent and
    nothing in the spool or the state changed."""
    daemon.write_config([daemon.connection(optix, required_fields="id,name")])
    src = tmp_path / "src"
    src.mkdir()
    src.chmod(0o755)
    good = src / "good.ndjson"
    good.write_text("".join(json.dumps({"id": i, "name": f"n{i}"}) + "\n" for i in range(1000)))
    bad = src / "bad.ndjson"
    bad.write_text('{"id":1,"name":"a"}\n{"id":2}\nnot json\n' + "".join(f'{{"id":{i}}}\n' for i in range(3, 40)))
    hdr = src / "h.csv"
    hdr.write_text("name,v\nx,1\n")
    for p in (good, bad, hdr):
        p.chmod(0o644)
    state_before = sorted(p.name for p in daemon.state_dir.iterdir()) if daemon.state_dir.exists() else []

    rc, out, err = as_exporter(daemon, "check", "products", str(good))
    assert rc == 0, (out, err)
    assert "1000 record(s) would go up" in out and '"id" "name"' in out, out

    rc, out, err = as_exporter(daemon, "check", "--json", "products", str(bad), str(hdr))
    assert rc == 1, (out, err)
    docs = [json.loads(l) for l in out.splitlines() if l.strip()]
    by = {d["file"].rsplit("/", 1)[-1]: d for d in docs}
    assert by["bad.ndjson"]["records"] == 1 and by["bad.ndjson"]["rejected"] == 39, by["bad.ndjson"]
    lines = by["bad.ndjson"]["rejected_lines"]
    assert len(lines) == 20 and lines[0]["line"] == 2 and lines[1]["line"] == 3, lines[:3]
    assert "primary_key" in (by["h.csv"]["failed"] or ""), by["h.csv"]

    rc, out, err = as_exporter(daemon, "check")
    assert rc == 2, (out, err)
    # A mistyped connection is said as one, not read as a file of no format.
    rc, out, err = as_exporter(daemon, "check", "prodcts", str(good))
    assert rc == 2 and "no connection 'prodcts'" in err, (rc, out, err)
    # A FIFO of a good name is refused at once, not read: an export job must not hang on it.
    fifo = src / "pipe.ndjson"
    os.mkfifo(fifo, 0o666)
    rc, out, err = as_exporter(daemon, "check", "products", str(fifo))
    assert rc == 1 and "not a regular file" in out, (rc, out, err)
    assert optix.requests() == []
    after = sorted(p.name for p in daemon.state_dir.iterdir()) if daemon.state_dir.exists() else []
    assert after == state_before


def test_drop_is_not_refused_by_a_temporary_left_under_its_pid(daemon, optix):
    """A killed drop left .dcsyncd-drop-<pid>.tmp; a later drop under the same pid (pid 1 of a
    fresh pid namespace, as in containers) is not refused: its temporary's name is unpredictable."""
    daemon.write_config([daemon.connection(optix)])
    spool = daemon.spool()
    with daemon.exporter_open(spool / ".dcsyncd-drop-1.tmp") as f:
        f.write(b'{"id": 1')
    src = source_file(daemon, "daily.ndjson", 3)
    p = subprocess.run(["unshare", "--pid", "--fork", *daemon.priv.exporter_prefix(), daemon.binary, "-c",
                        daemon.conf_path, "drop", "products", src], capture_output=True, text=True,
                       timeout=TIMEOUT, env=daemon.env(), stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert visible(spool) == [".dcsyncd-drop-1.tmp", "daily.ndjson"]
