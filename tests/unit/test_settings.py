"""Settings: flag/env values over the config file over defaults; crik's keys; clear errors."""

import json
import re
from pathlib import Path

import pytest

from crikpy.errors import ConfigError
from crikpy.settings import Settings, resolve
from crikpy.settings_table import SETTINGS


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_use_hostname_and_pod_namespace(tmp_path):
    s = resolve({}, None, {"HOSTNAME": "web-0", "POD_NAMESPACE": "prod"})
    assert (s.name, s.namespace, s.workload_key) == ("web-0", "prod", "prod/web-0")
    assert s.store == Settings.store and s.keep_checkpoints == 2 and s.pid_floor == 9000


def test_given_values_beat_config_which_beats_defaults(tmp_path):
    config = write(tmp_path, "store: file:///from-config\nname: cfg\nkeepCheckpoints: 5\n")
    s = resolve({"store": "file:///from-flag", "name": None}, config, {"HOSTNAME": "host"})
    assert s.store == "file:///from-flag"  # given (flag or env) wins
    assert s.name == "cfg"  # config beats the hostname default
    assert s.keep_checkpoints == 5


def test_crik_keys_map_onto_crikpy_settings(tmp_path):
    config = write(tmp_path, "imageDir: /mnt/ckpt\nadditionalPaths: [/data]\n"
                             "inotifyIncompatiblePaths: [/tmp/x]\n"
                             "nodeStateServerURL: http://nss:8080\n")
    s = resolve({}, config, {"HOSTNAME": "h", "NODE_NAME": "node-a"})
    assert s.store == "file:///mnt/ckpt"
    assert s.additional_paths == ("/data",)
    assert s.inotify_incompatible_paths == ("/tmp/x",)
    assert s.node_state_server_url == "http://nss:8080"
    # As in crik: with a node-state server, only a node that is shutting down gets a checkpoint.
    assert (s.checkpoint_on, s.node_state_sources, s.node_name) == ("node-shutdown", ("crik",),
                                                                    "node-a")
    with pytest.raises(ConfigError, match="needs the node's name"):
        resolve({}, config, {"HOSTNAME": "h"})


@pytest.mark.parametrize("text, message", [
    ("stor: file:///x\n", "unknown key 'stor'"),
    ("keepCheckpoints: two\n", "'keepCheckpoints' must be an integer"),
    ("additionalPaths: /data\n", "'additionalPaths' must be a list"),
    ("store: file:///a\nimageDir: /b\n", "both 'store' and crik's 'imageDir'"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("store: [unclosed\n", "not valid YAML at line"),
    ("onRestoreFailure: maybe\n", "on-restore-failure 'maybe' is not one of"),
    ("store: ftp://x\n", "unknown scheme"),
    ("additionalPaths: [relative/path]\n", "must be absolute"),
])
def test_bad_config_is_a_one_line_error_naming_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        resolve({}, write(tmp_path, text), {"HOSTNAME": "h"})
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_absent_default_config_is_fine_but_absent_explicit_config_is_not(tmp_path, monkeypatch):
    monkeypatch.setattr("crikpy.settings.DEFAULT_CONFIG_PATH", tmp_path / "nope.yaml")
    assert resolve({}, None, {"HOSTNAME": "h"}).name == "h"
    with pytest.raises(ConfigError, match="does not exist"):
        resolve({}, tmp_path / "missing.yaml", {"HOSTNAME": "h"})


def test_empty_config_file_means_defaults(tmp_path):
    assert resolve({}, write(tmp_path, ""), {"HOSTNAME": "h"}).store == Settings.store


@pytest.mark.parametrize("given, message", [
    ({"name": "bad/name"}, "not usable as a store key"),
    ({"keep_checkpoints": 0}, "at least 1"),
    ({"pid_floor": -1}, "pid-floor"),
    ({"work_dir": "relative"}, "must be an absolute path"),
])
def test_bad_values_from_flags_are_rejected(given, message):
    with pytest.raises(ConfigError, match=message):
        resolve(given, None, {"HOSTNAME": "h"})


def test_no_name_anywhere_is_an_error():
    with pytest.raises(ConfigError, match="no workload name"):
        resolve({}, None)


def test_s3_and_grace_period_keys(tmp_path):
    config = write(tmp_path, "store: s3://bucket/prefix\ns3EndpointURL: http://minio:9000\n"
                             "s3PathStyle: true\ns3PartSizeMiB: 32\ns3Concurrency: 4\n"
                             "s3SSE: aws:kms\ns3SSEKMSKeyId: key-1\ngracePeriod: 120\n")
    s = resolve({"s3_concurrency": 6}, config, {"HOSTNAME": "h"})
    assert (s.store, s.s3.endpoint_url, s.s3.path_style, s.s3.part_size) == (
        "s3://bucket/prefix", "http://minio:9000", True, 32 * 1024 * 1024)
    assert (s.s3.concurrency, s.s3.sse, s.s3.sse_kms_key_id, s.grace_period) == (
        6, "aws:kms", "key-1", 120.0)


@pytest.mark.parametrize("text, message", [
    ("s3PathStyle: yes please\n", "must be true or false"),
    ("gracePeriod: soon\n", "must be a finite number of seconds"),
    ("gracePeriod: 2\n", "at least 3 seconds"),
])
def test_bad_s3_and_grace_values(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        resolve({}, write(tmp_path, text), {"HOSTNAME": "h"})


def test_in_cluster_environment_enables_the_kubernetes_source():
    env = {"HOSTNAME": "web-0", "KUBERNETES_SERVICE_HOST": "10.0.0.1",
           "KUBERNETES_SERVICE_PORT": "443", "KUBERNETES_NODE_NAME": "node-a"}
    s = resolve({"checkpoint_on": "node-shutdown"}, None, env)
    assert s.kubernetes_api_url == "https://10.0.0.1:443"
    assert s.node_state_sources == ("kubernetes",)
    plain = resolve({}, None, {**env, "KUBERNETES_NODE_NAME": ""})  # no node name: fine
    assert (plain.checkpoint_on, plain.node_state_sources) == ("always", ())


@pytest.mark.parametrize("given, message", [
    ({"checkpoint_on": "sometimes"}, "checkpoint-on 'sometimes'"),
    ({"checkpoint_on": "node-shutdown"}, "needs a node-state source"),
    ({"node_state_sources": "aws,ibm"}, "node-state source 'ibm' is unknown"),
    ({"node_state_sources": "kubernetes"}, "needs the API server URL"),
    ({"checkpoint_interval": "soon"}, "not a duration"),
])
def test_node_state_settings_are_checked(given, message):
    with pytest.raises(ConfigError, match=message):
        resolve(given, None, {"HOSTNAME": "h"})


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("10m", 600),
                                           ("1h30m", 5400), (45, 45)])
