"""Debian package test: build the .deb, unpack it into a scratch root, check what it installs.

Run with:  /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/test_package.py

* The package is built once per module with ``packaging/build-deb.sh`` (DEB_BUILD_OPTIONS gains
  ``nocheck``: the unit and integration suites run elsewhere in tests/run-tests.sh).  Skipped
  when dpkg-buildpackage is not installed or when not running as root (CI runs as root after
  tests/install-deps.sh has installed the build dependencies).
* The .deb is unpacked with ``dpkg-deb -x`` into a scratch root; nothing is installed on the
  machine and no maintainer script runs.  Checked there: ``usr/bin/dcsyncd --version`` prints
  the project version (meson.build); the unit, sysusers.d and tmpfiles.d files are the ones in
  systemd/; both man pages (version substituted) and the example configuration are shipped;
  /etc/dcsyncd/dcsyncd.conf is not (neither as a file nor as a conffile), and the unit has
  ConditionPathExists=/etc/dcsyncd/dcsyncd.conf, so the service cannot start before the
  administrator creates the configuration.
* ``systemd-analyze verify --root=<root>`` on the installed, unmodified unit must be clean (exit
  status 0, no output).  systemd 252 supports --root for verify: the unit and the binaries of
  its Exec*= lines are looked up inside the root, so ExecStart=/usr/bin/dcsyncd is checked
  against the unpacked binary (a negative control checks that the lookup really happens there).
  verify also loads the unit's dependencies (sysinit.target, network-online.target, ...) and
  checks ExecReload=/bin/kill, which other packages provide; the root used for verify is
  therefore completed with the host's systemd unit files (the init system) and, for Exec*=
  binaries the package does not ship, the host's file, after checking that the Debian package
  owning it is in the .deb's Depends.  The Documentation= man pages are resolved by the host's
  man(1), which ignores --root; MANPATH points it at the root's usr/share/man.
* ``systemd-analyze security --offline=true`` on the installed unit: exposure <= 1.5.
* ``dpkg-deb -I`` metadata: Package dcsyncd, version matching meson.build, Depends on the
  libraries (libcurl, libyajl, libev, libinih, libsystemd), Recommends ca-certificates; the
  maintainer scripts create the user (sysusers) before the directories (tmpfiles) and enable
  the unit; all files are owned by root, none is setuid/setgid.
"""

import gzip
import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from harness import unit_settings

ROOT = Path(__file__).resolve().parent.parent
BUILD_DEB = ROOT / "packaging" / "build-deb.sh"
MAX_EXPOSURE = 1.5
CONFIG = "/etc/dcsyncd/dcsyncd.conf"
UNIT_DIRS = ("lib/systemd/system", "usr/lib/systemd/system")
BUILD_TIMEOUT = 600

pytestmark = [
    pytest.mark.skipif(shutil.which("dpkg-buildpackage") is None,
                       reason="dpkg-buildpackage not installed (see tests/install-deps.sh)"),
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="not root (CI builds the package as root, see tests/install-deps.sh)"),
]
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed")


def run(argv, env=None, **kwargs):
    full_env = dict(os.environ, SYSTEMD_COLORS="0", SYSTEMD_PAGER="cat", SYSTEMD_LOG_COLOR="0",
                    LC_ALL="C.UTF-8")
    full_env.update(env or {})
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          errors="replace", env=full_env, check=False, **kwargs)


def project_version():
    m = re.search(r"^\s*version\s*:\s*'([^']+)'", (ROOT / "meson.build").read_text(), re.M)
    assert m, "no version in meson.build"
    return m.group(1)




def dep_names(field):
    """Package names in a Depends-style field (alternatives flattened, versions dropped)."""
    names = set()
    for clause in field.split(","):
        for alt in clause.split("|"):
            name = alt.strip().split(" ")[0].split("(")[0].split(":")[0]
            if name:
                names.add(name)
    return names


def find_one(root, candidates):
    found = [root / c for c in candidates if (root / c).exists()]
    assert found, f"none of {list(candidates)} in the package"
    return found[0]


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    """Path of the dcsyncd .deb built by packaging/build-deb.sh (once per module), or the one
    $DCSYNCD_DEB names (tests/run-tests.sh builds it once for this and tests/test_systemd.py)."""
    if os.environ.get("DCSYNCD_DEB"):
        return Path(os.environ["DCSYNCD_DEB"])
    work = tmp_path_factory.mktemp("deb")
    out, tmp = work / "out", work / "tmp"
    tmp.mkdir()
    opts = os.environ.get("DEB_BUILD_OPTIONS", "").split()
    if "nocheck" not in opts:
        opts.append("nocheck")
    if not any(o.startswith("parallel=") for o in opts):
        opts.append(f"parallel={os.cpu_count() or 1}")
    r = run(["sh", BUILD_DEB, out], env={"DEB_BUILD_OPTIONS": " ".join(opts), "TMPDIR": str(tmp)},
            cwd=ROOT, timeout=BUILD_TIMEOUT)
    log = r.stdout + r.stderr
    (work / "build.log").write_text(log)
    assert r.returncode == 0, f"build-deb.sh failed (rc={r.returncode}):\n{log[-6000:]}"
    debs = sorted(p for p in out.glob("dcsyncd_*.deb"))
    assert len(debs) == 1, f"expected one dcsyncd_*.deb in {out}: {sorted(out.iterdir())}"
    return debs[0]


