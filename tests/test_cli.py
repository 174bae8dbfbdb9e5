"""dcsyncd's command line: --version, --help, usage errors, --check-config and its error format,
key files and inline keys, and that keys never reach a log or the terminal.

Run with:  DCSYNCD=build/src/dcsyncd /usr/bin/python3 -m pytest -q tests/test_cli.py

Configuration errors are one line on stderr, `FILE:LINE: key: reason`, exit status 2, nothing on
stdout; the same error stops a normal start and a --once run.
"""

import os
import re
import subprocess

import pytest

import gen_ndjson
from harness import UUID1, UUID2, privileges

TIMEOUT = 30


def run(daemon, *args, config=True):
    """The binary with args (after -c CONF unless config=False); CompletedProcess with text output."""
    cmd = daemon.command(*args) if config else [str(daemon.binary), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=daemon.env(),
                          stdin=subprocess.DEVNULL)


def line_of(path, prefix):
    """1-based number of the first line of path that starts with prefix (after blanks)."""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip().startswith(prefix):
            return n
    raise AssertionError(f"no line starting with {prefix!r} in {path}:\n{path.read_text()}")


def append(path, *lines):
    """Add lines to the end of the config (so to its last section); returns the last one's number."""
    text = path.read_text()
    if not text.endswith("\n"):
        text += "\n"
    text += "".join(l + "\n" for l in lines)
    path.write_text(text)
    # 0600 (it may hold a key now), so the daemon's user must own it, as an operator would chown it.
    privileges().give_to_daemon(path, 0o600)
    return len(text.splitlines())


def assert_config_error(proc, conf, line, key, reason_re):
    """Exit 2, nothing on stdout, and exactly one stderr line `CONF:LINE: key: reason`."""
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
    assert proc.stdout == ""
    err = proc.stderr.splitlines()
    assert len(err) == 1, f"want one error line, got:\n{proc.stderr}"
    prefix = f"{conf}:{line}: {key}: "
    assert err[0].startswith(prefix), f"want {prefix!r}..., got {err[0]!r}"
    reason = err[0][len(prefix):]
    assert reason and re.search(reason_re, reason, re.IGNORECASE), f"reason {reason!r} !~ /{reason_re}/"


@pytest.fixture
def conf(daemon, optix):
    """A valid two-connection configuration (keys in 0600 files); returns its path."""
    return daemon.write_config([daemon.connection(optix, name="products", uuid=UUID1),
                                daemon.connection(optix, name="users", uuid=UUID2)])


# --- plain options -------------------------------------------------------------------------------

def test_version_prints_name_and_version_and_exits_0(daemon):
    proc = run(daemon, "--version", config=False)
    assert proc.returncode == 0
    assert re.fullmatch(r"dcsyncd \d+\.\d+(\.\d+)?\S*\n", proc.stdout), proc.stdout
    assert proc.stderr == ""


def test_help_prints_usage_with_every_option_and_exits_0(daemon):
    proc = run(daemon, "--help", config=False)
    assert proc.returncode == 0
    assert proc.stdout.startswith("Usage: dcsyncd")
    for opt in ("-c", "--config", "--once", "--check-config", "--version", "--help", "status"):
        assert opt in proc.stdout, f"{opt} missing from --help"
    assert run(daemon, "-h", config=False).stdout == proc.stdout


def test_missing_config_option_is_a_usage_error_exit_2(daemon):
    for args in ((), ("--once",), ("--check-config",)):
        proc = run(daemon, *args, config=False)
        assert proc.returncode == 2, args
        assert "Usage: dcsyncd" in proc.stderr
        assert proc.stdout == ""


