"""The shipped monitoring (packaging/monitoring/): the metrics file as Prometheus' own tool reads it,
the alert rules and their promtool unit tests, and the dashboard's queries against what the daemon
writes. Needs Debian's `prometheus` package (promtool); skipped, saying so, without it."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import UUID1, UUID2, wait_for

MONITORING = Path(__file__).resolve().parent.parent / "packaging" / "monitoring"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (apt-get install prometheus)")


def metrics_after_a_run(daemon, optix):
    """A --once run with one connection that uploads (a rejected line too) and one whose uploads
    fail (404): every family and outcome the daemon writes has a sample."""
    path = daemon.make_daemon_dir(daemon.dir / "metrics") / "dcsyncd.prom"
    optix.add_faults({"uuid": UUID2, "status": 404})
    daemon.write_config([daemon.connection(optix),
                         daemon.connection(optix, name="orders", uuid=UUID2)], metrics_file=path)
    daemon.drop_generated("products", "a.ndjson", 1200)
    daemon.drop("products", "b.ndjson", ['{"id": 1}', "{broken"])
    daemon.drop_generated("orders", "o.ndjson", 10)
    proc = daemon.run_once()
    assert proc.returncode == 1, proc.stderr[-3000:]      # a rejected line and a failed file
    assert len(optix.records(UUID1)) >= 1200
    return path.read_text()


@needs_promtool
def test_the_metrics_file_passes_promtool_check_metrics(daemon, optix):
    text = metrics_after_a_run(daemon, optix)
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (out.stdout, out.stderr, text)
    for family in ("dcsyncd_files_total", "dcsyncd_last_completed_records", "dcsyncd_journal_durable",
                   "dcsyncd_batch_open", "dcsyncd_paused", "dcsyncd_oldest_queued_file_age_seconds",
                   "dcsyncd_records_unchanged_total"):
        assert f"# TYPE {family} " in text, family
    assert 'dcsyncd_files_total{connection="orders",outcome="failed"} 1' in text, text
    assert 'dcsyncd_files_total{connection="products",outcome="archived"} 2' in text, text


@needs_promtool
def test_the_shipped_alert_rules_load_and_pass_their_promtool_unit_tests():
    """Each alert has a case that fires and one that does not (dcsyncd.rules.test.yml)."""
    rules = MONITORING / "dcsyncd.rules.yml"
    out = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    out = subprocess.run([PROMTOOL, "test", "rules", "dcsyncd.rules.test.yml"], cwd=MONITORING,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    alerts = set(re.findall(r"^\s*- alert: (\S+)", rules.read_text(), re.M))
    tested = set(re.findall(r"alertname: (\S+)", (MONITORING / "dcsyncd.rules.test.yml").read_text()))
    assert alerts and alerts <= tested, f"alerts without a unit test: {sorted(alerts - tested)}"


def dashboard_exprs():
    doc = json.loads((MONITORING / "dcsyncd-dashboard.json").read_text())
    exprs = []

    def walk(o):
        if isinstance(o, dict):
            if isinstance(o.get("expr"), str):
                exprs.append(o["expr"])
            for v in o.values():
                walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    walk(doc)
    return exprs


def test_every_dashboard_query_reads_only_metrics_the_daemon_writes(daemon, optix):
    """A panel whose query names a metric the daemon never writes stays empty for ever."""
    text = metrics_after_a_run(daemon, optix)
    written = set(re.findall(r"^# TYPE (\S+) ", text, re.M))
    exprs = dashboard_exprs()
    assert exprs, "no query in the dashboard"
    for e in exprs:
        for name in re.findall(r"\bdcsyncd_[a-z_]+\b", e):
            assert name in written, f"{name} (in {e!r}) is not in the metrics file"


# --- A real Prometheus, scraping Debian's node-exporter's textfile collector, with the shipped rules --------
#
# Each test has its own pair on free loopback ports: a second daemon's file in the same directory
# would repeat dcsyncd_journal_durable (no labels), which node-exporter refuses. The alerts' `for:`
# is minutes long, so the tests wait for "pending" (the condition holds), which is what the rules
# decide; `for:` is the promtool unit tests' (dcsyncd.rules.test.yml). Not produced here, left to
# those unit tests: DcsyncdJournalNotDurable (needs a journal write or fsync that fails) and
# DcsyncdMetricsUnreadable (node-exporter runs as root here and reads every file).

import os
import socket
from datetime import datetime, timezone
import time
import urllib.parse
import urllib.request

PROMETHEUS = "/usr/bin/prometheus"
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
needs_prometheus = pytest.mark.skipif(
    not (os.access(PROMETHEUS, os.X_OK) and os.access(NODE_EXPORTER, os.X_OK)),
    reason="needs /usr/bin/prometheus and /usr/bin/prometheus-node-exporter "
           "(apt-get install prometheus prometheus-node-exporter)")
ALERT_TIMEOUT = 60.0
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))     # never via a proxy


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """node-exporter reading DIR's *.prom, and Prometheus scraping it every second with the
    shipped rules, read in place."""

    def __init__(self, tmp, textfile_dir):
        self.tmp, self.dir = Path(tmp), Path(textfile_dir)
        self.procs = []

    def start(self):
        ne_port, prom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{prom_port}"
        conf = self.tmp / "prometheus.yml"
        conf.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files:\n  - {MONITORING / 'dcsyncd.rules.yml'}\n"
            "scrape_configs:\n  - job_name: node\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{ne_port}']\n")
        self.procs.append(subprocess.Popen(
            [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{ne_port}", "--collector.disable-defaults",
             "--collector.textfile", f"--collector.textfile.directory={self.dir}"],
            stdin=subprocess.DEVNULL, stdout=open(self.tmp / "node-exporter.log", "wb"), stderr=subprocess.STDOUT))
        self.procs.append(subprocess.Popen(
            [PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={self.tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdin=subprocess.DEVNULL, stdout=open(self.tmp / "prometheus.log", "wb"), stderr=subprocess.STDOUT))
        self.wait(lambda: self.get("/-/ready", raw=True), "Prometheus ready")
        return self

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def get(self, path, raw=False, **params):
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with LOOPBACK.open(url, timeout=10) as r:
                body = r.read()
        except OSError:
            return None
        return body if raw else json.loads(body)

    def query(self, expr):
        out = self.get("/api/v1/query", query=expr)
        assert out is not None and out["status"] == "success", (expr, out)
        return out["data"]["result"]

    def alerts(self):
        out = self.get("/api/v1/alerts")
        return out["data"]["alerts"] if out and out["status"] == "success" else []

    def wait(self, predicate, what, timeout=ALERT_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            got = predicate()
            if got:
                return got
            for p in self.procs:
                assert p.poll() is None, f"{p.args[0]} exited with {p.returncode} waiting for {what}"
            if time.monotonic() > deadline:
                logs = "".join((self.tmp / n).read_text(errors="replace")[-1500:]
                               for n in ("node-exporter.log", "prometheus.log"))
                raise AssertionError(f"timed out waiting for {what}; alerts now: {self.alerts()}\n{logs}")
            time.sleep(0.2)

    def wait_alert(self, name, connection):
        """The alert, pending or firing, for that connection."""
        def found():
            return [a for a in self.alerts() if a["labels"].get("alertname") == name
                    and a["labels"].get("connection") == connection and a["state"] in ("pending", "firing")]
        return self.wait(found, f"{name} for connection {connection}")[0]

    def wait_series(self, expr):
        return self.wait(lambda: self.query(expr), f"a sample of {expr}")

    def wait_evaluated_after(self, t):
        """The dcsyncd rule group evaluated at a time after t (wall clock)."""
        def evaluated():
            out = self.get("/api/v1/rules")
            for g in (out or {}).get("data", {}).get("groups", []):
                if g["name"] == "dcsyncd" and g.get("lastEvaluation"):
                    # RFC 3339 with nanoseconds, in UTC: "2026-12-04T07:50:01.123456789Z"
                    m = re.match(r"(\d+-\d+-\d+T\d+:\d+:\d+)(\.\d+)?Z$", g["lastEvaluation"])
                    assert m, g["lastEvaluation"]
                    at = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
                    return at.timestamp() + float(m.group(2) or 0) > t
            return False
        self.wait(evaluated, f"a rule evaluation after {t}")


@pytest.fixture
def stack(daemon, tmp_path):
    """Prometheus + node-exporter on the directory of a metrics_file the daemon writes."""
    metrics = daemon.make_daemon_dir(daemon.dir / "metrics")
    (tmp_path / "prom").mkdir()
    s = Stack(tmp_path / "prom", metrics)
    s.metrics_file = metrics / "dcsyncd.prom"
    try:
        yield s.start()
    finally:
        s.stop()



UUID3 = "33333333-3333-4333-8333-333333333333"     # not on the fake: its uploads are answered 404


def stall(optix, uuid=UUID1):
    """The API takes its time: the batch stays open and nothing completes."""
    optix.add_faults({"uuid": uuid, "delay": 600, "count": 1000})


def drop_old(daemon, conn, name, hours):
    """Drop a file whose mtime is hours back: set before the rename, which the daemon may see at
    once (inotify) and take the mtime of."""
    tmp, final = daemon.spool(conn) / f".{name}.tmp", daemon.spool(conn) / name
    with daemon.exporter_open(tmp) as f:
        f.write(b'{"id": 1}\n')
    t = time.time() - hours * 3600
    os.utime(tmp, (t, t))
    os.rename(tmp, final)
    return final


def case_keys(daemon, optix, stack):
    daemon.drop_generated("keys", "a.ndjson", 10)


def case_not_found(daemon, optix, stack):
    daemon.drop_generated("missing", "a.ndjson", 10)


def case_rejected(daemon, optix, stack):
    daemon.drop("rejecting", "a.ndjson", ['{"id": 1}', "{broken"])


def case_stalled(daemon, optix, stack):
    stall(optix)
    daemon.drop_generated("stalled", "a.ndjson", 10)


def case_429(daemon, optix, stack):
    optix.add_faults({"uuid": UUID1, "status": 429, "retry_after": "1", "count": 100000})
    daemon.drop_generated("limited", "a.ndjson", 10)


def case_backlog(daemon, optix, stack):
    # A file waits behind a batch the API does not answer, its mtime (what the metric's age is of)
    # three hours back. Dropped once that batch is open: older data first, it would go in it.
    stall(optix)
    daemon.drop_generated("backlog", "a.ndjson", 10)
    stack.wait_series('dcsyncd_batch_open{connection="backlog"} == 1')
    drop_old(daemon, "backlog", "b.ndjson", 3)


CASES = {
    # id: (alert, connection name, its keys, what drives it there)
    "keys-refused": ("DcsyncdKeysRefused", "keys", {"api_key": "not-the-key"}, case_keys),
    "404-failed": ("DcsyncdFilesFailing", "missing", {"uuid": UUID3}, case_not_found),
    "rejected-line": ("DcsyncdRecordsRejected", "rejecting", {}, case_rejected),
    "stalled-api": ("DcsyncdNoCompletedBatch", "stalled", {}, case_stalled),
    "mostly-429": ("DcsyncdMostly429", "limited", {}, case_429),
    # batch_records: the open batch is full, the old file cannot join it.
    "old-file-waiting": ("DcsyncdBacklogOld", "backlog", {"batch_records": 10}, case_backlog),
}


def start_watched(daemon, optix, stack, name, **keys):
    """The daemon running with one connection, Prometheus holding its first samples: an increase()
    needs the 0 before the change."""
    daemon.write_config([daemon.connection(optix, name=name, **keys)], metrics_file=stack.metrics_file)
    daemon.start()
    stack.wait_series(f'dcsyncd_files_total{{connection="{name}",outcome="failed"}}')


@needs_prometheus
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_real_prometheus_raises_the_alert_for_the_connection(daemon, optix, stack, case):
    alert, name, keys, drive = CASES[case]
    start_watched(daemon, optix, stack, name, **keys)
    drive(daemon, optix, stack)
    try:
        got = stack.wait_alert(alert, name)
    except AssertionError as e:
        metrics = stack.metrics_file.read_text() if stack.metrics_file.exists() else "(no metrics file)"
        raise AssertionError(f"{e}\nmetrics file:\n{metrics}\ndaemon log tail:\n{daemon.log()[-3000:]}") from None
    assert got["labels"]["connection"] == name and got["labels"]["job"] == "node", got
    assert daemon.running(), daemon.log()[-3000:]


@needs_prometheus
def test_a_small_dump_after_normal_ones_raises_dump_far_smaller(daemon, optix, stack):
    # The normal dumps before Prometheus sees the connection (the count is kept across restarts):
    # every sample of the week is the normal size, so the small dump's first sample is far under
    # the median however slowly things run (uploaded while watched, the 0 before them and the
    # small one's samples could outnumber the normal ones by the time it came).
    daemon.write_config([daemon.connection(optix, name="dump")])
    for i, name in enumerate(("n1.ndjson", "n2.ndjson")):
        daemon.drop_generated("dump", name, 1000, start=i * 1000)
        assert daemon.run_once().returncode == 0, daemon.log()[-3000:]
    start_watched(daemon, optix, stack, "dump")
    stack.wait_series('quantile_over_time(0.5, dcsyncd_last_completed_records{connection="dump"}[7d]) >= 1000')
    assert not [a for a in stack.alerts() if a["labels"].get("alertname") == "DcsyncdDumpFarSmaller"]
    daemon.drop_generated("dump", "small.ndjson", 10, start=5000)
    got = stack.wait_alert("DcsyncdDumpFarSmaller", "dump")
    assert float(got["value"]) == 10, got


@needs_prometheus
def test_a_stopped_daemon_raises_metrics_stale(daemon, optix, stack):
    start_watched(daemon, optix, stack, "products")
    assert daemon.stop() == 0
    t = time.time() - 600              # as if it had stopped ten minutes ago
    os.utime(stack.metrics_file, (t, t))
    got = stack.wait_alert("DcsyncdMetricsStale", None)
    assert got["labels"]["file"].endswith("dcsyncd.prom"), got


@needs_prometheus
def test_a_healthy_run_raises_no_alert_and_every_dashboard_query_has_data(daemon, optix, stack):
    # A connection that has completed a batch before: one that never has counts as stalled from
    # the first file that waits (its last completed time is 0), so its very first upload may show
    # DcsyncdNoCompletedBatch pending for a moment (the rule's 15 m `for:` keeps it from firing).
    daemon.write_config([daemon.connection(optix, name="healthy")])
    daemon.drop_generated("healthy", "seed.ndjson", 10)
    assert daemon.run_once().returncode == 0, daemon.log()[-3000:]
    start_watched(daemon, optix, stack, "healthy")
    for i in range(1, 3):
        daemon.drop_generated("healthy", f"h{i}.ndjson", 500, start=i * 1000)
        wait_for(lambda: len(optix.records(UUID1)) >= 10 + i * 500, f"h{i} uploaded", daemon=daemon)
    stack.wait_series('dcsyncd_files_total{connection="healthy",outcome="archived"} >= 2')
    # A few evaluations of the rules on what was scraped once both files were up.
    stack.wait_evaluated_after(time.time() + 3)
    # None of the connection's, nor one of the daemon's own (stale metrics, journal): this Prometheus is the test's.
    ever = stack.query('count_over_time(ALERTS[1h])')
    assert ever == [], ever
    assert stack.alerts() == []

    exprs = dashboard_exprs()
    assert exprs
    for e in exprs:
        q = e.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$__interval", "1m")
        q = re.sub(r"\$\{?connection(:\w+)?\}?", "healthy", q)
        q = re.sub(r"\$\{?(instance|job)(:\w+)?\}?", ".*", q)
        assert "$" not in q, q
        assert stack.query(q), f"no data for the dashboard query {e!r} (as {q!r})"
