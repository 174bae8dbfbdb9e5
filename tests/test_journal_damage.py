"""A journal damaged in the middle: dcsyncd keeps every record the framing allows, says what was lost,
keeps the damaged file aside, and finishes every batch without a false word.

Each test uploads five files (batch_records=300: four requests each, keys overlapping so the newest
file must win), kills the daemon with SIGKILL after the second acknowledged request of the fifth
file (its batch open at the server), flips 4 bytes of the journal, and runs `dcsyncd --once` again.
Needs a build with crash points (meson -Dcrashpoints=true).

  test_damage_in_the_middle[10%|50%|90%|10%+50%+90%]: 4 bytes flipped at those fractions of the journal.
  test_damage_hits_the_end_of_a_batch: the COMPLETED and ARCHIVED records of the first file's batch both
      hit: its last known state is "open", its file is in done/: it is finished, not failed.
  test_damage_hits_the_open_batch: the OPEN record of the batch open at the server hit: it is not
      forgotten, it resumes after its last acknowledgement, under its own batch_uuid.

What is checked after the restart: every record at the server with the newest file's value, no batch
open at the server, each file under one batch_uuid, every file in done/ (check_final of test_crash.py);
the open batch resumed under its uuid; no line saying a file failed, was moved to failed/ or was never
sent; one error line naming the bytes skipped and where the damaged journal is kept; that copy equal
byte for byte to the damaged journal; and a further start finding nothing damaged and copying nothing.
"""
import os
import re

import pytest

from harness import UUID1
from test_crash import (BASE_MTIME_NS, CONN, SpoolFile, check_final, compare_store, configure, need_crashpoints,
                        run_once, shuffled)

BATCH_RECORDS = 300


def five_files():
    """Keys of file k: [600k, 600k + 1200) shuffled (so a request's keys name one file), each file
    overlapping the next by 600 keys; newer by mtime."""
    return [SpoolFile(f"f{k}.ndjson", shuffled(range(600 * k, 600 * k + 1200), k), f"v{k}",
                      BASE_MTIME_NS + k * 10**9) for k in range(5)]


def records(image):
    """[(offset, length incl. header, type, batch id, state)] of a journal image (id/state for 'S', a batch's state)."""
    out, pos = [], 0
    while pos + 8 <= len(image):
        n = int.from_bytes(image[pos:pos + 4], "little")
        assert 9 <= n <= 4096 and pos + 8 + n <= len(image), f"journal not well-formed at {pos}"
        payload = image[pos + 8:pos + 8 + n]
        kind = chr(payload[0])
        bid = int.from_bytes(payload[1:9], "little") if kind == "S" else None
        state = int.from_bytes(payload[9:17], "little") if kind == "S" else None
        out.append((pos, 8 + n, kind, bid, state))
        pos += 8 + n
    assert pos == len(image), f"{len(image) - pos} stray bytes at the end of the journal"
    return out


def crash_mid_fifth_file(daemon, optix):
    """Upload the five files and die after the 2nd acknowledgement of the 5th: its batch stays open."""
    need_crashpoints(daemon)
    configure(daemon, optix, batch_records=BATCH_RECORDS)
    files = five_files()
    for f in files:
        f.drop(daemon)
    # after-ack fires after each acknowledgement followed by another request: 3 per file.
    proc, log = run_once(daemon, "after-ack:14")
    assert proc.returncode == -9, f"exit {proc.returncode}\n{log[-3000:]}"
    open_at_crash = list(optix.state(UUID1)["open_batches"])
    assert len(open_at_crash) == 1, f"expected one batch open at the server: {open_at_crash}"
    return files, open_at_crash[0]


def flip(image, offsets):
    data = bytearray(image)
    for at in offsets:
        for i in range(at, at + 4):
            data[i] ^= 0x5A
    return bytes(data)


def hit_records(recs, offsets):
    return [r for r in recs if any(r[0] < at + 4 and at < r[0] + r[1] for at in offsets)]


def restart_and_check(daemon, optix, files, open_batch, image, offsets):
    """Damage the journal at offsets, run again, check everything (see the module docstring)."""
    journal = daemon.state_dir / "journal"
    damaged = flip(image, offsets)
    journal.write_bytes(damaged)
    proc, log = run_once(daemon)
    assert proc.returncode == 0, f"restart: exit {proc.returncode}\n{log[-4000:]}"

    check_final(daemon, optix, files, where="after the damage: ")
    assert f"resuming batch {open_batch}" in log, f"the open batch {open_batch} was not resumed:\n{log[-3000:]}"
    for false in ("failed for good", "moved to", "never sent", "taken before a restart"):
        assert false not in log, f"the log says {false!r}, which is false here:\n{log[-3000:]}"

    m = re.search(r"^error: journal \S+ is damaged in the middle: bytes skipped: (.*?) \((\d+) of (\d+) bytes\)",
                  log, re.M)
    assert m, f"no error line about the damage:\n{log[-3000:]}"
    recs = records(image)
    hit = hit_records(recs, offsets)
    said = [(int(n), int(at)) for n, at in re.findall(r"(\d+) at offset (\d+)", m.group(1))]
    # Adjacent hit records make one stretch.
    want = []
    for off, n, *_ in hit:
        if want and want[-1][1] + want[-1][0] == off:
            want[-1] = (want[-1][0] + n, want[-1][1])
        else:
            want.append((n, off))
    assert said == want, f"the log names the stretches {said}, the flips hit {want}"

    copies = sorted(daemon.state_dir.glob("journal.damaged-*"))
    assert len(copies) == 1, f"expected one copy of the damaged journal: {copies}"
    assert re.search(rf"the damaged journal is kept as {re.escape(str(copies[0]))}$", log, re.M), \
        f"the log does not say where the copy is:\n{log[-3000:]}"
    assert copies[0].read_bytes() == damaged, "the copy aside is not the damaged journal byte for byte"

    proc, again = run_once(daemon)
    assert proc.returncode == 0 and "damaged" not in again and "torn" not in again, \
        f"the next start still finds damage:\n{again[-3000:]}"
    assert len(list(daemon.state_dir.glob("journal.damaged-*"))) == 1, "a second copy was made"
    return log, hit


