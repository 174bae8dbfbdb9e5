"""Runs dcsyncd under test: writes its INI config into a tmp dir, drops spool files, starts/stops/kills it."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import gen_ndjson

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = REPO / "build" / "src" / "dcsyncd"

UUID1 = "11111111-1111-4111-8111-111111111111"
UUID2 = "22222222-2222-4222-8222-222222222222"

DAEMON_DEFAULTS = {"log_level": "debug", "after_upload": "archive"}
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


def binary_path():
    """The dcsyncd under test: $DCSYNCD, else <repo>/build/src/dcsyncd."""
    return Path(os.environ.get("DCSYNCD") or DEFAULT_BINARY)


def _ini_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _write_secret(path, text):
    # Created 0600 from the start: the daemon may (rightly) refuse group/world-readable key files.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


class Daemon:
    """One dcsyncd instance with its own config, spool, state and log under a tmp dir."""

    def __init__(self, tmp_path, binary=None):
        self.binary = Path(binary) if binary else binary_path()
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            pytest.skip(f"dcsyncd binary not found at {self.binary} (build it, or set DCSYNCD)")
        self.dir = Path(tmp_path)
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
                    _write_secret(path, c.pop(secret))
                    c.setdefault(f"{secret}_file", path)
            # Identity first, then the tunables, so a failing test's config reads top-down.
            identity = {k: c.pop(k) for k in ("uuid", "primary_key", "base_url", "api_key_file",
                                              "brand_key_file") if k in c}
            keys = {**identity, **{k: v for k, v in CONNECTION_DEFAULTS.items() if k not in identity}, **c}
            lines += ["", f"[connection {name}]"]
            lines += [f"{k} = {_ini_value(v)}" for k, v in keys.items() if v is not None]
            self.connections[name] = keys
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text("\n".join(lines) + "\n")
        return self.conf_path

    def write_key(self, conn, secret, value):
        """Rewrite a key file written by write_config (secret: "api_key" or "brand_key"), 0600, as
        an operator fixing a key would; the running daemon sees it on reload()."""
        name = conn["name"] if isinstance(conn, dict) else conn
        _write_secret(self.keys_dir / f"{name}.{secret}", value)

    # spool

    def spool(self, conn="products"):
        """The spool directory of a connection (created). Assumed layout: <spool_dir>/<name>/."""
        name = conn["name"] if isinstance(conn, dict) else conn
        path = self.spool_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def drop(self, conn, name, lines):
        """Place a spool file atomically (dotfile, then rename) as a well-behaved exporter does.
        lines: bytes/str (written as is) or an iterable of str/dict (one per line, newline-ended)."""
        if isinstance(lines, (bytes, str)):
            data = lines.encode() if isinstance(lines, str) else lines
        else:
            data = "".join((json.dumps(l) if isinstance(l, dict) else l) + "\n" for l in lines).encode()
        spool = self.spool(conn)
        tmp = spool / f".{name}.tmp"
        tmp.write_bytes(data)
        final = spool / name
        os.rename(tmp, final)
        return final

    def drop_generated(self, conn, name, n, start=0, value=0):
        """Drop a gen_ndjson file of n records (ids start..start+n-1) atomically; returns its path."""
        spool = self.spool(conn)
        tmp = spool / f".{name}.tmp"
        with open(tmp, "wb") as f:
            gen_ndjson.write(f, n, start, value)
        final = spool / name
        os.rename(tmp, final)
        return final

    # running

    def env(self, extra=None):
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
        env.update(extra or {})
        return env

    def command(self, *args):
        return [str(self.binary), "-c", str(self.conf_path), *args]

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
