#!/bin/sh
# PostgreSQL as Debian runs it: the postmaster and its children as the postgres user, on
# 127.0.0.1:$PORT, its socket in /tmp, the cluster made at build time in /var/lib/postgresql/matrix.
set -eu
exec setpriv --reuid postgres --regid postgres --init-groups \
    /usr/lib/postgresql/*/bin/postgres -D /var/lib/postgresql/matrix \
    -c listen_addresses=127.0.0.1 -c port="${PORT:-5432}" -c unix_socket_directories=/tmp
