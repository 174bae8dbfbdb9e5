"""Static checks of the systemd integration files and the man pages.

Run with:  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/test_unit_files.py

* ``systemd-analyze security --offline=true`` on systemd/dcsyncd.service must
  report an overall exposure of at most MAX_EXPOSURE.
* ``systemd-analyze verify`` must be clean.  verify insists that ExecStart=
  points at an existing executable and (with the default --man=yes) that the
  Documentation= man pages can be found by man(1).  Neither holds in a source
  tree, so the test verifies a copy of the unit whose ExecStart= binary is
  replaced by the built daemon ($DCSYNCD, else build/src/dcsyncd, as in
  tests/harness.py) or, when there is none, by a stub script, and points
  MANPATH at a scratch man tree holding packaging/man/*.  Everything else
  in the unit is verified unchanged.
* systemd-sysusers and systemd-tmpfiles apply the sysusers.d/tmpfiles.d
  entries to a scratch root (--root); the resulting accounts, directory
  modes and owners are checked.  Without root privileges (chown) the
  tmpfiles part falls back to a syntax check.
* ``groff -ww -z -man`` must accept both man pages without warnings, and
  every configuration key must be documented in dcsyncd.conf(5).

Tests that need a missing tool are skipped with the reason.
"""

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from harness import unit_settings

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD_DIR = ROOT / "systemd"
UNIT = SYSTEMD_DIR / "dcsyncd.service"
SYSUSERS = SYSTEMD_DIR / "dcsyncd.sysusers"
TMPFILES = SYSTEMD_DIR / "dcsyncd.tmpfiles"
MAN_DIR = ROOT / "packaging" / "man"
MAN_PAGES = {"dcsyncd.8": "man8", "dcsyncd.conf.5": "man5"}
EXAMPLE_CONF = ROOT / "conf" / "dcsyncd.conf"

MAX_EXPOSURE = 1.5
UNIT_BINARY = "/usr/bin/dcsyncd"

# Every key of dcsyncd.conf; each must appear in dcsyncd.conf(5).
CONFIG_KEYS = {
    "daemon": [
        "spool_dir", "state_dir", "log_level", "after_upload", "metrics_file",
        "drain_timeout_seconds",
    ],
    "connection": [
        "uuid", "primary_key", "base_url",
        "api_key", "api_key_file", "api_key_credential",
        "brand_key", "brand_key_file", "brand_key_credential",
        "ttl_seconds", "batch_records", "batch_bytes", "timeout_seconds",
        "required_fields", "max_record_bytes", "retry_initial_seconds",
        "retry_max_seconds", "retry_max_elapsed_seconds", "ca_file",
        "tls_verify_insecure_disable", "rate_limit",
    ],
}

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed")


def run(argv, **kwargs):
    env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="cat",
               SYSTEMD_LOG_COLOR="0")
    env.update(kwargs.pop("env", {}))
    return subprocess.run(argv, capture_output=True, text=True,
                          errors="replace", env=env, check=False, **kwargs)