def test_unknown_option_or_stray_argument_is_a_usage_error_exit_2(daemon, conf):
    for args in (("--frobnicate",), ("extra-argument",), ("--once", "extra")):
        proc = run(daemon, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Usage: dcsyncd" in proc.stderr


def test_missing_config_file_is_exit_2_naming_the_file(daemon):
    proc = run(daemon, "--check-config")        # write_config was never called: no file
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{daemon.conf_path}:"), proc.stderr


# --- --check-config --------------------------------------------------------------------------------

def test_check_config_ok_prints_file_and_connection_count(daemon, conf):
    proc = run(daemon, "--check-config")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{conf}: OK, 2 connection(s)\n"


def test_unknown_key_in_connection_is_refused_with_its_line(daemon, optix):
    conf = daemon.write_config([daemon.connection(optix, frobnicate="1")])
    assert_config_error(run(daemon, "--check-config"), conf, line_of(conf, "frobnicate"), "frobnicate",
                        r"unknown key")


def test_unknown_key_in_daemon_section_is_refused_with_its_line(daemon, optix):
    conf = daemon.write_config([daemon.connection(optix)], spool_size="1")
    assert_config_error(run(daemon, "--check-config"), conf, line_of(conf, "spool_size"), "spool_size",
                        r"unknown key")


@pytest.mark.parametrize("bad", ["not-a-uuid", "11111111111141118111111111111111",
                                 "11111111-1111-4111-8111-11111111111", "11111111-1111-4111-8111-11111111111g",
                                 "{11111111-1111-4111-8111-111111111111}"])
def test_bad_uuid_is_refused_with_its_line(daemon, optix, bad):
    conf = daemon.write_config([daemon.connection(optix, uuid=bad)])
    assert_config_error(run(daemon, "--check-config"), conf, line_of(conf, "uuid"), "uuid", r"uuid")


@pytest.mark.parametrize("value", [5001, 0, -1, "many", "50x"])
def test_batch_records_outside_1_to_5000_is_refused_with_its_line(daemon, optix, value):
    conf = daemon.write_config([daemon.connection(optix, batch_records=value)])
    assert_config_error(run(daemon, "--check-config"), conf, line_of(conf, "batch_records"), "batch_records",
                        r"5000")


def test_batch_records_5000_is_accepted(daemon, optix):
    daemon.write_config([daemon.connection(optix, batch_records=5000)])
    assert run(daemon, "--check-config").returncode == 0


@pytest.mark.parametrize("secret", ["api_key", "brand_key"])
def test_missing_key_is_refused_at_its_section_header(daemon, optix, secret):
    c = daemon.connection(optix)
    del c[secret]
    conf = daemon.write_config([c])
    assert_config_error(run(daemon, "--check-config"), conf, line_of(conf, "[connection products]"), secret,
                        r"missing")


@pytest.mark.parametrize("secret", ["api_key", "brand_key"])
def test_two_sources_for_one_key_are_refused_at_the_second(daemon, optix, secret):
    conf = daemon.write_config([daemon.connection(optix)])         # <secret>_file = ... (0600 file)
    first = line_of(conf, f"{secret}_file")
    second = append(conf, f"{secret} = inline-value-too")
    proc = run(daemon, "--check-config")
    assert_config_error(proc, conf, second, secret, r"two sources")
    assert str(first) in proc.stderr, "the error should say where the first source is"


def test_config_error_stops_once_and_daemon_start_with_the_same_message(daemon, optix):
    conf = daemon.write_config([daemon.connection(optix, batch_records=5001)])
    line = line_of(conf, "batch_records")
    assert_config_error(run(daemon, "--once"), conf, line, "batch_records", r"5000")
    assert_config_error(run(daemon), conf, line, "batch_records", r"5000")


# --- inline keys and file modes ---------------------------------------------------------------------

def _inline_key_config(daemon, optix):
    """Keys written inline in the config (the harness's key files left unreferenced)."""
    c = daemon.connection(optix, api_key_file=None, brand_key_file=None)
    conf = daemon.write_config([c])
    append(conf, f"api_key = {optix.api_key}", f"brand_key = {optix.brand_key}")
    return conf


def test_inline_api_key_in_a_0644_config_is_refused(daemon, optix):
    conf = _inline_key_config(daemon, optix)
    os.chmod(conf, 0o644)
    proc = run(daemon, "--check-config")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert re.fullmatch(rf"{re.escape(str(conf))}:\d+: api_key: .*(readable|chmod|mode).*\n", proc.stderr), \
        proc.stderr
    assert optix.api_key not in proc.stderr
    # Nor does a run start with it.
    assert run(daemon, "--once").returncode == 2


def test_inline_brand_key_in_a_group_readable_config_is_refused_naming_it_and_its_line(daemon, optix):
    # api_key from a 0600 file, brand_key inline: the brand key is just as secret.
    conf = daemon.write_config([daemon.connection(optix, brand_key_file=None)])
    line = append(conf, f"brand_key = {optix.brand_key}")
    os.chmod(conf, 0o640)
    proc = run(daemon, "--check-config")
    assert_config_error(proc, conf, line, "brand_key", r"readable|chmod")


def test_inline_api_key_in_a_0600_config_is_accepted_and_works(daemon, optix):
    conf = _inline_key_config(daemon, optix)
    os.chmod(conf, 0o600)
    assert run(daemon, "--check-config").stdout == f"{conf}: OK, 1 connection(s)\n"
    daemon.drop("products", "a.ndjson", [gen_ndjson.record(i) for i in range(5)])
    proc = daemon.run_once()
    assert proc.returncode == 0, proc.stderr
    assert optix.records(UUID1) == {str(i): gen_ndjson.expected(i) for i in range(5)}


# --- secrets ----------------------------------------------------------------------------------------

API_SECRET = "sk-api-7f3a9c1e5b2d4f60a8c9e7d1"
BRAND_SECRET = "sk-brand-0b9e4d2c6a8f1e3d5c7b"


def _leaks(text):
    return [s for s in (API_SECRET, BRAND_SECRET) if s in text]


def test_keys_never_appear_in_logs_stdout_or_state_even_at_debug(daemon, optix_factory):
    optix = optix_factory(api_key=API_SECRET, brand_key=BRAND_SECRET)
    daemon.write_config([daemon.connection(optix, retry_initial_seconds=0.01)], log_level="debug")
    outputs = []

    # A clean run, with a retried 503 on the way.
    optix.add_faults({"status": 503, "count": 1})
    daemon.drop("products", "a.ndjson", [gen_ndjson.record(i) for i in range(20)])
    proc = daemon.run_once()
    assert proc.returncode == 0, proc.stderr
    assert len(optix.records(UUID1)) == 20
    assert optix.stats().get(503) == 1
    outputs += [proc.stdout, proc.stderr]

    # The keys refused (401): the error path logs loudly.
    optix.configure(api_key="another-key")
    daemon.drop("products", "b.ndjson", [gen_ndjson.record(i) for i in range(20, 25)])
    proc = daemon.run_once()
    assert proc.returncode == 1, proc.stderr
    assert optix.stats().get(401, 0) >= 1
    outputs += [proc.stdout, proc.stderr]

    # A request that fails for good (404: a wrong uuid), leaving failed/<file>.error.json.
    optix.configure(api_key=API_SECRET)
    daemon.write_config([daemon.connection(optix, uuid="33333333-3333-4333-8333-333333333333")],
                               log_level="debug")
    proc = daemon.run_once()
    assert proc.returncode == 1, proc.stderr
    outputs += [proc.stdout, proc.stderr]

    for args in (("--check-config",), ("status",)):
        p = run(daemon, *args)
        outputs += [p.stdout, p.stderr]

    for text in outputs + [daemon.log()]:
        assert not _leaks(text), f"a key leaked into the output:\n{text}"
    for path in list(daemon.state_dir.rglob("*")) + list(daemon.spool_dir.rglob("*")):
        if path.is_file():
            assert not _leaks(path.read_bytes().decode(errors="replace")), f"a key leaked into {path}"
    assert "debug:" in daemon.log(), "log_level=debug did not log at debug: the test proves less than it says"
