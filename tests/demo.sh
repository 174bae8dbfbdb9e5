#!/usr/bin/env bash
# Quick start: install, build, and upload a sample spool (a few thousand records) to the
# project's fake Opti-X server on 127.0.0.1, then show what the server stored.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3

bash tests/install-deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null

work=$(mktemp -d /tmp/dcsyncd-demo.XXXXXX)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT

uuid=9ce27b8c-8b16-427a-8d00-f40b816bc092
$PY tests/fakeoptix.py --port 0 --port-file "$work/port" --api-key demo-api-key \
	--brand-key demo-brand-key --connection "$uuid=id" >"$work/fakeoptix.log" 2>&1 &
server=$!
for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")

install -d -m 700 "$work/keys"
printf demo-api-key >"$work/keys/api_key"
printf demo-brand-key >"$work/keys/brand_key"
chmod 600 "$work/keys/"*
cat >"$work/dcsyncd.conf" <<CONF
[daemon]
spool_dir = $work/spool
state_dir = $work/state
log_level = info

[connection products]
uuid = $uuid
primary_key = id
base_url = http://127.0.0.1:$port/api/data-connections/v1
api_key_file = $work/keys/api_key
brand_key_file = $work/keys/brand_key
; CSV drops: these columns are typed, the others are strings
csv_columns = id:integer, price:number, in_stock:boolean
CONF

# The drop protocol: write under a dot-name, then rename into place.
mkdir -p "$work/spool/products"
$PY tests/gen_ndjson.py --records 6000 --out "$work/spool/products/.catalog.ndjson"
mv "$work/spool/products/.catalog.ndjson" "$work/spool/products/catalog.ndjson"
$PY tests/gen_ndjson.py --records 1500 --start 5500 --value 2 --out "$work/spool/products/.update.ndjson"
printf '{"name":"a record without its id"}\n' >>"$work/spool/products/.update.ndjson"
touch -d '+1 second' "$work/spool/products/.update.ndjson"
mv "$work/spool/products/.update.ndjson" "$work/spool/products/update.ndjson"
# A CSV export with a header (a quoted cell holding a comma and a line break), and a gzip file.
printf 'id,name,price,in_stock\r\n8000,"Lamp, ""Aurora""\nwith shade",49.90,true\r\n8001,Chair,120,false\r\n' \
	>"$work/spool/products/.prices.csv"
touch -d '+2 seconds' "$work/spool/products/.prices.csv"
mv "$work/spool/products/.prices.csv" "$work/spool/products/prices.csv"
$PY tests/gen_ndjson.py --records 500 --start 9000 --out - | gzip -c >"$work/spool/products/.archive.ndjson.gz"
touch -d '+3 seconds' "$work/spool/products/.archive.ndjson.gz"
mv "$work/spool/products/.archive.ndjson.gz" "$work/spool/products/archive.ndjson.gz"

echo "== dcsyncd -c $work/dcsyncd.conf --once"
set +e
./build/src/dcsyncd -c "$work/dcsyncd.conf" --once
status=$?
set -e
echo "(exit status $status: 1 because one line was rejected, see below)"

echo
echo "== what the fake Opti-X server received and stored"
$PY - "$port" "$uuid" <<'PYEOF'
import json, sys, urllib.request
port, uuid = sys.argv[1], sys.argv[2]
get = lambda p: json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/_control/{p}"))
for r in get("requests"):
    print(f"request {r['seq']}: HTTP {r['status']}, {r['n_records']} records, "
          f"batch {r['batch_uuid']}, batch_completed={str(r['batch_completed']).lower()}")
state = get(f"state?uuid={uuid}")
recs = state["records"]
print(f"stored records: {len(recs)}; open batches: {len(state['open_batches'])}; "
      f"completed batches: {len(state['completed_batches'])}")
print("record 5999:", json.dumps(recs.get("5999")))
print("record 8000 (from prices.csv):", json.dumps(recs.get("8000")))
print("record 9499 (from archive.ndjson.gz):", json.dumps(recs.get("9499")))
PYEOF
echo
echo "== files"
find "$work/spool" "$work/state/done" -type f | sed "s|$work/||" | sort
echo
echo "== rejected lines"
cat "$work/spool/products/rejected/"*.rejected.ndjson
echo
echo "(everything is under $work)"
