"""The SLURM profile against a real SLURM cluster: munged, slurmctld and slurmd on this machine.

The cluster is one node with the machine's real CPUs and memory (`slurmd -C`) and one GPU gres
backed by /dev/null (enough for the scheduler to place GPU requests; nothing uses it), configured and
kept entirely under a temporary folder and torn down at the end, also when the test fails.
config/test.yaml then runs through `snakemake --workflow-profile profiles/slurm` with the SLURM
executor plugin; its jobs, their SLURM requests and its outputs are checked against the config and
against the local run of the same session (tests/conftest.py::tiny_config_run).

Accounting: no slurmdbd (it needs a MySQL server); every finished job is recorded by the
job-completion log (jobcomp/filetxt) and kept in slurmctld for MinJobAge, so the plugin's status
queries use squeue (`--slurm-status-command squeue`) instead of its default sacct.

Needs root (slurmd starts the jobs) and the Debian packages slurm-wlm and munge
(`apt-get install slurm-wlm munge`; .ci/run installs them). Without them the test is skipped, unless
ADEPT_REQUIRE_SLURM=1 (set by .ci/run), which turns the skip into a failure.
"""
from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate

ROOT = Path(__file__).resolve().parents[1]
TEST_CONFIG = ROOT / "config" / "test.yaml"

# binary -> the Debian package that ships it
SLURM_BINARIES = {"munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd",
                  **{client: "slurm-client" for client in ("sbatch", "srun", "squeue", "scontrol", "sinfo", "scancel")}}

pytestmark = pytest.mark.slow


def missing_requirements() -> str | None:
    missing = {binary: package for binary, package in SLURM_BINARIES.items() if shutil.which(binary) is None}
    if missing:
        return (f"SLURM binaries {sorted(missing)} are missing: install the Debian packages slurm-wlm and munge "
                f"(`apt-get install slurm-wlm munge`; they provide {sorted(set(missing.values()))})")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "the SLURM executor plugin is missing: pip install snakemake-executor-plugin-slurm (the dev extra has it)"
    if os.geteuid() != 0:
        return "a local SLURM cluster needs root (slurmd starts the jobs); run the tests as root, as CI does"
    return None


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the test process ends, however it ends (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> dict[str, int]:
    """CPUs and RealMemory (MB) of this machine as slurmd detects them."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    found = dict(re.findall(r"\b(CPUs|RealMemory)=(\d+)", out))
    return {key: int(value) for key, value in found.items()}


class LocalSlurm:
    """munged + slurmctld + slurmd in the foreground, each a child process of the test."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.host = socket.gethostname().split(".")[0]
        self.processes: list[subprocess.Popen] = []
        self.hardware = node_hardware()
        # PATH: this interpreter's commands (the rules call `python`) and the srun shim below
        path = f"{folder / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        self.env = {**os.environ, "SLURM_CONF": str(folder / "slurm.conf"), "PATH": path}
        for var in [v for v in self.env if v.startswith("SLURM_") and v != "SLURM_CONF"]:
            del self.env[var]  # not inside someone else's SLURM job

    def write_config(self) -> None:
        f = self.folder
        for sub in ("munge", "munge-socket", "state", "spool", "log"):
            (f / sub).mkdir()
        (f / "munge").chmod(0o700)
        key = f / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        settings = {
            "ClusterName": "adepttest",
            "SlurmctldHost": f"{self.host}(127.0.0.1)",
            "SlurmctldPort": free_port(),
            "SlurmdPort": free_port(),
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={f / 'munge-socket' / 'munge.socket'}",
            "StateSaveLocation": f / "state",
            "SlurmdSpoolDir": f / "spool",
            "SlurmctldPidFile": f / "slurmctld.pid",
            "SlurmdPidFile": f / "slurmd.pid",
            "SlurmctldLogFile": f / "log" / "slurmctld.log",
            "SlurmdLogFile": f / "log" / "slurmd.log",
            # no cgroups: process tracking through /proc works in containers
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_CPU_Memory",  # CPUs and memory are what jobs ask for
            "SchedulerType": "sched/backfill",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/filetxt",
            "JobCompLoc": f / "log" / "jobcomp.txt",
            "MpiDefault": "none",
            "MailProg": "/bin/true",
            "ReturnToService": 2,
            "MinJobAge": 3600,  # finished jobs stay visible to squeue/scontrol for the whole test
            "GresTypes": "gpu",
        }
        lines = [f"{key}={value}" for key, value in settings.items()]
        lines.append(f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.hardware['CPUs']} "
                     f"RealMemory={self.hardware['RealMemory']} Gres=gpu:1 State=UNKNOWN")
        lines.append(f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP")
        (f / "slurm.conf").write_text("\n".join(lines) + "\n")
        (f / "gres.conf").write_text("Name=gpu File=/dev/null\n")  # a GPU in name only, for the scheduler
        # Inside a job the jobstep plugin starts the rule with `srun`, after removing every SLURM_*
        # variable from srun's environment (snakemake-executor-plugin-slurm-jobstep 0.6.1), so srun
        # would look for /etc/slurm/slurm.conf. A real cluster has its config there; this one lives
        # in the temporary folder, so a shim on PATH hands srun its location again.
        (f / "bin").mkdir()
        shim = f / "bin" / "srun"
        shim.write_text(f"#!/bin/sh\nSLURM_CONF={f / 'slurm.conf'} exec {shutil.which('srun')} \"$@\"\n")
        shim.chmod(0o755)

    def start(self) -> None:
        self.write_config()
        f, conf = self.folder, str(self.folder / "slurm.conf")
        self._spawn(["munged", "--foreground", "--force", f"--socket={f / 'munge-socket' / 'munge.socket'}",
                     f"--key-file={f / 'munge' / 'munge.key'}", f"--log-file={f / 'munge' / 'munged.log'}",
                     f"--pid-file={f / 'munge' / 'munged.pid'}", f"--seed-file={f / 'munge' / 'munged.seed'}"])
        self._wait_for(lambda: (f / "munge-socket" / "munge.socket").exists(), "munged to create its socket")
        self._spawn(["slurmctld", "-D", "-f", conf])
        self._wait_for(lambda: self.run("scontrol", "ping", check=False).returncode == 0, "slurmctld to answer")
        self._spawn(["slurmd", "-D", "-f", conf, "-N", self.host])
        self._wait_for(lambda: self.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip() == "idle",
                       "the node to be idle")

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, env=self.env, check=check, timeout=60)

    def stop(self) -> None:
        """Cancel what is still queued or running, then end the daemons (newest first)."""
        if self.processes and all(p.poll() is None for p in self.processes):
            self.run("scancel", "--full", f"--user={os.getuid()}", check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run("squeue", "-h", "-t", "PD,R,CG", check=False).stdout.strip():
                time.sleep(0.5)
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs(self) -> str:
        parts = []
        for path in sorted((self.folder / "log").glob("*.log")) + [self.folder / "munge" / "munged.log"]:
            if path.is_file():
                parts.append(f"--- {path.name} ---\n" + "\n".join(path.read_text().splitlines()[-15:]))
        return "\n".join(parts)

    def completed_jobs(self) -> dict[str, dict[str, str]]:
        """Job id -> fields of its line in the job-completion log."""
        path = self.folder / "log" / "jobcomp.txt"
        records = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in path.read_text().splitlines()] if path.exists() else []
        return {record["JobId"]: record for record in records}

    def _spawn(self, command: list[str]) -> None:
        log = open(self.folder / "log" / f"{Path(command[0]).name}.stderr", "w")
        self.processes.append(subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                               preexec_fn=die_with_parent))
        log.close()

    def _wait_for(self, condition, what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.processes):
                raise RuntimeError(f"a SLURM daemon exited while waiting for {what}:\n{self.logs()}")
            if condition():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}:\n{self.logs()}")


