"""Runs the dcsyncd performance workloads against tests/bench/sink and prints a markdown table.

Called by tests/bench/run.sh, which builds the binaries first; see that file for the usage.
Each run of a workload: fresh spool and state, a fresh sink, `dcsyncd -c CONF --once` under GNU
time (wall seconds, user+sys CPU seconds and peak RSS of the daemon alone), then checked: the
sink's count of records, every batch_uuid it saw completed, no malformed body, dcsyncd's own
summary (every file done, none failed) and an empty spool.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import gen_ndjson  # noqa: E402  (tests/gen_ndjson.py)

UUIDS = ["11111111-1111-4111-8111-11111111111%d" % i for i in range(1, 10)]
MiB = 1024 * 1024
TIME = "/usr/bin/time"     # GNU time (Debian package 'time')


# ---- data ----

def _generate(path, records, start):
    """Write records start.. to path via a temporary name: an interrupted run leaves no cache."""
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as f:
        gen_ndjson.write(f, records, start)
    os.replace(tmp, path)


def data_file(data_dir, name, records, start=0):
    path = data_dir / name
    if not path.exists():
        t = time.monotonic()
        print(f"  generating {path} ({records:,} records)...", file=sys.stderr, flush=True)
        _generate(path, records, start)
        print(f"  ... {path.stat().st_size / MiB:.0f} MiB in {time.monotonic() - t:.1f} s", file=sys.stderr)
    return path


def data_gzip(data_dir, src):
    """src gzipped (gzip -6, the tool's default), made once."""
    path = data_dir / (src.name + ".gz")
    if not path.exists():
        print(f"  compressing {src} -> {path}...", file=sys.stderr, flush=True)
        tmp = path.with_name("." + path.name + ".tmp")
        with open(tmp, "wb") as out:
            subprocess.run(["gzip", "-6", "-c", str(src)], stdout=out, check=True)
        os.replace(tmp, path)
    return path


CSV_COLUMNS = "id:integer, score:number, qty:integer, active:boolean"


def data_csv(data_dir, name, rows):
    """A 10-column CSV (header + rows), a quoted cell with a comma in every tenth row, made once."""
    path = data_dir / name
    if not path.exists():
        t = time.monotonic()
        print(f"  generating {path} ({rows:,} rows)...", file=sys.stderr, flush=True)
        tmp = path.with_name("." + path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write("id,name,email,city,score,qty,active,created,country,note\n")
            cities = ["Berlin", "Lisbon", "Oslo", "Tel Aviv", "Austin", "Kyoto", "Lima", "Accra"]
            buf = []
            for i in range(rows):
                note = '"late, again"' if i % 10 == 0 else "ok"
                buf.append(f"{i},Customer {i},c{i}@example.com,{cities[i % 8]},{i % 1000}.{i % 100:02d},"
                           f"{i % 17},{'true' if i % 3 else 'false'},2024-0{1 + i % 9}-1{i % 10},DE,{note}\n")
                if len(buf) == 10000:
                    f.write("".join(buf))
                    buf = []
            f.write("".join(buf))
        os.replace(tmp, path)
        print(f"  ... {path.stat().st_size / MiB:.0f} MiB in {time.monotonic() - t:.1f} s", file=sys.stderr)
    return path


def gzip_dc_cpu(path):
    """CPU seconds of `gzip -dc path > /dev/null` (the best of 3)."""
    best = None
    for _ in range(3):
        before = os.times()
        subprocess.run(["gzip", "-dc", str(path)], stdout=subprocess.DEVNULL, check=True)
        after = os.times()
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        best = cpu if best is None else min(best, cpu)
    return best


def data_many(data_dir, name, files, records_each):
    """A directory of `files` files of `records_each` records, made once (a done-marker seals it)."""
    d = data_dir / name
    marker = d / ".complete"
    if not marker.exists():
        print(f"  generating {d}/ ({files:,} files of {records_each} records)...", file=sys.stderr, flush=True)
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for i in range(files):
            with open(d / f"f{i:06d}.ndjson", "wb") as f:
                gen_ndjson.write(f, records_each, i * records_each)
        marker.write_text("ok\n")
    return sorted(p for p in d.iterdir() if p.name.endswith(".ndjson"))


def place(src, dst):
    """Put a data file into the spool: a hard link (free, and the daemon's delete keeps the cache),
    else a copy (the run directory is on another filesystem)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def warm(paths):
    """Read the files once so every run starts with them in the page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 20):
                pass


# ---- processes ----

class Sink:
    def __init__(self, binary, run_dir, port=None):
        """port: a fixed one (skip.py: the store is per destination, and the port is in base_url)."""
        port_file = run_dir / "sink.port"
        port_file.unlink(missing_ok=True)
        self.out_path = run_dir / "sink.out"
        self.out = open(self.out_path, "w+")
        self.proc = subprocess.Popen([str(binary), *(["-p", str(port)] if port else []), "--port-file", str(port_file)],
                                     stdout=self.out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the sink did not start: " + self.out_path.read_text())
            time.sleep(0.01)
        self.port = int(port_file.read_text())

    def stop(self):
        """SIGTERM; returns the sink's counters as a dict of ints."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        self.out.seek(0)
        stats = {}
        for line in self.out.read().splitlines():
            if line.startswith("requests="):
                stats = {k: int(v) for k, v in (kv.split("=") for kv in line.split())}
        self.out.close()
        return stats


def measure(argv, timeout, log_path, env=None, wrap=()):
    """Run argv under GNU time; returns dict(wall, user, sys, cpu, maxrss_kib, status, timed_out, stdout).

    The peak RSS comes from GNU time, which forks from its own small process: os.wait4 on a child
    that Python spawned would report at least Python's own RSS (Linux carries the high-water mark
    of the memory image an exec replaces into the process's ru_maxrss)."""
    tfile = str(log_path) + ".time"
    full = list(wrap) + [TIME, "-f", "%e %U %S %M %c %w", "-o", tfile] + list(argv)
    with open(log_path, "w") as log, open(str(log_path) + ".stdout", "w+") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(full, stdout=out, stderr=log, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        timer.cancel()
        if timed_out.is_set():
            time.sleep(0.2)     # let the killed daemon go before the next run starts
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        stdout = out.read()
    res = {"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime, "cpu": ru.ru_utime + ru.ru_stime,
           "maxrss_kib": ru.ru_maxrss, "status": proc.returncode, "timed_out": timed_out.is_set(),
           "stdout": stdout}
    try:
        fields = Path(tfile).read_text().split("\n")
        last = [l for l in fields if l.strip()][-1].split()
        _, user, sys_, rss = float(last[0]), float(last[1]), float(last[2]), int(last[3])
        res.update(user=user, sys=sys_, cpu=user + sys_, maxrss_kib=rss, preempted=int(last[4]),
                   waits=int(last[5]))
    except (OSError, IndexError, ValueError):
        pass    # killed: the numbers of wait4 (CPU right, RSS at least Python's) stay
    return res


def bare_parse(binary, path):
    """CPU seconds of the yajl bare-parse baseline on path (the best of 3 runs)."""
    best = None
    for _ in range(3):
        out = subprocess.run([str(binary), str(path)], capture_output=True, text=True, check=True).stdout
        kv = dict(x.split("=") for x in out.split())
        if best is None or float(kv["cpu"]) < float(best["cpu"]):
            best = kv
    return float(best["cpu"]), int(best["lines"])


# ---- one workload ----

def write_config(run_dir, port, conns, conn_keys=()):
    keys = run_dir / "keys"
    keys.mkdir(exist_ok=True)
    for name in ("api_key", "brand_key"):
        p = keys / name
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("bench-" + name)
    lines = ["[daemon]", f"spool_dir = {run_dir / 'spool'}", f"state_dir = {run_dir / 'state'}",
             "log_level = warning", "after_upload = delete"]
    for i, name in enumerate(conns):
        lines += ["", f"[connection {name}]", f"uuid = {UUIDS[i]}", "primary_key = id",
                  f"base_url = http://127.0.0.1:{port}/api/data-connections/v1",
                  f"api_key_file = {keys / 'api_key'}", f"brand_key_file = {keys / 'brand_key'}"]
        lines.append("rate_limit = off")
        lines += conn_keys
    conf = run_dir / "dcsyncd.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf



def reset_dir(run_dir):
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / "spool").mkdir(parents=True)
    (run_dir / "state").mkdir()


def run_workload(a, wl, run_dir, perf_out=None, callgrind_out=None):
    """One run of workload wl: {"conns": {name: [files]}, "records": N}. Returns a result dict."""
    reset_dir(run_dir)
    sink = Sink(a.sink, run_dir)
    try:
        conf = write_config(run_dir, sink.port, list(wl["conns"]), wl.get("conn_keys", ()))
        for name, files in wl["conns"].items():
            d = run_dir / "spool" / name
            d.mkdir()
            for f in files:
                place(f, d / f.name)
        argv = [str(a.dcsyncd), "-c", str(conf), "--once"]
        if callgrind_out:
            # Instructions, not seconds: the same for the same binary and input whatever the
            # machine is doing, so two builds compare within a fraction of a per cent.
            argv = ["valgrind", "--tool=callgrind", "--trace-children=yes",
                    f"--callgrind-out-file={callgrind_out}"] + argv
        wrap = ["perf", "record", "-q", "-F", "20000", "-g", "-o", str(perf_out), "--"] if perf_out else []
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        m = measure(argv, a.timeout, run_dir / "dcsyncd.log", env, wrap)
    finally:
        stats = sink.stop()
    m["sink"] = stats
    problems = []
    if m["timed_out"]:
        problems.append(f"killed after {a.timeout:g} s")
    elif m["status"] != 0:
        problems.append(f"dcsyncd exited {m['status']}")
    if stats.get("records") != wl["records"]:
        problems.append(f"sink got {stats.get('records')} records, expected {wl['records']}")
    if stats.get("open", 1) != 0 or not stats.get("batches"):
        problems.append(f"sink saw {stats.get('batches')} batch(es), {stats.get('open')} never completed")
    done = failed = 0
    for line in m["stdout"].splitlines():
        mm = re.match(r"\S+: (\d+) file\(s\) done, (\d+) failed", line)
        if mm:
            done += int(mm.group(1))
            failed += int(mm.group(2))
    if (done, failed) != (wl["files"], 0) and not m["timed_out"]:
        problems.append(f"dcsyncd reports {done} file(s) done, {failed} failed; expected {wl['files']} done")
    if stats.get("bad"):
        problems.append(f"sink refused {stats['bad']} malformed bodies")
    left = [p for p in (run_dir / "spool").rglob("*") if p.is_file() and "/." not in str(p)]
    if left and not m["timed_out"]:
        problems.append(f"{len(left)} file(s) left in the spool")
    if problems:
        log = (run_dir / "dcsyncd.log").read_text(errors="replace").strip().splitlines()[-5:]
        problems += ["log: " + line for line in log]
    m["problems"] = problems
    return m


def summarize(runs):
    """Median wall and CPU over the runs, the largest RSS; the sink's counters of the last run."""
    return {"wall": statistics.median(r["wall"] for r in runs),
            "cpu": statistics.median(r["cpu"] for r in runs),
            "user": statistics.median(r["user"] for r in runs),
            "sys": statistics.median(r["sys"] for r in runs),
            "rss_mib": max(r["maxrss_kib"] for r in runs) / 1024,
            "sink": runs[-1]["sink"],
            "problems": [p for r in runs for p in r["problems"]],
            "runs": len(runs),
            "timed_out": any(r["timed_out"] for r in runs)}


# ---- the table ----

def mark(ok):
    return "✅ pass" if ok else "❌ FAIL"


def fmt_int(n):
    return f"{n:,.0f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dcsyncd", type=Path, required=True)
    p.add_argument("--sink", type=Path, required=True)
    p.add_argument("--yajl-parse", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True, help="generated data, kept between runs")
    p.add_argument("--run-dir", type=Path, required=True, help="spool and state (wiped per run)")
    p.add_argument("--only", default="W1,W1C,W2,W3,W4,W5,W6,W7", help="comma-separated workloads")
    p.add_argument("--repeat", type=int, default=5, help="runs per workload (W2: at most 1 unless --repeat-w2)")
    p.add_argument("--repeat-w2", action="store_true", help="repeat W2 as often as the others")
    p.add_argument("--timeout", type=float, default=600, help="seconds before a daemon run is killed")
    p.add_argument("--profile", nargs="?", const="W1", default=None, metavar="W",
                   help="also perf-record one run of workload W (default W1) and print the top symbols")
    p.add_argument("--callgrind", action="store_true",
                   help="instead of timing, count the daemon's instructions (valgrind --tool=callgrind), one run each")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed, too")
    a = p.parse_args(argv)
    only = [w.strip().upper() for w in a.only.split(",") if w.strip()]
    a.profile = a.profile.upper() if a.profile else None
    wanted = set(only) | ({a.profile} if a.profile else set())
    for k in ("dcsyncd", "sink", "yajl_parse", "data_dir", "run_dir"):
        setattr(a, k, getattr(a, k).resolve())     # the daemon wants absolute paths
    a.data_dir.mkdir(parents=True, exist_ok=True)

    print(f"dcsyncd: {a.dcsyncd}", file=sys.stderr)

    workloads = {}
    if "W1" in wanted:
        w1 = data_file(a.data_dir, "w1-1M.ndjson", 1_000_000)
        workloads["W1"] = {"title": "W1: 1 file × 1,000,000 records", "conns": {"bench": [w1]},
                           "records": 1_000_000, "files": 1}
    if "W1C" in wanted:
        w1 = data_file(a.data_dir, "w1-1M.ndjson", 1_000_000)
        workloads["W1C"] = {"title": "W1 with field_catalog = no (the catalog's cost)", "conns": {"bench": [w1]},
                            "records": 1_000_000, "files": 1, "conn_keys": ["field_catalog = no"]}
    if "W2" in wanted:
        w2 = data_file(a.data_dir, "w2-10M.ndjson", 10_000_000)
        workloads["W2"] = {"title": "W2: 1 file × 10,000,000 records", "conns": {"bench": [w2]},
                           "records": 10_000_000, "files": 1}
    if "W3" in wanted:
        files = data_many(a.data_dir, "w3-10k-files", 10_000, 10)
        workloads["W3"] = {"title": "W3: 10,000 files × 10 records, 1 connection", "conns": {"bench": files},
                           "records": 100_000, "files": len(files)}
    if "W4" in wanted:
        conns = {f"bench{i}": [data_file(a.data_dir, f"w4-250k-{i}.ndjson", 250_000, i * 250_000)]
                 for i in range(1, 5)}
        workloads["W4"] = {"title": "W4: 4 connections at once × 250,000 records", "conns": conns,
                           "records": 1_000_000, "files": 4}

    # W1 and W1C measure the catalog's cost as a difference of a few per cent: their runs
    # alternate, so a drift of the machine (frequency, other load) touches both alike.
    # Issue 15's formats: W1 gzipped; a 10-column CSV of 1M and of 10M rows.
    if "W5" in wanted:
        w5 = data_gzip(a.data_dir, data_file(a.data_dir, "w1-1M.ndjson", 1_000_000))
        workloads["W5"] = {"title": "W5: W1 as .ndjson.gz", "conns": {"bench": [w5]},
                           "records": 1_000_000, "files": 1}
    if "W6" in wanted:
        w6 = data_csv(a.data_dir, "w6-1M.csv", 1_000_000)
        workloads["W6"] = {"title": "W6: 1 CSV × 1,000,000 rows × 10 columns", "conns": {"bench": [w6]},
                           "records": 1_000_000, "files": 1, "conn_keys": [f"csv_columns = {CSV_COLUMNS}"]}
    if "W7" in wanted:
        w7 = data_csv(a.data_dir, "w7-10M.csv", 10_000_000)
        workloads["W7"] = {"title": "W7: 1 CSV × 10,000,000 rows × 10 columns", "conns": {"bench": [w7]},
                           "records": 10_000_000, "files": 1, "conn_keys": [f"csv_columns = {CSV_COLUMNS}"]}

    if a.callgrind:
        return count_instructions(a, only, workloads)

    groups = [[w] for w in ["W1", "W1C", "W2", "W3", "W4", "W5", "W6", "W7"] if w in only]
    if ["W1"] in groups and ["W1C"] in groups:
        groups.remove(["W1C"])
        groups[groups.index(["W1"])] = ["W1", "W1C"]
    results = {}
    for group in groups:
        for name in group:
            warm([f for fs in workloads[name]["conns"].values() for f in fs])
        n = 1 if group in (["W2"], ["W7"]) and not a.repeat_w2 else max(1, a.repeat)
        runs = {name: [] for name in group}
        for i in range(n):
            for name in group:
                print(f"  {name} run {i + 1}/{n}...", file=sys.stderr, flush=True)
                r = run_workload(a, workloads[name], a.run_dir / name)
                runs[name].append(r)
                print(f"    wall {r['wall']:.2f} s, cpu {r['cpu']:.2f} s, rss {r['maxrss_kib'] / 1024:.1f} MiB, "
                      f"context switches: {r.get('preempted', '?')} involuntary, {r.get('waits', '?')} voluntary; "
                      f"sink {r['sink']}" + ("; " + "; ".join(r["problems"]) if r["problems"] else ""),
                      file=sys.stderr, flush=True)
            if any(r[-1]["timed_out"] for r in runs.values()):
                break
        for name in group:
            wl = workloads[name]
            res = summarize(runs[name])
            res["records"] = wl["records"]
            res["files"] = wl["files"]
            res["title"] = wl["title"]
            if name in ("W1", "W2"):
                print(f"  {name} bare yajl parse...", file=sys.stderr, flush=True)
                first = next(iter(wl["conns"].values()))[0]
                res["bare_cpu"], lines = bare_parse(a.yajl_parse, first)
                if lines != wl["records"]:
                    res["problems"].append(f"yajl_parse saw {lines} lines")
            if name == "W5":
                print("  W5 gzip -dc and bare yajl parse...", file=sys.stderr, flush=True)
                gz = next(iter(wl["conns"].values()))[0]
                res["gzip_cpu"] = gzip_dc_cpu(gz)
                res["bare_cpu"], _ = bare_parse(a.yajl_parse, gz.with_suffix(""))
                res["bare_cpu"] += res["gzip_cpu"]
            results[name] = res
            shutil.rmtree(a.run_dir / name, ignore_errors=True)

    profile = None
    if a.profile:
        profile = run_profile(a, a.profile, workloads[a.profile])

    print_table(results)
    if profile:
        print()
        print(profile)
    if a.json:
        a.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    broken = [w for w, r in results.items() if r["problems"]]
    missed = [w for w, r in results.items() if not r.get("pass", True)]
    return 1 if broken or (a.strict and missed) else 0


def count_instructions(a, only, workloads):
    """One run of each workload under callgrind; prints the daemon's instructions (all threads)."""
    if not shutil.which("valgrind"):
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 1
    rc = 0
    print("| workload | instructions |")
    print("|---|---|")
    for name in only:
        wl = workloads[name]
        out = a.run_dir / f"{name}.callgrind"
        print(f"  {name} under callgrind...", file=sys.stderr, flush=True)
        r = run_workload(a, wl, a.run_dir / name, callgrind_out=out)
        total = 0
        for line in out.read_text(errors="replace").splitlines() if out.exists() else ():
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
        if r["problems"] or not total:
            rc = 1
            print(f"  {name}: " + "; ".join(r["problems"] or ["no callgrind totals"]), file=sys.stderr)
        print(f"| {name} | {fmt_int(total)} |", flush=True)
        shutil.rmtree(a.run_dir / name, ignore_errors=True)
        out.unlink(missing_ok=True)
    return rc


# Debian 12's libyajl2 (2.1.0-3+deb12u2) is stripped: its internal functions show up as bare
# addresses. These starts were read off its call graph (yajl_parse jumps to yajl_do_parse, which
# calls the lexer at every token, and so on); another build of the library gets "yajl+0xSTART".
YAJL_NAMES = {
    "967970b0780cb60ad1c1010d0b0505b3f12a974c": {
        0x25d0: "yajl_lex_alloc", 0x2630: "yajl_lex_free", 0x2650: "yajl_lex_lex",
        0x3ce0: "yajl_lex error helpers", 0x3db0: "yajl_lex error helpers", 0x3f50: "yajl_render_error_string",
        0x4300: "yajl_do_parse", 0x4c80: "yajl_do_finish", 0x4fb0: "yajl_string_encode",
        0x51c0: "yajl_string_decode", 0x55d0: "yajl_string_validate_utf8",
        0x7200: "yajl malloc/realloc/free wrappers", 0x7240: "yajl_set_default_alloc_funcs",
        **{a: "yajl_buf_*" for a in (0x4d10, 0x4d30, 0x4d80, 0x4ee0, 0x4f00, 0x4f10, 0x4f20, 0x4f50)},
    },
}


def yajl_function_starts(lib):
    """{start address: name} of a stripped libyajl: exported symbols, every call target, known names."""
    starts = {}
    try:
        nm = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True).stdout
        for line in nm.splitlines():
            f = line.split()
            if len(f) == 3 and f[1] in "Tt":
                starts[int(f[0], 16)] = f[2]
        dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", lib], capture_output=True, text=True).stdout
        for mm in re.finditer(r"\scall\s+([0-9a-f]+) <[^>@]*@@Base\+0x", dis):
            starts.setdefault(int(mm.group(1), 16), None)
        note = subprocess.run(["readelf", "-n", lib], capture_output=True, text=True).stdout
        bid = re.search(r"Build ID: ([0-9a-f]+)", note)
        known = YAJL_NAMES.get(bid.group(1) if bid else "", {})
        for addr in known:
            starts.setdefault(addr, None)
    except OSError:
        return {}
    return {a: known.get(a) or n or f"yajl+{a:#x}" for a, n in starts.items()}


