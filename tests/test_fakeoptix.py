"""Tests of the fake Opti-X server (and the NDJSON generator), so daemon tests can trust what they report."""

import http.client
import json
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

import gen_ndjson
from conftest import API_KEY, BRAND_KEY
from fakeoptix import FakeOptix
from harness import UUID1, UUID2

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
BATCH = "123e4567-e89b-12d3-a456-426614174000"


def post(optix, uuid=UUID1, doc=None, body=None, headers=None, opener=OPENER):
    """One upload request through urllib; returns (status, headers, parsed body or raw bytes)."""
    if body is None:
        body = json.dumps(doc if doc is not None else {"data": []}).encode()
    h = {"Content-Type": "application/json", "x-api-key": API_KEY, "x-brand-key": BRAND_KEY}
    h.update(headers or {})
    req = urllib.request.Request(optix.upload_url(uuid), data=body, method="POST",
                                 headers={k: v for k, v in h.items() if v is not None})
    try:
        with opener.open(req, timeout=10) as resp:
            status, hdrs, out = resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        status, hdrs, out = e.code, e.headers, e.read()
    try:
        return status, hdrs, json.loads(out)
    except ValueError:
        return status, hdrs, out


def recs(*ids, **fields):
    return [{"id": i, **fields} for i in ids]


# --- the upload contract ------------------------------------------------------------------------

def test_upload_stores_records(optix):
    status, _, body = post(optix, doc={"data": recs(1, 2, name="x")})
    assert status == 200
    assert body["status"] == "ok" and body["records"] == 2 and body["batch_uuid"]
    assert optix.records(UUID1) == {"1": {"id": 1, "name": "x"}, "2": {"id": 2, "name": "x"}}
    assert optix.record(UUID1, 2) == {"id": 2, "name": "x"}
    assert optix.records(UUID2) == {}


@pytest.mark.parametrize("headers", [{"x-api-key": None}, {"x-brand-key": None},
                                     {"x-api-key": "wrong"}, {"x-brand-key": "wrong"}])
def test_missing_or_wrong_keys_are_401(optix, headers):
    status, _, _ = post(optix, doc={"data": recs(1)}, headers=headers)
    assert status == 401
    assert optix.records(UUID1) == {}


def test_unknown_connection_is_404(optix):
    assert post(optix, uuid="33333333-3333-4333-8333-333333333333", doc={"data": recs(1)})[0] == 404


def test_content_type_must_be_json(optix):
    assert post(optix, doc={"data": recs(1)}, headers={"Content-Type": "text/plain"})[0] == 415
    assert post(optix, doc={"data": recs(1)},
                headers={"Content-Type": "application/json; charset=utf-8"})[0] == 200


@pytest.mark.parametrize("body", [b'{"data":[{"id":1}', b'{"data":{"id":1}}', b'[{"id":1}]',
                                  b'{"data":[1]}', b'{"data":[{"id":NaN}]}', b'{"data":[{"id":"\xff"}]}'])
def test_invalid_json_or_shape_is_422(optix, body):
    assert post(optix, body=body)[0] == 422


def test_record_without_primary_key_is_422_naming_its_index(optix):
    data = recs(*range(30))
    del data[17]["id"]
    status, _, body = post(optix, doc={"data": data})
    assert status == 422
    assert body == {"error": "data[17] lacks primary key 'id'"}
    assert optix.records(UUID1) == {}       # nothing of a rejected request is applied


def test_5000_records_pass_and_5001_are_400(optix):
    assert post(optix, doc={"data": recs(*range(5000))})[0] == 200
    assert post(optix, doc={"data": recs(*range(5001))})[0] == 400


@pytest.mark.parametrize("fields", [{"batch_uuid": "not-a-uuid"}, {"batch_uuid": 5},
                                    {"ttl_seconds": "10"}, {"ttl_seconds": 1.5}, {"ttl_seconds": -1},
                                    {"batch_completed": "true"}, {"batch_completed": None}])
def test_bad_batch_fields_are_400(optix, fields):
    assert post(optix, doc={"data": recs(1), **fields})[0] == 400


