"""Many hosts, one key: three daemons on three spools share one API key against a fake that allows
50 requests per 10 s per key (429 beyond, no Retry-After). Everything must arrive, exactly once,
with no coordination between the daemons: each one's limiter adapts to the 429s it meets.

Run with:  DCSYNCD=build/src/dcsyncd python3 -m pytest -q tests/test_fleet.py
How few 429s the three meet depends on how the machine schedules three processes, so it is a
benchmark, not a pass/fail check: DCSYNCD_FLEET_BENCH=1 checks the bound (and prints the share
of the key's budget reached), as tests/bench/run.sh --fleet does:
  DCSYNCD_FLEET_BENCH=1 DCSYNCD_FLEET_REQUESTS=100 DCSYNCD=build/src/dcsyncd python3 -m pytest -q -s tests/test_fleet.py
"""

import os

from harness import Daemon, wait_for

UUIDS = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222",
         "33333333-3333-4333-8333-333333333333"]
LIMIT, WINDOW = 50, 10.0
RECORDS_PER_REQUEST = 100


def run_fleet(tmp_path, optix_factory, requests_per_host, retry_initial):
    optix = optix_factory(rate_limit=f"{LIMIT}/{WINDOW:g}", connections={u: "id" for u in UUIDS})
    daemons = []
    tmp_path.chmod(0o711)       # the daemons' user passes through to their own directories
    try:
        for i, uuid in enumerate(UUIDS):
            d = Daemon(tmp_path / f"host{i}")
            d.write_config([d.connection(optix, name="feed", uuid=uuid, batch_records=RECORDS_PER_REQUEST,
                                         rate_limit=f"{LIMIT}/{WINDOW:g}s", retry_initial_seconds=retry_initial,
                                         retry_max_seconds=30)])
            # Files of one request each: the daemon's own sends are what the limiter paces.
            for f in range(requests_per_host):
                d.drop_generated("feed", f"f{f:04d}.ndjson", RECORDS_PER_REQUEST, start=f * RECORDS_PER_REQUEST)
            daemons.append(d)
        for d in daemons:
            d.start()
        total = requests_per_host * RECORDS_PER_REQUEST
        for d, uuid in zip(daemons, UUIDS):
            wait_for(lambda: len(optix.records(uuid)) >= total, f"{total} records of {uuid}", d,
                     timeout=60 + 3 * requests_per_host * WINDOW / LIMIT * 3)
        for d in daemons:
            assert d.stop() == 0
    finally:
        for d in daemons:
            d.cleanup()
    reqs = optix.requests()
    ok = sorted(r["time"] for r in reqs if r["status"] == 200)
    too_many = sum(1 for r in reqs if r["status"] == 429)
    # The best a sliding window allows: LIMIT at once, then LIMIT a window, so N requests take
    # (N/LIMIT - 1) windows; share = LIMIT per window / what was reached, from first to last.
    share = len(ok) * WINDOW / (LIMIT * (ok[-1] - ok[0] + WINDOW))
    return optix, len(ok), too_many, share


def test_three_hosts_sharing_one_key_get_everything_up_with_few_429s(tmp_path, optix_factory):
    n = int(os.environ.get("DCSYNCD_FLEET_REQUESTS", "35"))
    optix, ok, too_many, share = run_fleet(tmp_path, optix_factory, n, 0.05)
    for uuid in UUIDS:
        assert len(optix.records(uuid)) == n * RECORDS_PER_REQUEST
    assert ok == 3 * n
    print(f"\nfleet: 3 hosts x {n} requests, {ok} accepted, {too_many} answered 429, "
          f"{share:.0%} of the key's budget")
    # A 429 used to halve the budget only until the next success, so each host went back to its
    # full 50 at once: 12 429s for 3 x 35 requests, 30 for 3 x 100. Adapting: 3 and 9.
    if os.environ.get("DCSYNCD_FLEET_BENCH"):
        assert too_many <= max(7, n // 5), f"{too_many} requests answered 429"
