"""A real two-node Slurm cluster on this host, for the tests (Debian's slurm-wlm + munge).

Two slurmd daemons (``n1``, ``n2``) share this machine, each on its own port,
so a ``sbatch -N2`` job really runs its ``srun`` ranks under two slurmds and
sees ``SLURM_JOB_NODELIST=n[1-2]``. Everything lives under one temp dir; the
daemons are started as root (``SlurmUser=root``, no systemd) and stopped again
by :meth:`SlurmCluster.stop`. ``python -m tests.slurm_cluster start|stop DIR``
does the same by hand.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "mungekey")

CONF = """\
ClusterName=warpstore-ci
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool-%n
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd-%n.pid
SlurmctldLogFile={dir}/slurmctld.log
SlurmdLogFile={dir}/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=n[1-2] NodeHostname={host} NodeAddr=127.0.0.1 Port={node_ports} CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
"""


def available() -> str | None:
    """None if a cluster can be started here, else why not."""
    missing = [d for d in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(d)]
    if missing:
        return f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the test cluster runs its daemons as root"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no 'munge' user (install Debian's munge package)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlurmCluster:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.dir / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self._started_munge = False

    # -- munge -------------------------------------------------------------
    def _munge_running(self) -> bool:
        return subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode == 0

    def _start_munge(self) -> None:
        if self._munge_running():
            return
        key = Path("/etc/munge/munge.key")
        if not key.exists():
            subprocess.run(["mungekey", "--create"], check=True)
            shutil.chown(key, "munge", "munge")
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            Path(d).mkdir(parents=True, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        # munged refuses to run as root; it must run as its own user
        subprocess.run(["runuser", "-u", "munge", "--", "munged", "--force"], check=True)
        self._started_munge = True
        deadline = time.monotonic() + 10
        while not Path("/run/munge/munge.socket.2").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("munged did not create its socket within 10 s")
            time.sleep(0.1)

    # -- slurm -------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "state").mkdir(exist_ok=True)
        ports = [_free_port(), _free_port()]
        self.conf.write_text(
            CONF.format(
                host=self.host,
                dir=self.dir,
                ctld_port=_free_port(),
                node_ports=f"{min(ports)}-{min(ports) + 1}",
            )
        )
        self._start_munge()
        subprocess.run(["slurmctld", "-i", "-f", str(self.conf)], check=True, env=self.env)
        for node in ("n1", "n2"):
            (self.dir / f"spool-{node}").mkdir(exist_ok=True)
            subprocess.run(
                ["slurmd", "-N", node, "-f", str(self.conf)], check=True, env=self.env
            )
        deadline = time.monotonic() + timeout
        while True:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, env=self.env
            ).stdout
            states = dict(line.split() for line in out.splitlines() if line.strip())
            if len(states) == 2 and all(s == "idle" for s in states.values()):
                return
            if time.monotonic() > deadline:
                logs = "\n".join(
                    p.read_text(errors="replace")[-2000:] for p in sorted(self.dir.glob("*.log"))
                )
                raise RuntimeError(f"Slurm nodes not idle after {timeout:.0f} s: {out!r}\n{logs}")
            time.sleep(0.3)

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], capture_output=True, env=self.env)
        pids = []
        for pidfile in self.dir.glob("*.pid"):
            try:
                pids.append(int(pidfile.read_text().strip()))
            except (OSError, ValueError):
                continue
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for pid in pids:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self._started_munge:
            subprocess.run(["pkill", "-x", "munged"], capture_output=True)


if __name__ == "__main__":
    cluster = SlurmCluster(sys.argv[2])
    if sys.argv[1] == "start":
        cluster.start()
        print(f"export SLURM_CONF={cluster.conf}")
    else:
        cluster.stop()
