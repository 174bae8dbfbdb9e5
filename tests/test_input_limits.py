"""What dcsyncd takes from outside is held to limits (issue 12): the server's Retry-After, records
nested too deep, a byte order mark, and configurations the code after --check-config cannot hold.

Run with:  DCSYNCD=build/src/dcsyncd /usr/bin/python3 -m pytest -q tests/test_input_limits.py

No test measures time: a wait is read from the daemon's own log line ("retry K in S s"), and
every run waits for its outcome (the fake's state, the exit of --once) with a timeout.
"""

import json
import re
import subprocess

import pytest

import gen_ndjson
from harness import UUID1, UUID2

TIMEOUT = 30


def store(start, n):
    return {str(i): gen_ndjson.expected(i) for i in range(start, start + n)}


def run_once(daemon, expect, timeout=TIMEOUT):
    proc = daemon.run_once(timeout=timeout)
    assert proc.returncode == expect, (f"exit {proc.returncode}, want {expect}\nstdout:\n{proc.stdout}\n"
                                       f"log tail:\n{daemon.log()[-4000:]}")
    return proc


def retry_delays(log):
    """The S of each `products: a.ndjson: request 1 failed (...), retry K in S s` line."""
    return [float(m.group(1)) for m in
            re.finditer(r"products: a\.ndjson: request 1 failed \(HTTP 429\), retry \d+ in ([0-9.a-z]+) s$",
                        log, re.MULTILINE)]


def rejected(daemon, name):
    path = daemon.spool("products") / "rejected" / f"{name}.rejected.ndjson"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


# --- Retry-After -----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["0x10", "inf", "1e400", "-5", "1.5", "", "Infinity",
                                   "tomorrow", "Sun, 6 Nov 2099 08:49:37 GMT"])
def test_retry_after_that_is_neither_seconds_nor_a_date_is_ignored(optix, daemon, value):
    # retry_max_seconds is large: a misread value (0x10 as 16 s, inf as forever) would be obeyed.
    daemon.write_config([daemon.connection(optix, retry_initial_seconds=0.05, retry_max_seconds=600)])
    daemon.drop_generated("products", "a.ndjson", 20)
    optix.add_faults({"uuid": UUID1, "status": 429, "retry_after": value})

    run_once(daemon, 0)

    assert [r["status"] for r in optix.requests(UUID1)] == [429, 200]
    assert optix.records(UUID1) == store(0, 20)
    delays = retry_delays(daemon.log())
    # the normal back-off's first wait: full jitter below retry_initial_seconds
    assert len(delays) == 1 and delays[0] <= 0.05, daemon.log()[-3000:]
    assert f"ignoring Retry-After '{value}' (want delta-seconds or an HTTP-date)" in daemon.log()


@pytest.mark.parametrize("value", ["100000", "999999999999999999999999999999", "Thu, 01 Jan 2099 00:00:00 GMT",
                                   "Monday, 01-Jan-46 00:00:00 GMT", "Thu Jan  1 00:00:00 2099"])
def test_retry_after_is_capped_at_retry_max_seconds(optix, daemon, value):
    daemon.write_config([daemon.connection(optix, retry_initial_seconds=0.05, retry_max_seconds=0.5)])
    daemon.drop_generated("products", "a.ndjson", 20)
    optix.add_faults({"uuid": UUID1, "status": 429, "retry_after": value})

    run_once(daemon, 0)

    assert [r["status"] for r in optix.requests(UUID1)] == [429, 200]
    assert optix.records(UUID1) == store(0, 20)
    assert retry_delays(daemon.log()) == [0.5], daemon.log()[-3000:]
    assert "ignoring Retry-After" not in daemon.log()


def test_one_429_with_a_huge_retry_after_does_not_exhaust_retry_max_elapsed_seconds(optix, daemon):
    daemon.write_config([daemon.connection(optix, retry_max_seconds=0.5, retry_max_elapsed_seconds=1)])
    daemon.drop_generated("products", "a.ndjson", 20)
    optix.add_faults({"uuid": UUID1, "status": 429, "retry_after": "100000"})

    run_once(daemon, 0)

    assert [r["status"] for r in optix.requests(UUID1)] == [429, 200]
    assert optix.records(UUID1) == store(0, 20)
    assert not (daemon.spool("products") / "failed").exists()


def test_a_wait_past_retry_max_elapsed_seconds_still_gets_a_last_try_at_the_limit(optix, daemon):
    # Retry-After 3 s within retry_max_seconds 5, but only 1 s of retrying allowed: one more try
    # at the limit (after 1 s), not a file failed without trying again.
    daemon.write_config([daemon.connection(optix, retry_max_seconds=5, retry_max_elapsed_seconds=1)])
    daemon.drop_generated("products", "a.ndjson", 20)
    optix.add_faults({"uuid": UUID1, "status": 429, "retry_after": "3"})

    run_once(daemon, 0)

    assert [r["status"] for r in optix.requests(UUID1)] == [429, 200]
    assert optix.records(UUID1) == store(0, 20)
    assert retry_delays(daemon.log()) == [1.0], daemon.log()[-3000:]


# --- records nested too deep -------------------------------------------------------------------------

def nested(i, levels):
    """Record i with a value nested so that the record has `levels` levels in all."""
    return '{"id":%d,"v":%s%s}' % (i, "[" * (levels - 1), "]" * (levels - 1))


