#!/usr/bin/env python3
"""skip_unchanged benchmarks (issue 24), run by `tests/bench/run.sh --skip [--only W8,W9]`.

W8: a 1,000,000-record dump against a warm store of the same keys, 1% changed: the records and
    requests the sink sees (target: 10,000 in 2), the daemon's CPU beside W1's (the same dump
    without skip_unchanged; target <= 1.5x) and its peak RSS.
W9: a store of 10,000,000 keys: bytes a key on disk, the time to cut a 10M-record all-unchanged
    dump (every record one lookup on the worker: lookups/s; target >= 1M records/s) and the
    daemon's peak RssAnon (sampled from /proc every 20 ms) beside W8's.
Each figure is one run (the warm-up run that fills the store is not measured).
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import bench  # noqa: E402
import gen_ndjson  # noqa: E402

MiB = 1024 * 1024


def changed_dump(data_dir, n, every):
    """Records 0..n-1 of gen_ndjson, every @every-th with another value (0: none; made once)."""
    path = data_dir / f"skip-{n}-every{every}.ndjson"
    if not path.exists():
        tmp = path.with_name("." + path.name + ".tmp")
        with open(tmp, "w") as f:
            for i in range(n):
                f.write(gen_ndjson.record(i, 1 if every and i % every == 0 else 0) + "\n")
        os.replace(tmp, path)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()


def run(a, run_dir, files, records, keep_state=False, skip=True, sample_anon=False):
    """One --once of @files into a fresh spool (the store kept with @keep_state)."""
    spool = run_dir / "spool"
    shutil.rmtree(spool, ignore_errors=True)
    if not keep_state:
        shutil.rmtree(run_dir / "state", ignore_errors=True)
    (spool / "bench").mkdir(parents=True)
    (run_dir / "state").mkdir(exist_ok=True)
    sink = bench.Sink(a.sink, run_dir, PORT)   # one port: the store is per destination, the port is in base_url
    try:
        conf = bench.write_config(run_dir, sink.port, ["bench"], [f"skip_unchanged = {'yes' if skip else 'no'}"])
        for f in files:
            bench.place(f, spool / "bench" / f.name)
        argv = [str(a.dcsyncd), "-c", str(conf), "--once"]
        anon = [0]
        if sample_anon:
            import threading

            stop = threading.Event()

            def sampler():
                # The daemon is GNU time's child: find it by its command line.
                while not stop.is_set():
                    for pid in os.listdir("/proc"):
                        if not pid.isdigit():
                            continue
                        try:
                            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                            if str(conf).encode() in cmd and b"time" not in cmd.split(b"\0")[0]:
                                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                                    if line.startswith("RssAnon:"):
                                        anon[0] = max(anon[0], int(line.split()[1]))
                        except OSError:
                            pass
                    stop.wait(0.02)
            th = threading.Thread(target=sampler, daemon=True)
            th.start()
        m = bench.measure(argv, a.timeout, run_dir / "dcsyncd.log", dict(os.environ))
        if sample_anon:
            stop.set()
            th.join()
    finally:
        stats = sink.stop()
    m["sink"] = stats
    m["anon_kib"] = anon[0]
    if m["status"] != 0:
        raise SystemExit(f"dcsyncd exited {m['status']}: " + (run_dir / "dcsyncd.log").read_text()[-2000:])
    return m


def store_bytes(run_dir):
    st = (run_dir / "state" / "store" / "bench" / "data.mdb").stat()
    return st.st_blocks * 512


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dcsyncd", type=Path, required=True)
    p.add_argument("--sink", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--only", default="W8,W9")
    p.add_argument("--timeout", type=float, default=1800)
    a = p.parse_args()
    a.data_dir.mkdir(parents=True, exist_ok=True)
    only = a.only.split(",")
    rows = []
    if "W8" in only:
        w1 = bench.data_file(a.data_dir, "w1.ndjson", 1_000_000)
        w8 = changed_dump(a.data_dir, 1_000_000, 100)
        w8base = changed_dump(a.data_dir, 1_000_000, 0)
        bench.warm([w1, w8, w8base])
        base = run(a, a.run_dir, [w1], 1_000_000, skip=False)
        run(a, a.run_dir, [w8base], 1_000_000)                   # the store learns the 1M keys
        m = run(a, a.run_dir, [w8], 1_000_000, keep_state=True, sample_anon=True)
        s = m["sink"]
        rows.append(f"| W8: 1,000,000 against a warm store, 1% changed | {m['wall']:.2f} | "
                    f"{s.get('records'):,} records in {s.get('requests')} requests | {m['cpu']:.2f} "
                    f"({m['cpu'] / base['cpu']:.2f}× W1's {base['cpu']:.2f}) | {m['maxrss_kib'] / 1024:.1f} MiB "
                    f"(W1 {base['maxrss_kib'] / 1024:.1f}); RssAnon {m['anon_kib'] / 1024:.1f} MiB | "
                    f"10,000 in 2, CPU ≤ 1.5× W1: "
                    f"{bench.mark(s.get('records') == 10000 and s.get('requests') == 2 and m['cpu'] <= 1.5 * base['cpu'])} |")
    if "W9" in only:
        w2 = bench.data_file(a.data_dir, "w2.ndjson", 10_000_000)      # the same dump twice: all unchanged
        run_dir = a.run_dir / "w9"
        t = time.monotonic()
        run(a, run_dir, [w2], 10_000_000)                        # 10M keys into the store
        fill = time.monotonic() - t
        size = store_bytes(run_dir)
        m = run(a, run_dir, [w2], 10_000_000, keep_state=True, sample_anon=True)
        rps = 10_000_000 / m["wall"]
        rows.append(f"| W9: 10,000,000 all unchanged against a store of 10M keys | {m['wall']:.2f} | "
                    f"{rps:,.0f} records (lookups)/s, {m['sink'].get('requests')} requests | {m['cpu']:.2f} | "
                    f"{m['maxrss_kib'] / 1024:.1f} MiB; RssAnon {m['anon_kib'] / 1024:.1f} MiB | "
                    f"store {size / MiB:.0f} MiB = {size / 10_000_000:.0f} bytes a key (keys of 2-8 bytes; filled in "
                    f"{fill:.0f} s); ≥ 1M records/s: {bench.mark(rps >= 1_000_000)} |")
    print("| workload | wall s | what went up | daemon CPU s | peak RSS | target |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
