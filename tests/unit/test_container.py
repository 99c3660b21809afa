"""The container's files and the program's identity, below the end-to-end tests
(tests/e2e/test_what_migrates.py): which mounts are carried, what a new version is, and what a
hostile checkpoint's container files or program record may not do."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crikpy.container import changes, identity, mounts
from crikpy.errors import CorruptCheckpoint

# /proc/self/mountinfo of a Kubernetes container: its root, /dev and /dev/shm, an emptyDir, a
# PVC, a ConfigMap and the projected ServiceAccount token.
MOUNTINFO = """\
80 55 0:41 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
81 80 0:44 / /proc rw - proc proc rw
82 80 0:45 / /dev rw - tmpfs tmpfs rw
88 82 0:40 / /dev/shm rw - tmpfs shm rw,size=64000k
90 80 254:0 /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache /cache rw - ext4 /dev/vda rw
91 80 254:0 /var/lib/kubelet/pods/u1/volumes/kubernetes.io~csi/pvc-1/mount /data rw - ext4 /dev/sdb rw
92 80 0:50 /..data /etc/app\\040config rw - tmpfs tmpfs rw
93 80 0:51 / /var/run/secrets/kubernetes.io/serviceaccount ro - tmpfs tmpfs rw
"""


def test_mounts_are_carried_by_whether_they_follow_the_pod():
    carry = {m.point: m.carry for m in mounts.parse(MOUNTINFO)}
    assert carry["/"] is mounts.Carry.CHANGES
    assert carry["/dev/shm"] is carry["/cache"] is mounts.Carry.WHOLE
    for left in ("/proc", "/dev", "/data", "/etc/app config",
                 "/var/run/secrets/kubernetes.io/serviceaccount"):
        assert carry[left] is mounts.Carry.NONE, left


def test_a_path_is_carried_by_the_deepest_mount_that_holds_it():
    scope = changes.Scope.of(mounts.parse(MOUNTINFO), ["/var/lib/crikpy/work"], 1000)
    for carried in ("/opt/app/state.db", "/dev/shm/psm_1", "/cache/x/y", "/tmp/f"):
        assert scope.carries(carried), carried
    for alone in ("/proc/1/environ", "/dev/null", "/data/db", "/var/lib/crikpy/work/dump-1",
                  "/etc/app config/key", "/dev/shm"):
        assert not scope.carries(alone), alone


def _identity(**kw) -> identity.Identity:
    base = dict(image={"/usr/lib": "a" * 16}, mapped={}, command=identity.command(["app"]),
                environment=identity.environment({"MODE": "fast"}), revision="r1")
    return identity.Identity(**{**base, **kw})


def test_what_differs_per_pod_is_not_a_new_version():
    one = identity.environment({"MODE": "fast", "HOSTNAME": "web-1", "POD_UID": "u1",
                                "POD_IP": "10.0.0.1", "DB_SERVICE_HOST": "10.1.0.1",
                                "DB_SERVICE_PORT_HTTP": "80", "DB_PORT": "tcp://10.1.0.1:80",
                                "DB_PORT_80_TCP_ADDR": "10.1.0.1", "SEED": "1"}, ["SEED"])
    two = identity.environment({"MODE": "fast", "HOSTNAME": "web-2", "POD_UID": "u2",
                                "NEW_SERVICE_HOST": "10.1.0.7", "SEED": "2"}, ["SEED"])
    assert one == two == identity.environment({"MODE": "fast"})
    # A port of the user's own is a setting, not a service link.
    assert identity.environment({"APP_PORT": "8080"}) != identity.environment({"APP_PORT": "9090"})


@pytest.mark.parametrize("change, named", [
    (dict(image={"/usr/lib": "b" * 16}), "image files under /usr/lib"),
    (dict(command=identity.command(["app", "--v2"])), "command"),
    (dict(environment=identity.environment({"MODE": "slow"})), "environment: MODE"),
    (dict(revision="r2"), "pod revision r1 -> r2"),
])
def test_a_new_version_is_named(change, named):
    assert _identity(**change).changes_from(_identity()) == [named]
    assert _identity().changes_from(_identity()) == []


def test_a_start_without_a_command_or_a_revision_compares_the_rest():
    assert _identity(command="", revision=None).changes_from(_identity()) == []


def test_a_mapped_file_that_changed_is_named(tmp_path):
    lib = tmp_path / "libx.so"
    lib.write_bytes(b"v1")
    st = lib.stat()
    old = _identity(mapped={str(lib): [st.st_size, st.st_mtime_ns]})
    assert old.changes_from(old) == []
    lib.write_bytes(b"v2 longer")
    assert old.changes_from(old) == [f"{lib} (size 2 -> 9)"]


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=3)
                    | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12))
def test_any_program_record_parses_or_is_refused_as_malformed(raw):
    try:
        identity.parse(raw)
    except ValueError:
        pass


def _checkpoint(tmp_path, members: list[tarfile.TarInfo], deleted=(), whole=()):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            tar.addfile(m, io.BytesIO(b"x" * m.size) if m.isreg() else None)
    (tmp_path / changes.ARCHIVE).write_bytes(buf.getvalue())
    (tmp_path / changes.LISTING).write_text(json.dumps({"deleted": list(deleted),
                                                        "whole": list(whole)}))


def _member(name: str, kind=tarfile.REGTYPE, size=1) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.size = kind, size if kind == tarfile.REGTYPE else 0
    return m


@pytest.mark.parametrize("members, deleted", [
    ([_member("../etc/passwd")], ()),
    ([_member("/etc/passwd")], ()),
    ([_member("opt/a"), _member("opt/a")], ()),
    ([_member("dev/null", tarfile.CHRTYPE)], ()),
    ([_member("data/db")], ()),  # a PVC: left alone
    ([_member("proc/sys/kernel/core_pattern")], ()),
    ([], ["/data/db"]),
    ([], ["relative"]),
], ids=["dotdot", "absolute", "twice", "device", "volume", "proc", "deletes-in-volume",
        "relative-delete"])
def test_hostile_container_files_are_corrupt_and_nothing_is_written(tmp_path, members, deleted):
    _checkpoint(tmp_path, members, deleted)
    scope = changes.Scope.of(mounts.parse(MOUNTINFO), [], 1000)
    with pytest.raises(CorruptCheckpoint):
        changes.put_back(tmp_path, scope, authenticated=False)


def test_a_checkpoint_without_container_files_puts_nothing_back(tmp_path):
    scope = changes.Scope.of(mounts.parse(MOUNTINFO), [], 1000)
    assert changes.put_back(tmp_path, scope, authenticated=True) is None


def test_a_listing_past_its_bound_is_refused_naming_the_setting(tmp_path):
    for i in range(5):
        (tmp_path / str(i)).write_text("x")
    with pytest.raises(Exception, match="--max-container-files"):
        changes.take([str(tmp_path)], (), 3)
