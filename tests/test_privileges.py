"""The unprivileged test mode is real: the daemon runs as its own user with no capability and the
unit's UMask, drops belong to another user (the exporter) of the shared group, and both can do
their part of the drop protocol in the layout sysusers.d/tmpfiles.d make.

Run with:  DCSYNCD=build/src/dcsyncd /usr/bin/python3 -m pytest -q tests/test_privileges.py
(as root; in the root mode, DCSYNCD_TEST_PRIV=root or not root, these tests say they skipped).
"""

import os
import stat
import subprocess

import pytest

import gen_ndjson
from harness import DAEMON_USER, EXPORTER_USER, PRIV_ENV, TEST_GROUP, UUID1, privileges, wait_for

pytestmark = pytest.mark.skipif(
    not privileges().unprivileged,
    reason=f"root mode: the daemon runs as the test process (run as root without {PRIV_ENV}=root "
           f"for the unprivileged mode)")

# Not sys.executable: a python under /root (pyenv, a venv) is out of the exporter's reach.
PYTHON = "/usr/bin/python3"
CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")


def proc_status(pid):
    """/proc/PID/status as {field: value text}."""
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def records(start, n):
    return [gen_ndjson.record(i) for i in range(start, start + n)]


def test_daemon_runs_as_its_user_without_capabilities_and_reads_the_exporters_files(optix, daemon):
    priv = daemon.priv
    daemon.write_config([daemon.connection(optix)])
    path = daemon.drop("products", "a.ndjson", records(0, 5))
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (priv.exporter_uid, priv.group_gid), \
        f"{path} is {st.st_uid}:{st.st_gid}, want {EXPORTER_USER}:{TEST_GROUP}"
    assert st.st_uid != priv.daemon_uid
    # Readable by the daemon through the group only.
    assert stat.S_IMODE(st.st_mode) == 0o640, oct(st.st_mode)
    spool, state = daemon.spool_dir.stat(), daemon.state_dir.stat()
    assert (spool.st_uid, spool.st_gid, stat.S_IMODE(spool.st_mode)) == (priv.daemon_uid, priv.group_gid, 0o3770)
    assert (state.st_uid, stat.S_IMODE(state.st_mode)) == (priv.daemon_uid, 0o750)

    daemon.start()
    daemon.wait_log(r"1 connection\(s\)")
    status = proc_status(daemon.pid)
    assert status["Name"].startswith("dcsyncd"), status["Name"]
    assert status["Uid"].split() == [str(priv.daemon_uid)] * 4, status["Uid"]
    assert status["Gid"].split() == [str(priv.daemon_gid)] * 4, status["Gid"]
    assert int(priv.group_gid) in map(int, status["Groups"].split()), status["Groups"]
    assert "0" not in status["Groups"].split(), status["Groups"]
    for field in CAP_FIELDS:
        assert int(status[field], 16) == 0, f"{field}: {status[field]}"
    assert status["NoNewPrivs"] == "1"
    assert int(status["Umask"], 8) == priv.umask == 0o027

    wait_for(lambda: (daemon.state_dir / "done" / "products" / "a.ndjson").exists(),
             what="a.ndjson archived", daemon=daemon)
    assert daemon.stop() == 0
    assert optix.records(UUID1) == {str(i): gen_ndjson.expected(i) for i in range(5)}
    journal = (daemon.state_dir / "journal").stat()
    assert journal.st_uid == priv.daemon_uid
    assert not stat.S_IMODE(journal.st_mode) & 0o027, f"journal mode {oct(journal.st_mode)} ignores UMask"