def data_lines(path):
    return [line.split() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


# --- systemd unit ---------------------------------------------------------

def test_unit_essentials():
    s = unit_settings(UNIT.read_text())

    def one(section, key):
        values = s.get((section, key))
        assert values, f"[{section}] {key}= missing"
        return values[-1]

    assert one("Unit", "ConditionPathExists") == "/etc/dcsyncd/dcsyncd.conf"
    assert one("Service", "Type") == "notify"
    assert one("Service", "NotifyAccess") == "main"
    assert one("Service", "ExecStart") == \
        f"{UNIT_BINARY} -c /etc/dcsyncd/dcsyncd.conf"
    assert one("Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("Service", "WatchdogSec") == "30"
    assert one("Service", "Restart") == "on-failure"
    assert one("Service", "TimeoutStopSec") == "90"
    assert one("Service", "User") == "dcsync"
    assert one("Service", "Group") == "dcsync"
    assert one("Service", "StateDirectory") == "dcsyncd"
    assert "/var/spool/dcsyncd" in s[("Service", "ReadWritePaths")]
    assert one("Service", "RestrictAddressFamilies").split() == \
        ["AF_UNIX", "AF_INET", "AF_INET6"]
    # The daemon must reach the (non-fixed) API addresses.
    assert ("Service", "IPAddressDeny") not in s
    assert ("Service", "PrivateNetwork") not in s


@needs_analyze
def test_security_exposure():
    r = run([SYSTEMD_ANALYZE, "security", "--offline=true", "--no-pager",
             str(UNIT)])
    if r.returncode != 0 and "offline" in r.stderr and (
            "unrecognized" in r.stderr or "Unknown" in r.stderr):
        pytest.skip("systemd-analyze too old for --offline (needs >= 250)")
    output = r.stdout + r.stderr
    m = re.search(
        r"Overall exposure level for dcsyncd\.service:\s*(\d+(?:\.\d+)?)",
        output)
    assert m, f"no exposure level in output (rc={r.returncode}):\n{output}"
    exposure = float(m.group(1))
    assert exposure <= MAX_EXPOSURE, \
        f"exposure {exposure} > {MAX_EXPOSURE}:\n{output}"


@needs_analyze
def test_verify_clean(tmp_path):
    text = UNIT.read_text()
    assert text.count(f"ExecStart={UNIT_BINARY} ") == 1

    binary = os.environ.get("DCSYNCD")
    if binary:
        binary = str(Path(binary).resolve())
        assert os.access(binary, os.X_OK), f"DCSYNCD={binary}"
    elif os.access(ROOT / "build" / "src" / "dcsyncd", os.X_OK):
        binary = str(ROOT / "build" / "src" / "dcsyncd")
    else:
        stub = tmp_path / "bin" / "dcsyncd"
        stub.parent.mkdir()
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
        binary = str(stub)

    unit_dir = tmp_path / "unit"
    unit_dir.mkdir()
    copy = unit_dir / UNIT.name
    copy.write_text(text.replace(f"ExecStart={UNIT_BINARY} ",
                                 f"ExecStart={binary} "))

    argv = [SYSTEMD_ANALYZE, "verify", "--recursive-errors=no"]
    env = {}
    if shutil.which("man"):
        # Documentation=man:dcsyncd(8) man:dcsyncd.conf(5) must resolve.
        man_root = tmp_path / "man"
        for page, section in MAN_PAGES.items():
            (man_root / section).mkdir(parents=True, exist_ok=True)
            shutil.copy(MAN_DIR / page, man_root / section / page)
        env["MANPATH"] = str(man_root)
    else:
        argv.append("--man=no")
    r = run(argv + [str(copy)], env=env)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), \
        f"systemd-analyze verify (rc={r.returncode}):\n{r.stdout}{r.stderr}"


# --- sysusers.d / tmpfiles.d ------------------------------------------------

def test_sysusers_syntax():
    lines = data_lines(SYSUSERS)
    assert lines, "no entries"
    users = [f for f in lines if f[0] == "u"]
    assert len(users) == 1
    # u NAME ID "GECOS with spaces" HOME SHELL
    assert users[0][1] == "dcsync"
    assert users[0][-2] == "/var/lib/dcsyncd"


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None,
                    reason="systemd-sysusers not installed")