def fold(addr, starts):
    best = max((a for a in starts if a <= addr), default=None)
    return starts[best] if best is not None else f"{addr:#x}"


# The daemon's threads: the loop, and the cut-ahead workers (src/record/record_worker.c names them).
COMMS = "dcsyncd,dcsyncd-cut"


def run_profile(a, name, wl):
    if not shutil.which("perf"):
        return "(perf not found: apt-get install linux-perf, or use valgrind --tool=callgrind)"
    run_dir = a.run_dir / f"{name}-perf"
    perf_out = a.run_dir.parent / f"perf-{name.lower()}.data"
    print(f"  {name} under perf record...", file=sys.stderr, flush=True)
    r = run_workload(a, wl, run_dir, perf_out=perf_out)
    shutil.rmtree(run_dir, ignore_errors=True)
    if r["problems"]:
        return "perf run failed: " + "; ".join(r["problems"])
    rep = subprocess.run(["perf", "report", "-i", str(perf_out), "--no-children", "--stdio", "--comm", COMMS,
                          "--sort", "dso,sym", "-g", "none", "--percent-limit", "0"],
                         capture_output=True, text=True).stdout
    ldd = subprocess.run(["ldd", str(a.dcsyncd)], capture_output=True, text=True).stdout
    mm = re.search(r"libyajl\S* => (\S+)", ldd)
    starts = yajl_function_starts(mm.group(1)) if mm else {}
    by_sym, by_dso = {}, {}
    for line in rep.splitlines():
        mm = re.match(r"\s*([0-9.]+)%\s+(\S+)\s+\[([.k])\]\s+(\S+)", line)
        if not mm:
            continue
        pct, dso, _, sym = float(mm.group(1)), mm.group(2), mm.group(3), mm.group(4)
        if "yajl" in dso and sym.startswith("0x") and starts:
            sym = fold(int(sym, 16), starts)
        if dso.startswith("["):
            dso = "kernel"
        by_sym[(dso, sym)] = by_sym.get((dso, sym), 0) + pct
        by_dso[dso] = by_dso.get(dso, 0) + pct
    samples = re.search(r"# Samples: (\S+)", subprocess.run(
        ["perf", "report", "-i", str(perf_out), "--stdio", "--comm", COMMS, "--sort", "dso"],
        capture_output=True, text=True).stdout)
    threads = subprocess.run(["perf", "report", "-i", str(perf_out), "--no-children", "--stdio", "--comm", COMMS,
                              "--sort", "comm", "-g", "none"], capture_output=True, text=True).stdout
    split = ", ".join(f"{mm.group(2)} {mm.group(1)}%" for mm in
                      re.finditer(r"^\s*([0-9.]+)%\s+(\S+)\s*$", threads, re.M))
    out = [f"### perf profile of dcsyncd, {name} ({samples.group(1) if samples else '?'} samples, self time; "
           f"perf data in {perf_out})", "", f"By thread: {split or '?'}", "",
           "| Share | Where |", "|---:|---|"]
    out += [f"| {p:.1f} % | {d} |" for d, p in sorted(by_dso.items(), key=lambda x: -x[1]) if p >= 0.5]
    out += ["", "| Self | Function | Object |", "|---:|---|---|"]
    for (d, sym), p in sorted(by_sym.items(), key=lambda x: -x[1])[:30]:
        out.append(f"| {p:.1f} % | {sym} | {d} |")
    return "\n".join(out)


