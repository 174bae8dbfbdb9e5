"""The packaged service under a real, booted systemd: the .deb installed with apt into a Debian 12
container and driven as an administrator would.

Run as root:  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/test_systemd.py

* The .deb is $DCSYNCD_DEB, or built from the tree with packaging/build-deb.sh (DEB_BUILD_OPTIONS
  nocheck), i.e. what ships: crash points off, Debian's build flags.
* The container's root is made once with ``debootstrap --variant=minbase
  --include=systemd,systemd-sysv,dbus bookworm`` and cached in $DCSYNCD_TEST_ROOTFS (default
  /var/tmp/dcsyncd-test-rootfs; remove it to make it again); each run boots a copy with
  ``systemd-nspawn --register=no --keep-unit -b`` (one container for the module, powered off and
  removed at the end) and enters it with ``nsenter -t PID -a``.  The container shares the host's
  network: the fake Opti-X (tests/fakeoptix.py) listens on the host's 127.0.0.1, and apt inside
  reaches Debian's archive.  Where the host has no cgroup file system mounted (a chroot, such as
  a bare debootstrap root CI may start in), one is mounted in a mount namespace of nspawn's own.
* The unit runs as shipped with one exception, for the whole module: a drop-in sets
  ``SystemCallErrorNumber=kill``, so that a system call the unit's SystemCallFilter= blocks kills
  the daemon (SIGSYS, the unit fails) instead of returning EPERM that a fallback could hide: every
  code path these tests exercise thus runs inside the sandbox (SystemCallFilter=,
  RestrictAddressFamilies=, ProtectSystem=strict, PrivateUsers=, ...), and one that needs a blocked
  call fails here, not in production.  test_sandbox_is_enforced checks the filter is really there.
* Skipped, saying why, when not root, without systemd-nspawn/debootstrap/dpkg-buildpackage, or when
  the container does not boot (the reason quotes nspawn's log).
"""

import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from fakeoptix import FakeOptix
from harness import UUID1, UUID2

ROOT = Path(__file__).resolve().parent.parent
ROOTFS = Path(os.environ.get("DCSYNCD_TEST_ROOTFS", "/var/tmp/dcsyncd-test-rootfs"))
API_KEY, BRAND_KEY = "sd-api-key-0123", "sd-brand-key-4567"
UUID3 = "33333333-3333-4333-8333-333333333333"      # the connection a reload adds
CONF = "/etc/dcsyncd/dcsyncd.conf"
DATA = "/srv/testdata"          # the test's NDJSON files, inside the container
BOOT_TIMEOUT = 90

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="not root: booting a container needs root"),
    pytest.mark.skipif(shutil.which("systemd-nspawn") is None,
                       reason="systemd-nspawn not installed (apt-get install systemd-container)"),
    pytest.mark.skipif(shutil.which("nsenter") is None, reason="nsenter not installed"),
]


def _run(argv, timeout=600, **kw):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, errors="replace",
                          stdin=subprocess.DEVNULL, timeout=timeout, check=False, **kw)


# --- the container -----------------------------------------------------------------------------

def _mirror():
    try:
        text = Path("/etc/apt/sources.list.d/debian.sources").read_text()
        m = re.search(r"^URIs:\s*(\S+)", text, re.M)
        if m:
            return m.group(1)
    except OSError:
        pass
    return "http://deb.debian.org/debian"


def _cached_rootfs():
    """The debootstrapped root, made once (under a lock: parallel runs wait for the first)."""
    ROOTFS.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{ROOTFS}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (ROOTFS / "lib/systemd/systemd").exists():
            return ROOTFS
        if shutil.which("debootstrap") is None:
            pytest.skip("debootstrap not installed (apt-get install debootstrap)")
        tmp = Path(f"{ROOTFS}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        r = _run(["debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus",
                  "bookworm", tmp, _mirror()], timeout=900)
        if r.returncode != 0:
            pytest.skip(f"debootstrap failed (rc {r.returncode}): {(r.stdout + r.stderr)[-800:]}")
        src = Path("/etc/apt/sources.list.d/debian.sources")
        if src.exists():            # the host's mirror (and snapshot pins), as for the host
            shutil.copy(src, tmp / "etc/apt/sources.list.d/debian.sources")
            (tmp / "etc/apt/sources.list").unlink(missing_ok=True)
        tmp.rename(ROOTFS)
        return ROOTFS


