"""Runs dcsyncd under test: writes its INI config into a tmp dir, drops spool files, starts/stops/kills it.

Privilege modes (DCSYNCD_TEST_PRIV, see privileges()): "unprivileged" runs the daemon as the user
DAEMON_USER with no capabilities and UMask from the unit, and makes drops as EXPORTER_USER, both in
TEST_GROUP, in the layout sysusers.d/tmpfiles.d set up; "root" runs everything as the test process.
"""

import functools
import grp
import json
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import gen_ndjson

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = REPO / "build" / "src" / "dcsyncd"

UUID1 = "11111111-1111-4111-8111-111111111111"
UUID2 = "22222222-2222-4222-8222-222222222222"

# settle_seconds: a file found at start-up that nobody can vouch for (unprivileged, another user's
# file) waits this long after its last change; the tests drop files just before starting the
# daemon, and must not wait out the production default (5 s) each time. Tests about files
# written in place set it high, so that only a writer closing its file can make it ready.
DAEMON_DEFAULTS = {"log_level": "debug", "after_upload": "archive", "settle_seconds": 0.2}
CONNECTION_DEFAULTS = {
    "primary_key": "id",
    "batch_records": 5000,
    "batch_bytes": 8388608,
    "timeout_seconds": 60,
    # Tests must not wait out production back-off.
    "retry_initial_seconds": 0.05,
}
# The daemon must log to our file and talk to our fake directly, whatever the caller's session has.
SCRUBBED_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "LISTEN_FDS",
                "LISTEN_PID", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY", "no_proxy", "NO_PROXY")


# The unprivileged mode's accounts, made by ensure_test_users(): the daemon's user has the shared
# group as its primary group (as sysusers.d makes dcsync:dcsync); the exporter has a group of its
# own and is a member of the shared one, as an exporter added with `usermod -a -G dcsync` is.
TEST_GROUP = "dcsynct"
DAEMON_USER = "dcsynct-d"
EXPORTER_USER = "dcsynct-x"
# An exporter's umask: what it writes is readable by the group (the daemon), not by the world.
EXPORTER_UMASK = 0o027
UNIT_FILE = REPO / "systemd" / "dcsyncd.service"
PRIV_ENV = "DCSYNCD_TEST_PRIV"


def binary_path():
    """The dcsyncd under test: $DCSYNCD, else <repo>/build/src/dcsyncd."""
    return Path(os.environ.get("DCSYNCD") or DEFAULT_BINARY)


def _ini_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _write_secret(path, text, owner=None):
    # Created 0600 from the start: the daemon may (rightly) refuse group/world-readable key files.
    # owner: (uid, gid) to give it to, the daemon's user in the unprivileged mode.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        if owner:
            os.fchown(f.fileno(), *owner)
        f.write(text)
    os.chmod(path, 0o600)


def unit_umask():
    """UMask= of the systemd unit (the daemon's umask in production), as an int."""
    return int(unit_settings(UNIT_FILE.read_text())[("Service", "UMask")][-1], 8)


def _run_quiet(argv):
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def ensure_test_users():
    """Create TEST_GROUP, DAEMON_USER and EXPORTER_USER when missing (root only; idempotent, and
    safe when another test session creates them at the same time). Returns None, or why not."""
    if os.geteuid() != 0:
        return "the tests do not run as root"
    for tool in ("groupadd", "useradd", "setpriv"):
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed"

    def exists(db, name):
        try:
            db.getgrnam(name) if db is grp else db.getpwnam(name)
            return True
        except KeyError:
            return False

    system = ["--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin"]
    steps = [
        (grp, TEST_GROUP, ["groupadd", "--system", TEST_GROUP]),
        (pwd, DAEMON_USER, ["useradd", *system, "--gid", TEST_GROUP, DAEMON_USER]),
        (grp, EXPORTER_USER, ["groupadd", "--system", EXPORTER_USER]),
        (pwd, EXPORTER_USER, ["useradd", *system, "--gid", EXPORTER_USER, "--groups", TEST_GROUP,
                              EXPORTER_USER]),
    ]
    for db, name, argv in steps:
        if exists(db, name):
            continue
        r = _run_quiet(argv)
        if r.returncode != 0 and not exists(db, name):      # lost a race: fine
            return f"{' '.join(argv)}: {r.stderr.strip() or f'exit {r.returncode}'}"
    if EXPORTER_USER not in grp.getgrnam(TEST_GROUP).gr_mem:
        return f"{EXPORTER_USER} exists but is not a member of {TEST_GROUP} (usermod -a -G {TEST_GROUP} {EXPORTER_USER})"
    if pwd.getpwnam(DAEMON_USER).pw_gid != grp.getgrnam(TEST_GROUP).gr_gid:
        return f"{DAEMON_USER} exists but its primary group is not {TEST_GROUP}"
    return None