def extract(deb, root):
    root.mkdir(parents=True)
    r = run(["dpkg-deb", "-x", deb, root])
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture(scope="module")
def scratch(deb, tmp_path_factory):
    """Scratch root holding the unpacked package (dpkg-deb -x); tests must not modify it."""
    return extract(deb, tmp_path_factory.mktemp("scratch") / "root")


@pytest.fixture(scope="module")
def fields(deb):
    r = run(["dpkg-deb", "-f", deb])
    assert r.returncode == 0, r.stderr
    result, key = {}, None
    for line in r.stdout.splitlines():
        if line[:1] in (" ", "\t") and key:
            result[key] += "\n" + line.strip()
        else:
            key, _, value = line.partition(":")
            result[key] = value.strip()
    return result


@pytest.fixture(scope="module")
def control(deb, tmp_path_factory):
    """Directory holding the control archive (dpkg-deb -e)."""
    d = tmp_path_factory.mktemp("control") / "DEBIAN"
    r = run(["dpkg-deb", "-e", deb, d])
    assert r.returncode == 0, r.stderr
    return d


def installed_unit(root):
    return find_one(root, [f"{d}/dcsyncd.service" for d in UNIT_DIRS])


# --- the binary -------------------------------------------------------------------------------

def test_binary_version(scratch):
    binary = scratch / "usr" / "bin" / "dcsyncd"
    assert os.access(binary, os.X_OK), "usr/bin/dcsyncd missing or not executable"
    r = run([binary, "--version"], timeout=30)
    assert r.returncode == 0, f"rc={r.returncode}\n{r.stdout}{r.stderr}"
    version = project_version()
    assert re.search(rf"(?<![\w.]){re.escape(version)}(?![\w.])", r.stdout), \
        f"--version does not print {version}: {r.stdout!r}"


# --- files ------------------------------------------------------------------------------------

def test_systemd_files_installed(scratch):
    unit = installed_unit(scratch)
    assert unit.read_text() == (ROOT / "systemd" / "dcsyncd.service").read_text()
    sysusers = find_one(scratch, ["usr/lib/sysusers.d/dcsyncd.conf", "lib/sysusers.d/dcsyncd.conf"])
    assert sysusers.read_text() == (ROOT / "systemd" / "dcsyncd.sysusers").read_text()
    tmpfiles = find_one(scratch, ["usr/lib/tmpfiles.d/dcsyncd.conf", "lib/tmpfiles.d/dcsyncd.conf"])
    assert tmpfiles.read_text() == (ROOT / "systemd" / "dcsyncd.tmpfiles").read_text()


@pytest.mark.parametrize("page,section", [("dcsyncd.8", "man8"), ("dcsyncd.conf.5", "man5")])
def test_man_page_installed(scratch, page, section):
    base = scratch / "usr" / "share" / "man" / section
    path = find_one(base, [page + ".gz", page])
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    # The source's .TH footer carries @VERSION@; the build substitutes the project version.
    source = (ROOT / "packaging" / "man" / page).read_text()
    assert "@VERSION@" in source
    assert data.decode() == source.replace("@VERSION@", project_version())


def test_example_config_installed(scratch):
    path = find_one(scratch / "usr" / "share" / "doc" / "dcsyncd" / "examples",
                    ["dcsyncd.conf", "dcsyncd.conf.gz"])
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    assert data == (ROOT / "conf" / "dcsyncd.conf").read_bytes()


def test_monitoring_files_installed(scratch):
    """The alert rules, their unit tests and the dashboard, where docs/operations.md says."""
    d = scratch / "usr/share/dcsyncd/monitoring"
    names = sorted(p.name for p in d.iterdir()) if d.is_dir() else []
    assert names == ["dcsyncd-dashboard.json", "dcsyncd.rules.test.yml", "dcsyncd.rules.yml"], names


def test_configuration_not_shipped(scratch, control):
    # The unit must stay inactive until the administrator creates the configuration.
    assert not (scratch / CONFIG.lstrip("/")).exists(), f"{CONFIG} is shipped"
    conffiles = control / "conffiles"
    if conffiles.exists():
        assert CONFIG not in conffiles.read_text().split(), f"{CONFIG} is a conffile"
    s = unit_settings(installed_unit(scratch).read_text())
    assert s.get(("Unit", "ConditionPathExists")) == [CONFIG]
    assert any(CONFIG in v for v in s[("Service", "ExecStart")])


def test_data_archive_root_owned(deb):
    # Rules-Requires-Root: no must still produce root:root files.
    r = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as tar:
        members = tar.getmembers()
    wrong = [f"{m.name} {m.uid}:{m.gid}" for m in members if (m.uid, m.gid) != (0, 0)]
    assert not wrong, wrong
    setid = [m.name for m in members if m.mode & 0o6000]
    assert not setid, f"setuid/setgid files: {setid}"


