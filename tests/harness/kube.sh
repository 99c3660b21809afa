#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1, for the tests and for a person:
#
#   bash tests/harness/kube.sh up [DIR]     start (or restart what is not running); prints the
#                                           admin kubeconfig's path
#   bash tests/harness/kube.sh node [DIR]   add a real node to it: containerd, kubelet and
#                                           kube-scheduler (after `up`)
#   bash tests/harness/kube.sh down [DIR]   stop everything `up` and `node` started in DIR
#
# etcd, kube-apiserver (TLS, RBAC, ServiceAccount token signing) and kube-controller-manager, as
# tests/harness/kube-build.sh builds them (once, cached). DIR (default $CRIKPY_KUBE_DIR or
# /tmp/crikpy-kube) keeps the certificates, keys, kubeconfigs, etcd's data, logs and pid files;
# its ports are picked free on the first `up` and kept, so a restarted API server has the same URL.
# DIR/bin is the cached bin dir: `DIR/bin/kubectl --kubeconfig DIR/admin.kubeconfig get ns`.
# The tests' own Node objects have no kubelet: the node-lifecycle controller is told to wait a
# day for heartbeats, so they keep the conditions the tests give them. The real node (`node`) is
# called localhost: the API server reaches a kubelet by its node's host name, and a kubelet
# refuses a loopback node IP. Its containers run under Debian's containerd and runc; its pods
# need hostNetwork (no CNI network here) and spec.schedulerName crikpy-node, the one scheduler
# profile, so that the tests' other pods stay unscheduled for them to place.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
action=${1:-}
dir=$(realpath -m "${2:-${CRIKPY_KUBE_DIR:-/tmp/crikpy-kube}}")
components=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet)
node_name=localhost