class Privileges:
    """Who runs the daemon and who drops files. mode "root": both are the test process (root in CI,
    else whoever runs the tests). mode "unprivileged": the daemon runs as DAEMON_USER (primary group
    TEST_GROUP) with no capabilities and the unit's UMask; drops belong to EXPORTER_USER (a member of
    TEST_GROUP); the spool is DAEMON_USER:TEST_GROUP 3770 and the state dir DAEMON_USER 0750."""

    def __init__(self, mode):
        assert mode in ("root", "unprivileged"), mode
        self.mode = mode
        self.unprivileged = mode == "unprivileged"
        if self.unprivileged:
            d, x = pwd.getpwnam(DAEMON_USER), pwd.getpwnam(EXPORTER_USER)
            self.daemon_uid, self.exporter_uid = d.pw_uid, x.pw_uid
            self.group_gid = grp.getgrnam(TEST_GROUP).gr_gid
            self.daemon_gid, self.exporter_gid = d.pw_gid, x.pw_gid
            self.umask = unit_umask()
        else:
            self.daemon_uid = self.exporter_uid = os.geteuid()
            self.daemon_gid = self.exporter_gid = self.group_gid = os.getegid()
            self.umask = None        # the test process's own

    def __repr__(self):
        return f"Privileges({self.mode!r})"

    @staticmethod
    def _setpriv(uid, gid):
        # Real, effective and saved ids, the user's supplementary groups, and no capability left
        # anywhere (the unit's CapabilityBoundingSet= and AmbientCapabilities= are empty and it
        # sets NoNewPrivileges=yes).
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--inh-caps=-all",
                "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]

    def daemon_prefix(self):
        """argv prefix that runs a command as the daemon's user, or [] in the root mode. The umask
        is set by a shell that then execs the command, so the pid is the daemon's."""
        if not self.unprivileged:
            return []
        return [*self._setpriv(self.daemon_uid, self.daemon_gid),
                "/bin/sh", "-c", f'umask {self.umask:04o} && exec "$0" "$@"']

    def exporter_prefix(self):
        """argv prefix that runs a command as the exporter's user, or [] in the root mode."""
        if not self.unprivileged:
            return []
        return self._setpriv(self.exporter_uid, self.exporter_gid)

    def give_to_daemon(self, path, mode=None):
        """Make path the daemon's (owner DAEMON_USER, group TEST_GROUP), as its own files are."""
        if self.unprivileged:
            os.chown(path, self.daemon_uid, self.group_gid)
        if mode is not None:
            os.chmod(path, mode)

    def give_to_exporter(self, fd_or_path):
        """Make a spool file or directory (a path or an open fd) the exporter's: owner
        EXPORTER_USER, group TEST_GROUP, mode 0666 (0777 for a directory) less the exporter's
        umask, as if the exporter had made it in the setgid spool."""
        if not self.unprivileged:
            return
        fd = isinstance(fd_or_path, int)
        st = os.fstat(fd_or_path) if fd else os.stat(fd_or_path)
        (os.fchown if fd else os.chown)(fd_or_path, self.exporter_uid, self.group_gid)
        base = 0o2777 if stat.S_ISDIR(st.st_mode) else 0o666
        (os.fchmod if fd else os.chmod)(fd_or_path, base & ~EXPORTER_UMASK)


