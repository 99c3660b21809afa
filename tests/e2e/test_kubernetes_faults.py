"""End to end: what goes wrong between crikpy and a real API server (tests/harness/kube.sh), and
what the pod's workload sees then. A Role taken away, a token that is expired or revoked, an API
server that is down or hung at SIGTERM, and a token the kubelet rotates under the pod."""

from __future__ import annotations

import contextlib

import pytest

from tests.e2e.evidence import counts
from tests.e2e.podman import events

pytestmark = pytest.mark.e2e
NODE_SHUTDOWN = {"CRIKPY_CHECKPOINT_ON": "node-shutdown"}


def test_a_role_taken_away_is_logged_once_and_checkpoints_go_on(kube, counter):
    [binding] = kube.get("rolebindings", "-n", counter.namespace)["items"]
    kube.kubectl("delete", "rolebinding", "-n", counter.namespace, binding["metadata"]["name"])
    pod = counter.pod_on(counter.node("a"))
    c, _ = counter.kubelet.run(pod, env={"CRIKPY_CHECKPOINT_INTERVAL": "2s"})
    logs = c.wait_for(lambda text: len(events(text, "checkpoint.committed")) >= 3, timeout=120,
                      what="three periodic checkpoints")
    [failed] = events(logs, "event.failed")
    assert failed["error"] == "HTTP 403 Forbidden"
    assert failed["action"] == ("grant the pod's service account create and patch on events; "
                                "until then crikpy posts none")
    assert not events(logs, "event.posted")
    assert kube.get("events", "-n", counter.namespace, "--field-selector",
                    "source=crikpy")["items"] == []


def falls_back(container, logs: str, refusal: str) -> None:
    """The SIGTERM's decision had no answer: the workload got its SIGTERM and exited on it
    (128 + 15, not the grace period's SIGKILL), and nothing was checkpointed."""
    assert container.exit_code() == 128 + 15, logs[-3000:]
    [decision] = events(logs, "checkpoint.decision")
    assert (decision["checkpoint"], decision["source"]) == (False, None)
    assert "no node-state source answered" in decision["detail"]
    [unavailable] = events(logs, "node_state.unavailable")
    assert unavailable["source"] == "kubernetes" and refusal in unavailable["detail"]
    assert not events(logs, "checkpoint.started")


@pytest.mark.parametrize("fault", ["expired", "revoked"])
def test_a_refused_token_falls_back_and_the_workload_gets_its_sigterm(kube, counter, fault):
    node = counter.node("a")
    kube.kubectl("cordon", node)  # with a working token, the SIGTERM would checkpoint
    pod = counter.pod_on(node)
    meta = pod["metadata"]
    token = None
    if fault == "expired":
        token = kube.expired(kube.token(meta["namespace"], pod["spec"]["serviceAccountName"],
                                        bound_to=pod))
    c, _ = counter.kubelet.run(pod, env=NODE_SHUTDOWN, token=token)
    c.wait_for(lambda _: len(counts(c)) >= 3, what="three counts")
    if fault == "revoked":  # the Pod object force-deleted (a node declared dead): its token dies
        counter.kubelet.remove(pod)
    c.stop()
    falls_back(c, c.logs(), "HTTP 401")


@pytest.mark.parametrize("outage", ["down", "hung"])
def test_an_api_server_out_at_sigterm_falls_back(kube, counter, outage):
    node = counter.node("a")
    kube.kubectl("cordon", node)
    pod = counter.pod_on(node)
    c, _ = counter.kubelet.run(pod, env=NODE_SHUTDOWN)
    c.wait_for(lambda _: len(counts(c)) >= 3, what="three counts")
    if outage == "down":
        kube.stop_apiserver()
        out = contextlib.nullcontext()
    else:
        out = kube.apiserver_hung()
    try:
        with out:
            c.stop()
    finally:
        if outage == "down":
            kube.start_apiserver()
    falls_back(c, c.logs(), "Connection refused" if outage == "down" else "no whole answer")


def test_a_token_the_kubelet_rotates_is_read_anew(kube, counter):
    """The kubelet replaces the projected token before it expires (an atomic swap of the
    volume's ..data link). Here the first token is bound to a Secret that is then deleted, so
    only the new one authenticates when the SIGTERM comes."""
    namespace, account_name = counter.namespace, counter.sts["spec"]["template"]["spec"][
        "serviceAccountName"]
    secrets = {}
    for name in ("first", "second"):
        kube.kubectl("create", "secret", "generic", name, "-n", namespace)
        secrets[name] = kube.get("secret", "-n", namespace, name)
    node = counter.node("a")
    pod = counter.pod_on(node)
    first = kube.token(namespace, account_name, bound_to=secrets["first"])
    c, volume = counter.kubelet.run(pod, env=NODE_SHUTDOWN, token=first)
    c.wait_for(lambda _: len(counts(c)) >= 3, what="three counts")

    volume.write(kube.token(namespace, account_name, bound_to=secrets["second"]))
    kube.kubectl("delete", "secret", "-n", namespace, "first")
    refused = kube.kubectl("auth", "whoami", token=first, check=False)
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr
    kube.kubectl("cordon", node)
    assert c.stop() == 0
    [decision] = events(c.logs(), "checkpoint.decision")
    assert (decision["checkpoint"], decision["source"]) == (True, "kubernetes")
    assert events(c.logs(), "checkpoint.committed")
