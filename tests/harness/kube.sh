#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1, for the tests and for a person:
#
#   bash tests/harness/kube.sh up [DIR]     start (or restart what is not running); prints the
#                                           admin kubeconfig's path
#   bash tests/harness/kube.sh down [DIR]   stop everything `up` started in DIR
#
# etcd, kube-apiserver (TLS, RBAC, ServiceAccount token signing) and kube-controller-manager, as
# tests/harness/kube-build.sh builds them (once, cached). DIR (default $CRIKPY_KUBE_DIR or
# /tmp/crikpy-kube) keeps the certificates, keys, kubeconfigs, etcd's data, logs and pid files;
# its ports are picked free on the first `up` and kept, so a restarted API server has the same URL.
# DIR/bin is the cached bin dir: `DIR/bin/kubectl --kubeconfig DIR/admin.kubeconfig get ns`.
# No kubelet runs: the node-lifecycle controller is told to wait a day for heartbeats, so the
# tests' Node objects keep the conditions the tests give them.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
action=${1:-}
dir=$(realpath -m "${2:-${CRIKPY_KUBE_DIR:-/tmp/crikpy-kube}}")
components=(etcd kube-apiserver kube-controller-manager)

running() {  # running NAME: its pid file names a live process
    local pid
    pid=$(cat "$dir/run/$1.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null
}

stop() {
    local name pid i
    for ((i = ${#components[@]} - 1; i >= 0; i--)); do
        name=${components[i]}
        running "$name" || continue
        pid=$(cat "$dir/run/$name.pid")
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        rm -f "$dir/run/$name.pid"
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
    local name=$1
    shift
    running "$name" && return 0
    setsid "bin/$name" "$@" </dev/null >>"logs/$name.log" 2>&1 &
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

case "$action" in
    up) up ;;
    down) stop ;;
    *) echo "usage: $0 up|down [DIR]" >&2; exit 2 ;;
esac
