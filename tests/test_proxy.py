"""Uploads through an HTTP proxy (Debian's tinyproxy on 127.0.0.1, started here): CONNECT to the
fake over TLS, proxy credentials from a file (never logged), a proxy refusing the tunnel or wanting
credentials, a proxy that is down, and the rule for https_proxy / no_proxy in the environment
(ignored unless proxy = env).

Run with:  DCSYNCD=build/src/dcsyncd python3 -m pytest -q tests/test_proxy.py
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import UUID1, wait_for

TINYPROXY = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Tinyproxy:
    """tinyproxy in the foreground on 127.0.0.1:port, its log in a file; as nobody when run as root."""

    def __init__(self, connect_ports, basic_auth=None):
        # Its own directory in /tmp: the test's directory is the daemon's, out of nobody's reach.
        self.dir = Path(tempfile.mkdtemp(prefix="dcsyncd-tinyproxy-"))
        self.dir.chmod(0o777)
        self.port = free_port()
        self.log_path = self.dir / "tinyproxy.log"
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Timeout 30", "MaxClients 20", "Allow 127.0.0.1",
                 f'LogFile "{self.log_path}"', "LogLevel Info"]
        lines += [f"ConnectPort {p}" for p in connect_ports]
        if basic_auth:
            lines.append(f"BasicAuth {basic_auth[0]} {basic_auth[1]}")
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            lines += ["User nobody", f"Group {nobody.pw_gid}"]
        self.conf = self.dir / "tinyproxy.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.conf.chmod(0o644)
        self.proc = subprocess.Popen([TINYPROXY, "-d", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.listening, "tinyproxy listening", timeout=10)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def listening(self):
        assert self.proc.poll() is None, f"tinyproxy exited with {self.proc.returncode}: {self.log()}"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def tls_optix(optix_factory, tls_cert):
    cert, key = tls_cert
    return optix_factory(tls_cert=cert, tls_key=key)


@pytest.fixture
def proxies():
    if not os.path.exists(TINYPROXY):
        pytest.skip("tinyproxy not installed (tests/install-deps.sh installs tinyproxy-bin)")
    started = []

    def make(**kw):
        p = Tinyproxy(**kw)
        started.append(p)
        return p

    yield make
    for p in started:
        p.cleanup()


def conn(daemon, optix, tls_cert, **keys):
    return daemon.connection(optix, ca_file=tls_cert[0], **keys)


def connects(proxy, optix):
    return proxy.log().count(f"CONNECT 127.0.0.1:{optix.port}")


def test_https_upload_through_the_proxy_by_connect(daemon, tls_optix, tls_cert, proxies):
    proxy = proxies(connect_ports=[tls_optix.port])
    daemon.write_config([conn(daemon, tls_optix, tls_cert, proxy=proxy.url)])
    daemon.drop_generated("products", "a.ndjson", 12345)
    proc = daemon.run_once()
    assert proc.returncode == 0, proc.stderr
    assert len(tls_optix.records(UUID1)) == 12345
    assert connects(proxy, tls_optix) >= 1, proxy.log()


def authed_proxy(daemon, optix, tls_cert, proxies, first_password):
    """A proxy wanting dcsync:s3cret-proxy-pw, and a connection through it whose credentials
    file (the daemon's, 0600) holds dcsync:first_password. Returns (proxy, credentials path)."""
    proxy = proxies(connect_ports=[optix.port], basic_auth=("dcsync", "s3cret-proxy-pw"))
    cred = daemon.keys_dir / "proxy.cred"
    daemon.keys_dir.mkdir(parents=True, exist_ok=True)
    daemon.write_config([conn(daemon, optix, tls_cert, proxy=proxy.url, proxy_credentials_file=cred)])
    cred.write_text(f"dcsync:{first_password}\n")
    cred.chmod(0o600)
    if daemon.priv.unprivileged:
        os.chown(cred, daemon.priv.daemon_uid, daemon.priv.group_gid)
    return proxy, cred


def test_proxy_credentials_from_a_file_never_logged(daemon, tls_optix, tls_cert, proxies):
    proxy, cred = authed_proxy(daemon, tls_optix, tls_cert, proxies, "wrong-pw-123")
    daemon.drop_generated("products", "a.ndjson", 100)
    daemon.start()
    daemon.wait_log(r"the proxy wants credentials \(HTTP 40[17]\): set proxy_credentials_file")
    assert tls_optix.requests() == []
    cred.write_text("dcsync:s3cret-proxy-pw\n")
    daemon.reload()
    tls_optix.wait_records(UUID1, 100)
    assert daemon.stop() == 0
    log = daemon.log()
    assert "s3cret-proxy-pw" not in log and "wrong-pw-123" not in log


def test_a_proxy_refusing_the_tunnel_or_down_is_retried_and_loses_nothing(daemon, tls_optix, tls_cert, proxies):
    proxy = proxies(connect_ports=[1])          # every CONNECT to the fake is an access violation
    daemon.write_config([conn(daemon, tls_optix, tls_cert, proxy=proxy.url),
                         conn(daemon, tls_optix, tls_cert, name="other", uuid="22222222-2222-4222-8222-222222222222",
                              proxy=f"http://127.0.0.1:{free_port()}")])
    daemon.drop_generated("products", "a.ndjson", 50)
    daemon.drop_generated("other", "b.ndjson", 50)
    daemon.start()
    daemon.wait_log(r"products: .*\(the proxy refused the tunnel to the API \(HTTP 403\)\), retry")
    daemon.wait_log(r"other: .*Failed to connect to 127\.0\.0\.1 port \d+.*retry")
    assert tls_optix.requests() == []
    assert daemon.stop() == 0
    # The files are still there, to go up when the proxy lets them.
    proxy.stop()
    good = proxies(connect_ports=[tls_optix.port])
    daemon.write_config([conn(daemon, tls_optix, tls_cert, proxy=good.url),
                         conn(daemon, tls_optix, tls_cert, name="other", uuid="22222222-2222-4222-8222-222222222222",
                              proxy=good.url)])
    proc = daemon.run_once()
    assert proc.returncode == 0, proc.stderr
    assert len(tls_optix.records(UUID1)) == 50


def test_environment_proxy_only_with_proxy_env(daemon, tls_optix, tls_cert, proxies):
    proxy = proxies(connect_ports=[tls_optix.port])
    dead = f"http://127.0.0.1:{free_port()}"
    # proxy unset: https_proxy in the environment is ignored (it points at nothing: would fail).
    daemon.write_config([conn(daemon, tls_optix, tls_cert)])
    daemon.drop_generated("products", "a.ndjson", 10)
    proc = daemon.run_once(env={"https_proxy": dead, "HTTPS_PROXY": dead, "all_proxy": dead})
    assert proc.returncode == 0, proc.stderr
    assert connects(proxy, tls_optix) == 0
    # proxy = env: the environment's proxy is used...
    daemon.write_config([conn(daemon, tls_optix, tls_cert, proxy="env")])
    daemon.drop_generated("products", "b.ndjson", 10, start=10)
    proc = daemon.run_once(env={"https_proxy": proxy.url})
    assert proc.returncode == 0, proc.stderr
    assert connects(proxy, tls_optix) == 1
    # ...with its no_proxy.
    daemon.drop_generated("products", "c.ndjson", 10, start=20)
    proc = daemon.run_once(env={"https_proxy": dead, "no_proxy": "127.0.0.1"})
    assert proc.returncode == 0, proc.stderr
    assert connects(proxy, tls_optix) == 1
    assert len(tls_optix.records(UUID1)) == 30


def test_proxy_configuration_refusals(daemon, optix):
    for value, reason in (("ftp://p:3128", "must start with https://"),
                          ("http://user:pw@p:3128", "holds credentials ('@'): put USER:PASSWORD in proxy_credentials_file")):
        daemon.write_config([daemon.connection(optix, proxy=value)])
        proc = subprocess.run(daemon.command("--check-config"), capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and reason in proc.stderr, proc.stderr
        assert "user:pw" not in proc.stderr
    daemon.write_config([daemon.connection(optix, proxy_credentials_file="/nonexistent")])
    proc = subprocess.run(daemon.command("--check-config"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "given without a proxy" in proc.stderr


def test_connection_create_goes_the_way_uploads_go_through_the_proxy(daemon, tls_optix, tls_cert, proxies):
    """`connection create --like` takes the section's route: the proxy by CONNECT with its
    credentials, the section's CA for the API (one libcurl setup for both, src/wire/wire_upload.c)."""
    proxy, _ = authed_proxy(daemon, tls_optix, tls_cert, proxies, "s3cret-proxy-pw")
    proc = subprocess.run(daemon.command("connection", "create", "orders", "--primary-key", "order_id",
                                         "--like", "products"),
                          capture_output=True, text=True, timeout=60, env=daemon.env(), stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert len(tls_optix.created()) == 1
    assert connects(proxy, tls_optix) >= 1, proxy.log()
    assert "s3cret-proxy-pw" not in proc.stdout + proc.stderr
