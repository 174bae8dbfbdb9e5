"""Fake Opti-X Data Connections server for dcsyncd tests: upload endpoint, fault injection, control API."""

# Run as a script (see --help) or import FakeOptix, which runs the script in a subprocess so the
# fake outlives any daemon the tests kill and never shares a GIL with the test process.
#
# The contract it imitates is docs/optix-api.md; behaviour the vendor does not state (400 for
# schema errors, 413, rate limit, re-sent batches) follows that file's "assumed" lines.

import argparse
import decimal
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid as uuidlib
import weakref
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_RECORDS = 5000
API_PATH = "/api/data-connections/v1"
UPLOAD_RE = re.compile(r"^.*/connections/([^/]+)/upload_data/?$")
CREATE_RE = re.compile(r"^.*/connections/?$")
# Only the canonical hyphenated form: a daemon sending anything else is a bug worth a 400.
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
NUMBER_RE = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$")
TAG_RE = re.compile(r"\[%([A-Za-z0-9_]+)%\]")
RATE_LIMIT_BODY = {"status": 429, "error": "Too Many Requests", "message": "You have exceeded the rate limit"}
FAULT_KEYS = {"uuid", "status", "count", "retry_after", "body", "headers", "reset", "reset_mid_body",
              "close", "reset_after_process", "delay", "after", "reject_pk", "hold"}


# --- JSON that keeps numbers as written -------------------------------------------------------

