"""Living within the API's rate limit: the client-side limiter per API key and full requests from small files."""

import json
import os
import subprocess
import time

from harness import UUID1, UUID2


def drop_small_files(daemon, conn, n_files, per_file):
    """n_files files of per_file records each, written the exporter's way (dot-name, then rename)
    and owned by the exporter."""
    spool = daemon.spool(conn)
    for k in range(n_files):
        tmp, final = spool / f".f{k:05d}.ndjson", spool / f"f{k:05d}.ndjson"
        with daemon.exporter_open(tmp, "w") as f:
            f.write("".join(json.dumps({"id": k * per_file + i, "v": k, "name": f"n{i}"}) + "\n"
                            for i in range(per_file)))
        os.rename(tmp, final)


def window_max(times, window):
    """Most requests seen in any sliding window of the given length."""
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_ten_thousand_small_files_fill_requests_without_a_single_429(optix_factory, daemon):
    optix = optix_factory(rate_limit="50/10")
    daemon.write_config([daemon.connection(optix)], log_level="info")
    drop_small_files(daemon, "products", 10000, 10)
    started = time.monotonic()
    proc = daemon.run_once(timeout=300)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = optix.stats()
    assert stats.get(429, 0) == 0, stats
    reqs = optix.requests(UUID1)
    assert len(reqs) <= 25, len(reqs)
    recs = optix.records(UUID1)
    assert len(recs) == 100000
    assert all(recs[str(k * 10 + i)]["v"] == k for k in (0, 4321, 9999) for i in range(10))
    assert not list(daemon.spool("products").glob("*.ndjson"))
    print(f"\n10,000 files x 10 records, limiter on: {len(reqs)} requests, 0 x 429, {took:.2f} s")


def test_two_connections_sharing_a_key_stay_within_the_window_together(optix_factory, daemon):
    optix = optix_factory(rate_limit="5/0.5")
    conns = [daemon.connection(optix, name=name, uuid=uuid, batch_records=20, rate_limit="5/0.5s")
             for name, uuid in (("products", UUID1), ("customers", UUID2))]
    daemon.write_config(conns)
    for name, base in (("products", 0), ("customers", 100000)):
        daemon.drop(name, "a.ndjson", [{"id": base + i, "v": 1} for i in range(200)])
    proc = daemon.run_once(timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    reqs = optix.requests()
    assert len(reqs) == 20
    assert optix.stats().get(429, 0) == 0
    assert window_max([r["time"] for r in reqs], 0.5) <= 5
    assert {r["uuid"] for r in reqs} == {UUID1, UUID2}
    assert len(optix.records(UUID1)) == 200 and len(optix.records(UUID2)) == 200


def test_without_the_limiter_the_server_answers_429_and_nothing_is_lost(optix_factory, daemon):
    optix = optix_factory(rate_limit="5/0.5")
    daemon.write_config([daemon.connection(optix, batch_records=20, rate_limit="off",
                                           retry_max_seconds=0.5)])
    daemon.drop("products", "a.ndjson", [{"id": i, "v": 2} for i in range(400)])
    proc = daemon.run_once(timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert optix.stats().get(429, 0) > 0
    recs = optix.records(UUID1)
    assert len(recs) == 400 and all(r["v"] == 2 for r in recs.values())
    assert "HTTP 429" in daemon.log()


def test_status_shows_the_limiter(optix_factory, daemon):
    optix = optix_factory()
    daemon.write_config([daemon.connection(optix, rate_limit="7/3s")])
    daemon.drop("products", "a.ndjson", [{"id": 1}])
    assert daemon.run_once().returncode == 0

    out = subprocess.run(daemon.command("status"), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert "rate limit:   7 requests / 3 s per API key; budget now 7, no request waiting" in out.stdout