def test_durations(text, seconds):
    from crikpy.settings import parse_duration

    assert parse_duration("x", text) == seconds


# Every value is checked at start, so a bad one is a one-line error there (exit 172), never a
# failure later: at a SIGTERM, or at a restore that would count it against a good checkpoint.
_STRINGS = [s for s in SETTINGS if s.kind in ("text", "path", "paths", "names") and s.config_key]


@pytest.mark.parametrize("setting", _STRINGS, ids=lambda s: s.field)
def test_a_nul_character_in_any_setting_is_refused(tmp_path, setting):
    value = {"paths": ["/a\0b"], "names": ["a\0b"]}.get(setting.kind, "/a\0b")
    config = write(tmp_path, json.dumps({setting.config_key: value}))
    with pytest.raises(ConfigError, match=re.escape(setting.config_key)):
        resolve({}, config, {"HOSTNAME": "h"})


_DURATIONS = [s for s in SETTINGS if s.kind in ("seconds", "duration")]


@pytest.mark.parametrize("setting", _DURATIONS, ids=lambda s: s.field)
def test_durations_beyond_any_sensible_bound_are_refused(tmp_path, setting):
    config = write(tmp_path, json.dumps({setting.config_key: 1e10}))
    with pytest.raises(ConfigError, match=re.escape(setting.config_key)):
        resolve({}, config, {"HOSTNAME": "h"})


def test_the_node_state_timeout_must_be_shorter_than_the_grace_period():
    with pytest.raises(ConfigError, match="node-state-timeout .* grace-period"):
        resolve({"node_state_timeout": 600, "grace_period": 10}, None, {"HOSTNAME": "h"})


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.field.endswith("_url")],
                         ids=lambda s: s.field)
@pytest.mark.parametrize("url", ["not a url", "ftp://host/", "http://"])
def test_urls_must_be_http_or_https(tmp_path, setting, url):
    config = write(tmp_path, json.dumps({setting.config_key: url}))
    with pytest.raises(ConfigError, match=re.escape(setting.config_key)):
        resolve({}, config, {"HOSTNAME": "h"})


@pytest.mark.parametrize("given, message", [
    ({"s3_part_size_mib": 4}, "s3-part-size-mib must be between 5 and 5120"),
    ({"s3_part_size_mib": 10**9}, "s3-part-size-mib must be between 5 and 5120"),
    ({"s3_concurrency": 0}, "s3-concurrency must be between 1 and 64"),
    ({"s3_concurrency": 10**6}, "s3-concurrency must be between 1 and 64"),
])
def test_s3_transfer_sizes_are_bounded(given, message):
    with pytest.raises(ConfigError, match=message):
        resolve(given, None, {"HOSTNAME": "h"})