def requested_priv_mode():
    """$DCSYNCD_TEST_PRIV: "root", "unprivileged", or "" (auto)."""
    mode = os.environ.get(PRIV_ENV, "").strip().lower()
    if mode not in ("", "auto", "root", "unprivileged"):
        raise ValueError(f"{PRIV_ENV}={mode!r}: want root, unprivileged or auto")
    return "" if mode == "auto" else mode


@functools.lru_cache(maxsize=None)
def privileges():
    """The session's Privileges. $DCSYNCD_TEST_PRIV=unprivileged insists (ValueError when the users
    cannot be made); =root runs everything as the test process; unset or "auto": unprivileged when
    the tests run as root and the users can be made, else root."""
    mode = requested_priv_mode()
    if mode == "root":
        return Privileges("root")
    why = ensure_test_users()
    if why is None:
        return Privileges("unprivileged")
    if mode == "unprivileged":
        raise ValueError(f"{PRIV_ENV}=unprivileged: {why}")
    return Privileges("root")


class Daemon:
    """One dcsyncd instance with its own config, spool, state and log under a tmp dir."""

    def __init__(self, tmp_path, binary=None, priv=None):
        self.binary = Path(binary) if binary else binary_path()
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            pytest.skip(f"dcsyncd binary not found at {self.binary} (build it, or set DCSYNCD)")
        self.priv = priv or privileges()
        self.dir = Path(tmp_path)
        self.dir.mkdir(parents=True, exist_ok=True)
        # The daemon's own directory (config, keys, spool, state, metrics): the group (exporters)
        # may only pass through to the spool.
        self.priv.give_to_daemon(self.dir, 0o750 if self.priv.unprivileged else None)
        self.spool_dir = self.dir / "spool"
        self.state_dir = self.dir / "state"
        self.keys_dir = self.dir / "keys"
        self.conf_path = self.dir / "dcsyncd.conf"
        self.log_path = self.dir / "dcsyncd.log"
        self.connections = {}       # name -> the keys written for it
        self.proc = None

    # configuration

    def connection(self, optix, name="products", uuid=UUID1, **keys):
        """A connection dict for write_config aimed at a FakeOptix: its URL and keys, plus overrides."""
        conn = {"name": name, "uuid": uuid, "base_url": optix.url,
                "api_key": optix.api_key, "brand_key": optix.brand_key}
        conn.update(keys)
        return conn

    def write_config(self, connections=(), **daemon_keys):
        """Write the INI config. connections: dicts with name, uuid, base_url and either api_key /
        brand_key (written to 0600 files) or api_key_file / brand_key_file, plus any other keys
        (defaults in CONNECTION_DEFAULTS). A key given as None is left out. Returns the path."""
        self.keys_dir.mkdir(parents=True, exist_ok=True)
        daemon = {"spool_dir": self.spool_dir, "state_dir": self.state_dir, **DAEMON_DEFAULTS, **daemon_keys}
        lines = ["[daemon]"] + [f"{k} = {_ini_value(v)}" for k, v in daemon.items() if v is not None]
        self.connections = {}
        for c in connections:
            c = dict(c)
            name = c.pop("name")
            for secret in ("api_key", "brand_key"):
                if secret in c:
                    path = self.keys_dir / f"{name}.{secret}"
                    _write_secret(path, c.pop(secret), self.daemon_owner())
                    c.setdefault(f"{secret}_file", path)
            # Identity first, then the tunables, so a failing test's config reads top-down.
            identity = {k: c.pop(k) for k in ("uuid", "primary_key", "base_url", "api_key_file",
                                              "brand_key_file") if k in c}
            keys = {**identity, **{k: v for k, v in CONNECTION_DEFAULTS.items() if k not in identity}, **c}
            lines += ["", f"[connection {name}]"]
            lines += [f"{k} = {_ini_value(v)}" for k, v in keys.items() if v is not None]
            self.connections[name] = keys
        self.make_spool_dir(self.spool_dir)
        if not self.state_dir.exists():
            self.state_dir.mkdir(parents=True)
            self.priv.give_to_daemon(self.state_dir, 0o750 if self.priv.unprivileged else None)
        self.conf_path.write_text("\n".join(lines) + "\n")
        if self.priv.unprivileged:
            # As /etc/dcsyncd/dcsyncd.conf is installed: root's, readable by the daemon's group.
            os.chown(self.conf_path, 0, self.priv.group_gid)
            os.chmod(self.conf_path, 0o640)
        return self.conf_path

    def daemon_owner(self):
        """(uid, gid) for files the daemon must own (key files), or None in the root mode."""
        return (self.priv.daemon_uid, self.priv.group_gid) if self.priv.unprivileged else None

    def make_daemon_dir(self, path):
        """mkdir path (parents too) for the daemon to write into, e.g. a metrics_file's directory:
        its user's, mode 0750, in the unprivileged mode."""
        path = Path(path)
        missing = [d for d in (path, *path.parents) if not d.exists()]
        path.mkdir(parents=True, exist_ok=True)
        for d in missing:
            self.priv.give_to_daemon(d, 0o750 if self.priv.unprivileged else None)
        return path

    def make_spool_dir(self, path):
        """mkdir path, set up as tmpfiles.d sets up the spool (DAEMON_USER:TEST_GROUP 3770) in the
        unprivileged mode; connection directories the daemon makes itself come out the same."""
        path = Path(path)
        if path.exists():
            return path
        path.mkdir(parents=True)
        if self.priv.unprivileged:
            os.chown(path, self.priv.daemon_uid, self.priv.group_gid)
            os.chmod(path, 0o3770)
        return path

    def write_key(self, conn, secret, value):
        """Rewrite a key file written by write_config (secret: "api_key" or "brand_key"), 0600, as
        an operator fixing a key would; the running daemon sees it on reload()."""
        name = conn["name"] if isinstance(conn, dict) else conn
        _write_secret(self.keys_dir / f"{name}.{secret}", value, self.daemon_owner())

    # spool

    def spool(self, conn="products"):
        """The spool directory of a connection (created). Assumed layout: <spool_dir>/<name>/."""
        name = conn["name"] if isinstance(conn, dict) else conn
        self.make_spool_dir(self.spool_dir)
        return self.make_spool_dir(self.spool_dir / name)

    def exporter_open(self, path, mode="wb"):
        """open(path, mode) for writing, the file created as the exporter's (in the unprivileged
        mode: owner EXPORTER_USER, group TEST_GROUP, 0640) before anything is written to it. The
        writer is still this process: for a real process of the exporter's use exporter_popen."""
        f = open(path, mode)
        try:
            self.priv.give_to_exporter(f.fileno())
        except BaseException:
            f.close()
            raise
        return f

    def drop(self, conn, name, lines):
        """Place a spool file atomically (dotfile, then rename) as a well-behaved exporter does,
        owned by the exporter. lines: bytes/str (written as is) or an iterable of str/dict (one per
        line, newline-ended)."""
        if isinstance(lines, (bytes, str)):
            data = lines.encode() if isinstance(lines, str) else lines
        else:
            data = "".join((json.dumps(l) if isinstance(l, dict) else l) + "\n" for l in lines).encode()
        spool = self.spool(conn)
        tmp = spool / f".{name}.tmp"
        with self.exporter_open(tmp) as f:
            f.write(data)
        final = spool / name
        os.rename(tmp, final)
        return final

    def drop_generated(self, conn, name, n, start=0, value=0):
        """Drop a gen_ndjson file of n records (ids start..start+n-1) atomically, owned by the
        exporter; returns its path."""
        spool = self.spool(conn)
        tmp = spool / f".{name}.tmp"
        with self.exporter_open(tmp) as f:
            gen_ndjson.write(f, n, start, value)
        final = spool / name
        os.rename(tmp, final)
        return final

    def exporter_popen(self, argv, **kw):
        """subprocess.Popen(argv, **kw) as the exporter: in the unprivileged mode as EXPORTER_USER
        (groups: its own, TEST_GROUP) with no capabilities and the exporter's umask; in the root
        mode as the test process. For a writer the daemon must see as another user's process."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        if self.priv.unprivileged:
            kw.setdefault("umask", EXPORTER_UMASK)
        return subprocess.Popen([*self.priv.exporter_prefix(), *map(str, argv)], **kw)

    # running

    def env(self, extra=None):
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env.update(extra or {})
        return env

    def command(self, *args):
        """argv of dcsyncd -c CONF ARGS..., run as the daemon's user in the unprivileged mode."""
        return [*self.priv.daemon_prefix(), str(self.binary), "-c", str(self.conf_path), *args]

    def run_once(self, timeout=120, args=(), env=None):
        """dcsyncd -c CONF --once; returns the CompletedProcess (text stdout/stderr). Its stderr is
        also appended to the log file so wait_log/log() see every run."""
        proc = subprocess.run(self.command("--once", *args), capture_output=True, text=True,
                              timeout=timeout, env=self.env(env), stdin=subprocess.DEVNULL)
        with open(self.log_path, "a") as log:
            log.write(proc.stderr)
        return proc

    def start(self, args=(), env=None):
        """Start the daemon in the foreground, stdout and stderr appended to log_path."""
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(*args), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, env=self.env(env))
        return self.proc

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self, since=0):
        """Log text from byte offset since (see mark())."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def mark(self):
        """Current end of the log, to wait only for lines written after this point."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def wait_log(self, regex, timeout=30.0, since=0):
        """Poll the log until regex (re.MULTILINE) matches; returns the match. Fails early if the
        daemon exits, and at timeout, showing the log's tail."""
        pattern = re.compile(regex, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            m = pattern.search(self.log(since))
            if m:
                return m
            exited = self.proc is not None and self.proc.poll() is not None
            if exited or time.monotonic() > deadline:
                # One last look: the line may have landed as the daemon exited.
                m = pattern.search(self.log(since))
                if m:
                    return m
                why = f"daemon exited with {self.proc.returncode}" if exited else f"timed out after {timeout}s"
                raise AssertionError(f"{why} waiting for /{regex}/ in the log; tail:\n{self.log(since)[-4000:]}")
            time.sleep(0.05)

    def wait_exit(self, timeout=30.0):
        """Wait for the daemon to exit on its own; returns the exit status."""
        return self.proc.wait(timeout)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self):
        """SIGHUP: re-read the configuration."""
        self.signal(signal.SIGHUP)

    def stop(self, timeout=30.0):
        """SIGTERM and wait for a clean exit; returns the exit status. SIGKILLs and fails on timeout."""
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"dcsyncd did not stop within {timeout}s of SIGTERM; log tail:\n"
                                 f"{self.log()[-4000:]}") from None

    def kill9(self):
        """SIGKILL (a crash, as far as the daemon can tell) and reap; returns the exit status."""
        if self.running():
            self.proc.kill()
        return self.proc.wait() if self.proc else None

    def cleanup(self):
        """Teardown: never leave a daemon behind."""
        if self.running():
            self.proc.kill()
            self.proc.wait()


