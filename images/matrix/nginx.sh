#!/bin/sh
# nginx, a master and two workers, listening on 127.0.0.1:$PORT. Each answer names the worker
# that served it, so a test sees the same processes serve before and after a migration.
# The workers run as root (`user root`): the test machines' privileged containers lack
# CAP_SYS_RESOURCE, without which CRIU (root) cannot read the rlimits of a process of another
# user ("Can't get rlimit 0: Operation not permitted"), so Debian's www-data workers cannot be
# dumped there. A node that grants CAP_SYS_RESOURCE (a normal privileged pod does) has no such limit.
set -eu
cat > /tmp/nginx.conf <<CONF
daemon off;
user root;
master_process on;
worker_processes 2;
pid /tmp/nginx.pid;
error_log stderr notice;
events { worker_connections 64; }
http {
    access_log off;
    server {
        listen 127.0.0.1:${PORT:-8080};
        location / { default_type text/plain; return 200 "served-by \$pid\n"; }
    }
}
CONF
exec nginx -c /tmp/nginx.conf
