#!/bin/sh
# nginx, a master and two workers, listening on 127.0.0.1:$PORT. Each answer names the worker
# that served it, so a test sees the same processes serve before and after a migration.
# The workers run as $NGINX_USER, root by default: the test machines' privileged containers lack
# CAP_SYS_RESOURCE, without which CRIU (root) cannot dump a process of another user (it cannot
# read its rlimits), so Debian's usual www-data workers are refused there (NGINX_USER=www-data).
set -eu
cat > /tmp/nginx.conf <<CONF
daemon off;
user ${NGINX_USER:-root};
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