def _build_deb(work):
    given = os.environ.get("DCSYNCD_DEB")
    if given:
        return Path(given)
    if shutil.which("dpkg-buildpackage") is None:
        pytest.skip("dpkg-buildpackage not installed and no $DCSYNCD_DEB (see tests/install-deps.sh)")
    out, tmp = work / "deb", work / "debtmp"
    tmp.mkdir(parents=True)
    env = dict(os.environ, DEB_BUILD_OPTIONS=f"nocheck parallel={os.cpu_count() or 1}", TMPDIR=str(tmp))
    r = _run(["sh", ROOT / "packaging/build-deb.sh", out], env=env, cwd=ROOT)
    assert r.returncode == 0, f"build-deb.sh failed:\n{(r.stdout + r.stderr)[-4000:]}"
    debs = sorted(out.glob("dcsyncd_*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


def _root_is_mount():
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == "/" for line in f)


# nspawn needs a cgroup file system at /sys/fs/cgroup; a chroot with /sys bound without its
# submounts has none. Mounted here in nspawn's own mount namespace, it goes away with it.
BOOT_SCRIPT = """
case $(stat -f -c %T /sys/fs/cgroup) in
  tmpfs|cgroup2fs) ;;
  *) mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 99 ;;
esac
exec systemd-nspawn --register=no --keep-unit --quiet --console=read-only \
  --machine="$1" -D "$2" -b
"""


class Container:
    def __init__(self, root, log):
        self.root, self.log = Path(root), Path(log)
        self.name = f"dcsyncd-test-{os.getpid()}"
        self.proc = None
        self.pid = None         # the container's systemd, as the host sees it

    def boot(self):
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                          BOOT_SCRIPT, "sh", self.name, str(self.root)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while self.pid is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return f"systemd-nspawn did not start the container: {self.boot_log()}"
            self.pid = self._payload()
            time.sleep(0.1)
        while True:
            r = self.sh("systemctl is-system-running", timeout=30)
            state = r.stdout.strip()
            if state in ("running", "degraded"):
                return None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                return f"the container did not finish booting (state {state!r}): {self.boot_log()}"
            time.sleep(0.2)

    def _payload(self):
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        for k in kids:
            try:
                if Path(f"/proc/{k}/comm").read_text().strip() == "systemd":
                    return int(k)
            except OSError:
                pass
        return None

    def boot_log(self):
        try:
            return self.log.read_text(errors="replace")[-1500:]
        except OSError:
            return "(no log)"

    def sh(self, cmd, timeout=120, check=False):
        """A shell command inside the container, as root (nsenter -a: every namespace)."""
        r = _run(["nsenter", "-t", self.pid, "-a", "env", "-i",
                  "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "LANG=C.UTF-8", "SYSTEMD_PAGER=cat", "SYSTEMD_COLORS=0", "HOME=/root",
                  "sh", "-c", cmd], timeout=timeout)
        if check:
            assert r.returncode == 0, f"{cmd!r} failed (rc {r.returncode}):\n{r.stdout}\n{r.stderr}"
        return r

    def ok(self, cmd, timeout=120):
        return self.sh(cmd, timeout, check=True).stdout

    def write(self, path, text, mode=0o644, owner="root:root"):
        host = self.root / path.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        tmp = host.with_name(f".{host.name}.tmp")
        tmp.write_text(text)
        os.chmod(tmp, mode)
        os.rename(tmp, host)
        self.ok(f"chown {owner} {shlex.quote(path)}")

    def shutdown(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)       # nspawn: a clean poweroff of the container
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    work = Path(tempfile.mkdtemp(prefix="dcsyncd-systemd-", dir="/var/tmp"))
    c = None
    try:
        deb = _build_deb(work)
        base = _cached_rootfs()
        root = work / "root"
        r = _run(["cp", "-a", "--reflink=auto", base, root])
        assert r.returncode == 0, r.stderr
        if not _root_is_mount():
            pytest.skip("/ is not a mount point (a chroot, e.g. a bare debootstrap root): "
                        "systemd-nspawn must make it a slave mount and cannot boot a container")
        c = Container(root, work / "boot.log")
        why = c.boot()
        if why:
            pytest.skip(f"cannot boot a container here: {why}")
        shutil.copy(deb, root / "root" / deb.name)
        c.deb = deb.name
        yield c
    finally:
        if c is not None:
            c.shutdown()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def optix():
    fx = FakeOptix(api_key=API_KEY, brand_key=BRAND_KEY, connections={UUID1: "id", UUID2: "id", UUID3: "id"})
    fx.start()
    yield fx
    fx.stop()


def conf_text(optix, extra_daemon="", extra=""):
    # events reaches the server by name: the resolver runs inside RestrictAddressFamilies= too.
    return f"""[daemon]
spool_dir = /var/spool/dcsyncd
state_dir = /var/lib/dcsyncd
log_level = info
settle_seconds = 1
metrics_file = /var/lib/prometheus/node-exporter/dcsyncd.prom
{extra_daemon}
[connection products]
uuid = {UUID1}
primary_key = id
base_url = {optix.url}
api_key_credential = optimove-api-key
brand_key_credential = optimove-brand-key

[connection events]
uuid = {UUID2}
primary_key = id
base_url = http://localhost:{optix.port}/api/data-connections/v1
api_key_file = /etc/dcsyncd/events.api_key
brand_key_file = /etc/dcsyncd/events.brand_key
retry_max_seconds = 600
{extra}"""


@pytest.fixture(scope="module")
def svc(box, optix):
    """dcsyncd installed with apt, configured as README.Debian says, started: the container."""
    r = box.sh("apt-get update -q", timeout=300)
    if r.returncode != 0:
        pytest.skip(f"apt cannot reach Debian's archive from the container: {r.stdout[-500:]}{r.stderr[-500:]}")
    c = box
    c.apt = c.sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
                 f"/root/{c.deb}", timeout=600)
    assert c.apt.returncode == 0, c.apt.stdout[-3000:] + c.apt.stderr[-3000:]
    c.before_config = {"enabled": c.sh("systemctl is-enabled dcsyncd").stdout.strip(),
                       "state": show(c, "ActiveState", "ConditionResult"),
                       "spool": c.sh("stat -c '%a %U %G' /var/spool/dcsyncd").stdout.split()}

    # The administrator's part: keys as credentials for one connection, key files for the other,
    # the configuration, the metrics directory (node-exporter's), and the module's drop-in.
    c.write("/etc/credstore/dcsyncd-api-key", API_KEY + "\n", 0o600)
    c.write("/etc/credstore/dcsyncd-brand-key", BRAND_KEY + "\n", 0o600)
    c.write("/etc/dcsyncd/events.api_key", API_KEY + "\n", 0o640, "root:dcsync")
    c.write("/etc/dcsyncd/events.brand_key", BRAND_KEY + "\n", 0o640, "root:dcsync")
    c.write("/etc/systemd/system/dcsyncd.service.d/credentials.conf",
            "[Service]\nLoadCredential=optimove-api-key:/etc/credstore/dcsyncd-api-key\n"
            "LoadCredential=optimove-brand-key:/etc/credstore/dcsyncd-brand-key\n")
    c.write("/etc/systemd/system/dcsyncd.service.d/zz-test-seccomp-kill.conf",
            "[Service]\n# tests/test_systemd.py: a blocked system call kills (SIGSYS) instead of EPERM\n"
            "SystemCallErrorNumber=kill\n")
    # node-exporter's textfile directory, writable by the daemon's group (root's otherwise).
    c.ok("install -d -m 0775 -g dcsync /var/lib/prometheus/node-exporter")
    c.write(CONF, conf_text(optix), 0o640, "root:dcsync")
    c.ok("useradd -m -G dcsync exporter")
    c.ok("systemctl daemon-reload && systemctl start dcsyncd")
    return c


