#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the cluster-plugin tests (tests/workflows/test_slurm.py).
#
#   ci/slurm-cluster.sh start    install slurm-wlm + munge (apt-get) if missing, start munged, slurmctld
#                                and slurmd, wait until the node is idle; idempotent (running daemons are kept)
#   ci/slurm-cluster.sh stop     stop the daemons this script started (pid files), and nothing else
#   ci/slurm-cluster.sh status
#
# Debian's slurm-wlm 22.05, no systemd: daemons are started directly with pid files under $STATE.
# SlurmUser=root, ProctrackType=proctrack/linuxproc, TaskPlugin=task/none (no cgroups needed),
# no accounting, DependencyParameters=kill_invalid_depend (a failed job's dependants are cancelled
# instead of pending forever), SchedulerParameters=batch_sched_delay=0,sched_min_interval=0 (a submitted or
# newly eligible job starts at once instead of after the default 3 s batch delay: five `sbatch --wrap true`
# jobs chained with -d afterok took 12.7 s to end with the defaults and 4.6 s with these). The config goes
# to /etc/slurm/slurm.conf (where every client looks) only if that file is absent or was written by this
# script.
set -euo pipefail
STATE=${PTSD_SLURM_STATE:-/var/tmp/ptsd_bidsapp-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by ptsd_bidsapp ci/slurm-cluster.sh"
HOST=$(hostname -s)

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
munge_ok() { command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

install_packages() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        echo "installing slurm-wlm and munge (apt-get)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    fi
}

write_conf() {
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        echo "$CONF exists and was not written by this script: not touching it" >&2
        return
    fi
    mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
    cat > "$CONF.tmp" <<CONF
$MARK
ClusterName=ptsdci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
DependencyParameters=kill_invalid_depend
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=$HOST CPUs=$(nproc) RealMemory=1024 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
    mv "$CONF.tmp" "$CONF"
}

start() {
    install_packages
    mkdir -p "$STATE"
    write_conf
    if munge_ok; then
        echo "munge: running"
    else
        install -d -o munge -g munge -m 0755 /run/munge
        install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
        runuser -u munge -- munged --pid-file=/run/munge/munged.pid
        echo munged >> "$STATE/started"
        for _ in $(seq 50); do munge_ok && break; sleep 0.2; done
        munge_ok || { echo "munged did not start" >&2; exit 1; }
        echo "munge: started"
    fi
    if alive "$STATE/slurmctld.pid"; then
        echo "slurmctld: running"
    else
        slurmctld -f "$CONF"
        echo slurmctld >> "$STATE/started"
        echo "slurmctld: started"
    fi
    if alive "$STATE/slurmd.pid"; then
        echo "slurmd: running"
    else
        slurmd -f "$CONF"
        echo slurmd >> "$STATE/started"
        echo "slurmd: started"
    fi
    for _ in $(seq 120); do
        state=$(sinfo --noheader --format=%T 2>/dev/null | head -1 || true)
        case "$state" in idle|mixed|allocated) echo "node $HOST: $state"; return 0;; esac
        sleep 0.5
    done
    echo "the SLURM node did not become idle (state: ${state:-none}); logs in $STATE" >&2
    tail -20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
    exit 1
}

stop() {
    [ -s "$STATE/started" ] || { echo "nothing started by this script"; return 0; }
    for daemon in $(tac "$STATE/started"); do
        case "$daemon" in
            munged) pidfile=/run/munge/munged.pid ;;
            *) pidfile="$STATE/$daemon.pid" ;;
        esac
        if alive "$pidfile"; then
            kill "$(cat "$pidfile")"
            for _ in $(seq 50); do alive "$pidfile" || break; sleep 0.2; done
            echo "$daemon: stopped"
        fi
    done
    rm -f "$STATE/started"
}

status() {
    for daemon in slurmctld slurmd; do
        if alive "$STATE/$daemon.pid"; then echo "$daemon: running ($(cat "$STATE/$daemon.pid"))"
        else echo "$daemon: not running"; fi
    done
    munge_ok && echo "munge: running" || echo "munge: not running"
    sinfo 2>/dev/null || true
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 {start|stop|status}" >&2; exit 64 ;;
esac
