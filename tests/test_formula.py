"""Data Connection formulas: every formula dcsyncd prints resolves, at the fake Opti-X, to the uploaded value."""

import json
import signal
import subprocess

from harness import UUID1, acked, wait_for

RECORDS = [
    {"id": 1, "name": "Ann", "product_url": "https://shop.example/p/1", "city": "Paris", "score": 12.5},
    {"id": 2, "name": "Bob", "product_url": "https://shop.example/p/2", "city": "Oslo", "score": 7},
    {"id": "c-3", "name": "Cy", "product_url": "https://shop.example/p/3", "city": "Rome"},
]


def formula(daemon, *args):
    return subprocess.run(daemon.command("formula", *args), capture_output=True, text=True, timeout=30)


def uploaded(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    daemon.drop("products", "customers.ndjson", [json.dumps(r) for r in RECORDS])
    assert daemon.run_once().returncode == 0
    return daemon


def test_every_printed_formula_resolves_to_the_uploaded_value(optix, daemon):
    uploaded(optix, daemon)
    for field in ("name", "product_url", "city", "score"):
        out = formula(daemon, "products", field, "--fallback", "none")
        assert out.returncode == 0, out.stderr
        f = out.stdout.strip()
        assert f == f"DC_{UUID1}:[%CUSTOMER_ID%]::{field}:none"
        for rec in RECORDS:
            got = optix.formula(f, CUSTOMER_ID=str(rec["id"]))
            assert got == rec.get(field, "none"), (f, rec["id"], got)
        # A customer with no record gets the fallback.
        assert optix.formula(f, CUSTOMER_ID="999") == "none"


def test_custom_key_tag_and_fallback(optix, daemon):
    uploaded(optix, daemon)
    out = formula(daemon, "products", "city", "--key", "[%VISITOR_ID%]", "--fallback", "Somewhere")
    assert out.returncode == 0, out.stderr
    f = out.stdout.strip()
    assert f == f"DC_{UUID1}:[%VISITOR_ID%]::city:Somewhere"
    assert optix.formula(f, VISITOR_ID="2") == "Oslo"


def test_a_field_never_uploaded_is_refused_with_the_closest_names(optix, daemon):
    uploaded(optix, daemon)
    out = formula(daemon, "products", "product_ulr")
    assert out.returncode == 1
    assert out.stdout == ""
    assert "never uploaded" in out.stderr and "product_url" in out.stderr


def test_bad_key_tag_and_segment_breaking_text_are_refused(optix, daemon):
    uploaded(optix, daemon)
    out = formula(daemon, "products", "city", "--key", "CUSTOMER_ID")
    assert out.returncode == 1 and "[%NAME%]" in out.stderr
    out = formula(daemon, "products", "city", "--fallback", "a:b")
    assert out.returncode == 1 and "':'" in out.stderr


def test_check_explains_each_problem(optix, daemon):
    uploaded(optix, daemon)
    good = f"DC_{UUID1}:[%CUSTOMER_ID%]::city:x"
    out = formula(daemon, "--check", good)
    assert out.returncode == 0 and "OK" in out.stdout and "connection products" in out.stdout
    cases = {
        f"DC_{UUID1}:[%CUSTOMER_ID%]::city": "5 segments",
        f"{UUID1}:[%CUSTOMER_ID%]::city:x": "DC_",
        "DC_9ce27b8c-zzzz-427a-8d00-f40b816bc092:[%CUSTOMER_ID%]::city:x": "UUID",
        "DC_9ce27b8c-8b16-427a-8d00-f40b816bc092:[%CUSTOMER_ID%]::city:x": "not the uuid of any connection",
        f"DC_{UUID1}:[%CUSTOMER_ID::city:x": "[%",
        f"DC_{UUID1}:[%CUSTOMER_ID%]::cty:x": "never uploaded",
    }
    for text, expected in cases.items():
        out = formula(daemon, "--check", text)
        assert out.returncode == 1, text
        assert expected in out.stderr, (text, out.stderr)


def test_list_shows_fields_with_counts(optix, daemon):
    uploaded(optix, daemon)
    out = formula(daemon, "--list", "products")
    assert out.returncode == 0
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()[1:] if line.strip()}
    assert rows["name"] == "3" and rows["id"] == "3" and rows["score"] == "2"