def test_batch_is_staged_until_completed(optix):
    post(optix, doc={"data": recs(1), "batch_uuid": BATCH, "batch_completed": False})
    post(optix, doc={"data": recs(2, 3), "batch_uuid": BATCH, "batch_completed": False})
    st = optix.state(UUID1)
    assert st["records"] == {} and st["open_batches"] == {BATCH: 3} and st["completed_batches"] == []
    status, _, body = post(optix, doc={"data": recs(4), "batch_uuid": BATCH, "batch_completed": True})
    assert status == 200 and body["batch_uuid"] == BATCH
    st = optix.state(UUID1)
    assert sorted(st["records"]) == ["1", "2", "3", "4"]
    assert st["open_batches"] == {} and st["completed_batches"] == [BATCH]


def test_resending_requests_of_a_batch_is_accepted(optix):
    first = {"data": recs(1, v=1), "batch_uuid": BATCH, "batch_completed": False}
    last = {"data": recs(2, v=1), "batch_uuid": BATCH, "batch_completed": True}
    assert post(optix, doc=first)[0] == 200
    assert post(optix, doc=first)[0] == 200            # re-sent while open: staged again
    assert optix.state(UUID1)["open_batches"] == {BATCH: 2}
    assert post(optix, doc=last)[0] == 200
    post(optix, doc={"data": recs(2, v=2)})            # a later upload changes record 2 ...
    assert post(optix, doc=last)[0] == 200             # ... and a re-sent last request applies again
    assert optix.record(UUID1, 2) == {"id": 2, "v": 1}
    assert optix.requests()[-1]["resent_completed_batch"] is True


def test_upload_replaces_records_completely(optix):
    post(optix, doc={"data": [{"id": 1, "a": 1, "b": 2}]})
    post(optix, doc={"data": [{"id": 1, "b": 3}]})
    assert optix.record(UUID1, 1) == {"id": 1, "b": 3}


def test_later_records_of_a_request_win(optix):
    post(optix, doc={"data": [{"id": 1, "v": 1}, {"id": 1, "v": 2}]})
    assert optix.record(UUID1, 1) == {"id": 1, "v": 2}


def test_numeric_and_string_keys_are_distinct(optix):
    post(optix, doc={"data": [{"id": 1, "v": "number"}, {"id": "1", "v": "string"}]})
    assert optix.record(UUID1, 1)["v"] == "number"
    assert optix.record(UUID1, "1")["v"] == "string"


def test_numbers_keep_their_digits(optix):
    line = '{"id":123456789012345678901234567890,"d":0.1000000000000000000001,"e":1E+400,"f":-0.0}'
    assert post(optix, body=('{"data":[' + line + ']}').encode())[0] == 200
    assert optix.state(UUID1, raw=True)["records"] == {"123456789012345678901234567890": line}
    exact = optix.records(UUID1, exact=True)["123456789012345678901234567890"]
    assert exact["d"] == Decimal("0.1000000000000000000001")


def test_ttl_expiry(optix):
    post(optix, doc={"data": recs(1), "ttl_seconds": 1})
    post(optix, doc={"data": recs(2), "ttl_seconds": None})
    st = optix.state(UUID1)
    assert set(st["records"]) == {"1", "2"} and set(st["expires"]) == {"1"}
    optix.wait_until(lambda: "1" not in optix.records(UUID1), timeout=5, what="record 1 to expire")
    assert set(optix.records(UUID1)) == {"2"}


def test_requests_are_recorded(optix):
    post(optix, doc={"data": recs(5, 6, 7), "batch_uuid": BATCH, "batch_completed": False, "ttl_seconds": 60})
    post(optix, doc={"data": recs(1)}, headers={"x-api-key": "wrong"})
    ok, denied = optix.requests()
    assert ok["seq"] == 1 and ok["uuid"] == UUID1 and ok["status"] == 200
    assert ok["path"].endswith(f"/api/data-connections/v1/connections/{UUID1}/upload_data")
    assert (ok["batch_uuid"], ok["batch_completed"], ok["ttl_seconds"]) == (BATCH, False, 60)
    assert ok["n_records"] == 3 and ok["keys"] == [5, 6, 7] and (ok["first_pk"], ok["last_pk"]) == (5, 7)
    assert ok["bytes"] > 0 and ok["time"] > 0
    assert denied["seq"] == 2 and denied["status"] == 401
    assert [r["seq"] for r in optix.requests(since=1)] == [2]
    assert optix.stats() == {200: 1, 401: 1}


# --- faults -------------------------------------------------------------------------------------