def print_table(results):
    w1 = results.get("W1")
    w1_rps = w1["records"] / w1["wall"] if w1 else None
    rows = []
    for name, r in results.items():
        rps = r["records"] / r["wall"]
        bare = ratio = "—"
        if "bare_cpu" in r:
            bare = f"{r['bare_cpu']:.2f}"
            ratio = f"{r['cpu'] / r['bare_cpu']:.2f}×"
        checks = []
        if name == "W1":
            target = "CPU ≤ 2× bare parse; ≥ 1,000,000 rec/s"
            checks = [r["cpu"] <= 2 * r["bare_cpu"], rps >= 1_000_000]
        elif name == "W1C":
            target = "the catalog's cost: W1's CPU ≤ 1.05× this" if w1 else "W1 not run"
            checks = [w1["cpu"] <= 1.05 * r["cpu"]] if w1 else []
            ratio = f"W1 {w1['cpu'] / r['cpu']:.2f}×" if w1 else "—"
        elif name == "W2":
            target = "peak RSS ≤ 32 MiB" + (f", within 2 MiB of W1's {w1['rss_mib']:.1f}" if w1 else "")
            checks = [r["rss_mib"] <= 32] + ([abs(r["rss_mib"] - w1["rss_mib"]) <= 2] if w1 else [])
        elif name == "W3":
            target = "≥ 5,000 files/s"
            checks = [r["files"] / r["wall"] >= 5000]
        elif name == "W5":
            target = f"CPU ≤ 1.3× gzip -dc ({r['gzip_cpu']:.2f} s) + bare parse"
            checks = [r["cpu"] <= 1.3 * r["bare_cpu"]]
        elif name == "W6":
            target = "≥ 1,000,000 rows/s"
            checks = [rps >= 1_000_000]
        elif name == "W7":
            w6 = results.get("W6")
            target = "peak RSS flat: within 2 MiB of W6's" + (f" {w6['rss_mib']:.1f}" if w6 else " (W6 not run)")
            checks = [abs(r["rss_mib"] - w6["rss_mib"]) <= 2] if w6 else []
        else:
            target = f"rec/s ≥ W1's {fmt_int(w1_rps)}" if w1 else "rec/s ≥ W1's (W1 not run)"
            checks = [rps >= w1_rps] if w1 else []
        r["pass"] = all(checks) and not r["problems"]
        result = mark(r["pass"]) if checks else "—"
        if r["problems"]:
            result += " (run problems, below)"
        if r["timed_out"]:
            result = "❌ KILLED (timeout)"
        s = r["sink"]
        rows.append([r["title"], fmt_int(s.get("records", 0)), fmt_int(s.get("requests", 0)),
                     fmt_int(s.get("batches", 0)), f"{r['wall']:.2f}",
                     "killed" if r["timed_out"] else fmt_int(rps),
                     f"{r['files'] / r['wall']:,.0f}" if r["files"] > 4 and not r["timed_out"] else "—",
                     f"{r['cpu']:.2f} ({r['user']:.2f}+{r['sys']:.2f})", f"{r['rss_mib']:.1f}", bare, ratio,
                     target, result])
    head = ["Workload", "Records at sink", "Requests", "Batches", "Wall s", "Records/s", "Files/s",
            "Daemon CPU s (user+sys)", "Peak RSS MiB", "Bare parse CPU s", "CPU / bare", "Target", "Result"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    runs = {r["runs"] for r in results.values()}
    print()
    print(f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (other work on the machine "
          "stretches wall times; CPU seconds are steadier).")
    print(f"Wall and CPU: median of {'/'.join(str(n) for n in sorted(runs))} run(s); peak RSS: the largest. "
          f"Machine: {os.cpu_count()} CPUs. Every run checked: the sink counted every record, every batch_uuid it "
          "saw was completed, no malformed body; dcsyncd exited 0 with every file done and the spool empty.")
    for name, r in results.items():
        for prob in r["problems"]:
            print(f"- {name}: {prob}")


if __name__ == "__main__":
    sys.exit(main())
