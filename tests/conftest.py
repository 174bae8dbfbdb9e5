"""Shared pytest fixtures for dcsyncd's tests: the fake Opti-X server, a TLS certificate, the daemon."""

import shutil
import subprocess

import pytest

from fakeoptix import FakeOptix
from harness import UUID1, UUID2, Daemon

API_KEY = "test-api-key"
BRAND_KEY = "test-brand-key"
CONNECTIONS = {UUID1: "id", UUID2: "id"}


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