def test_records_nested_deeper_than_max_depth_are_rejected_with_their_line(optix, daemon):
    daemon.write_config([daemon.connection(optix)])      # default max_depth: 64
    lines = [gen_ndjson.record(0), nested(1, 100000), gen_ndjson.record(2), nested(3, 64), nested(4, 65)]
    daemon.drop("products", "a.ndjson", lines)

    run_once(daemon, 1)     # a rejected record: exit 1

    got = optix.records(UUID1)
    assert sorted(got, key=int) == ["0", "2", "3"]
    assert got["0"] == gen_ndjson.expected(0) and got["2"] == gen_ndjson.expected(2)
    rej = rejected(daemon, "a.ndjson")
    assert [(r["line"], r["error"]) for r in rej] == [
        (2, "nested deeper than max_depth (64 levels of objects and arrays)"),
        (5, "nested deeper than max_depth (64 levels of objects and arrays)")]
    assert rej[0]["record"] == lines[1] and rej[1]["record"] == lines[4]


def test_max_depth_is_per_connection(optix, daemon):
    daemon.write_config([daemon.connection(optix, max_depth=3),
                         daemon.connection(optix, name="users", uuid=UUID2)])
    lines = ['{"id":1,"a":{"b":[1]}}', '{"id":2,"a":{"b":[{"c":1}]}}']
    daemon.drop("products", "a.ndjson", lines)
    daemon.drop("users", "a.ndjson", lines)

    run_once(daemon, 1)

    assert sorted(optix.records(UUID1)) == ["1"]
    assert sorted(optix.records(UUID2)) == ["1", "2"]
    assert [(r["line"], r["error"]) for r in rejected(daemon, "a.ndjson")] == [
        (2, "nested deeper than max_depth (3 levels of objects and arrays)")]


# --- a byte order mark -------------------------------------------------------------------------------

def test_a_utf8_bom_at_the_start_of_a_file_is_skipped(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    body = "".join(gen_ndjson.record(i) + "\r\n" for i in range(10)).encode()
    daemon.drop("products", "a.ndjson", b"\xef\xbb\xbf" + body)

    run_once(daemon, 0)

    assert optix.records(UUID1) == store(0, 10)
    assert not (daemon.spool("products") / "rejected").exists() or rejected(daemon, "a.ndjson") == []


# --- configuration the code after it could not hold ---------------------------------------------------

def check_and_start(daemon):
    """--check-config, then a plain start: both must refuse alike (exit 2, one line on stderr)."""
    out = []
    for args in (("--check-config",), ()):
        proc = subprocess.run(daemon.command(*args), capture_output=True, text=True, timeout=TIMEOUT,
                              env=daemon.env(), stdin=subprocess.DEVNULL)
        assert proc.returncode == 2, f"{args}: exit {proc.returncode}\n{proc.stderr}"
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
        out.append(proc.stderr.strip())
    assert out[0] == out[1], out
    return out[0]


def line_of(path, text):
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip().startswith(text):
            return n
    raise AssertionError(f"no line {text!r} in {path}")


@pytest.mark.parametrize("url, reason", [
    ("{url}?tenant=1", "has a query"),
    ("{url}#frag", "has a fragment"),
    ("{url}/a b", "has a space"),
])
def test_bad_base_url_is_refused(optix, daemon, url, reason):
    conf = daemon.write_config([daemon.connection(optix, base_url=url.format(url=optix.url))])
    err = check_and_start(daemon)
    assert err.startswith(f"{conf}:{line_of(conf, 'base_url')}: base_url: ") and reason in err, err


def test_a_ca_file_that_does_not_exist_is_refused(optix, daemon, tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    conf = daemon.write_config([daemon.connection(optix, ca_file=missing)])
    err = check_and_start(daemon)
    assert err == f"{conf}:{line_of(conf, 'ca_file')}: ca_file: cannot read {missing}: No such file or directory"


def test_two_sections_of_one_connection_are_refused(optix, daemon):
    conf = daemon.write_config([daemon.connection(optix), daemon.connection(optix, uuid=UUID2)])
    second = [n for n, l in enumerate(conf.read_text().splitlines(), 1) if l == "[connection products]"][1]
    err = check_and_start(daemon)
    assert err.startswith(f"{conf}:{second}: connection products: section given twice (first on line "), err


def test_a_65th_connection_is_refused(optix, daemon):
    conns = [daemon.connection(optix, name=f"c{i}", uuid=f"11111111-1111-4111-8111-{i:012d}") for i in range(65)]
    conf = daemon.write_config(conns)
    err = check_and_start(daemon)
    assert err.startswith(f"{conf}:{line_of(conf, '[connection c64]')}: connection c64: more than 64 connections"), err


@pytest.mark.parametrize("content, reason", [
    ("test-api-key\r\nX-Injected: yes\n", "holds a line break or another control character"),
    ("test-api-key\x1b[0m\n", "control character"),
])
def test_a_key_file_that_is_not_one_line_of_key_is_refused_without_showing_it(optix, daemon, content, reason):
    conf = daemon.write_config([daemon.connection(optix)])
    daemon.write_key("products", "api_key", content)
    err = check_and_start(daemon)
    assert err.startswith(f"{conf}:{line_of(conf, 'api_key_file')}: api_key_file: ") and reason in err, err
    assert "test-api-key" not in err and "Injected" not in err
