"""manifests/ on a real API server (tests/harness/kube.sh): the component and every example are
applied (no client-side dry run), their workloads' controllers make real Pods from them, and the
ServiceAccount, authenticated by a real token, may do what crikpy needs and nothing more."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers import EXAMPLES, OVERLAYS

# Every authenticated user may do these (the API server's built-in roles for all of them:
# asking who they are and what they may do, and reading the cluster's public trust bundles).
EVERYONE = {"clustertrustbundles.certificates.k8s.io": {"get", "list", "watch"},
            "selfsubjectreviews.authentication.k8s.io": {"create"},
            "selfsubjectaccessreviews.authorization.k8s.io": {"create"},
            "selfsubjectrulesreviews.authorization.k8s.io": {"create"}}


def rules(kube, namespace: str, token: str) -> dict[str, set[str]]:
    """`kubectl auth can-i --list` as the token's user: resource -> verbs."""
    table = kube.kubectl("auth", "can-i", "--list", "-n", namespace, token=token).stdout
    found: dict[str, set[str]] = {}
    for line in table.splitlines()[1:]:
        resource, *_, verbs = line.split(maxsplit=3)
        if not resource.startswith("["):  # resources, not non-resource URLs like [/api/*]
            found.setdefault(resource, set()).update(verbs.strip("[]").split())
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_example_applies_and_its_controller_makes_the_pod(kube, overlay, tmp_path):
    namespace, prefix = kube.install_example(overlay, tmp_path)
    [workload] = [w for w in kube.get("statefulsets,deployments", "-n", namespace)["items"]]
    kube.wait_for_pod_of(namespace, workload)  # the API server's Pod validation accepted it
    account = f"{prefix}crikpy"
    assert kube.get("serviceaccount", "-n", namespace, account)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_service_account_may_do_what_crikpy_needs_and_nothing_more(kube, overlay, tmp_path):
    namespace, prefix = kube.install_example(overlay, tmp_path)
    token = kube.token(namespace, f"{prefix}crikpy")
    assert rules(kube, namespace, token) == {**EVERYONE, "events": {"create", "patch"},
                                             "nodes": {"get", "list", "watch"}}

    def can(*args: str) -> bool:
        return kube.kubectl("auth", "can-i", *args, token=token, check=False).returncode == 0

    assert can("get", "nodes") and can("watch", "nodes/node-a")
    assert can("create", "events", "-n", namespace) and can("patch", "events", "-n", namespace)
    assert not can("create", "events", "-n", "default"), "events outside its namespace"
    for verb, resource in [("get", "pods"), ("list", "pods"), ("get", "secrets"),
                           ("list", "secrets"), ("patch", "nodes"), ("delete", "events"),
                           ("get", "events"), ("get", "configmaps")]:
        assert not can(verb, resource, "-n", namespace), f"{verb} {resource} is granted"


def test_the_server_refuses_a_misspelt_field(kube, tmp_path):
    """The apply above can fail: strict validation on the server names an unknown field."""
    namespace = kube.namespace()
    rendered = kube.kubectl("kustomize", str(EXAMPLES / "counter")).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    [sts] = [d for d in docs if d["kind"] == "StatefulSet"]
    sts["spec"]["template"]["spec"]["terminationGracePeriod"] = 60
    proc = kube.kubectl("apply", "-n", namespace, "--validate=strict", "-f", "-",
                        stdin=yaml.safe_dump(sts), check=False)
    assert proc.returncode != 0 and 'unknown field "spec.template.spec.terminationGracePeriod"' \
        in proc.stderr, proc.stderr


def test_pod_security_baseline_refuses_the_component_and_privileged_admits_it(kube, tmp_path):
    """As the component says: a namespace at Pod Security "baseline" refuses its pod (hostPath,
    seccomp Unconfined, CHECKPOINT_RESTORE); at "privileged" it is admitted."""
    namespace, prefix = kube.install_example("counter", tmp_path)
    sts = kube.get("statefulset", "-n", namespace, f"{prefix}counter")
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "probe", "namespace": namespace},
           "spec": sts["spec"]["template"]["spec"]}
    kube.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=baseline")
    refused = kube.kubectl("create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(pod),
                           check=False)
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr
    for reason in ("hostPath volumes", "seccompProfile", "CHECKPOINT_RESTORE"):
        assert reason in refused.stderr, refused.stderr
    kube.kubectl("label", "--overwrite", "namespace", namespace,
                 "pod-security.kubernetes.io/enforce=privileged")
    kube.kubectl("create", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(pod))
