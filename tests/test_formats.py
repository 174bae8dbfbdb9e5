"""Drops in the formats legacy exporters write (issue 15): CSV/TSV with a header, each format
gzip- or zstd-compressed, streamed like NDJSON and held to the same rules.

Run with:  DCSYNCD=build/src/dcsyncd /usr/bin/python3 -m pytest -q tests/test_formats.py

Every run waits for its outcome (the exit of --once) with a timeout; nothing is timed.
"""

import gzip
import json
import re
import subprocess

import pytest

from harness import UUID1

TIMEOUT = 60


def zstd(data):
    return subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout


def run_once(daemon, expect, timeout=TIMEOUT):
    proc = daemon.run_once(timeout=timeout)
    assert proc.returncode == expect, (f"exit {proc.returncode}, want {expect}\nstdout:\n{proc.stdout}\n"
                                       f"log tail:\n{daemon.log()[-4000:]}")
    return proc


def rejected(daemon, name):
    path = daemon.spool("products") / "rejected" / f"{name}.rejected.ndjson"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def failed(daemon, name):
    d = daemon.spool("products") / "failed"
    return (d / name).exists(), json.loads((d / f"{name}.error.json").read_text())


def csv_text(n, start=0, sep=","):
    rows = [sep.join(["id", "name", "score", "active", "tags", "note"])]
    for i in range(start, start + n):
        rows.append(sep.join([str(i), f"name {i}", f"{i}.50", "true" if i % 2 else "false",
                              '"[1,""x""]"' if sep == "," else '[1,"x"]', f'"said ""hi""{sep} twice"' if sep == "," else "plain"]))
    return "\r\n".join(rows) + "\r\n"


def want_csv(i, sep=","):
    return {"id": i, "name": f"name {i}", "score": float(f"{i}.50"), "active": bool(i % 2), "tags": [1, "x"],
            "note": f'said "hi"{sep} twice' if sep == "," else "plain"}


CSV_KEYS = {"csv_columns": "id:integer, score:number, active:boolean, tags:json", "rate_limit": "off"}