def test_fault_status_count_and_retry_after(optix):
    optix.add_faults([{"status": 503, "count": 2, "retry_after": "2", "body": {"e": "busy"}}])
    for _ in range(2):
        status, headers, body = post(optix, doc={"data": recs(1)})
        assert (status, headers["Retry-After"], body) == (503, "2", {"e": "busy"})
    assert post(optix, doc={"data": recs(1)})[0] == 200
    assert optix.pending_faults() == []
    assert optix.stats() == {503: 2, 200: 1}
    assert set(optix.records(UUID1)) == {"1"}


def test_faults_match_uuid_fire_after_n_and_run_in_order(optix):
    optix.add_faults([{"uuid": UUID2, "status": 500}, {"status": 429, "after": 1}, {"status": 502}])
    assert post(optix, uuid=UUID1, doc={"data": recs(1)})[0] == 200     # UUID2's fault skipped,
    assert post(optix, uuid=UUID1, doc={"data": recs(1)})[0] == 429     # 429's 'after' used up
    assert post(optix, uuid=UUID1, doc={"data": recs(1)})[0] == 502
    assert post(optix, uuid=UUID2, doc={"data": recs(1)})[0] == 500
    assert post(optix, uuid=UUID2, doc={"data": recs(1)})[0] == 200


@pytest.mark.parametrize("fault", ["reset", "reset_mid_body", "close"])
def test_fault_drops_connection_without_applying(optix, fault):
    optix.add_faults([{fault: True}])
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        post(optix, doc={"data": recs(*range(100))})
    assert optix.records(UUID1) == {}
    assert optix.requests()[0]["status"] is None and optix.stats() == {"dropped": 1}
    assert post(optix, doc={"data": recs(1)})[0] == 200      # the server itself is fine


def test_fault_reset_after_process_applies_but_never_answers(optix):
    optix.add_faults([{"reset_after_process": True}])
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        post(optix, doc={"data": recs(1)})
    assert set(optix.records(UUID1)) == {"1"}


def test_fault_delay_then_normal_processing(optix):
    optix.add_faults([{"delay": 0.5}])
    t0 = time.monotonic()
    assert post(optix, doc={"data": recs(1)})[0] == 200
    assert time.monotonic() - t0 >= 0.5
    assert set(optix.records(UUID1)) == {"1"}


def test_bad_fault_is_refused(optix):
    with pytest.raises(RuntimeError, match="400"):
        optix.add_faults([{"stauts": 500}])


# --- limits -------------------------------------------------------------------------------------

def test_rate_limit_is_429_per_sliding_window(optix_factory):
    optix = optix_factory(rate_limit="3/1")
    assert [post(optix, doc={"data": recs(1)})[0] for _ in range(3)] == [200] * 3
    status, headers, body = post(optix, doc={"data": recs(1)})
    assert status == 429 and "Retry-After" not in headers
    assert body == {"status": 429, "error": "Too Many Requests", "message": "You have exceeded the rate limit"}
    time.sleep(1.05)
    assert post(optix, doc={"data": recs(1)})[0] == 200
    optix.configure(rate_limit=None)
    assert all(post(optix, doc={"data": recs(1)})[0] == 200 for _ in range(5))


def test_body_over_max_body_is_413(optix_factory):
    optix = optix_factory(max_body=1000)
    assert post(optix, doc={"data": recs(*range(10))})[0] == 200
    assert post(optix, doc={"data": recs(*range(100))})[0] == 413
    optix.configure(max_body=None)
    assert post(optix, doc={"data": recs(*range(100))})[0] == 200


def test_configure_changes_keys(optix):
    optix.configure(api_key="rotated")
    assert post(optix, doc={"data": recs(1)})[0] == 401
    assert post(optix, doc={"data": recs(1)}, headers={"x-api-key": "rotated"})[0] == 200


def test_reset_forgets_everything_but_config(optix):
    optix.configure(api_key="rotated")
    post(optix, doc={"data": recs(1)}, headers={"x-api-key": "rotated"})
    optix.add_faults([{"status": 500}])
    optix.reset()
    assert optix.records(UUID1) == {} and optix.requests() == [] and optix.pending_faults() == []
    assert post(optix, doc={"data": recs(1)}, headers={"x-api-key": "rotated"})[0] == 200


# --- formulas -----------------------------------------------------------------------------------