# --- systemd-analyze --------------------------------------------------------------------------

def owning_package(path):
    """Debian package that owns a host path (dpkg -S), trying the path and its canonical form."""
    for candidate in dict.fromkeys([path, os.path.realpath(path)]):
        r = run(["dpkg-query", "-S", candidate])
        if r.returncode == 0:
            return r.stdout.split(":")[0].split(",")[0].strip()
    return None


def exec_binaries(settings):
    """Absolute command paths of the unit's Exec*= lines (prefixes like '-' or '+' removed)."""
    paths = []
    for (section, key), values in settings.items():
        if section == "Service" and key.startswith("Exec"):
            for value in values:
                if value:
                    paths.append(value.split()[0].lstrip("-@:+!"))
    return paths


@needs_analyze
def test_verify_installed_unit(deb, fields, tmp_path):
    root = extract(deb, tmp_path / "root")
    unit = installed_unit(root)
    unit_in_root = "/" + str(unit.relative_to(root))
    depends = dep_names(fields.get("Pre-Depends", "") + "," + fields.get("Depends", ""))

    # What the rest of the system provides.  The init system's units:
    host_units = next((Path(d) for d in ("/usr/lib/systemd/system", "/lib/systemd/system")
                       if Path(d, "sysinit.target").exists()), None)
    assert host_units, "no systemd unit directory with sysinit.target on this machine"
    shutil.copytree(host_units, root / "usr" / "lib" / "systemd" / "system", symlinks=True,
                    dirs_exist_ok=True, ignore=shutil.ignore_patterns("dcsyncd*"))
    # Exec*= commands from other packages, which must be declared dependencies:
    for path in exec_binaries(unit_settings(unit.read_text())):
        assert path.startswith("/"), f"Exec command {path} is not absolute"
        target = root / path.lstrip("/")
        if os.path.lexists(target):
            continue
        assert os.access(path, os.X_OK), f"{path} (from the unit) is not on this machine"
        owner = owning_package(path)
        assert owner, f"no Debian package owns {path}"
        assert owner in depends, f"the unit runs {path} from {owner}, which is not in Depends"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)

    argv = ["systemd-analyze", "verify", f"--root={root}"]
    env = {}
    if shutil.which("man"):
        env["MANPATH"] = str(root / "usr" / "share" / "man")
    else:
        argv.append("--man=no")
    r = run(argv + [unit_in_root], env=env, timeout=60)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), \
        f"systemd-analyze verify (rc={r.returncode}):\n{r.stdout}{r.stderr}"

    # Negative control: ExecStart= is resolved inside the root, not on the machine.
    binary = root / "usr" / "bin" / "dcsyncd"
    binary.rename(binary.with_name("dcsyncd.moved"))
    r = run(argv + [unit_in_root], env=env, timeout=60)
    assert r.returncode != 0 and "/usr/bin/dcsyncd" in r.stdout + r.stderr, \
        f"verify did not notice the missing binary (rc={r.returncode}):\n{r.stdout}{r.stderr}"


@needs_analyze
def test_security_exposure(scratch):
    unit_in_root = "/" + str(installed_unit(scratch).relative_to(scratch))
    r = run(["systemd-analyze", "security", "--offline=true", "--no-pager", f"--root={scratch}",
             unit_in_root], timeout=60)
    output = r.stdout + r.stderr
    m = re.search(r"Overall exposure level for dcsyncd\.service:\s*(\d+(?:\.\d+)?)", output)
    assert m, f"no exposure level in output (rc={r.returncode}):\n{output}"
    assert float(m.group(1)) <= MAX_EXPOSURE, f"exposure {m.group(1)} > {MAX_EXPOSURE}:\n{output}"


# --- metadata ---------------------------------------------------------------------------------

def test_metadata(deb, fields):
    assert fields.get("Package") == "dcsyncd"
    version = fields.get("Version", "")
    upstream = re.sub(r"-[^-]*$", "", version.split(":", 1)[-1])
    assert upstream == project_version(), \
        f"package version {version} but meson.build says {project_version()}"
    depends = dep_names(fields.get("Depends", ""))
    for lib in ("libcurl", "libyajl", "libev", "libinih", "libsystemd"):
        assert any(d.startswith(lib) for d in depends), f"no {lib}* in Depends: {sorted(depends)}"
    assert "ca-certificates" in dep_names(fields.get("Recommends", ""))
    r = run(["dpkg-deb", "-I", deb])
    assert r.returncode == 0 and "Package: dcsyncd" in r.stdout, r.stdout + r.stderr


def test_maintainer_scripts(control):
    postinst = (control / "postinst").read_text()
    sysusers = postinst.find("systemd-sysusers")
    tmpfiles = postinst.find("systemd-tmpfiles")
    assert sysusers >= 0, "postinst does not create the dcsync user"
    assert tmpfiles >= 0, "postinst does not create the directories"
    # tmpfiles.d chowns to dcsync, which must exist first.
    assert sysusers < tmpfiles
    assert "enable 'dcsyncd.service'" in postinst
    # Purge removes the configuration the administrator created (not a conffile).
    assert "/etc/dcsyncd" in (control / "postrm").read_text()
