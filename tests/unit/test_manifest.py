"""The manifest's format: round trip, and strict rejection of anything foreign or malformed."""

import json

import pytest

from crikpy.checkpoint.manifest import FileEntry, Manifest, is_id, new_id
from crikpy.errors import CorruptCheckpoint
from tests.helpers import sample_describe


def sample(**overrides) -> Manifest:
    return Manifest(**sample_describe(
        id=new_id(), name="ns/app", stdio={"1": "pipe:[1]"}, hostname="node-a", dump_seconds=1.5,
        files=[FileEntry("images/pages-1.img", 10, "a" * 64)], **overrides))


def test_round_trip():
    m = sample()
    assert Manifest.from_json(m.to_json(), where="test") == m
    assert m.total_bytes == 10


def test_ids_are_recognised():
    assert is_id(new_id()) and not is_id("../etc")


def tamper(change) -> bytes:
    raw = json.loads(sample().to_json())
    change(raw)
    return json.dumps(raw).encode()


@pytest.mark.parametrize("data, message", [
    (b"not json", "not JSON"),
    (tamper(lambda r: r.update(format="crik/v0")), "another tool"),
    (tamper(lambda r: r.pop("kernel")), "lacks fields ['kernel']"),
    (tamper(lambda r: r["files"][0].update(path="../../etc/passwd")), "unsafe file path"),
    (tamper(lambda r: r["files"][0].update(sha256="xyz")), "bad sha256"),
    (tamper(lambda r: r.update(root_pid="9001")), "must be a PID"),
])
def test_foreign_or_malformed_manifests_are_rejected(data, message):
    with pytest.raises(CorruptCheckpoint) as e:
        Manifest.from_json(data, where="of test")
    assert message in str(e.value)