def test_an_exporter_process_drops_into_the_directory_the_daemon_made(optix, daemon):
    """The connection directory is the daemon's (made at start, under UMask 0027): a real process of
    another user in the group must still be able to drop into it."""
    priv = daemon.priv
    daemon.write_config([daemon.connection(optix)])
    conn_dir = daemon.spool_dir / "products"
    assert not conn_dir.exists()
    daemon.start()
    wait_for(conn_dir.exists, what="the daemon to make its connection directory", daemon=daemon)
    st = conn_dir.stat()
    assert (st.st_uid, st.st_gid) == (priv.daemon_uid, priv.group_gid)

    writer = ("import os, sys\n"
              "d, data = sys.argv[1], sys.stdin.buffer.read()\n"
              "tmp = os.path.join(d, '.b.ndjson.tmp')\n"
              "with open(tmp, 'wb') as f:\n"
              "    f.write(data)\n"
              "st = os.stat(tmp)\n"
              "os.rename(tmp, os.path.join(d, 'b.ndjson'))\n"
              "print(st.st_uid, st.st_gid, oct(st.st_mode), os.getuid(), os.getgid(), *os.getgroups())\n")
    proc = daemon.exporter_popen([PYTHON, "-c", writer, conn_dir], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate("".join(l + "\n" for l in records(10, 5)).encode(), timeout=30)
    assert proc.returncode == 0, err.decode()
    file_uid, file_gid, file_mode, uid, gid, *groups = out.decode().split()
    assert (int(uid), int(gid)) == (priv.exporter_uid, priv.exporter_gid), out
    assert str(priv.group_gid) in groups, out
    # Its own file, in the shared group by the directory's setgid bit, under its umask.
    assert (int(file_uid), int(file_gid), int(file_mode, 8)) == \
        (priv.exporter_uid, priv.group_gid, stat.S_IFREG | 0o640), out

    wait_for((daemon.state_dir / "done" / "products" / "b.ndjson").exists, what="b.ndjson archived",
             daemon=daemon)
    assert daemon.stop() == 0
    assert optix.records(UUID1) == {str(i): gen_ndjson.expected(i) for i in range(10, 15)}


def test_the_test_users_exist_as_the_deployed_ones_do():
    """DAEMON_USER's primary group is the shared one (sysusers.d's dcsync:dcsync); EXPORTER_USER
    has its own and is a member of the shared one."""
    import grp
    import pwd
    d, x, g = pwd.getpwnam(DAEMON_USER), pwd.getpwnam(EXPORTER_USER), grp.getgrnam(TEST_GROUP)
    assert d.pw_uid != 0 and x.pw_uid != 0 and d.pw_uid != x.pw_uid
    assert d.pw_gid == g.gr_gid and x.pw_gid != g.gr_gid
    assert EXPORTER_USER in g.gr_mem


def test_an_exporters_rejected_directory_is_set_aside_naming_its_owner_and_never_written_into(optix, daemon):
    priv = daemon.priv
    daemon.write_config([daemon.connection(optix)])
    conn = daemon.spool("products")
    theirs = conn / "rejected"
    theirs.mkdir()
    priv.give_to_exporter(theirs)
    os.chmod(theirs, 0o2777)        # even one the daemon could write into
    daemon.drop("products", "mixed.ndjson", [*records(0, 3), "{not json"])
    proc = daemon.run_once()
    assert proc.returncode == 1, proc.stderr
    assert f"rejected was owned by uid {priv.exporter_uid}, not by dcsyncd's user" in proc.stderr, proc.stderr
    aside = conn / f".not-dcsyncd-{priv.exporter_uid}-rejected"
    assert aside.is_dir() and list(aside.iterdir()) == [], "the exporter's directory was written into"
    st = theirs.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (priv.daemon_uid, 0o750 | (st.st_mode & stat.S_ISGID)), st
    assert (theirs / "mixed.ndjson.rejected.ndjson").read_text().count("\n") >= 1


def test_a_connection_directory_of_an_exporters_is_not_used_and_its_owner_named(optix, daemon):
    priv = daemon.priv
    daemon.write_config([daemon.connection(optix)])
    conn = daemon.spool_dir / "products"
    conn.mkdir()
    priv.give_to_exporter(conn)
    daemon.drop("products", "a.ndjson", records(0, 3))
    proc = daemon.run_once()
    assert f"is owned by uid {priv.exporter_uid}, not by dcsyncd's user: not used" in proc.stderr, proc.stderr
    assert optix.requests(UUID1) == []


def test_connection_directories_the_daemon_makes_are_sticky(optix, daemon):
    daemon.write_config([daemon.connection(optix)])
    os.makedirs(daemon.spool_dir, exist_ok=True)
    assert daemon.run_once().returncode == 0
    st = (daemon.spool_dir / "products").stat()
    assert st.st_uid == daemon.priv.daemon_uid and st.st_mode & stat.S_ISVTX, oct(st.st_mode)
