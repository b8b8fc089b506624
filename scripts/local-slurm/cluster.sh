#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, from Debian's packages, for testing the SLURM profile
# (tests/test_slurm.py) and for trying `snakemake --workflow-profile workflow/profiles/slurm` locally.
#
#   scripts/local-slurm/cluster.sh install   apt-get install slurm-wlm munge (root, Debian/Ubuntu)
#   scripts/local-slurm/cluster.sh start     write slurm.conf for this host, start munged, slurmctld, slurmd
#   scripts/local-slurm/cluster.sh stop      stop the three daemons started by `start`
#   scripts/local-slurm/cluster.sh env       print `export SLURM_CONF=...` for sbatch/squeue/snakemake
#
# Everything lives in one folder, $DIFFRIS_SLURM_DIR (default /tmp/diffris-slurm): slurm.conf, a
# private munge key and socket, state, spool, logs and pid files. The only file outside it is the
# symlink /etc/slurm/slurm.conf -> that slurm.conf, made by start and removed by stop: the SLURM
# executor's job step drops SLURM_CONF from the environment of the `srun` it starts inside a job, so
# the configuration must be at the default path. start refuses to replace a slurm.conf it did not
# link (a real cluster's, or another local cluster's), so one local cluster runs at a time. No systemd (containers have none): the daemons are
# started directly. No accounting (no slurmdbd): job status comes from squeue. No cgroups:
# proctrack/linuxproc and task/none work in a container. The node offers every CPU of this machine,
# so jobs asking for one CPU each run side by side. Needs root (slurmd starts jobs as their user).
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"  # munged, slurmctld, slurmd
DIR="${DIFFRIS_SLURM_DIR:-/tmp/diffris-slurm}"
CTLD_PORT="${DIFFRIS_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${DIFFRIS_SLURMD_PORT:-6818}"
CONF="$DIR/slurm.conf"
SYSTEM_CONF=/etc/slurm/slurm.conf
NODE="$(hostname -s)"

die() { echo "local-slurm: $*" >&2; exit 1; }

install_packages() {
    [ "$(id -u)" = 0 ] || die "install needs root (apt-get install slurm-wlm munge)"
    command -v apt-get >/dev/null || die "install needs apt-get (Debian or Ubuntu)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge
}

write_conf() {
    local cpus mem_mb
    cpus="$(nproc)"
    mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"  # leave 10% to the system
    cat >"$CONF" <<CONF
# Written by scripts/local-slurm/cluster.sh for host $NODE; a one-node test cluster.
ClusterName=diffris-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# containers: no cgroups, no accounting
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# schedule on every submission; keep finished jobs visible to squeue for 5 minutes
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MinJobAge=300
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
}

start_munge() {
    local key="$DIR/munge/munge.key"
    mkdir -p "$DIR/munge" && chmod 700 "$DIR/munge"
    [ -s "$key" ] || { dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; chmod 400 "$key"; }
    munged --force --key-file="$key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed"
}

wait_idle() {
    for _ in $(seq 1 60); do
        if sinfo -h -N -o %T 2>/dev/null | grep -qE '^idle'; then return 0; fi
        sleep 0.5
    done
    die "the node did not become idle in 30 s; see $DIR/log/*.log"
}

start() {
    [ "$(id -u)" = 0 ] || die "start needs root (slurmd runs jobs as their user)"
    for cmd in munged slurmctld slurmd sinfo; do
        command -v "$cmd" >/dev/null || die "$cmd not found: run '$0 install' (slurm-wlm, munge)"
    done
    if [ -f "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
        echo "local-slurm: already running ($CONF)"; return 0
    fi
    if [ -L "$SYSTEM_CONF" ] && [ ! -e "$SYSTEM_CONF" ]; then rm -f "$SYSTEM_CONF"; fi  # left by a killed run
    if [ -e "$SYSTEM_CONF" ]; then
        [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ] ||
            die "$SYSTEM_CONF exists and is not this cluster's ($CONF); stop the other cluster or move it away"
    fi
    mkdir -p "$DIR"/{state,spool,run,log} "$(dirname "$SYSTEM_CONF")"
    write_conf
    ln -sfn "$CONF" "$SYSTEM_CONF"
    export SLURM_CONF="$CONF"
    start_munge
    slurmctld -f "$CONF"
    slurmd -f "$CONF"
    wait_idle
    echo "local-slurm: running, node $NODE with $(nproc) CPUs; export SLURM_CONF=$CONF"
}

stop_daemon() {  # by the pid file the daemon wrote
    local pidfile="$DIR/run/$1.pid" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
}

stop() {
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    if [ "$(readlink "$SYSTEM_CONF" 2>/dev/null)" = "$CONF" ]; then rm -f "$SYSTEM_CONF"; fi
    echo "local-slurm: stopped"
}

case "${1:-}" in
    install) install_packages ;;
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) die "usage: $0 install|start|stop|env" ;;
esac