def unit_settings(text):
    """{(section, key): [values...]} of a systemd unit file's text."""
    settings, section = {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def wait_for(predicate, what="condition", daemon=None, timeout=30.0, interval=0.05):
    """Poll predicate() until truthy (returned); fail at timeout, or early if the daemon exits."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        exited = daemon is not None and daemon.proc is not None and daemon.proc.poll() is not None
        if exited or time.monotonic() > deadline:
            why = f"daemon exited with {daemon.proc.returncode}" if exited else f"timed out after {timeout}s"
            tail = daemon.log()[-4000:] if daemon is not None else ""
            raise AssertionError(f"{why} waiting for {what}; log tail:\n{tail}")
        time.sleep(interval)


def acked(optix, uuid=UUID1):
    """The upload requests the fake answered 200."""
    return [r for r in optix.requests(uuid) if r["status"] == 200]


def gen_lines(start, n, value=0):
    """gen_ndjson's records start..start+n-1 as NDJSON text lines (for Daemon.drop)."""
    return [gen_ndjson.record(i, value) for i in range(start, start + n)]


def gen_store(start, n, value=0):
    """What the fake should hold for records start..start+n-1 of gen_ndjson: {pk_json: record}."""
    return {str(i): gen_ndjson.expected(i, value) for i in range(start, start + n)}