def test_sysusers_and_tmpfiles_apply(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    r = run(["systemd-sysusers", f"--root={root}", "-"],
            input=SYSUSERS.read_text())
    assert r.returncode == 0, r.stderr

    passwd = {f[0]: f for f in (line.split(":") for line in
              (root / "etc" / "passwd").read_text().splitlines())}
    group = {f[0]: f for f in (line.split(":") for line in
             (root / "etc" / "group").read_text().splitlines())}
    assert "dcsync" in passwd and "dcsync" in group
    user = passwd["dcsync"]
    uid, gid = int(user[2]), int(user[3])
    assert gid == int(group["dcsync"][2])
    assert uid < 1000, "not a system user"
    assert user[5] == "/var/lib/dcsyncd"
    assert user[6].endswith("nologin")

    if shutil.which("systemd-tmpfiles") is None:
        pytest.skip("systemd-tmpfiles not installed")
    if os.geteuid() != 0:
        pytest.skip("applying tmpfiles.d ownership needs root "
                    "(syntax is covered by test_tmpfiles_syntax)")
    r = run(["systemd-tmpfiles", f"--root={root}", "--create", "-"],
            input=TMPFILES.read_text())
    assert r.returncode == 0, r.stderr

    expected = {
        "etc/dcsyncd": (0o750, 0, gid),
        "var/lib/dcsyncd": (0o750, uid, gid),
        "var/spool/dcsyncd": (0o3770, uid, gid),
    }
    for rel, (mode, owner, grp) in expected.items():
        st = (root / rel).stat()
        assert stat.S_ISDIR(st.st_mode), rel
        assert stat.S_IMODE(st.st_mode) == mode, \
            f"{rel}: {oct(stat.S_IMODE(st.st_mode))} != {oct(mode)}"
        assert (st.st_uid, st.st_gid) == (owner, grp), rel


def test_tmpfiles_syntax():
    entries = {}
    for fields in data_lines(TMPFILES):
        assert len(fields) in range(2, 8), fields
        kind, path = fields[0], fields[1]
        assert kind.rstrip("!-+=~^") in set("fFwdDevqQpLcbCxXrRzZtThHaA"), \
            fields
        assert path.startswith("/"), fields
        entries[path] = fields
    assert entries["/etc/dcsyncd"][:5] == \
        ["d", "/etc/dcsyncd", "0750", "root", "dcsync"]
    assert entries["/var/lib/dcsyncd"][:5] == \
        ["d", "/var/lib/dcsyncd", "0750", "dcsync", "dcsync"]
    assert entries["/var/spool/dcsyncd"][:5] == \
        ["d", "/var/spool/dcsyncd", "3770", "dcsync", "dcsync"]
    # The daemon owns the spool's contents: no age-based cleanup.
    assert entries["/var/spool/dcsyncd"][5:6] in ([], ["-"])


def test_unit_matches_tmpfiles_and_sysusers():
    s = unit_settings(UNIT.read_text())
    paths = {fields[1] for fields in data_lines(TMPFILES)}
    for rw in s[("Service", "ReadWritePaths")]:
        for path in rw.split():
            if not path.startswith("-"):
                assert path in paths, f"ReadWritePaths={path} not created"
    assert "/var/lib/" + s[("Service", "StateDirectory")][-1] in paths
    sysusers_names = {f[1] for f in data_lines(SYSUSERS)}
    assert s[("Service", "User")][-1] in sysusers_names


# --- man pages --------------------------------------------------------------

@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
@pytest.mark.parametrize("page", sorted(MAN_PAGES))
def test_man_page_renders_cleanly(page):
    r = run(["groff", "-ww", "-z", "-man", str(MAN_DIR / page)])
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_man_page_documents_every_key():
    text = (MAN_DIR / "dcsyncd.conf.5").read_text()
    documented = set(re.findall(r"^\.B[IR]?\s+([a-z_]+)=", text, re.M))
    documented |= set(re.findall(r"^\\fB([a-z_]+)=", text, re.M))
    missing = [key for keys in CONFIG_KEYS.values() for key in keys
               if key not in documented]
    assert not missing, f"undocumented in dcsyncd.conf(5): {missing}"


def test_example_conf_keys_are_documented():
    if not EXAMPLE_CONF.exists():
        pytest.skip(f"{EXAMPLE_CONF.relative_to(ROOT)} not present")
    text = (MAN_DIR / "dcsyncd.conf.5").read_text()
    keys = set(re.findall(r"^[#;]?\s*([a-z][a-z0-9_]*)\s*=",
                          EXAMPLE_CONF.read_text(), re.M))
    missing = sorted(k for k in keys if not re.search(
        rf"^(\.B[IR]?\s+|\\fB){re.escape(k)}=", text, re.M))
    assert not missing, f"example keys missing from dcsyncd.conf(5): {missing}"