def test_formula_reads_a_field_or_falls_back(optix):
    post(optix, doc={"data": [{"id": 42, "product_url": "https://x/42"}, {"id": "abc", "product_url": "u"}]})
    post(optix, doc={"data": [{"id": 7, "product_url": "gone"}], "ttl_seconds": 0})
    f = f"DC_{UUID1}:[%CUSTOMER_ID%]::product_url:default_url"
    assert optix.formula(f, CUSTOMER_ID="42") == "https://x/42"        # tag tried as a number
    assert optix.formula(f, CUSTOMER_ID="abc") == "u"                  # and as a string
    assert optix.formula(f, CUSTOMER_ID="43") == "default_url"         # no such record
    assert optix.formula(f, CUSTOMER_ID="7") == "default_url"          # expired
    assert optix.formula(f) == "default_url"                           # tag not given
    assert optix.formula(f"DC_{UUID1}:42::missing:http://fallback") == "http://fallback"
    assert optix.formula(f"DC_{UUID2}:42::product_url:none") == "none"


# --- HTTP plumbing ------------------------------------------------------------------------------

def test_keep_alive_reuses_the_connection(optix):
    conn = http.client.HTTPConnection("127.0.0.1", optix.port, timeout=10)
    hdrs = {"Content-Type": "application/json", "x-api-key": API_KEY, "x-brand-key": BRAND_KEY}
    path = f"/api/data-connections/v1/connections/{UUID1}/upload_data"
    conn.request("POST", path, body=json.dumps({"data": recs(1)}), headers=hdrs)
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(resp.read())
    sock = conn.sock
    conn.request("POST", path, body=b"{", headers=hdrs)     # errors keep the connection too
    resp = conn.getresponse()
    assert resp.status == 422 and resp.read()
    assert conn.sock is sock
    conn.close()


def test_chunked_body_is_accepted(optix):
    conn = http.client.HTTPConnection("127.0.0.1", optix.port, timeout=10)
    parts = [b'{"data":[{"id":1},', b'{"id":2}]}']
    conn.request("POST", optix.upload_url(UUID1)[len(optix.root):], body=iter(parts), encode_chunked=True,
                 headers={"Content-Type": "application/json", "x-api-key": API_KEY,
                          "x-brand-key": BRAND_KEY, "Transfer-Encoding": "chunked"})
    assert conn.getresponse().status == 200
    conn.close()
    assert set(optix.records(UUID1)) == {"1", "2"}


def test_tls_with_self_signed_certificate(optix_factory, tls_cert):
    cert, key = tls_cert
    optix = optix_factory(tls_cert=cert, tls_key=key)
    assert optix.url.startswith("https://127.0.0.1:")
    verified = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(
        context=ssl.create_default_context(cafile=str(cert))))
    assert post(optix, doc={"data": recs(1)}, opener=verified)[0] == 200
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        post(optix, doc={"data": recs(2)}, opener=urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ssl.create_default_context())))
    assert set(optix.records(UUID1)) == {"1"}


def test_script_announces_its_port_and_exits_cleanly_on_sigterm(tmp_path):
    fx = FakeOptix(connections={UUID1: "id"}, log_path=tmp_path / "log")
    fx.start()
    assert fx.log().startswith(f"fakeoptix listening on http://127.0.0.1:{fx.port}\n")
    assert fx.stop() == 0


def test_restart_keeps_the_port(optix):
    port = optix.port
    optix.stop()
    optix.start()
    assert optix.port == port and post(optix, doc={"data": recs(1)})[0] == 200


# --- the NDJSON generator -----------------------------------------------------------------------

def test_gen_ndjson_writes_valid_records_of_about_160_bytes(tmp_path):
    out = tmp_path / "x.ndjson"
    subprocess.run([sys.executable, str(Path(gen_ndjson.__file__)), "--records", "1000", "--out", str(out),
                    "--start", "10", "--value", "3", "--pk", "sku"], check=True)
    lines = out.read_bytes().splitlines()
    assert len(lines) == 1000
    records = [json.loads(line) for line in lines]
    assert [r["sku"] for r in records] == list(range(10, 1010))
    assert all(r["v"] == 3 for r in records)
    assert records[5] == gen_ndjson.expected(15, 3, "sku")
    assert 140 <= len(out.read_bytes()) / 1000 <= 180
