#!/bin/sh
# A workload that double-forks a daemon away (re-parented to PID 1, outside its tree), then
# counts. Prints `daemon <pid>` once and `count <n>` each tick.
sh -c 'sleep 100000 & echo "daemon $!"' &
wait
n=0
while true; do echo "count $n"; n=$((n + 1)); sleep 0.2; done