def test_field_catalog_off_leaves_the_catalog_as_it_is(optix, daemon):
    uploaded(optix, daemon)
    catalog = daemon.state_dir / "fields" / "products.catalog"
    before = catalog.read_text()
    daemon.write_config([daemon.connection(optix, field_catalog="no")])
    daemon.drop("products", "more.ndjson", [json.dumps({"id": 9, "name": "Di", "coupon": "X1"})])
    assert daemon.run_once().returncode == 0
    assert optix.records(UUID1)["9"]["coupon"] == "X1"
    assert catalog.read_text() == before, "field_catalog = no must not touch the catalog"
    out = formula(daemon, "products", "coupon")
    assert out.returncode != 0 and "never uploaded" in out.stderr
    # Turned back on, the next upload is collected again.
    daemon.write_config([daemon.connection(optix, field_catalog="yes")])
    daemon.drop("products", "again.ndjson", [json.dumps({"id": 10, "coupon": "X2"})])
    assert daemon.run_once().returncode == 0
    assert formula(daemon, "products", "coupon").returncode == 0


def listed(daemon):
    """{field: records} from `formula --list products`."""
    out = formula(daemon, "--list", "products")
    assert out.returncode == 0, out.stderr
    return {line.split()[0]: int(line.split()[1]) for line in out.stdout.splitlines()[1:] if line.strip()}


# The catalog counts records of acknowledged requests: parsing ahead, cutting a request again after
# a restart, or carrying a small file to the next request must not count a record twice.

def test_catalog_counts_a_batch_stopped_and_resumed_once(optix, daemon):
    n = 8000
    optix.configure(delay=0.3)
    daemon.write_config([daemon.connection(optix, batch_records=1000)])
    daemon.drop_generated("products", "big.ndjson", n)
    daemon.start()
    wait_for(lambda: len(acked(optix)) >= 1, "the first request acknowledged", daemon)
    daemon.signal(signal.SIGTERM)      # requests parsed ahead are dropped, cut again at the restart
    assert daemon.wait_exit(timeout=30) == 0
    assert len(acked(optix)) < n // 1000, "the batch should have stopped part-way"
    optix.configure(delay=0)
    assert daemon.run_once().returncode == 0
    assert len(optix.records(UUID1)) == n
    assert listed(daemon)["id"] == n


def test_catalog_counts_small_files_carried_to_the_next_request_once(optix, daemon):
    daemon.write_config([daemon.connection(optix, batch_records=10)])
    # a fits whole, b does not fit beside it (carried to the next batch), c joins b.
    daemon.drop_generated("products", "a.ndjson", 6, start=0)
    daemon.drop_generated("products", "b.ndjson", 6, start=100)
    daemon.drop_generated("products", "c.ndjson", 3, start=200)
    assert daemon.run_once().returncode == 0
    assert len(optix.records(UUID1)) == 15
    assert listed(daemon)["id"] == 15


def test_catalog_counts_files_handed_back_after_401_once(optix, daemon):
    daemon.write_config([daemon.connection(optix, batch_records=1000)])
    daemon.drop_generated("products", "a.ndjson", 3000)
    optix.configure(api_key="rotated-key")
    assert daemon.run_once().returncode == 1        # keys refused: the file goes back to the spool
    optix.configure(api_key=optix.api_key)
    assert daemon.run_once().returncode == 0
    assert len(optix.records(UUID1)) == 3000
    assert listed(daemon)["id"] == 3000


def test_a_catalog_that_cannot_be_saved_is_named_with_its_connection(optix, daemon):
    daemon.write_config([daemon.connection(optix, batch_records=1)])  # one file a batch
    (daemon.state_dir / "fields").write_text("not a directory\n")
    # The second file's catalog is saved at exit (saves are spaced out), after the batch is gone.
    daemon.drop("products", "a.ndjson", [json.dumps({"id": 1, "name": "Al"})])
    daemon.drop("products", "b.csv", ["id,score", "2,5"])
    assert daemon.run_once().returncode == 0
    log = daemon.log()
    assert "products: cannot save the field catalog" in log, log[-3000:]
    assert "(null)" not in log, log[-3000:]
