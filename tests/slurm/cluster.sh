#!/usr/bin/env bash
# A single-node Slurm cluster on localhost in a directory (munge + slurmctld
# + slurmd as root), for tests.  usage: cluster.sh start DIR | stop DIR
# After start, DIR/env holds the SLURM_CONF export for clients.
set -eu
cmd=$1; D=$(realpath -m "$2")
if [ "$cmd" = stop ]; then
  for p in slurmd slurmctld munged; do
    [ -f "$D/$p.pid" ] && kill "$(cat "$D/$p.pid")" 2>/dev/null || true
  done
  sleep 1
  exit 0
fi
mkdir -p "$D"/{state,spool,log,tmp}
mungekey --create --keyfile="$D/munge.key" --force >/dev/null 2>&1 || mungekey -c -k "$D/munge.key" -f
chmod 600 "$D/munge.key"
munged --key-file="$D/munge.key" --socket="$D/munge.socket.2" --pid-file="$D/munged.pid" \
  --log-file="$D/log/munged.log" --seed-file="$D/munge.seed" --force
touch "$D/plugstack.conf"
cat >"$D/slurm.conf" <<CONF
ClusterName=dptest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge.socket.2
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
# PMIx keeps per-step directories under TmpFS, named by uid, job and step id only: every
# test cluster numbers its jobs from 1, so a shared /tmp would meet another run's leftovers
# ("Cannot create client cli tmpdir: /tmp/spmix_appdir_0_1.0: File exists", seen in CI)
TmpFS=$D/tmp
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
KillWait=5
MinJobAge=600
MailProg=/bin/true
PlugStackConfig=$D/plugstack.conf
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF=$D/slurm.conf
echo "export SLURM_CONF=$D/slurm.conf" >"$D/env"
slurmctld -i
slurmd -N localhost
for _ in $(seq 100); do
  sinfo -h -o %t 2>/dev/null | grep -q idle && exit 0
  sleep 0.2
done
echo "cluster.sh: the node did not become idle" >&2
sinfo >&2 || true
exit 1
