#!/bin/sh
# A producer and a consumer joined by a named pipe (FIFO). The producer writes 0, 1, 2, ...;
# the consumer prints each number it reads and says so if one is not the one it expected.
# The FIFO is made in the image (Containerfile), so every container has it at the same path:
# CRIU reopens a FIFO by its path on restore, and one made at run time in the old container's
# filesystem is gone in the new one.
set -eu
fifo=${FIFO:-/opt/matrix/pipe}
[ -p "$fifo" ] || mkfifo "$fifo"
(
    i=0
    while :; do echo "$i"; i=$((i + 1)); sleep 0.1; done
) > "$fifo" &
(
    want=0
    while read -r n; do
        [ "$n" = "$want" ] || echo "pipeline GAP wanted $want got $n"
        echo "pipeline consumed $n"
        want=$((n + 1))
    done
) < "$fifo" &
wait
