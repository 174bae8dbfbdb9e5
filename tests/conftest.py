"""Shared pytest fixtures for dcsyncd's tests: the fake Opti-X server, a TLS certificate, the daemon;
the privilege mode (harness.privileges(), $DCSYNCD_TEST_PRIV) and a tmp root the daemon's user can
pass through."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from fakeoptix import FakeOptix
from harness import PRIV_ENV, UUID1, UUID2, Daemon, binary_path, privileges

PRIV_KEY = pytest.StashKey()
OWN_TMP_KEY = pytest.StashKey()

API_KEY = "test-api-key"
BRAND_KEY = "test-brand-key"
CONNECTIONS = {UUID1: "id", UUID2: "id"}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Decide the privilege mode (making the test users if needed) before anything runs. In the
    unprivileged mode the tmp root is a fresh directory of our own, mode 0711: pytest's
    /tmp/pytest-of-root is 0700 (and reset to 0700 by every session), so the daemon's user could
    not reach its config; 0711 lets it pass through to the directories a test gives it, no more."""
    try:
        priv = privileges()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    config.stash[PRIV_KEY] = priv
    if priv.unprivileged and config.option.basetemp is None:
        top = Path(tempfile.mkdtemp(prefix="dcsyncd-tests-"))
        top.chmod(0o711)
        config.stash[OWN_TMP_KEY] = top
        config.option.basetemp = str(top / "t")


def pytest_report_header(config):
    priv = config.stash[PRIV_KEY]
    if priv.unprivileged:
        return (f"dcsyncd privileges: unprivileged (daemon as {priv.daemon_uid}:{priv.daemon_gid} "
                f"umask {priv.umask:04o}, no capabilities; exporter {priv.exporter_uid}; "
                f"{PRIV_ENV}=root for the root mode)")
    return f"dcsyncd privileges: root mode (daemon and exporter run as uid {os.geteuid()})"


def pytest_sessionfinish(session, exitstatus):
    # Our own tmp root goes when everything passed; after a failure it stays to be looked at.
    top = session.config.stash.get(OWN_TMP_KEY, None)
    if top is not None:
        if exitstatus == 0:
            shutil.rmtree(top, ignore_errors=True)
        else:
            print(f"\ntest files kept in {top}")


@pytest.fixture(scope="session", autouse=True)
def priv_tmp_root(request, tmp_path_factory):
    """In the unprivileged mode: the tmp root open for passing through (0711), and the binary
    under test runnable by the daemon's user. A build dir it cannot reach (a checkout under /root)
    gets the binary copied into the tmp root, and $DCSYNCD pointed at the copy."""
    priv = request.config.stash[PRIV_KEY]
    if not priv.unprivileged:
        return
    base = tmp_path_factory.getbasetemp()
    base.chmod(0o711)
    own = Path(tempfile.gettempdir()) / "dcsyncd-tests-"
    for d in base.parents:
        # Under pytest-xdist a worker's base is <our tmp root>/t/popen-gwN: the directories
        # between are ours, made 0700 by pytest, and opened for passing through like the root.
        if str(d).startswith(str(own)) and os.stat(d).st_uid == os.geteuid():
            d.chmod(os.stat(d).st_mode & 0o777 | 0o711)
        if not os.stat(d).st_mode & 0o001:
            pytest.exit(f"{d} is not searchable by others: the daemon's user cannot reach {base} "
                        f"(give another --basetemp, or {PRIV_ENV}=root)", returncode=4)
    binary = binary_path()
    if not binary.is_file() or _daemon_user_runs(priv, binary):
        return
    copy = base / "bin" / binary.name
    copy.parent.mkdir(mode=0o755)
    shutil.copy(binary, copy)
    copy.chmod(0o755)
    if not _daemon_user_runs(priv, copy):
        pytest.exit(f"the daemon's user cannot run {binary}, nor a copy in {copy.parent} "
                    f"({PRIV_ENV}=root to run it as root)", returncode=4)
    print(f"\n{binary} is out of the daemon user's reach: testing a copy, {copy}")
    os.environ["DCSYNCD"] = str(copy)


def _daemon_user_runs(priv, binary):
    r = subprocess.run([*priv.daemon_prefix(), str(binary), "--version"], capture_output=True,
                       stdin=subprocess.DEVNULL)
    return r.returncode == 0


@pytest.fixture
def optix_factory(tmp_path):
    """Start FakeOptix servers with custom options (tls_cert/tls_key, max_body, rate_limit, delay,
    connections, ...); defaults are the test keys and both test connections. Stopped at teardown."""
    started = []

    def make(**kw):
        kw.setdefault("api_key", API_KEY)
        kw.setdefault("brand_key", BRAND_KEY)
        kw.setdefault("connections", CONNECTIONS)
        kw.setdefault("log_path", tmp_path / f"fakeoptix-{len(started)}.log")
        fx = FakeOptix(**kw)
        started.append(fx)
        return fx.start()

    yield make
    for fx in started:
        fx.stop()


@pytest.fixture
def optix(optix_factory):
    """A plain-HTTP FakeOptix with API_KEY, BRAND_KEY and connections UUID1, UUID2 (primary key id)."""
    return optix_factory()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    """(cert, key) paths of a self-signed certificate for 127.0.0.1 / localhost; the cert is its own CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    d.chmod(0o711)      # the daemon reads the certificate (ca_file); the key stays 0600, root's
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def daemon(tmp_path):
    """A Daemon (tests/harness.py) rooted in tmp_path; skips when the binary is not built; killed at teardown."""
    d = Daemon(tmp_path)
    yield d
    d.cleanup()