class RawNumber:
    """A JSON number kept as its source text, so big integers and long decimals round-trip exactly."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def is_int(self):
        return not any(c in self.text for c in ".eE")

    def __eq__(self, other):
        return isinstance(other, RawNumber) and other.text == self.text

    def __hash__(self):
        return hash(self.text)

    def __repr__(self):
        return f"RawNumber({self.text})"


def _reject_constant(name):
    # json.loads accepts NaN/Infinity by default; they are not JSON and the real server says 422.
    raise ValueError(f"{name} is not valid JSON")


def loads_raw(text):
    """Parse JSON keeping every number as a RawNumber."""
    return json.loads(text, parse_int=RawNumber, parse_float=RawNumber, parse_constant=_reject_constant)


def dumps_raw(value):
    """Serialise compactly; RawNumbers come out with their original digits."""
    if isinstance(value, RawNumber):
        return value.text
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(str(k)) + ":" + dumps_raw(v) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps_raw(v) for v in value) + "]"
    return json.dumps(value)


def loads_exact(text):
    """Client-side parse for comparing records: decimals as Decimal so no digit is lost to float."""
    return json.loads(text, parse_float=decimal.Decimal)


def pk_key(value):
    """Store key of a primary key value: its JSON text, so 1 and "1" are different keys."""
    return dumps_raw(value)


# --- server state -----------------------------------------------------------------------------

def parse_rate_limit(spec):
    """'50/10' -> (50, 10.0): N requests per W seconds; None/'none' -> None."""
    if spec is None or str(spec).lower() in ("", "none", "null"):
        return None
    n, _, w = str(spec).partition("/")
    n, w = int(n), float(w)
    if n < 1 or w <= 0:
        raise ValueError(f"bad rate limit {spec!r}")
    return n, w


class Reply(Exception):
    """An HTTP answer decided part-way through validation."""

    def __init__(self, status, body, headers=None):
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class Connection:
    """One Data Connection: its stored records and its batches."""

    def __init__(self, primary_key):
        self.primary_key = primary_key
        self.records = {}        # pk_key -> (record, expires_epoch or None)
        self.open = {}           # batch_uuid -> [(records, ttl_seconds), ...] staged in arrival order
        self.completed = {}      # batch_uuid -> None; a dict keeps completion order

    def live_records(self, now):
        # Expired records are dropped lazily: nothing else looks at them.
        for k in [k for k, (_, exp) in self.records.items() if exp is not None and exp <= now]:
            del self.records[k]
        return self.records


class State:
    """Everything the fake knows; one lock guards it (requests are few and short)."""

    def __init__(self, api_key, brand_key, connections, max_body=None, rate_limit=None, delay=0.0):
        self.lock = threading.Lock()
        self.api_key, self.brand_key = api_key, brand_key
        self.primary_keys = dict(connections)
        self.max_body = max_body
        self.rate_limit = rate_limit
        self.delay = delay
        # {"hold": true} faults: the request, body read, waits here until the test releases it,
        # so a test can keep a request in flight for as long as it needs, without a clock.
        self.hold_cond = threading.Condition()
        self.held = 0            # requests waiting now
        self.releases = 0        # releases not yet taken
        self.track = None        # a field whose value each upload request records (see configure)
        self.created = {}        # uuid -> name of connections made through POST /connections
        self.descriptions = {}
        self.reset()

    def reset(self):
        self.connections = {u: Connection(pk) for u, pk in self.primary_keys.items()}
        self.requests = []
        self.faults = []
        self.windows = {}        # x-api-key -> deque of admission times (monotonic)
        self.seq = 0

    def next_seq(self):
        with self.lock:
            self.seq += 1
            return self.seq

    def take_fault(self, uuid):
        """The first fault matching uuid owns this request; it fires once its 'after' is used up."""
        with self.lock:
            for fault in self.faults:
                if fault.get("uuid") not in (None, uuid) or "reject_pk" in fault:
                    continue        # reject_pk faults look at the records: see take_reject()
                if fault.get("after", 0) > 0:
                    fault["after"] -= 1
                    return None
                fault["count"] = fault.get("count", 1) - 1
                if fault["count"] <= 0:
                    self.faults.remove(fault)
                return dict(fault)
            return None

    def take_reject(self, uuid, keys):
        """A poisoned record: the first reject_pk fault (for uuid) whose primary key value is among
        this request's keys fires (status default 422), using up one of its count (default 1).
        Requests without that key pass it by, so a daemon bisecting a batch meets it only where it is."""
        present = {pk_key(k) for k in keys}
        with self.lock:
            for fault in self.faults:
                if "reject_pk" not in fault or fault.get("uuid") not in (None, uuid):
                    continue
                if json.dumps(fault["reject_pk"]) not in present:
                    continue
                fault["count"] = fault.get("count", 1) - 1
                if fault["count"] <= 0:
                    self.faults.remove(fault)
                return dict(fault)
            return None

    def admit(self, api_key):
        """Sliding-window rate limit per API key; a 429 does not use up the window."""
        if self.rate_limit is None:
            return
        n, window = self.rate_limit
        now = time.monotonic()
        with self.lock:
            times = self.windows.setdefault(api_key or "", deque())
            while times and times[0] <= now - window:
                times.popleft()
            if len(times) >= n:
                raise Reply(429, RATE_LIMIT_BODY)
            times.append(now)

    def upload(self, uuid, headers, body, rec):
        """Validate and apply one upload request in the contract's order; returns the 200 body."""
        self.admit(headers.get("x-api-key"))
        if headers.get("x-api-key") != self.api_key or headers.get("x-brand-key") != self.brand_key:
            raise Reply(401, {"status": 401, "error": "Unauthorized",
                              "message": "invalid or expired x-api-key / x-brand-key"})
        conn = self.connections.get(uuid)
        if conn is None:
            raise Reply(404, {"status": 404, "error": "Not Found",
                              "message": f"data connection {uuid} not found"})
        if self.max_body is not None and len(body) > self.max_body:
            raise Reply(413, {"status": 413, "error": "Payload Too Large",
                              "message": f"body of {len(body)} bytes exceeds {self.max_body}"})
        ctype = headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise Reply(415, {"status": 415, "error": "Unsupported Media Type",
                              "message": "Content-Type must be application/json"})

        pk = conn.primary_key
        try:
            doc = loads_raw(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise Reply(422, {"error": f"invalid JSON: {e}"})
        if not isinstance(doc, dict):
            raise Reply(422, {"error": "body must be a JSON object"})
        data = doc.get("data")
        if not isinstance(data, list):
            raise Reply(422, {"error": "'data' must be a list"})
        for i, r in enumerate(data):
            if not isinstance(r, dict):
                raise Reply(422, {"error": f"data[{i}] is not an object"})
            if r.get(pk) is None:
                raise Reply(422, {"error": f"data[{i}] lacks primary key '{pk}'"})
        keys = [r[pk] for r in data]
        rec.update(n_records=len(data), keys=keys,
                   first_pk=keys[0] if keys else None, last_pk=keys[-1] if keys else None)
        if self.track is not None:
            # Which version of each record this request carried (e.g. gen_ndjson's "v"), so a test
            # can tell which file a staged or completed record came from.
            rec["tracked"] = [r.get(self.track) for r in data]
        poison = self.take_reject(uuid, keys)
        if poison:
            rec["fault"] = poison
            i = next(i for i, k in enumerate(keys) if pk_key(k) == json.dumps(poison["reject_pk"]))
            body = poison.get("body")
            if body is None:
                body = {"error": f"data[{i}]: record with {pk} {json.dumps(poison['reject_pk'])} is invalid"}
            raise Reply(poison.get("status") or 422, body, poison.get("headers"))

        if len(data) > MAX_RECORDS:
            raise Reply(400, {"error": f"too many records: {len(data)} > {MAX_RECORDS}"})
        batch_uuid = doc.get("batch_uuid")
        if batch_uuid is not None and not (isinstance(batch_uuid, str) and UUID_RE.match(batch_uuid)):
            raise Reply(400, {"error": "batch_uuid must be a UUID"})
        ttl = doc.get("ttl_seconds")
        if ttl is not None:
            if not (isinstance(ttl, RawNumber) and ttl.is_int() and int(ttl.text) >= 0):
                raise Reply(400, {"error": "ttl_seconds must be a non-negative integer or null"})
            ttl = int(ttl.text)
        completed = doc.get("batch_completed", True)
        if not isinstance(completed, bool):
            raise Reply(400, {"error": "batch_completed must be a boolean"})
        batch_uuid = batch_uuid or str(uuidlib.uuid4())
        rec.update(batch_uuid=batch_uuid, batch_completed=completed, ttl_seconds=ttl)

        with self.lock:
            if batch_uuid in conn.completed:
                # Assumed accepted (contract): a re-sent last request applies again; a re-sent
                # earlier request reopens the batch. Flagged so tests can see it happened.
                rec["resent_completed_batch"] = True
            conn.open.setdefault(batch_uuid, []).append((data, ttl))
            if completed:
                now = time.time()
                for records, t in conn.open.pop(batch_uuid):
                    expires = now + t if t is not None else None
                    for r in records:
                        k = pk_key(r[pk])
                        conn.records.pop(k, None)   # re-insert so dict order is last-write order
                        conn.records[k] = (r, expires)
                conn.completed[batch_uuid] = None
        return {"status": "ok", "records": len(data), "batch_uuid": batch_uuid}

    def peek(self, uuid, body):
        """What a request carried, read even when a fault answers it before validation:
        {"batch_uuid", "batch_completed", "keys"} (keys by the connection's primary key), or None."""
        try:
            doc = loads_raw(body.decode("utf-8"))
            pk = self.primary_keys.get(uuid, "id")
            return {"batch_uuid": doc.get("batch_uuid"), "batch_completed": doc.get("batch_completed", True),
                    "keys": [r.get(pk) for r in doc["data"] if isinstance(r, dict)]}
        except (UnicodeDecodeError, ValueError, RecursionError, AttributeError, KeyError, TypeError):
            return None

    def record_request(self, rec):
        with self.lock:
            self.requests.append(rec)

    # control API views

    def conn_state(self, conn, raw):
        with self.lock:
            now = time.time()
            recs = conn.live_records(now)
            return {
                "records": {k: (dumps_raw(r) if raw else r) for k, (r, _) in recs.items()},
                "expires": {k: exp for k, (_, exp) in recs.items() if exp is not None},
                "open_batches": {b: sum(len(rs) for rs, _ in parts) for b, parts in conn.open.items()},
                "completed_batches": list(conn.completed),
            }

    def stats(self):
        with self.lock:
            counts = {}
            for r in self.requests:
                key = str(r["status"]) if r["status"] is not None else "dropped"
                counts[key] = counts.get(key, 0) + 1
            return counts

    def hold(self):
        with self.hold_cond:
            self.held += 1
            self.hold_cond.notify_all()
            self.hold_cond.wait_for(lambda: self.releases > 0)
            self.releases -= 1
            self.held -= 1

    def release(self, n):
        with self.hold_cond:
            self.releases += n
            self.hold_cond.notify_all()

    def configure(self, cfg):
        unknown = set(cfg) - {"api_key", "brand_key", "max_body", "rate_limit", "delay", "connections", "track"}
        if unknown:
            raise Reply(400, {"error": f"unknown config keys {sorted(unknown)}"})
        with self.lock:
            if "api_key" in cfg:
                self.api_key = cfg["api_key"]
            if "brand_key" in cfg:
                self.brand_key = cfg["brand_key"]
            if "max_body" in cfg:
                self.max_body = None if cfg["max_body"] is None else int(cfg["max_body"])
            if "rate_limit" in cfg:
                self.rate_limit = parse_rate_limit(cfg["rate_limit"])
                self.windows = {}
            if "delay" in cfg:
                self.delay = float(cfg["delay"] or 0)
            if "track" in cfg:
                self.track = cfg["track"] or None
            for u, pk in (cfg.get("connections") or {}).items():
                self.primary_keys[u] = pk
                self.connections.setdefault(u, Connection(pk))

    def formula(self, f, tags):
        """Evaluate DC_{UUID}:{primary_key}:{API_parameters}:{return_field}:{fallback_value}."""
        if not f.startswith("DC_"):
            raise Reply(400, {"error": "formula must start with DC_"})
        # The fallback is last and may itself contain colons (a URL), hence maxsplit.
        parts = f[3:].split(":", 4)
        if len(parts) < 4:
            raise Reply(400, {"error": "formula needs DC_{UUID}:{primary_key}:{API_parameters}:{return_field}[:{fallback}]"})
        uuid, key, _params, field = parts[:4]
        fallback = parts[4] if len(parts) == 5 else ""
        missing = [t for t in TAG_RE.findall(key) if t not in tags]
        with self.lock:
            conn = self.connections.get(uuid)
            if conn is None or missing:
                return {"value": fallback, "found": False}
            key = TAG_RE.sub(lambda m: tags[m.group(1)], key)
            # A tag's value is text; the stored key may be a string or a number, so try both.
            candidates = [json.dumps(key)] + ([key] if NUMBER_RE.match(key) else [])
            recs = conn.live_records(time.time())
            for c in candidates:
                if c in recs:
                    record = recs[c][0]
                    if field in record:
                        return {"value": record[field], "found": True}
            return {"value": fallback, "found": False}


# --- HTTP ---------------------------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakeoptix/1"

    def setup(self):
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            # The handshake is deferred to this thread so a slow client cannot stall accept().
            self.request.do_handshake()

    def log_request(self, code="-", size="-"):
        # upload() logs its own richer line, and control calls are polled in loops: logging
        # them would bury the uploads.
        pass

    def log_message(self, fmt, *args):
        sys.stderr.write("fakeoptix: %s %s\n" % (self.address_string(), fmt % args))

    # plumbing

    def send_json(self, status, obj, headers=None):
        body = (obj if isinstance(obj, bytes) else
                (obj if isinstance(obj, str) else dumps_raw(obj)).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self, limit=None):
        """Read the request body (Content-Length or chunked); limit stops early for reset faults."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks, total = [], 0
            while limit is None or total < limit:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass        # trailers
                    break
                chunks.append(self._read_exact(size))
                total += size
                self.rfile.readline()
            return b"".join(chunks)
        length = self.headers.get("Content-Length")
        if length is None:
            raise Reply(411, {"error": "Content-Length required"})
        try:
            n = int(length)
        except ValueError:
            raise Reply(400, {"error": f"bad Content-Length {length!r}"}) from None
        return self._read_exact(n if limit is None else min(n, limit))

    def _read_exact(self, n):
        data = self.rfile.read(n)
        if len(data) < n:
            raise ConnectionError("client closed mid-body")
        return data

    def abort(self):
        """Drop the connection with a TCP reset and no answer."""
        self.close_connection = True
        try:
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            # detach + os.close: the fd goes at once (RST) instead of via shutdown(SHUT_WR) (FIN).
            os.close(self.request.detach())
        except OSError:
            pass

    def query(self):
        return {k: v[-1] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query,
                                                           keep_blank_values=True).items()}

    # methods

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/_control/"):
            return self.control("GET", path)
        self.discard_body()
        self.send_json(404, {"status": 404, "error": "Not Found"})

    def do_POST(self):
        path = urllib.parse.urlsplit(self.path).path
        if path.startswith("/_control/"):
            return self.control("POST", path)
        if CREATE_RE.match(path):
            return self.create_connection()
        return self.upload(path)

    def create_connection(self):
        """POST {base_url}/connections {"name", "primary_key", "description"} -> {"data_connection_uuid"}.
        Assumed: the same keys and rate limit as uploads; 422 for a missing name or primary key;
        409 for a name already used. The new connection takes uploads at once."""
        st = self.server.state
        try:
            body = self.read_body()
            st.admit(self.headers.get("x-api-key"))
            if self.headers.get("x-api-key") != st.api_key or self.headers.get("x-brand-key") != st.brand_key:
                raise Reply(401, {"status": 401, "error": "Unauthorized",
                                  "message": "invalid or expired x-api-key / x-brand-key"})
            try:
                doc = json.loads(body)
            except ValueError as e:
                raise Reply(422, {"error": f"invalid JSON: {e}"}) from None
            if not isinstance(doc, dict):
                raise Reply(422, {"error": "body must be a JSON object"})
            for k in ("name", "primary_key"):
                if not isinstance(doc.get(k), str) or not doc[k]:
                    raise Reply(422, {"error": f"'{k}' must be a non-empty string"})
            if not isinstance(doc.get("description", ""), str):
                raise Reply(422, {"error": "'description' must be a string"})
            with st.lock:
                if doc["name"] in st.created.values():
                    raise Reply(409, {"error": f"a data connection named {doc['name']!r} exists"})
                new = str(uuidlib.uuid4())
                st.created[new] = doc["name"]
                st.descriptions[new] = doc.get("description")
                st.primary_keys[new] = doc["primary_key"]
                st.connections[new] = Connection(doc["primary_key"])
            self.send_json(200, {"data_connection_uuid": new})
        except Reply as r:
            self.send_json(r.status, r.body, r.headers)

    def do_PUT(self):
        self.discard_body()
        self.send_json(405, {"status": 405, "error": "Method Not Allowed"})

    do_DELETE = do_PATCH = do_PUT

    def discard_body(self):
        if self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding"):
            self.read_body()

    def upload(self, path):
        st = self.server.state
        m = UPLOAD_RE.match(path)
        uuid = m.group(1) if m else None
        rec = {"seq": st.next_seq(), "time": time.time(), "path": self.path, "uuid": uuid,
               "batch_uuid": None, "batch_completed": None, "ttl_seconds": None, "n_records": None,
               "bytes": None, "status": None, "keys": [], "first_pk": None, "last_pk": None,
               "content_type": self.headers.get("Content-Type"), "fault": None, "sent": None}
        # The request is recorded before the client can see its answer: a test that has read
        # the answer (or the daemon's reaction to it) finds the request in the log.
        act = ("close",)
        try:
            fault = st.take_fault(uuid) if m else None
            rec["fault"] = fault
            if fault and fault.get("reset_mid_body"):
                length = int(self.headers.get("Content-Length") or 0)
                self.read_body(limit=max(1, length // 2))
                act = ("abort",)
                return
            body = self.read_body()
            rec["bytes"] = len(body)
            rec["sent"] = st.peek(uuid, body)
            if fault and fault.get("hold"):
                st.hold()
            delay = (fault or {}).get("delay", 0) + st.delay
            if delay:
                time.sleep(delay)
            if fault and fault.get("reset"):
                act = ("abort",)
                return
            if fault and fault.get("close"):
                return                              # FIN without an answer
            if fault and fault.get("status"):
                headers = dict(fault.get("headers") or {})
                if fault.get("retry_after") is not None:
                    headers["Retry-After"] = fault["retry_after"]
                body_out = fault.get("body")
                if body_out is None:
                    body_out = {"status": fault["status"], "error": "injected fault"}
                raise Reply(fault["status"], body_out, headers)
            if not m:
                raise Reply(404, {"status": 404, "error": "Not Found"})
            answer = st.upload(uuid, self.headers, body, rec)
            rec["status"] = 200
            # reset_after_process: applied, but the client never hears so.
            act = ("abort",) if fault and fault.get("reset_after_process") else ("send", 200, answer, None)
        except Reply as r:
            rec["status"] = r.status
            rec["error"] = r.body
            act = ("send", r.status, r.body, r.headers)
        except ConnectionError as e:
            rec["error"] = str(e)
        finally:
            st.record_request(rec)
            self.log_message("upload seq=%s uuid=%s status=%s records=%s batch=%s completed=%s",
                             rec["seq"], uuid, rec["status"], rec["n_records"], rec["batch_uuid"],
                             rec["batch_completed"])
            self.act(act)

    def act(self, act):
        """Answer, reset or close, once the request is on record."""
        if act[0] == "abort":
            return self.abort()
        if act[0] == "send":
            try:
                return self.send_json(*act[1:])
            except ConnectionError:
                pass
        self.close_connection = True

    def control(self, method, path):
        st = self.server.state
        q = self.query()
        try:
            body = self.read_body() if method == "POST" else b""
            payload = json.loads(body) if body.strip() else None
            name = path[len("/_control/"):]
            if method == "GET" and name == "state":
                raw = q.get("raw") in ("1", "true")
                if "uuid" in q:
                    conn = st.connections.get(q["uuid"])
                    if conn is None:
                        raise Reply(404, {"error": f"unknown connection {q['uuid']}"})
                    return self.send_json(200, st.conn_state(conn, raw))
                return self.send_json(200, {"connections": {u: st.conn_state(c, raw)
                                                            for u, c in list(st.connections.items())}})
            if method == "GET" and name == "requests":
                since = int(q.get("since", 0))
                with st.lock:
                    out = [r for r in st.requests if r["seq"] > since
                           and ("uuid" not in q or r["uuid"] == q["uuid"])]
                return self.send_json(200, out)
            if method == "GET" and name == "faults":
                with st.lock:
                    return self.send_json(200, list(st.faults))
            if method == "POST" and name == "faults":
                faults = payload if isinstance(payload, list) else [payload]
                for f in faults:
                    if not isinstance(f, dict) or set(f) - FAULT_KEYS:
                        raise Reply(400, {"error": f"bad fault {f!r}; keys: {sorted(FAULT_KEYS)}"})
                with st.lock:
                    st.faults.extend(dict(f) for f in faults)
                    return self.send_json(200, {"pending": len(st.faults)})
            if method == "GET" and name == "held":
                with st.hold_cond:
                    return self.send_json(200, {"held": st.held})
            if method == "POST" and name == "release":
                st.release(int(q.get("n", 1)))
                return self.send_json(200, {"ok": True})
            if method == "POST" and name == "config":
                st.configure(payload or {})
                return self.send_json(200, {"ok": True})
            if method == "POST" and name == "reset":
                with st.lock:
                    st.reset()
                return self.send_json(200, {"ok": True})
            if method == "GET" and name == "created":
                with st.lock:
                    return self.send_json(200, {u: {"name": n, "description": st.descriptions.get(u),
                                                    "primary_key": st.primary_keys.get(u)}
                                                for u, n in st.created.items()})
            if method == "GET" and name == "stats":
                return self.send_json(200, st.stats())
            if method == "GET" and name == "formula":
                tags = {k: v for k, v in q.items() if k != "f"}
                return self.send_json(200, st.formula(q.get("f", ""), tags))
            raise Reply(404, {"error": f"no control endpoint {method} {path}"})
        except Reply as r:
            self.send_json(r.status, r.body, r.headers)
        except (ValueError, TypeError) as e:
            self.send_json(400, {"error": str(e)})


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr, state, tls_context=None, idle_timeout=None):
        self.state = state
        self.idle_timeout = idle_timeout
        super().__init__(addr, Handler)
        if tls_context is not None:
            self.socket = tls_context.wrap_socket(self.socket, server_side=True,
                                                  do_handshake_on_connect=False)

    def get_request(self):
        sock, addr = super().get_request()
        # Idle keep-alive connections are closed like a real front end would, so the daemon
        # meets connection reuse failures; also bounds a stuck client.
        sock.settimeout(self.idle_timeout)
        return sock, addr

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return      # clients vanishing (and our own resets) are part of the job
        super().handle_error(request, client_address)


def write_port_file(path, port):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.rename(tmp, path)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Fake Opti-X Data Connections server for dcsyncd tests.")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--port-file", help="write the bound port here (atomically) once listening")
    p.add_argument("--api-key", required=True)
    p.add_argument("--brand-key", required=True)
    p.add_argument("--connection", action="append", default=[], metavar="UUID=PRIMARYKEY")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--max-body", type=int, help="413 above this many body bytes")
    p.add_argument("--rate-limit", help="N/W: N requests per W seconds per x-api-key (429 over it)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds to wait before every upload answer")
    p.add_argument("--idle-timeout", type=float, default=60.0, help="close idle connections after this")
    p.add_argument("--exit-with-parent", action="store_true", help="exit when the parent process dies")
    args = p.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    try:
        args.connections = dict(c.split("=", 1) for c in args.connection)
        args.rate = parse_rate_limit(args.rate_limit)
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv=None):
    args = parse_args(argv)
    state = State(args.api_key, args.brand_key, args.connections, args.max_body, args.rate, args.delay)
    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
    # The handlers before the port is announced: a client may stop the fake as soon as it knows it.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = Server(("127.0.0.1", args.port), state, ctx, args.idle_timeout)
    port = server.server_address[1]
    if args.port_file:
        write_port_file(args.port_file, port)
    print(f"fakeoptix listening on {'https' if ctx else 'http'}://127.0.0.1:{port}", flush=True)
    parent = os.getppid()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    while not stop.wait(0.5):
        if args.exit_with_parent and os.getppid() != parent:
            break       # orphaned by a killed test run: do not linger holding the port
    server.shutdown()
    server.server_close()
    return 0


# --- client: run the fake in a subprocess and drive it ----------------------------------------

def _unverified_context():
    # Control traffic to our own fake: certificate checks are the daemon's job, tested there.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class FakeOptix:
    """A fakeoptix subprocess on a free port, with the control API as methods. Use as a context manager."""

    def __init__(self, api_key="test-api-key", brand_key="test-brand-key", connections=None,
                 tls_cert=None, tls_key=None, max_body=None, rate_limit=None, delay=None,
                 idle_timeout=None, port=0, log_path=None, startup_timeout=10.0):
        self.api_key, self.brand_key = api_key, brand_key
        self.connections = dict(connections or {})
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.max_body, self.rate_limit, self.delay = max_body, rate_limit, delay
        self.idle_timeout = idle_timeout
        self.port = port
        self.startup_timeout = startup_timeout
        self._tmp = tempfile.mkdtemp(prefix="fakeoptix-")
        weakref.finalize(self, shutil.rmtree, self._tmp, True)
        self.log_path = str(log_path or os.path.join(self._tmp, "fakeoptix.log"))
        self.proc = None
        handlers = [urllib.request.ProxyHandler({})]        # never send test traffic to a proxy
        if tls_cert:
            handlers.append(urllib.request.HTTPSHandler(context=_unverified_context()))
        self._opener = urllib.request.build_opener(*handlers)

    @property
    def scheme(self):
        return "https" if self.tls_cert else "http"

    @property
    def root(self):
        """http(s)://127.0.0.1:PORT"""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def url(self):
        """The base_url a daemon is configured with."""
        return self.root + API_PATH

    def upload_url(self, uuid):
        return f"{self.url}/connections/{uuid}/upload_data"

    def start(self):
        """Start (or restart on the same port after stop()) and wait until it listens."""
        port_file = os.path.join(self._tmp, "port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        cmd = [sys.executable, os.path.abspath(__file__), "--port", str(self.port or 0),
               "--port-file", port_file, "--api-key", self.api_key, "--brand-key", self.brand_key,
               "--exit-with-parent"]
        for u, pk in self.connections.items():
            cmd += ["--connection", f"{u}={pk}"]
        if self.tls_cert:
            cmd += ["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key)]
        if self.max_body is not None:
            cmd += ["--max-body", str(self.max_body)]
        if self.rate_limit:
            cmd += ["--rate-limit", str(self.rate_limit)]
        if self.delay:
            cmd += ["--delay", str(self.delay)]
        if self.idle_timeout:
            cmd += ["--idle-timeout", str(self.idle_timeout)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while not os.path.exists(port_file):
            if self.proc.poll() is not None:
                raise RuntimeError(f"fakeoptix exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fakeoptix did not listen within {self.startup_timeout}s:\n{self.log()}")
            time.sleep(0.02)
        with open(port_file) as f:
            self.port = int(f.read())
        return self

    def stop(self, timeout=10.0):
        """SIGTERM and wait; returns the exit status (0 on a clean shutdown)."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def suspend(self):
        """SIGSTOP: connections hang (no answer, no error) until resume()."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # control API

    def _control(self, method, name, payload=None, **query):
        q = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        url = f"{self.root}/_control/{name}" + (f"?{q}" if q else "")
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(req, timeout=30) as resp:
                return resp.read()
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"fakeoptix control {method} {name}: {e.code} {e.read()!r}") from None

    def state(self, uuid=None, exact=False, raw=False):
        """{"records": {pk_json: record}, "expires": {pk_json: epoch}, "open_batches": {batch: n_staged},
        "completed_batches": [...]}; without uuid, {"connections": {uuid: that}}.
        exact=True parses decimals as Decimal; raw=True gives each record as its JSON text."""
        text = self._control("GET", "state", uuid=uuid, raw="1" if raw else None)
        return loads_exact(text) if exact else json.loads(text)

    def records(self, uuid, exact=False):
        return self.state(uuid, exact=exact)["records"]

    def record(self, uuid, pk, exact=False):
        """The stored record for a primary key value (1 and "1" differ), or None."""
        return self.records(uuid, exact=exact).get(json.dumps(pk))

    def requests(self, uuid=None, since=None):
        """Upload requests in arrival order: seq, time, path, uuid, batch_uuid, batch_completed,
        ttl_seconds, n_records, bytes, status (None if dropped), keys, first_pk, last_pk, fault, error;
        sent: {batch_uuid, batch_completed, keys} of the body as received, also for faulted requests."""
        # Recorded once answered: a quick next request can be recorded first; seq is arrival order.
        return sorted(json.loads(self._control("GET", "requests", uuid=uuid, since=since)), key=lambda r: r["seq"])

    def add_faults(self, faults):
        """Append faults (a dict or a list) to the FIFO; returns how many are pending.
        {"reject_pk": K, "count": N} is matched on content instead: a request holding a record
        whose primary key is K is answered 422 (or "status") with "body" or a message naming it."""
        return json.loads(self._control("POST", "faults", faults))["pending"]

    def pending_faults(self):
        return json.loads(self._control("GET", "faults"))

    def held(self):
        """How many requests wait in a {"hold": true} fault now (body read, no answer yet)."""
        return json.loads(self._control("GET", "held"))["held"]

    def release(self, n=1):
        """Let n held requests (now or to come) go on to their answer."""
        self._control("POST", "release", {}, n=n)

    def configure(self, **cfg):
        """api_key, brand_key, max_body (int|None), rate_limit ("N/W"|None), delay, connections {uuid: pk},
        track (a field name|None: each upload request's record gets "tracked", that field's value of
        each of its records, in order, e.g. gen_ndjson's "v" to tell which file a record came from)."""
        self._control("POST", "config", cfg)

    def reset(self):
        """Forget records, batches, requests, faults and rate windows; config stays."""
        self._control("POST", "reset", {})

    def created(self):
        """Connections made through POST /connections: {uuid: {"name", "description", "primary_key"}}."""
        return json.loads(self._control("GET", "created"))

    def stats(self):
        """Request counts by status: {200: n, 429: n, ..., "dropped": n} (dropped = reset/closed)."""
        raw = json.loads(self._control("GET", "stats"))
        return {(int(k) if k.isdigit() else k): v for k, v in raw.items()}

    def formula(self, f, **tags):
        """Evaluate a Data Connection formula; tags fill [%TAG%]. Returns the value or the fallback."""
        return json.loads(self._control("GET", "formula", f=f, **tags))["value"]

    def wait_until(self, predicate, timeout=30.0, interval=0.05, what="condition"):
        """Poll predicate() until truthy (returned) or fail after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    def wait_records(self, uuid, n, timeout=30.0):
        """Wait until the connection holds at least n live records; returns them."""
        return self.wait_until(lambda: (lambda r: r if len(r) >= n else None)(self.records(uuid)),
                               timeout, what=f"{n} records in {uuid}")

    def upload(self, uuid, data=None, body=None, headers=None, **fields):
        """Send one upload request directly (as the daemon would); returns (status, headers, body_bytes).
        body (bytes/str) overrides data/fields; headers override the default ones."""
        if body is None:
            doc = {"data": data if data is not None else []}
            doc.update(fields)
            body = json.dumps(doc)
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": "application/json", "x-api-key": self.api_key, "x-brand-key": self.brand_key}
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        if self.tls_cert:
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30,
                                               context=_unverified_context())
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("POST", f"{API_PATH}/connections/{uuid}/upload_data", body=body, headers=h)
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()


if __name__ == "__main__":
    sys.exit(main())
