"""Settings: flag/env values over the config file over defaults; crik's keys; clear errors."""

from pathlib import Path

import pytest

from crikpy.errors import ConfigError
from crikpy.settings import Settings, resolve


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
    assert (s.store, s.s3_endpoint_url, s.s3_path_style, s.s3_part_size_mib) == (
        "s3://bucket/prefix", "http://minio:9000", True, 32)
    assert (s.s3_concurrency, s.s3_sse, s.s3_sse_kms_key_id, s.grace_period) == (
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