running() {  # running NAME: its pid file names a live process
    local pid
    pid=$(cat "$dir/run/$1.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null
}

stop() {
    local name pid i
    for ((i = ${#components[@]} - 1; i >= 0; i--)); do
        name=${components[i]}
        [[ $name == containerd ]] && remove_containers
        running "$name" || continue
        pid=$(cat "$dir/run/$name.pid")
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        rm -f "$dir/run/$name.pid"
    done
    # The kubelet's volume mounts (tmpfs for tokens, binds) outlive it, and so do what it makes
    # outside DIR: its pods' cgroups and its device-plugin socket, at fixed places.
    findmnt -rn -o TARGET | { grep "^$dir/" || true; } | sort -r | xargs -r umount -l
    if [[ -f "$dir/kubelet.yaml" ]]; then
        find /sys/fs/cgroup/*/kubepods -depth -type d -exec rmdir {} + 2>/dev/null || true
        rm -rf /var/lib/kubelet/device-plugins
        rmdir /var/lib/kubelet 2>/dev/null || true
    fi
}

remove_containers() {  # the pods' containers outlive the kubelet: their shims are their own
    running containerd || return 0
    local ctr=(ctr --address "$dir/containerd/containerd.sock" -n k8s.io) id
    for id in $("${ctr[@]}" tasks ls -q 2>/dev/null); do
        "${ctr[@]}" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $("${ctr[@]}" containers ls -q 2>/dev/null); do
        for _ in $(seq 50); do "${ctr[@]}" tasks delete "$id" >/dev/null 2>&1 && break; sleep 0.1; done
        "${ctr[@]}" containers rm "$id" >/dev/null 2>&1 || true
    done
}

listening() {  # listening PORT: something accepts connections on 127.0.0.1:PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# sign NAME SUBJECT EXTENSIONS: a key and a certificate signed by the cluster CA. Python 3.13's
# default verification (X509_STRICT) wants the key identifiers.
sign() {
    openssl req -new -newkey rsa:2048 -nodes -subj "$2" -keyout "pki/$1.key" -out "pki/$1.csr" 2>/dev/null
    printf '%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n' "$3" >"pki/$1.ext"
    openssl x509 -req -in "pki/$1.csr" -CA pki/ca.crt -CAkey pki/ca.key -CAcreateserial -days 3650 \
        -extfile "pki/$1.ext" -out "pki/$1.crt" 2>/dev/null
    rm "pki/$1.csr" "pki/$1.ext"
}

make_pki() {
    mkdir -p pki
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=crikpy-test-ca \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout pki/ca.key -out pki/ca.crt 2>/dev/null
    local server="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    sign apiserver /CN=kube-apiserver "$server"
    sign admin "/O=system:masters/CN=crikpy-test-admin" "$client"
    sign controller-manager /CN=system:kube-controller-manager "$client"
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
    openssl genrsa -out pki/service-account.key 2048 2>/dev/null
    openssl rsa -in pki/service-account.key -pubout -out pki/service-account.pub 2>/dev/null
}

kubeconfig() {  # kubeconfig NAME USER
    local file="$1.kubeconfig"
    bin/kubectl config --kubeconfig "$file" set-cluster crikpy-test --embed-certs \
        --certificate-authority pki/ca.crt --server "https://127.0.0.1:$apiserver_port" >/dev/null
    bin/kubectl config --kubeconfig "$file" set-credentials "$2" --embed-certs \
        --client-certificate "pki/$1.crt" --client-key "pki/$1.key" >/dev/null
    bin/kubectl config --kubeconfig "$file" set-context crikpy-test --cluster crikpy-test \
        --user "$2" >/dev/null
    bin/kubectl config --kubeconfig "$file" use-context crikpy-test >/dev/null
}

launch() {  # launch NAME ARGS...: in the background, its own session, its log in DIR/logs
    local name=$1 program=bin/$1
    shift
    running "$name" && return 0
    [[ $name == containerd ]] && program=containerd  # Debian's
    setsid "$program" "$@" </dev/null >>"logs/$name.log" 2>&1 &
    echo $! >"run/$name.pid"
}

wait_for() {  # wait_for WHAT SECONDS COMMAND...
    local what=$1 seconds=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    echo "kube.sh: $what did not come up within $seconds s; its log:" >&2
    tail -n 30 "logs/$what.log" >&2
    exit 1
}

up() {
    local bin
    bin=$(bash "$here/kube-build.sh")
    mkdir -p "$dir"/{run,logs}
    cd "$dir"
    ln -sfn "$bin" bin
    if [[ ! -f ports ]]; then
        echo "etcd_port=$(free_port) etcd_peer_port=$(free_port) apiserver_port=$(free_port)" >ports
    fi
    source ./ports
    [[ -f pki/service-account.pub ]] || make_pki
    [[ -f admin.kubeconfig ]] || kubeconfig admin crikpy-test-admin
    [[ -f controller-manager.kubeconfig ]] || kubeconfig controller-manager controller-manager

    launch etcd --name crikpy-test --data-dir etcd \
        --listen-client-urls "http://127.0.0.1:$etcd_port" \
        --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
        --initial-cluster "crikpy-test=http://127.0.0.1:$etcd_peer_port" \
        --listen-metrics-urls "" --log-level warn
    wait_for etcd 60 listening "$etcd_port"

    # --endpoint-reconciler-type none: the `kubernetes` Service's endpoint would be 127.0.0.1,
    # which the API server's own validation refuses (every few seconds, in its log).
    launch kube-apiserver --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$apiserver_port" \
        --tls-cert-file pki/apiserver.crt --tls-private-key-file pki/apiserver.key \
        --client-ca-file pki/ca.crt --authorization-mode Node,RBAC \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file pki/service-account.pub \
        --service-account-signing-key-file pki/service-account.key \
        --service-cluster-ip-range 10.0.0.0/24 --endpoint-reconciler-type none \
        --kubelet-client-certificate pki/apiserver-kubelet-client.crt \
        --kubelet-client-key pki/apiserver-kubelet-client.key \
        --kubelet-certificate-authority pki/ca.crt \
        --allow-privileged --cert-dir run/apiserver-certs --profiling=false
    wait_for kube-apiserver 120 bin/kubectl --kubeconfig admin.kubeconfig get --raw /readyz

    # No kubelet posts heartbeats here: a day's grace keeps Nodes as the tests set them, while
    # the node-lifecycle controller still taints them as it does for a cordon or a NotReady node.
    launch kube-controller-manager --kubeconfig controller-manager.kubeconfig \
        --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
        --root-ca-file pki/ca.crt --service-account-private-key-file pki/service-account.key \
        --use-service-account-credentials \
        --node-monitor-grace-period 24h --node-startup-grace-period 24h --profiling=false
    # Ready once its ServiceAccount controller has made the default namespace's account.
    wait_for kube-controller-manager 60 bin/kubectl --kubeconfig admin.kubeconfig get serviceaccount default
    echo "$dir/admin.kubeconfig"
}

node_ready() {
    [[ $(bin/kubectl --kubeconfig admin.kubeconfig get node "$node_name" \
        -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

node() {
    cd "$dir"
    [[ -f ports ]] || { echo "kube.sh: run \`kube.sh up $dir\` first" >&2; exit 1; }
    source ./ports
    command -v containerd >/dev/null || {
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd >/dev/null
    }
    if [[ ! -f kubelet.yaml ]]; then
        sign kubelet "/O=system:nodes/CN=system:node:$node_name" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth,serverAuth
subjectAltName=IP:127.0.0.1,DNS:$node_name"
        sign scheduler /CN=system:kube-scheduler "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
        kubeconfig kubelet "system:node:$node_name"
        kubeconfig scheduler system:kube-scheduler
        node_files
    fi

    launch containerd --config containerd/config.toml
    wait_for containerd 30 test -S containerd/containerd.sock
    if ! ctr --address containerd/containerd.sock -n k8s.io images check \
            name==localhost/crikpy-pause:node | grep -q complete; then
        podman build --runtime runc --pull=never -q -t localhost/crikpy-pause:node \
            -f "$here/kube-pause.Containerfile" "$here" >/dev/null
        podman save -q localhost/crikpy-pause:node |
            ctr --address containerd/containerd.sock -n k8s.io images import - >/dev/null
    fi
    launch kube-scheduler --config scheduler.yaml --bind-address 127.0.0.1 --secure-port "$(free_port)"
    # A kubelet sets kernel tunables as it starts (vm.overcommit_memory=1, kernel.panic=10,
    # kernel.panic_on_oops=1, ...), and only then. This host runs the rest of the tests and
    # people's work too: its own values are put back once the node is up.
    local tunables=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
                    kernel.keys.root_maxkeys kernel.keys.root_maxbytes) saved=()
    running kubelet || mapfile -t saved < <(sysctl -e "${tunables[@]}" | tr -d ' ')
    launch kubelet --config kubelet.yaml --kubeconfig kubelet.kubeconfig \
        --root-dir "$dir/kubelet" --hostname-override "$node_name"
    wait_for kubelet 120 node_ready
    ((${#saved[@]} == 0)) || sysctl -q -w "${saved[@]}"
    echo "$dir/admin.kubeconfig"
}

# node_files: containerd's, the kubelet's and the scheduler's configuration.
node_files() {
    mkdir -p containerd cni kubelet pod-logs
    # restrict_oom_score_adj: the kubelet asks for -998 for a pod's sandbox, and lowering an OOM
    # score needs CAP_SYS_RESOURCE, which this VM does not give (runc: "can't get final child's
    # PID from pipe: EOF").
    cat >containerd/config.toml <<TOML
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/crikpy-pause:node"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
TOML
    # A network config makes the runtime report its network ready; hostNetwork pods never use it.
    echo '{"cniVersion": "0.4.0", "name": "crikpy-test", "plugins": [{"type": "loopback"}]}' \
        >cni/10-loopback.conflist
    # failCgroupV1: false: kubelets from 1.35 on refuse cgroup v1 hosts (this one) without it.
    cat >kubelet.yaml <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$dir/containerd/containerd.sock
address: 127.0.0.1
port: $(free_port)
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $dir/pki/ca.crt}
authorization: {mode: AlwaysAllow}
tlsCertFile: $dir/pki/kubelet.crt
tlsPrivateKeyFile: $dir/pki/kubelet.key
podLogsDir: $dir/pod-logs
failSwapOn: false
makeIPTablesUtilChains: false  # no iptables rules of its own on a shared host (kube-proxy's aid)
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
resolvConf: /etc/resolv.conf
YAML
    cat >scheduler.yaml <<YAML
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: $dir/scheduler.kubeconfig}
leaderElection: {leaderElect: false}
profiles: [{schedulerName: crikpy-node}]
YAML
}

case "$action" in
    up) up ;;
    node) node ;;
    down) stop ;;
    *) echo "usage: $0 up|node|down [DIR]" >&2; exit 2 ;;
esac