def test_every_format_goes_up(optix, daemon):
    daemon.write_config([daemon.connection(optix, batch_records=1000, **CSV_KEYS)])
    nd = "".join(json.dumps({"id": i, "v": i}) + "\n" for i in range(20000, 20500)).encode()
    daemon.drop("products", "a.csv", csv_text(2500, 0))
    daemon.drop("products", "b.tsv", csv_text(300, 3000, "\t"))
    daemon.drop("products", "c.csv.gz", gzip.compress(csv_text(1200, 5000).encode()))
    daemon.drop("products", "d.csv.zst", zstd(csv_text(700, 7000).encode()))
    daemon.drop("products", "e.ndjson.gz", gzip.compress(nd))
    daemon.drop("products", "f.jsonl.zst", zstd(nd.replace(b'"v"', b'"w"')))
    daemon.drop("products", "g.tsv.gz", gzip.compress(csv_text(10, 9000, "\t").encode()))

    run_once(daemon, 0)

    recs = optix.records(UUID1)
    for lo, n, sep in ((0, 2500, ","), (3000, 300, "\t"), (5000, 1200, ","), (7000, 700, ","), (9000, 10, "\t")):
        for i in (lo, lo + n // 2, lo + n - 1):
            assert recs[json.dumps(i)] == want_csv(i, sep), (i, recs.get(json.dumps(i)))
    assert sum(1 for k in recs if int(k) < 10000) == 2500 + 300 + 1200 + 700 + 10
    assert recs[json.dumps(20001)] == {"id": 20001, "w": 20001}      # the newer file wins
    done = sorted(p.name for p in (daemon.state_dir / "done" / "products").iterdir())
    assert done == ["a.csv", "b.tsv", "c.csv.gz", "d.csv.zst", "e.ndjson.gz", "f.jsonl.zst", "g.tsv.gz"]


def test_csv_records_are_compact_json_sent_as_written(optix, daemon):
    daemon.write_config([daemon.connection(optix, csv_columns="id:integer,price:number,raw:json")])
    daemon.drop("products", "a.csv",
                "\ufeffid,price,raw,name\n12345678901234567890123,1.10e+2,\"{\"\"a\"\": [1, 2.50]}\",\"x\ny\"\n")
    run_once(daemon, 0)
    raw = optix.state(UUID1, raw=True)["records"]
    # (the fake stores the record without the blanks the json cell held)
    assert list(raw.values()) == ['{"id":12345678901234567890123,"price":1.10e+2,"raw":{"a":[1,2.50]},"name":"x\\ny"}']
    body = [r for r in optix.requests(UUID1) if r["status"] == 200]
    assert body and body[0]["n_records"] == 1


def test_bad_rows_are_rejected_with_the_line_they_start_on(optix, daemon):
    daemon.write_config([daemon.connection(optix, required_fields="name", **CSV_KEYS)])
    text = ("id,name,score,active,tags,note\n"
            "1,a,1,true,[],\"two\nlines\"\n"        # lines 2-3
            "2,b,x,true,[],n\n"                       # 4: score not a number
            "3,c,1,true\n"                            # 5: too few cells
            "4,,1,true,[],n\n"                        # 6: empty name omitted: required_fields
            "5,\xe9,1,yes,[],n\n"                     # 7: boolean
            "6,f,1,false,[],\"never closed\n"         # 8: unterminated quote: this line alone
            "7,g,1,true,[],n\n")
    daemon.drop("products", "a.csv", text.encode("latin-1"))
    run_once(daemon, 1)
    assert set(optix.records(UUID1)) == {"1", "7"}
    rej = rejected(daemon, "a.csv")
    assert [(r["line"], r["error"]) for r in rej] == [
        (4, "cell 3 (score): 'x' is not a number"),
        (5, "4 cell(s), the header has 6"),
        (6, "required field 'name' missing"),
        (7, "cell 2 (name): invalid UTF-8"),
        (8, "unterminated quote: the cell runs on past this line to the end of the file (only this line is rejected)"),
    ], rej
    assert rej[1]["record"] == "3,c,1,true"
    assert rej[2]["record"] == '{"id":4,"score":1,"active":true,"tags":[],"note":"n"}'


@pytest.mark.parametrize("empty,want", [("omit", {"id": "1"}), ("null", {"id": "1", "a": None, "b": None}),
                                        ("string", {"id": "1", "a": "", "b": None})])
def test_csv_empty(optix, daemon, empty, want):
    daemon.write_config([daemon.connection(optix, csv_empty=empty, csv_columns="b:integer")])
    daemon.drop("products", "a.csv", "id,a,b\n1,,\n")
    run_once(daemon, 0)
    assert optix.records(UUID1) == {'"1"': want}


def test_csv_delimiter(optix, daemon):
    # ';' starts a comment in the configuration file: the word says it
    daemon.write_config([daemon.connection(optix, csv_delimiter="semicolon")])
    daemon.drop("products", "a.csv", "id;v\n1;a,b\n")
    run_once(daemon, 0)
    assert optix.records(UUID1) == {'"1"': {"id": "1", "v": "a,b"}}


@pytest.mark.parametrize("header,why", [
    ("name,v", "header: no column 'id' (the connection's primary_key)"),
    ("id,,v", "header: column 2 has an empty name"),
    ("id,v,v", "header: column 'v' appears twice"),
])
def test_a_bad_header_fails_the_file(optix, daemon, header, why):
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", "ok.ndjson", '{"id":1}\n')
    daemon.drop("products", "a.csv", header + "\n1,2,3\n")
    run_once(daemon, 1)
    moved, err = failed(daemon, "a.csv")
    assert moved and err["error"] == why, err
    assert optix.records(UUID1) == {"1": {"id": 1}}
    assert f"a.csv: failed for good: {why}" in daemon.log()


@pytest.mark.parametrize("name,cut", [("a.ndjson.gz", "truncate"), ("a.ndjson.zst", "truncate"),
                                      ("a.ndjson.gz", "corrupt"), ("a.csv.gz", "truncate")])
def test_a_broken_compressed_file_is_never_completed(optix, daemon, name, cut):
    """Requests go up and are acknowledged; the fault lies further on: the batch stays open."""
    daemon.write_config([daemon.connection(optix, batch_records=1000, rate_limit="off")])
    if name.startswith("a.csv"):
        plain = ("id,v\n" + "".join(f"{i},{i * 7:030d}\n" for i in range(60000))).encode()
    else:
        plain = "".join(json.dumps({"id": i, "v": f"{i * 7:030d}"}) + "\n" for i in range(60000)).encode()
    data = gzip.compress(plain) if name.endswith(".gz") else zstd(plain)
    if cut == "truncate":
        data = data[:len(data) * 9 // 10]
    else:
        data = bytearray(data)
        for i in range(len(data) * 8 // 10, len(data) * 8 // 10 + 64):
            data[i] ^= 0x5A
        data = bytes(data)
    daemon.drop("products", name, data)

    run_once(daemon, 1)

    moved, err = failed(daemon, name)
    assert moved
    comp = "gzip" if name.endswith(".gz") else "zstd"
    word = "ends early" if cut == "truncate" else "is corrupt"
    assert re.match(rf"the {comp} data {word} at byte \d+ of the file", err["error"]), err
    st = optix.state(UUID1)
    assert not st["completed_batches"] and len(st["open_batches"]) == 1, daemon.log()[-3000:]
    reqs = optix.requests(UUID1)
    assert reqs and all(not r["batch_completed"] for r in reqs)


def test_a_refused_csv_row_is_found_by_bisection(optix, daemon):
    daemon.write_config([daemon.connection(optix, csv_columns="id:integer")])
    daemon.drop("products", "a.csv", "id,v\n" + "".join(f"{i},\"x\ny\"\n" for i in range(100)))
    optix.add_faults({"uuid": UUID1, "reject_pk": 37, "count": 10**6})
    run_once(daemon, 1)
    rej = rejected(daemon, "a.csv")
    assert [r["line"] for r in rej] == [2 + 2 * 37], rej
    assert len(optix.records(UUID1)) == 99


def test_names_in_the_wrong_case_are_named_and_left(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", "a.CSV.gz", b"x")
    daemon.drop("products", "b.csv.bz2", b"x")
    run_once(daemon, 0)
    assert "a.CSV.gz: ignored: only names ending in .ndjson, .jsonl, .csv or .tsv" in daemon.log()
    assert (daemon.spool("products") / "a.CSV.gz").exists() and (daemon.spool("products") / "b.csv.bz2").exists()


def test_long_lists_continue_on_indented_lines(optix, daemon):
    path = daemon.write_config([daemon.connection(optix, csv_columns="a:integer,", required_fields="a")])
    text = path.read_text()
    text = text.replace("csv_columns = a:integer,", "csv_columns = a:integer,\n    b:number,\n\tc:boolean")
    text = text.replace("required_fields = a", "required_fields = a\n    b, c")
    path.write_text(text)
    daemon.drop("products", "a.csv", "id,a,b,c\n1,2,3.5,true\n2,2,,true\n")
    run_once(daemon, 1)
    assert optix.records(UUID1) == {'"1"': {"id": "1", "a": 2, "b": 3.5, "c": True}}
    assert [r["error"] for r in rejected(daemon, "a.csv")] == ["required field 'b' missing"]


@pytest.mark.parametrize("line,why", [
    ("csv_columns = id:float", "csv_columns: id: unknown type 'float'"),
    ("csv_columns = id", "csv_columns: 'id': want NAME:TYPE"),
    ("csv_empty = nothing", "csv_empty: must be omit, null or string"),
    ("csv_delimiter = ab", "csv_delimiter: must be one printable character"),
    ("csv_delimiter = \"", "csv_delimiter: must be one printable character"),
    ("csv_delimiter = ;", "csv_delimiter: empty"),
    ("max_depth = 10\n    20", "max_depth: an indented line continues the value of the key above"),
])
def test_bad_csv_keys_are_refused(optix, daemon, line, why):
    path = daemon.write_config([daemon.connection(optix)])
    path.write_text(path.read_text() + line + "\n")
    proc = subprocess.run(daemon.command("--check-config"), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 2 and why in proc.stderr, proc.stderr
    assert re.search(rf"{re.escape(str(path))}:\d+: ", proc.stderr)


@pytest.mark.parametrize("eol", ["\r", "\n", "\r\n"])
def test_every_line_end_ends_a_row(optix, daemon, eol):
    """A CR alone ends a line as LF and CRLF do (Excel's "CSV (Macintosh)", classic Mac exports):
    100 rows are 100 records, not one header swallowing the file. A CR inside quotes is data."""
    daemon.write_config([daemon.connection(optix, csv_columns="id:integer")])
    rows = ["id,name"] + [f"{i},n{i}" for i in range(100)] + ['100,"two' + eol + 'lines"']
    daemon.drop("products", "mac.csv", eol.join(rows) + eol)
    run_once(daemon, 0)
    recs = optix.records(UUID1)
    assert len(recs) == 101 and recs["7"] == {"id": 7, "name": "n7"}, sorted(recs)[:5]
    assert recs["100"] == {"id": 100, "name": "two" + eol + "lines"}
    assert rejected(daemon, "mac.csv") == []


@pytest.mark.parametrize("name,text", [("h.csv", "id,name\r\n"), ("blank.ndjson", "\n\n  \n")])
def test_a_file_that_yields_no_record_is_not_a_success(optix, daemon, name, text):
    """Bytes read but not one record nor one rejected line: failed/, said so, never archived as done."""
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", "ok.ndjson", '{"id":1}\n')
    daemon.drop("products", name, text)
    run_once(daemon, 1)
    moved, err = failed(daemon, name)
    assert moved and err["error"].startswith(f"no record in {len(text.encode())} bytes read"), err
    assert optix.records(UUID1) == {"1": {"id": 1}}
    assert f"{name}: failed for good: no record in" in daemon.log()


def test_a_zstd_frame_with_a_window_past_the_bound_fails_its_file_alone(optix, daemon):
    """zstd --long=27 asks for a 128 MiB window: refused by name, not read as corrupt; the others go up."""
    daemon.write_config([daemon.connection(optix, rate_limit="off")])
    plain = "".join(json.dumps({"id": i}) + "\n" for i in range(200)).encode()
    long = subprocess.run(["zstd", "-q", "-c", "--long=27"], input=plain, stdout=subprocess.PIPE,
                          check=True).stdout
    daemon.drop("products", "a.ndjson.zst", long)
    daemon.drop("products", "b.ndjson.zst", zstd(plain.replace(b'"id": ', b'"id": 1000')))
    daemon.drop("products", "c.ndjson", plain.replace(b'"id": ', b'"id": 2000'))

    run_once(daemon, 1)

    moved, err = failed(daemon, "a.ndjson.zst")
    assert moved
    assert re.match(r"the zstd frame at byte \d+ of the file needs a window of 128 MiB, more than the 8 MiB "
                    r"zstd_window_max_mib allows \(compress without --long, or with --long=23 or less, or raise "
                    r"the key\)$", err["error"]), err
    assert set(optix.records(UUID1)) == {f"1000{i}" for i in range(200)} | {f"2000{i}" for i in range(200)}


def test_a_zstd_frame_with_a_long_window_goes_up_where_zstd_window_max_mib_allows_it(optix, daemon):
    """Exporters that need --long: the connection's key raises the bound (and the memory it may cost)."""
    daemon.write_config([daemon.connection(optix, rate_limit="off", zstd_window_max_mib=128)])
    plain = "".join(json.dumps({"id": i}) + "\n" for i in range(200)).encode()
    daemon.drop("products", "a.ndjson.zst", subprocess.run(["zstd", "-q", "-c", "--long=27"], input=plain,
                                                          stdout=subprocess.PIPE, check=True).stdout)
    daemon.drop("products", "b.ndjson.zst", subprocess.run(["zstd", "-q", "-c", "--long=28"], input=plain,
                                                          stdout=subprocess.PIPE, check=True).stdout)
    run_once(daemon, 1)
    assert set(optix.records(UUID1)) == {str(i) for i in range(200)}
    moved, err = failed(daemon, "b.ndjson.zst")
    assert moved and "needs a window of 256 MiB, more than the 128 MiB zstd_window_max_mib allows" in err["error"], err


def test_a_gz_corrupt_from_its_start_is_logged_once_with_the_real_error(optix, daemon):
    daemon.write_config([daemon.connection(optix, rate_limit="off")])
    data = bytearray(gzip.compress(b'{"id": 1}\n' * 1000))
    for i in range(10, 30):
        data[i] ^= 0x5A
    daemon.drop("products", "a.ndjson.gz", bytes(data))

    run_once(daemon, 1)

    moved, err = failed(daemon, "a.ndjson.gz")
    assert moved and "the gzip data is corrupt at byte" in err["error"], err
    log = daemon.log()
    assert "cannot start the batch" not in log, log[-3000:]
    assert len(re.findall(r"a\.ndjson\.gz: failed for good: the gzip data is corrupt", log)) == 1, log[-3000:]


def test_a_rejected_line_of_control_characters_is_kept_cut_like_binary(optix, daemon):
    """DEL and other control characters are valid UTF-8 but escape sixfold: only the start is kept."""
    daemon.write_config([daemon.connection(optix, rate_limit="off")])
    junk = b"\x7f" * 5000
    daemon.drop("products", "a.ndjson.gz", gzip.compress(b'{"id": 1}\n' + junk + b"\n" + b"\x01\x02" * 3000 + b"\n"))

    run_once(daemon, 1)

    rej = rejected(daemon, "a.ndjson.gz")
    assert [e["line"] for e in rej] == [2, 3], rej
    assert rej[0]["truncated"] is True and rej[0]["bytes"] == 5000 and rej[0]["record"] == "\x7f" * 256
    assert rej[1]["truncated"] is True and rej[1]["bytes"] == 6000
    assert set(optix.records(UUID1)) == {"1"}


def test_rejected_lines_past_rejected_max_bytes_are_counted_not_copied(optix, daemon):
    """A .gz of bad lines cannot fill the spool's disk through rejected/."""
    daemon.write_config([daemon.connection(optix, rate_limit="off", rejected_max_bytes=4096)])
    lines = [b'{"id": 1}'] + [b'{"id": "x' + b'"' * 100 + b'"' for _ in range(5000)] + [b'{"id": 2}']
    daemon.drop("products", "a.ndjson.gz", gzip.compress(b"\n".join(lines) + b"\n"))

    proc = run_once(daemon, 1)

    path = daemon.spool("products") / "rejected" / "a.ndjson.gz.rejected.ndjson"
    assert path.stat().st_size <= 4096, path.stat().st_size
    rej = rejected(daemon, "a.ndjson.gz")
    assert rej[-1]["line"] is None and "rejected_max_bytes=4096 reached" in rej[-1]["error"], rej[-1]
    assert all(e["line"] for e in rej[:-1]) and len(rej) > 2
    assert "5000 rejected" in proc.stdout, proc.stdout
    assert "a.ndjson.gz: its rejected lines reached rejected_max_bytes=4096" in daemon.log()
    assert set(optix.records(UUID1)) == {"1", "2"}


def test_rejected_lines_past_rejected_max_lines_are_counted_not_copied_and_stay_so_after_a_restart(optix, daemon):
    """Small bad lines pass no byte cap soon: rejected_max_lines bounds the entries too, over the
    requests of a batch and over later drops of the name (counted again from the file at start)."""
    daemon.write_config([daemon.connection(optix, rate_limit="off", batch_records=100, rejected_max_lines=250)])
    lines = [json.dumps({"id": i}) if i % 2 else f"bad {i}" for i in range(2000)]
    daemon.drop("products", "a.ndjson.gz", gzip.compress(("\n".join(lines) + "\n").encode()))

    proc = run_once(daemon, 1)

    rej = rejected(daemon, "a.ndjson.gz")
    assert [e["line"] for e in rej[:-1]] == list(range(1, 501, 2)), [e["line"] for e in rej]
    assert rej[-1]["line"] is None and "rejected_max_lines=250 reached" in rej[-1]["error"], rej[-1]
    assert "1000 rejected" in proc.stdout, proc.stdout
    assert daemon.log().count("its rejected lines reached rejected_max_lines=250") == 1
    assert len(optix.records(UUID1)) == 1000

    size = (daemon.spool("products") / "rejected" / "a.ndjson.gz.rejected.ndjson").stat().st_size
    daemon.drop("products", "a.ndjson.gz", gzip.compress(b'{"id": 5000}\nbad again\n'))
    proc = run_once(daemon, 1)
    assert (daemon.spool("products") / "rejected" / "a.ndjson.gz.rejected.ndjson").stat().st_size == size
    assert "1 rejected" in proc.stdout, proc.stdout
    assert daemon.log().count("its rejected lines reached rejected_max_lines=250") == 1
    assert "5000" in optix.records(UUID1)


@pytest.mark.parametrize("max_record", [None, 4096], ids=["to-the-end", "past-max_record_bytes"])
def test_a_stray_opening_quote_loses_only_its_line(optix, daemon, max_record):
    """`u1,"5 inch` in row 2 of 10,000: that line is rejected with its text, every other row goes
    up; a quoted line break in a row of the header's width stays one cell."""
    keys = {"max_record_bytes": max_record} if max_record else {}
    daemon.write_config([daemon.connection(optix, rate_limit="off", **keys)])
    rows = ["id,name", "u0,a", 'u1,"5 inch'] + [f"u{i},n{i}" for i in range(2, 10000)] + ['u10000,"two\nlines"']
    daemon.drop("products", "stray.csv", "\n".join(rows) + "\n")
    run_once(daemon, 1)
    recs = optix.records(UUID1)
    assert len(recs) == 10000 and '"u1"' not in recs and recs['"u9999"'] == {"id": "u9999", "name": "n9999"}
    assert recs['"u10000"'] == {"id": "u10000", "name": "two\nlines"}
    rej = rejected(daemon, "stray.csv")
    assert [(r["line"], r["record"]) for r in rej] == [(3, 'u1,"5 inch')], rej
    assert rej[0]["error"].startswith("unterminated quote: the cell runs on past this line"), rej


@pytest.mark.parametrize("sep,eol", [(",", "\n"), (",", "\r\n"), ("\t", "\r")], ids=["csv-lf", "csv-crlf", "tsv-cr"])
def test_a_stray_quote_closed_by_a_later_one_loses_only_its_line(optix, daemon, sep, eol):
    """`u1,"5 inch` closed 48 lines on by `u50,12"` makes a row of the header's width: the lines
    between read as rows, so u1's line alone is rejected and u2..u99 go up; legitimate line breaks
    in quotes (an address, a note whose lines do not all read as rows) stay data."""
    daemon.write_config([daemon.connection(optix, rate_limit="off")])
    address = f"12 Main St{eol}Springfield, IL"
    note = f"a{eol}b{sep}c{eol}d{sep}e{sep}f{eol}g"
    rows = ([f"id{sep}name", f'u1{sep}"5 inch'] + [f"u{i}{sep}n{i}" for i in range(2, 50)] + [f'u50{sep}12"']
            + [f"u{i}{sep}n{i}" for i in range(51, 100)] + [f'u100{sep}"{address}"', f'u101{sep}"{note}"', f"u102{sep}x"])
    name = "inch.tsv" if sep == "\t" else "inch.csv"
    daemon.drop("products", name, eol.join(rows) + eol)
    run_once(daemon, 1)
    recs = optix.records(UUID1)
    assert sorted(recs) == sorted(f'"u{i}"' for i in range(2, 103)), sorted(recs)
    assert recs['"u2"'] == {"id": "u2", "name": "n2"} and recs['"u49"'] == {"id": "u49", "name": "n49"}
    assert recs['"u50"'] == {"id": "u50", "name": '12"'}
    assert recs['"u100"'] == {"id": "u100", "name": address} and recs['"u101"'] == {"id": "u101", "name": note}
    assert recs['"u102"'] == {"id": "u102", "name": "x"}
    rej = rejected(daemon, name)
    assert [(r["line"], r["record"], r["error"]) for r in rej] == [
        (2, f'u1{sep}"5 inch', "unterminated quote: the cell runs on past this line over 48 lines that read as rows "
                               "of their own (only this line is rejected)")], rej


@pytest.mark.parametrize("sep,eol,odd", [(",", "\n", "u4,c,3,x"), (",", "\n", "u4,c"), (",", "\n", 'u4,""c"",3'),
                                         (",", "\r", "u4,c,3,x"), ("\t", "\n", "u4\tc"), (",", "\r\n", None)],
                         ids=["long-row", "short-row", "doubled-quotes", "csv-cr", "tsv", "three-lines-crlf"])
def test_a_stray_quote_closed_over_rows_not_all_of_the_width_loses_only_its_line(optix, daemon, sep, eol, odd):
    """`u1,"5 inch,1` closed by `u6,e 12",5` with one odd line among the rows between (too long, too
    short, doubled quotes): three in four read as rows, so u1's line alone is rejected, u2..u7 go up
    and the odd line is rejected as itself; closed two lines on (`u3,e 12",5`), the one row between
    is enough, the closing quote inside a row's cell. Legitimate cells stay one: a two-line address,
    a note of prose lines, doubled quotes, a letter."""
    daemon.write_config([daemon.connection(optix, rate_limit="off")])
    j = sep.join
    if odd:
        span = [j(["u1", '"5 inch', "1"]), j(["u2", "b", "2"]), j(["u3", "c", "3"]), odd, j(["u5", "d", "4"]),
                j(["u6", 'e 12"', "5"])]
        ids = ["u2", "u3", "u5", "u6"]
    else:
        span = [j(["u1", '"5 inch', "1"]), j(["u2", "b", "2"]), j(["u3", 'e 12"', "5"])]
        ids = ["u2", "u3"]
    legit = {"a1": f"12 Main St{eol}Springfield, IL",
             "a2": f"Called Monday.{eol}Left a message, no answer.{eol}Will try again Friday, 10am, or Monday."
                   f"{eol}Thanks",
             "a3": f'He said ""5 inch"", twice{eol}then, ""12 inch"", once{eol}ok',
             "a4": f"Dear Ann{eol}thanks, we got it, all fine{eol}regards, Bob"}
    rows = ([j(["id", "name", "qty"])] + span + [j(["u7", "f", "6"])]
            + [j([k, f'"{v}"', "9"]) for k, v in legit.items()])
    name = "inch.tsv" if sep == "\t" else "inch.csv"
    daemon.drop("products", name, eol.join(rows) + eol)
    run_once(daemon, 1)
    recs = optix.records(UUID1)
    assert sorted(recs) == sorted(f'"{i}"' for i in ids + ["u7"] + list(legit)), sorted(recs)
    assert recs['"u2"'] == {"id": "u2", "name": "b", "qty": "2"}
    assert recs[f'"{ids[-1]}"'] == {"id": ids[-1], "name": 'e 12"', "qty": "5"}
    for k, v in legit.items():
        assert recs[f'"{k}"'] == {"id": k, "name": v.replace('""', '"'), "qty": "9"}, recs[f'"{k}"']
    rej = rejected(daemon, name)
    inside = 3 if odd else 1
    assert [(r["line"], r["record"]) for r in rej] == [(2, span[0])] + ([(5, odd)] if odd else []), rej
    assert rej[0]["error"] == (f"unterminated quote: the cell runs on past this line over {inside} lines that read "
                               "as rows of their own (only this line is rejected)"), rej


def test_a_csv_row_too_long_is_rejected_with_its_first_bytes(optix, daemon):
    """A row past max_record_bytes keeps its first 256 bytes in rejected/, never `"record": null`."""
    daemon.write_config([daemon.connection(optix, max_record_bytes=1024)])
    long_row = "2," + "é" * 2000
    daemon.drop("products", "long.csv", f"id,name\n1,a\n{long_row}\n3,c\n")
    run_once(daemon, 1)
    assert set(optix.records(UUID1)) == {'"1"', '"3"'}
    rej = rejected(daemon, "long.csv")
    assert len(rej) == 1 and rej[0]["line"] == 3, rej
    assert rej[0]["record"] == long_row[:129] and len(rej[0]["record"].encode()) <= 256, rej
    assert f"({len(long_row.encode()) + 1} bytes; the first 256 kept)" in rej[0]["error"], rej


def test_line_numbers_count_cr_only_line_breaks_inside_quotes(optix, daemon):
    """A CR-only file with a quoted line break: a bad row after it is named by its own line."""
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", "mac.csv", 'id,note\r1,"a\rb\rc"\r2,x,y\r3,z\r')
    run_once(daemon, 1)
    assert optix.records(UUID1) == {'"1"': {"id": "1", "note": "a\rb\rc"}, '"3"': {"id": "3", "note": "z"}}
    assert [(r["line"], r["record"]) for r in rejected(daemon, "mac.csv")] == [(5, "2,x,y")]