def test_apt_install(svc):
    """apt installs the .deb with its libraries from the archive; the unit is enabled, and skipped
    (not failed) until the configuration exists; tmpfiles.d made the spool."""
    c = svc
    for lib in ("libyajl2", "libev4", "libinih1", "libcurl4"):
        assert re.search(rf"^Setting up {lib}\b", c.apt.stdout, re.M), \
            f"apt did not install {lib}:\n{c.apt.stdout}"
    assert c.ok("dcsyncd --version").strip()
    b = c.before_config
    assert b["enabled"] == "enabled", b
    assert b["state"]["ActiveState"] == "inactive" and b["state"]["ConditionResult"] == "no", b
    assert b["spool"] == ["3770", "dcsync", "dcsync"], b
    assert c.ok("systemctl is-active dcsyncd").strip() == "active"


# --- helpers on the installed service ----------------------------------------------------------

def ndjson(prefix, n, start=0):
    return "".join(json.dumps({"id": f"{prefix}{i}", "n": i, "s": "x" * 40}) + "\n"
                   for i in range(start, start + n))


def drop(c, conn, name, text):
    """The producer: writes under a dot-name in the spool, then renames into place."""
    c.write(f"{DATA}/{name}", text, 0o644)
    c.ok(f"runuser -u exporter -- sh -c 'umask 027; cp {DATA}/{name} "
         f"/var/spool/dcsyncd/{conn}/.{name} && mv /var/spool/dcsyncd/{conn}/.{name} "
         f"/var/spool/dcsyncd/{conn}/{name}'")


