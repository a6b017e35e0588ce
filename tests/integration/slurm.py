"""A real single-node SLURM cluster on this machine, for the cluster tests: Debian's slurm-wlm
and munge, started without systemd (munged, then slurmctld, then slurmd), torn down after.

Everything lives in a short temporary folder (munge's socket path must stay under 108 bytes)
except slurm.conf and gres.conf: the executor plugin's job step drops SLURM_CONF before calling
srun inside a job, so the configuration must sit where SLURM looks by default, /etc/slurm. The
test writes them there only when no other SLURM configuration is, and removes them afterwards.

The node advertises one stand-in GPU (a GRES bound to /dev/null): a job that asks for a GPU, as
the profile's training jobs do, is scheduled and given it as on a GPU cluster, and then runs on
the CPU since there is no CUDA device behind it.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
GRES_CONF = DEFAULT_CONF.with_name("gres.conf")
MARKER = "# written by apot-repro's SLURM test (tests/integration/slurm.py); removed after it"
COMMANDS = ("munged", "slurmctld", "slurmd", "sinfo", "srun", "sbatch", "squeue", "scancel")
PARTITION = "apot"


def missing_commands() -> list[str]:
    return [name for name in COMMANDS if shutil.which(name) is None]


def install() -> str | None:
    """Install slurm-wlm and munge with apt if they are missing; None when the cluster can be
    started here, else why not (the reason the test skips with)."""
    if os.geteuid() != 0:
        return ("the SLURM test needs root: it installs slurm-wlm and munge, runs the daemons "
                "as root and writes /etc/slurm/slurm.conf")
    if not missing_commands():
        return None
    if shutil.which("apt-get") is None:
        return (f"SLURM is not installed ({', '.join(missing_commands())} missing) and there is "
                f"no apt-get to install slurm-wlm and munge with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:  # a fresh machine may not have the package lists yet
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=900)
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0 or missing_commands():
        return f"apt-get install slurm-wlm munge failed: {(done.stdout + done.stderr)[-800:]}"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_hardware() -> tuple[int, int]:
    """CPUs and memory (MB) of this machine, as slurmd itself sees them."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    cpus = int(re.search(r"CPUs=(\d+)", out).group(1))
    memory = int(re.search(r"RealMemory=(\d+)", out).group(1))
    return cpus, memory


class LocalSlurm:
    """``with LocalSlurm() as cluster:`` a running cluster with one partition, PARTITION."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="apot-slurm-"))
        self.node = socket.gethostname().split(".")[0]
        self.cpus, memory = node_hardware()
        self.memory_mb = memory - 512  # leave slurmd some head room under its own reading
        self.socket = self.root / "munge" / "munge.socket"
        self.processes: list[str] = []

    # ------------------------------------------------------------------ setup
    def config(self) -> str:
        r = self.root
        return "\n".join([
            MARKER,
            "ClusterName=apottest", "GresTypes=gpu",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            "SlurmUser=root", "SlurmdUser=root",
            f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.socket}",
            f"StateSaveLocation={r}/state", f"SlurmdSpoolDir={r}/spool",
            f"SlurmctldPidFile={r}/slurmctld.pid", f"SlurmdPidFile={r}/slurmd.pid",
            f"SlurmctldLogFile={r}/slurmctld.log", f"SlurmdLogFile={r}/slurmd.log",
            # no cgroups and no systemd in a container: plain process tracking
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            # no accounting (no slurmdbd, no sacct): the profile's status command is squeue
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none", "JobCompType=jobcomp/none",
            # finished jobs stay listed by squeue for an hour, long enough for status queries
            "MinJobAge=3600",
            "KillWait=10", "ReturnToService=2",
            "SchedulerType=sched/backfill", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={self.memory_mb} Gres=gpu:1 State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n"

    def start(self) -> None:
        for path in (DEFAULT_CONF, GRES_CONF):
            if path.exists() and MARKER not in path.read_text():
                raise RuntimeError(f"{path} belongs to another SLURM installation; the test "
                                   f"does not replace a real cluster's configuration")
        for sub in ("munge", "state", "spool"):
            (self.root / sub).mkdir(mode=0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.write_text(self.config())
        GRES_CONF.write_text(f"{MARKER}\nName=gpu File=/dev/null\n")
        munge = self.root / "munge"
        self._daemon("munged", "--force", f"--socket={self.socket}", f"--key-file={key}",
                     f"--log-file={self.root}/munged.log", f"--pid-file={munge}/munged.pid",
                     f"--seed-file={munge}/munged.seed")
        self._daemon("slurmctld", "-i")  # -i: ignore (there is no) saved state
        self._daemon("slurmd")
        self.wait_until_idle()

    def _daemon(self, *command: str) -> None:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} did not start: {done.stderr}\n{self.logs()}")
        self.processes.append(command[0])

    def wait_until_idle(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True,
                                  text=True)
            if done.stdout.strip() == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"the node did not become idle in {timeout} s\n{self.logs()}")

    # ------------------------------------------------------------------ queries
    def job_states(self) -> dict[str, str]:
        """Every job the controller still knows (MinJobAge keeps finished ones): id -> state."""
        out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%i %T"],
                             capture_output=True, text=True, check=True).stdout
        return dict(line.split() for line in out.splitlines())

    def job_gpus(self, job: str) -> int:
        """GPUs the job was allocated (scontrol's JOB_GRES)."""
        out = subprocess.run(["scontrol", "-d", "show", "job", job], capture_output=True,
                             text=True, check=True).stdout
        match = re.search(r"\bJOB_GRES=gpu:(\d+)", out)
        return int(match.group(1)) if match else 0

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / name
            if path.is_file():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text().splitlines()[-30:]))
        return "\n".join(parts)

    # ------------------------------------------------------------------ teardown
    def stop(self) -> None:
        subprocess.run(["scancel", "--user", "root"], capture_output=True, timeout=30)
        for name, pidfile in (("slurmd", "slurmd.pid"), ("slurmctld", "slurmctld.pid"),
                              ("munged", "munge/munged.pid")):
            if name in self.processes:
                self._kill(self.root / pidfile)
        for path in (DEFAULT_CONF, GRES_CONF):
            if path.is_file() and MARKER in path.read_text():
                path.unlink()
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _kill(pidfile: Path, timeout: float = 20) -> None:
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError, IndexError):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.2)
        os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> LocalSlurm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
