#!/usr/bin/env bash
# A single-node SLURM for tests (shared/design/SLURM.md): Debian's slurmctld + slurmd + munge, started
# without systemd, no accounting (status via squeue), partitions `cpu` (default) and `gpu` on this one node,
# and two emulated GPUs (character devices cloned from /dev/null, gres.conf with File=).
#
#   bash tests/slurm/start-cluster.sh      install if needed, configure, start; safe to run again
#   bash tests/slurm/stop-cluster.sh       stop the daemons this script started
#
# Exit status: 0 the cluster is up; 77 this machine cannot run it (the reason is the last line on
# stderr, "SKIP: ..."); anything else is a failure. The last line on stdout is "cluster: started" or
# "cluster: already running".
set -euo pipefail

SKIP=77
CONF_DIR=/etc/slurm
MARK="# written by prism tests/slurm/start-cluster.sh"
NGPUS=2
PACKAGES=(slurmctld slurmd slurm-client munge)

say() { echo "start-cluster: $*"; }
skip() { echo "SKIP: $*" >&2; exit "$SKIP"; }
fail() { echo "start-cluster: ERROR: $*" >&2; exit 1; }

alive() {  # alive PIDFILE: the process named in the pid file runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

[ "$(uname -s)" = Linux ] || skip "not Linux"
[ "$(id -u)" = 0 ] || skip "not root (installing and starting SLURM needs root)"

# ---------------------------------------------------------------- packages
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || skip "no apt-get to install ${missing[*]}"
    say "installing ${missing[*]} (apt-get, --no-install-recommends)"
    if ! upd=$(timeout 180 apt-get update -qq 2>&1) \
        || grep -qiE "failed to fetch|temporary failure|could not resolve|unable to connect" <<<"$upd"; then
        skip "no network to the Debian mirrors (apt-get update: $(tail -1 <<<"$upd"))"
    fi
    # the package scripts try to start the daemons: "policy-rc.d denied execution of start" is harmless
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/tmp/prism-slurm-apt.log 2>&1 || fail "apt-get install failed; see /tmp/prism-slurm-apt.log"
else
    say "packages present: ${PACKAGES[*]}"
fi
for b in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch /usr/bin/squeue; do
    [ -x "$b" ] || fail "$b missing after installation"
done

# ---------------------------------------------------------------- host name
HOST=$(hostname -s)
if ! getent hosts "$HOST" >/dev/null; then
    echo "127.0.0.1 $HOST" >>/etc/hosts
    say "added $HOST to /etc/hosts"
fi

# ---------------------------------------------------------------- emulated GPUs
for ((i = 0; i < NGPUS; i++)); do
    dev=/dev/fakegpu$i
    if [ ! -c "$dev" ]; then
        rm -f "$dev"
        mknod -m 666 "$dev" c 1 3 2>/dev/null || skip "cannot create device node $dev (mknod refused)"
        say "created $dev (a clone of /dev/null)"
    fi
done

# ---------------------------------------------------------------- configuration
if [ -f $CONF_DIR/slurm.conf ] && ! head -1 $CONF_DIR/slurm.conf | grep -qF "$MARK"; then
    skip "$CONF_DIR/slurm.conf exists and was not written by this script; not touching a real cluster"
fi
# The node's topology spelled out, as slurmd itself detects it (slurmd -C).
node=$(/usr/sbin/slurmd -C 2>/dev/null | head -1)
grep -q "^NodeName=" <<<"$node" || fail "slurmd -C did not describe this node"
node=${node#NodeName=* }
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
node=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 95 / 100))/" <<<"$node")

mkdir -p $CONF_DIR /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
conf=$(cat <<EOF
$MARK
ClusterName=prismtest
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# no cgroups here: process tracking through /proc, CPU binding through affinity
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
# finished jobs stay visible to squeue for 5 minutes (the executor plugin polls squeue)
MinJobAge=300
ReturnToService=2
# a cancelled job's processes get SIGTERM, then SIGKILL this many seconds later (default 30)
KillWait=5
SchedulerType=sched/backfill
MpiDefault=none
# no slurmdbd: no accounting (and so no AccountingStorageTRES)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$HOST $node Gres=gpu:fake:$NGPUS State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF
)
gres="$MARK
NodeName=$HOST Name=gpu Type=fake File=/dev/fakegpu[0-$((NGPUS - 1))]"

changed=0
write_if_changed() {  # write_if_changed PATH CONTENT
    if [ ! -f "$1" ] || [ "$(cat "$1")" != "$2" ]; then
        printf '%s\n' "$2" >"$1"
        changed=1
        say "wrote $1"
    fi
}
write_if_changed $CONF_DIR/slurm.conf "$conf"
write_if_changed $CONF_DIR/gres.conf "$gres"

# ---------------------------------------------------------------- daemons
if [ $changed = 1 ] && { alive /run/slurmctld.pid || alive /run/slurmd.pid; }; then
    say "configuration changed: restarting SLURM"
    bash "$(dirname "$0")/stop-cluster.sh" --keep-munge
fi

started=0
mkdir -p /run/munge
chown munge:munge /run/munge
chmod 755 /run/munge
if alive /run/munge/munged.pid; then
    say "munged already running (pid $(cat /run/munge/munged.pid))"
else
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
    [ -s /etc/munge/munge.key ] || { /usr/sbin/mungekey --create >/dev/null; say "created /etc/munge/munge.key"; }
    chown munge:munge /etc/munge/munge.key
    chmod 600 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged || fail "munged did not start"
    say "started munged (pid $(cat /run/munge/munged.pid))"
    started=1
fi

start_daemon() {  # start_daemon NAME: fork /usr/sbin/NAME unless its pid file names a live process
    local pidfile=/run/$1.pid
    if alive "$pidfile"; then
        say "$1 already running (pid $(cat "$pidfile"))"
        return
    fi
    rm -f "$pidfile"  # a stale pid file makes Debian's package scripts call scancel
    /usr/sbin/"$1" || fail "$1 did not start; see /var/log/slurm/$1.log"
    for _ in $(seq 50); do alive "$pidfile" && break; sleep 0.1; done
    alive "$pidfile" || fail "$1 exited; see /var/log/slurm/$1.log"
    say "started $1 (pid $(cat "$pidfile"))"
    started=1
}
start_daemon slurmctld
start_daemon slurmd

# ---------------------------------------------------------------- wait for the node
state=""
for _ in $(seq 60); do
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1 || true)
    case "$state" in
    idle | mixed | allocated | completing) break ;;
    drain* | down*)
        reason=$(sinfo -h -n "$HOST" -o %E | head -1)
        say "node $HOST is $state ($reason): resuming it"
        scontrol update NodeName="$HOST" State=RESUME || true
        ;;
    esac
    sleep 0.5
done
case "$state" in
idle | mixed | allocated | completing) ;;
*) fail "node $HOST did not become idle (state '${state:-none}'); see /var/log/slurm/slurmd.log" ;;
esac
say "node $HOST: $state; partitions: $(sinfo -h -o %P | tr '\n' ' '); gres: $(sinfo -h -n "$HOST" -o %G | head -1)"
if [ $started = 1 ]; then echo "cluster: started"; else echo "cluster: already running"; fi