@pytest.fixture(scope="session")
def slurm_available():
    """Skip (or, with ADEPT_REQUIRE_SLURM=1, fail) before any other fixture runs when SLURM is missing."""
    reason = missing_requirements()
    if reason:
        if os.environ.get("ADEPT_REQUIRE_SLURM") == "1":
            pytest.fail(f"ADEPT_REQUIRE_SLURM=1 but {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm(slurm_available, tmp_path_factory):
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def snakemake_command(workdir: Path, *args: str, overlays: tuple[Path, ...] = ()) -> list[str]:
    """Snakemake on config/test.yaml (+ overlays: one --configfile flag, a second would replace the first)."""
    return [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
            "--configfile", str(TEST_CONFIG), *map(str, overlays), *args]


def outputs(workdir: Path) -> set[str]:
    """Every file the workflow wrote (data/, logs/, results/), relative to its working directory."""
    return {str(p.relative_to(workdir)) for top in ("data", "logs", "results") for p in (workdir / top).rglob("*")
            if p.is_file()}


def job_stats(out: str) -> dict[str, int]:
    """Rule -> number of jobs, from Snakemake's "Job stats" table."""
    table = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def failure_report(out: str, workdir: Path) -> str:
    """The failed jobs' error blocks and the ends of their SLURM logs."""
    blocks = re.findall(r"^Error in rule .*?(?=^\S|\Z)", out, re.M | re.S)
    logs = [workdir / p for p in re.findall(r"(\.snakemake/slurm_logs/\S+\.log)", "".join(blocks))]
    tails = ["--- " + str(p) + " ---\n" + "\n".join(p.read_text().splitlines()[-20:]) for p in dict.fromkeys(logs) if p.is_file()]
    return "\n".join(blocks[:3] + tails[:3]) or out[-8000:]


def merged_config(*overlays: Path) -> dict:
    """config/config.yaml with the overlays on top and the schema's defaults filled in, as the Snakefile sees it."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for overlay in overlays:
        update_config(config, yaml.safe_load(overlay.read_text()))
    validate(config, str(ROOT / "workflow" / "schemas" / "config.schema.yaml"))
    return config


def slurm_time(minutes: int) -> str:
    days, rest = divmod(minutes, 24 * 60)
    return (f"{days}-" if days else "") + f"{rest // 60:02d}:{rest % 60:02d}:00"


RESOURCE_KIND = {"generate_dataset": "dataset", "behavior_policy": "behavior_policy", "world_model": "world_model",
                 "train": "train"}


def test_test_config_runs_on_slurm_like_locally(slurm_available, tiny_config_run, slurm, tmp_path):
    local_dir, local = tiny_config_run  # the local run (tests/conftest.py)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    slurm_dir = tmp_path / "slurm"
    slurm_dir.mkdir()
    # Behaviour-policy jobs ask for one GPU, as every GPU stage does on the paper's grid; the runs
    # themselves stay on the CPU (test.yaml: device cpu), so the outputs do not change.
    gpu_overlay = tmp_path / "gpu.yaml"
    gpu_overlay.write_text(yaml.safe_dump({"resources": {"behavior_policy": {"gpu": 1}}}))
    resources = merged_config(TEST_CONFIG, gpu_overlay)["resources"]
    started = time.monotonic()
    on_slurm = subprocess.run(
        snakemake_command(slurm_dir, "--workflow-profile", str(ROOT / "profiles" / "slurm"),
                          # no slurmdbd here, so no sacct (module docstring); a 2 s first status check
                          # instead of 40 s suits a cluster that starts jobs at once
                          "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
                          "--slurm-keep-successful-logs", "--local-cores", "1", overlays=(gpu_overlay,)),
        cwd=slurm_dir, env=slurm.env, capture_output=True, text=True, timeout=1800, preexec_fn=die_with_parent)
    print(f"config/test.yaml on SLURM: {time.monotonic() - started:.0f} s")
    out = on_slurm.stdout + on_slurm.stderr
    assert on_slurm.returncode == 0, failure_report(out, slurm_dir) + "\n" + slurm.logs()

    # The same jobs as the local run; every one but the localrules went through sbatch and finished
    # as a SLURM job.
    assert job_stats(out) == job_stats(local.stdout + local.stderr)
    rules = {jobid: rule for rule, jobid in re.findall(r"^rule (\w+):\n(?:    .*\n)*?    jobid: (\d+)$", out, re.M)}
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", out))
    assert submitted and set(submitted) == set(rules), (sorted(rules), sorted(submitted))
    counts = {rule: list(rules.values()).count(rule) for rule in RESOURCE_KIND}
    assert counts == {"generate_dataset": 1, "behavior_policy": 2, "world_model": 4, "train": 24}, counts
    completed = slurm.completed_jobs()  # the job-completion log
    assert sorted(completed[s]["JobState"] + " " + completed[s]["ExitCode"] for s in submitted.values()) == \
        ["COMPLETED 0:0"] * len(submitted)
    assert len({completed[s]["Name"] for s in submitted.values()}) == 1  # the run's id names all its jobs

    # Each job got what the config's resources section asks for, GPUs as gres/gpu.
    for jobid, rule in rules.items():
        if rule not in RESOURCE_KIND:
            continue
        shown = slurm.run("scontrol", "show", "job", submitted[jobid]).stdout
        info = dict(re.findall(r"(\w+)=(\S+)", shown))
        wanted = resources[RESOURCE_KIND[rule]]
        assert info["Comment"].startswith(f"rule_{rule}") and info["Partition"] == "debug", info
        assert info["NumCPUs"] == str(wanted["threads"]) and info["MinMemoryNode"] == f"{wanted['mem_mb']}M", (rule, info)
        assert info["TimeLimit"] == slurm_time(wanted["runtime"]), (rule, info)
        gpus = re.search(r"TresPer(?:Job|Node)=gres:gpu:(\d+)", shown)
        assert (int(gpus.group(1)) if gpus else 0) == wanted["gpu"], (rule, info)
    assert resources["behavior_policy"]["gpu"] == 1  # the GPU branch above was taken

    # The same files as the local run, and the same scores (runs are deterministic given a seed).
    assert outputs(slurm_dir) == outputs(local_dir)
    finals = sorted(p.relative_to(local_dir) for p in local_dir.glob("results/runs/*/*/*/final.json"))
    assert len(finals) >= 24
    for path in finals:
        ours, theirs = json.loads((slurm_dir / path).read_text()), json.loads((local_dir / path).read_text())
        assert ours["final_score"] == theirs["final_score"], path
