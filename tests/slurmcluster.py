"""A one-node SLURM cluster on 127.0.0.1 for tests: munged, slurmctld and slurmd started in a
temporary directory from Debian's packages, and stopped by their pids.

``SlurmCluster(tmp).start()`` raises ``ClusterUnavailable`` with the reason when the binaries
are missing or the daemons do not come up, so tests can skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo")


class ClusterUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlurmCluster:
    def __init__(self, root: Path, partition: str = "ws"):
        self.root, self.partition = Path(root), partition
        self.pids: list[int] = []
        self.env = dict(os.environ)

    def _run(self, *cmd, **kw):
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=60, **kw)

    def start(self) -> SlurmCluster:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> SlurmCluster:
        missing = [b for b in BINARIES if shutil.which(b) is None]
        if missing:
            raise ClusterUnavailable(f"SLURM/munge binaries not installed: {missing} "
                                     "(apt-get install slurmctld slurmd slurm-client munge)")
        if os.geteuid() != 0:
            raise ClusterUnavailable("starting slurmd and munged needs root")
        r = self.root
        for d in ("state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        # munged runs as the munge user, which cannot enter root's private temp folders
        import tempfile

        self.munge_dir = m = Path(tempfile.mkdtemp(prefix="ws-munge-", dir="/tmp"))
        shutil.chown(m, "munge", "munge")
        os.chmod(m, 0o755)
        key = m / "munge.key"
        key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        os.chmod(key, 0o400)
        sock = m / "munge.socket"
        out = self._run("runuser", "-u", "munge", "--", "munged", f"--key-file={key}", f"--socket={sock}",
                        f"--pid-file={m / 'munged.pid'}", f"--log-file={m / 'munged.log'}",
                        f"--seed-file={m / 'munged.seed'}", "--force")
        if out.returncode:
            raise ClusterUnavailable(f"munged did not start: {out.stderr.strip()}")
        self._remember(m / "munged.pid")
        host = socket.gethostname().split(".")[0]
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
        conf = r / "slurm.conf"
        conf.write_text(f"""
ClusterName=weightspace-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={mem - 1024} State=UNKNOWN
PartitionName={self.partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
        self.env["SLURM_CONF"] = str(conf)
        # snakemake-executor-plugin-slurm-jobstep drops SLURM_* variables (SLURM_CONF too)
        # before its nested srun; real clusters keep their config in /etc/slurm, ours is here.
        # An srun shim first on PATH (exported to the jobs) restores it.
        shim = r / "bin" / "srun"
        shim.parent.mkdir(exist_ok=True)
        shim.write_text(f"#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which('srun')} \"$@\"\n")
        shim.chmod(0o755)
        self.env["PATH"] = f"{shim.parent}:{self.env.get('PATH', '')}"
        for daemon, pid in (("slurmctld", "slurmctld.pid"), ("slurmd", "slurmd.pid")):
            out = self._run(daemon, "-f", str(conf))
            if out.returncode:
                self.stop()
                raise ClusterUnavailable(f"{daemon} did not start: {out.stderr.strip()}")
            deadline = time.time() + 20
            while time.time() < deadline and not ((r / pid).exists() and (r / pid).read_text().strip()):
                time.sleep(0.2)
            self._remember(r / pid)
        deadline = time.time() + 60
        while time.time() < deadline:
            state = self._run("sinfo", "-h", "-o", "%T").stdout.strip()
            if state.startswith("idle") or state.startswith("mixed"):
                return self
            time.sleep(0.5)
        logs = "".join((r / "log" / f).read_text()[-1500:] for f in ("slurmctld.log", "slurmd.log")
                       if (r / "log" / f).exists())
        self.stop()
        raise ClusterUnavailable(f"the node did not become idle (state {state!r}):\n{logs}")

    def _remember(self, pidfile: Path):
        text = pidfile.read_text().strip() if pidfile.exists() else ""
        if text:
            self.pids.append(int(text.split()[0]))

    def stop(self) -> None:
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        for pid in self.pids:
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        self.pids.clear()
        if getattr(self, "munge_dir", None):
            shutil.rmtree(self.munge_dir, ignore_errors=True)