@pytest.mark.parametrize("where", [(10,), (50,), (90,), (10, 50, 90)],
                         ids=["10%", "50%", "90%", "10%+50%+90%"])
def test_damage_in_the_middle(daemon, optix, where):
    files, open_batch = crash_mid_fifth_file(daemon, optix)
    image = (daemon.state_dir / "journal").read_bytes()
    offsets = [len(image) * p // 100 for p in where]
    restart_and_check(daemon, optix, files, open_batch, image, offsets)


def test_damage_hits_the_end_of_a_batch(daemon, optix):
    files, open_batch = crash_mid_fifth_file(daemon, optix)
    image = (daemon.state_dir / "journal").read_bytes()
    recs = records(image)
    first = min(r[3] for r in recs if r[2] == "S")
    end = [r for r in recs if r[2] == "S" and r[3] == first and r[4] in (2, 3)]
    assert [r[4] for r in end] == [2, 3], f"batch {first}: expected a COMPLETED and an ARCHIVED record: {end}"
    log, _ = restart_and_check(daemon, optix, files, open_batch, image, [r[0] + r[1] // 2 for r in end])
    assert re.search(r"f0\.ndjson: batch [0-9a-f-]{36} was completed before the restart \(f0\.ndjson in done/", log), \
        f"the first file's batch was not reported completed:\n{log[-3000:]}"


def test_damage_hits_the_open_batch(daemon, optix):
    """The OPEN record of the batch open at the server is hit (its acknowledgements are not): the
    batch is not forgotten, it resumes after its last acknowledgement under its own batch_uuid."""
    files, open_batch = crash_mid_fifth_file(daemon, optix)
    image = (daemon.state_dir / "journal").read_bytes()
    recs = records(image)
    last = max(r[3] for r in recs if r[2] == "S")
    own = [r for r in recs if r[2] == "S" and r[3] == last]
    assert len(own) == 3 and own[0][4] == 1, f"the open batch: expected OPEN and two acknowledgements, got {own}"
    log, _ = restart_and_check(daemon, optix, files, open_batch, image, [own[0][0] + own[0][1] // 2])
    assert re.search(rf"resuming batch {open_batch} \(1 file\(s\)\) at request 3,", log), \
        f"the open batch did not resume after its last acknowledgement:\n{log[-3000:]}"


def test_damage_hits_only_the_open_batchs_member_record(daemon, optix):
    """The member record naming the open batch's file is hit, its OPEN and acknowledgements are
    not: the file left in .work/ under <id>-<the batch's name> is named again for that batch,
    which resumes after its last acknowledgement under its own batch_uuid (nothing left open at
    the server, nothing lost, newer data still last)."""
    files, open_batch = crash_mid_fifth_file(daemon, optix)
    journal = daemon.state_dir / "journal"
    image = journal.read_bytes()
    members = [r for r in records(image) if r[2] == "F"]
    target = members[-1]            # the fifth file's, the last batch opened
    journal.write_bytes(flip(image, [target[0] + target[1] // 2]))
    proc, log = run_once(daemon)
    assert proc.returncode == 0, f"restart: exit {proc.returncode}\n{log[-4000:]}"
    check_final(daemon, optix, files, where="member record hit: ")
    assert re.search(rf"f4\.ndjson: in \S+, its member record lost in the damaged journal: named again for batch "
                     rf"{open_batch}", log), log[-3000:]
    assert re.search(rf"resuming batch {open_batch} \(1 file\(s\)\) at request 3,", log), log[-3000:]


def test_a_lost_member_record_is_not_guessed_between_two_orphans_of_its_name(daemon, optix):
    """As above, but .work/ also holds an older take of a file of the same name that was never
    journaled: which orphan is the batch's is not known, so neither is named for it; both go
    back to the spool in their (mtime, name) order and up again, newest last."""
    files, _ = crash_mid_fifth_file(daemon, optix)
    journal = daemon.state_dir / "journal"
    image = journal.read_bytes()
    target = [r for r in records(image) if r[2] == "F"][-1]
    journal.write_bytes(flip(image, [target[0] + target[1] // 2]))
    work = daemon.spool("products") / ".work"
    older = [p for p in (daemon.state_dir / "done" / "products").rglob("f3.ndjson")][0]
    planted = work / "1-f4.ndjson"
    planted.write_bytes(older.read_bytes())
    planted.chmod(0o644)
    t = older.stat().st_mtime_ns
    os.utime(planted, ns=(t, t))
    proc, log = run_once(daemon)
    assert proc.returncode == 0, log[-3000:]
    assert "named again" not in log, log[-3000:]
    _, lost, stale, extra = compare_store(optix, files)
    assert not lost and not stale and not extra, (len(lost), len(stale), len(extra))
