#!/usr/bin/env bash
# Stop the single-node SLURM of tests/slurm/start-cluster.sh: slurmd, slurmctld, then munged, each by the
# pid in its pid file; stale pid files are removed. Safe to run when nothing runs.
#   bash tests/slurm/stop-cluster.sh [--keep-munge]
set -euo pipefail

say() { echo "stop-cluster: $*"; }

[ "$(id -u)" = 0 ] || { echo "stop-cluster: not root, nothing to do" >&2; exit 0; }
if [ -f /etc/slurm/slurm.conf ] && ! head -1 /etc/slurm/slurm.conf | grep -q "start-cluster.sh"; then
    echo "stop-cluster: /etc/slurm/slurm.conf was not written by start-cluster.sh; not stopping anything" >&2
    exit 0
fi

stop() {  # stop NAME PIDFILE
    local pid
    if [ ! -s "$2" ]; then
        say "$1 not running"
        return
    fi
    pid=$(cat "$2")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            say "$1 (pid $pid) killed"
        else
            say "$1 (pid $pid) stopped"
        fi
    else
        say "$1 not running (stale pid file)"
    fi
    rm -f "$2"
}

stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
[ "${1:-}" = --keep-munge ] || stop munged /run/munge/munged.pid
