"""The shipped monitoring (packaging/monitoring/): the metrics file as Prometheus' own tool reads it,
the alert rules and their promtool unit tests, and the dashboard's queries against what the daemon
writes. Needs Debian's `prometheus` package (promtool); skipped, saying so, without it."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import UUID1, UUID2

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