def show(c, *props):
    out = c.ok("systemctl show dcsyncd " + " ".join(f"-p {p}" for p in props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def journal(c, since_cursor=None, *match):
    """The unit's journal entries (JSON), after a cursor."""
    cmd = "journalctl -u dcsyncd -o json --no-pager"
    if since_cursor:
        cmd += f" --after-cursor={shlex.quote(since_cursor)}"
    cmd += "".join(" " + shlex.quote(m) for m in match)
    return [json.loads(line) for line in c.ok(cmd).splitlines() if line.strip()]


def cursor(c):
    out = c.ok("journalctl -u dcsyncd -n 1 -o json --no-pager").strip()
    return json.loads(out)["__CURSOR"] if out else None


def wait(pred, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def wait_log(c, cur, pattern, timeout=60.0):
    rx = re.compile(pattern)
    return wait(lambda: next((e for e in journal(c, cur) if rx.search(str(e.get("MESSAGE", "")))), None),
                timeout, f"a log line matching {pattern!r}")


def archived(c, conn, name):
    return c.sh(f"test -f /var/lib/dcsyncd/done/{conn}/{name}").returncode == 0


def no_bad_lines(c, cur, allowed=()):
    """Nothing at warning or worse from the unit since cur, but the lines a test provoked."""
    bad = [e["MESSAGE"] for e in journal(c, cur) if int(e.get("PRIORITY", 6)) <= 4
           and e.get("_SYSTEMD_UNIT") == "dcsyncd.service" and not any(re.search(a, e["MESSAGE"]) for a in allowed)]
    assert not bad, f"unexpected warnings or errors:\n" + "\n".join(bad)


def assert_running(c):
    p = show(c, "ActiveState", "Result", "NRestarts")
    assert p["ActiveState"] == "active", p
    assert p["Result"] == "success", p


# --- the tests ---------------------------------------------------------------------------------

def test_sandbox_is_enforced(svc):
    """The daemon runs unprivileged under the unit's seccomp filter (so the other tests do exercise
    the sandbox), and the filter's action is the drop-in's: a blocked call kills."""
    c = svc
    pid = show(c, "MainPID")["MainPID"]
    status = c.ok(f"cat /proc/{pid}/status")
    f = dict(re.findall(r"^(\w+):\s*(.*)$", status, re.M))
    assert f["Seccomp"] == "2" and f["NoNewPrivs"] == "1", status
    assert int(f["CapEff"], 16) == 0 and int(f["CapBnd"], 16) == 0, status
    assert c.ok(f"stat -c %U /proc/{pid}").strip() == "dcsync"
    # The same filter on a process that makes a @privileged call (chroot): it is killed.
    r = c.sh("systemd-run --wait -p DynamicUser=yes -p SystemCallFilter=@system-service "
             "-p 'SystemCallFilter=~@privileged @resources' -p SystemCallErrorNumber=kill "
             "/usr/sbin/chroot / /bin/true")
    assert r.returncode != 0 and "SYS" in r.stderr + r.stdout, r


def test_producer_drop_uploaded_and_archived(svc, optix):
    """A producer in group dcsync drops a file; it goes up (keys from LoadCredential=), is archived,
    and the journal carries the CONNECTION/FILE/BATCH_UUID/RECORDS fields."""
    c = svc
    cur = cursor(c)
    drop(c, "products", "p1.ndjson", ndjson("p1-", 7000))
    wait(lambda: archived(c, "products", "p1.ndjson"), what="p1.ndjson in done/products")
    assert len(optix.records(UUID1)) >= 7000 and optix.record(UUID1, "p1-6999")["n"] == 6999
    reqs = [r for r in optix.requests(UUID1) if r["status"] == 200]
    batch = reqs[-1]["batch_uuid"]
    assert reqs[-1]["batch_completed"] is True
    # journalctl CONNECTION=products: the daemon's own fields on its lines. (Matched without
    # --after-cursor: journalctl 252 finds nothing when a match follows a cursor of another entry.)
    wait_log(c, cur, r"^products: p1\.ndjson: 7000 records sent", 10)
    entries = [e for e in journal(c, None, "CONNECTION=products") if e.get("FILE") == "p1.ndjson"]
    assert entries, "no entry with CONNECTION=products FILE=p1.ndjson"
    assert any(e.get("BATCH_UUID") == batch for e in entries), (batch, entries)
    assert any(e.get("RECORDS") for e in entries), entries
    assert not [e for e in journal(c, None, "CONNECTION=events") if e.get("FILE") == "p1.ndjson"]
    # The key never reaches the journal.
    assert API_KEY not in c.ok("journalctl -u dcsyncd --no-pager -o verbose")
    # The metrics file is written through ReadWritePaths=-/var/lib/prometheus/node-exporter.
    prom = c.ok("cat /var/lib/prometheus/node-exporter/dcsyncd.prom")
    assert "products" in prom
    no_bad_lines(c, cur)
    assert_running(c)


def test_status_line(svc, optix):
    c = svc
    drop(c, "events", "e1.ndjson", ndjson("e1-", 100))
    wait(lambda: archived(c, "events", "e1.ndjson"), what="e1.ndjson in done/events")
    # The STATUS= text itself (the journal lines systemctl status shows may say "records sent" first).
    status = wait(lambda: (lambda s: s if re.search(r"\d+ records sent", s) else None)(
        show(c, "StatusText")["StatusText"]), 30, "a STATUS= text with the records sent")
    out = c.sh("systemctl status dcsyncd --no-pager").stdout
    assert f'Status: "' in out, out
    assert_running(c)


def restore(c, optix):
    """The module's configuration and key files, reloaded (a test that failed half-way leaves none
    of its changes to the next)."""
    c.write(CONF, conf_text(optix), 0o640, "root:dcsync")
    c.write("/etc/dcsyncd/events.api_key", API_KEY + "\n", 0o640, "root:dcsync")
    if c.sh("systemctl is-active dcsyncd").stdout.strip() == "active":
        c.ok("systemctl reload dcsyncd")
    else:
        c.ok("systemctl reset-failed dcsyncd; systemctl start dcsyncd")


def test_reload_good_and_broken(svc, optix):
    c = svc
    cur = cursor(c)
    pid = show(c, "MainPID")["MainPID"]
    try:
        # A good file: a new connection starts.
        c.write(CONF, conf_text(optix, extra=f"""
[connection extra]
uuid = {UUID3}
primary_key = id
base_url = {optix.url}
api_key_credential = optimove-api-key
brand_key_credential = optimove-brand-key
"""), 0o640, "root:dcsync")
        c.ok("systemctl reload dcsyncd")
        wait_log(c, cur, r"configuration reloaded: 3 connection")
        drop(c, "extra", "x1.ndjson", ndjson("x1-", 10))
        wait(lambda: archived(c, "extra", "x1.ndjson"), what="x1.ndjson in done/extra")
        assert optix.record(UUID3, "x1-9") is not None
        # A broken file: refused with FILE:LINE: key: reason, the running configuration stays.
        c.write(CONF, conf_text(optix, extra="batch_records = 0\n"), 0o640, "root:dcsync")
        c.ok("systemctl reload dcsyncd")
        e = wait_log(c, cur, r"reload refused, the running configuration stays: "
                             r"/etc/dcsyncd/dcsyncd\.conf:\d+: batch_records: ")
        assert int(e["PRIORITY"]) <= 4
        drop(c, "extra", "x2.ndjson", ndjson("x2-", 10))
        wait(lambda: archived(c, "extra", "x2.ndjson"), what="x2.ndjson in done/extra (config kept)")
        assert show(c, "MainPID")["MainPID"] == pid
        assert_running(c)
    finally:
        restore(c, optix)
    no_bad_lines(c, cur, allowed=[r"reload refused"])


def test_401_fixed_key_file_reload_resumes(svc, optix):
    c = svc
    cur = cursor(c)
    try:
        c.write("/etc/dcsyncd/events.api_key", "wrong-key\n", 0o640, "root:dcsync")
        c.ok("systemctl reload dcsyncd")
        wait_log(c, cur, r"configuration reloaded")
        drop(c, "events", "e401.ndjson", ndjson("e401-", 20))
        wait_log(c, cur, r"refused the keys \(HTTP 401\)")
        assert optix.record(UUID2, "e401-0") is None
        assert not archived(c, "events", "e401.ndjson")
        # retry_max_seconds = 600: only the reload can make it try again within the test.
        c.write("/etc/dcsyncd/events.api_key", API_KEY + "\n", 0o640, "root:dcsync")
        c.ok("systemctl reload dcsyncd")
        wait(lambda: archived(c, "events", "e401.ndjson"), 30, "e401.ndjson in done/events")
        assert optix.record(UUID2, "e401-19") is not None
        assert "wrong-key" not in c.ok("journalctl -u dcsyncd --no-pager -o verbose")
        assert_running(c)
    finally:
        restore(c, optix)


def test_stop_drains_batch_in_flight(svc, optix):
    c = svc
    cur = cursor(c)
    # The first request of the batch is held 4 s at the server; stop arrives meanwhile.
    optix.add_faults({"uuid": UUID2, "delay": 4})
    drop(c, "events", "big.ndjson", ndjson("big-", 12000))
    wait(lambda: not optix.pending_faults(), 30, "the first request at the server")
    c.ok("systemctl stop --no-block dcsyncd")
    wait(lambda: show(c, "ActiveState")["ActiveState"] == "deactivating", 10, "deactivating")
    wait(lambda: show(c, "ActiveState")["ActiveState"] == "inactive", 60, "inactive")
    p = show(c, "Result", "ExecMainStatus", "ExecMainCode")
    assert p["Result"] == "success" and p["ExecMainStatus"] == "0", p
    big = [r for r in optix.requests(UUID2) if r["first_pk"] and str(r["first_pk"]).startswith("big-")]
    assert [r["status"] for r in big] == [200], big       # finished, and nothing new after stop
    assert big[0]["batch_completed"] is False
    assert not archived(c, "events", "big.ndjson")
    # Started again, the same batch resumes at its second request.
    c.ok("systemctl start dcsyncd")
    wait(lambda: archived(c, "events", "big.ndjson"), 60, "big.ndjson in done/events")
    big = [r for r in optix.requests(UUID2) if r["first_pk"] and str(r["first_pk"]).startswith("big-")]
    assert {r["batch_uuid"] for r in big} == {big[0]["batch_uuid"]}
    assert [r["n_records"] for r in big] == [5000, 5000, 2000], big
    assert len([k for k in optix.records(UUID2) if "big-" in k]) == 12000
    no_bad_lines(c, cur)
    assert_running(c)


def test_watchdog_kills_frozen_daemon(svc, optix):
    c = svc
    cur = cursor(c)
    c.write("/etc/systemd/system/dcsyncd.service.d/zz-test-watchdog.conf",
            "[Service]\nWatchdogSec=3\nRestartSec=1\n")
    c.ok("systemctl daemon-reload && systemctl restart dcsyncd")
    try:
        before = show(c, "MainPID", "NRestarts")
        c.ok(f"kill -STOP {before['MainPID']}")
        wait_log(c, cur, r"[Ww]atchdog timeout", 30)
        after = wait(lambda: (lambda p: p if p["MainPID"] not in ("0", before["MainPID"])
                              and p["ActiveState"] == "active" else None)(
            show(c, "MainPID", "NRestarts", "ActiveState")), 60, "the unit restarted")
        assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1, (before, after)
        drop(c, "products", "p2.ndjson", ndjson("p2-", 10))
        wait(lambda: archived(c, "products", "p2.ndjson"), what="p2.ndjson in done/ after the restart")
    finally:
        c.ok("rm -f /etc/systemd/system/dcsyncd.service.d/zz-test-watchdog.conf && "
             "systemctl daemon-reload && systemctl restart dcsyncd")
    assert_running(c)


def test_no_sandbox_kill(svc):
    """Over the whole module the daemon never died of a blocked system call (SIGSYS)."""
    c = svc
    out = c.ok("journalctl --no-pager -o cat")
    assert not re.search(r"dcsyncd.*(SYS|Bad system call)", out), out[-3000:]
