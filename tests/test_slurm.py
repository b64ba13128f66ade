"""The class graded as a Slurm array job, on a real one-node cluster, equals one machine's grading.

The test installs Debian's ``slurmctld``, ``slurmd``, ``slurm-client`` and ``munge`` when they are
missing (as root, as CI runs), starts ``munged`` with a fresh key and a one-node cluster whose
configuration, state and logs live in a temporary folder, and submits ``grader/slurm/grade.sbatch``
exactly as ``grader/README.md`` shows it. Every daemon it started is stopped by its pid.

Run on its own: ``.venv/bin/python -m pytest -m slurm``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from submissions import trust

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "grader" / "slurm" / "grade.sbatch"
ASSIGNMENTS = ("02_first_layer_maps", "04_normalize_interpret")
STUDENTS = 20  # per assignment: 40 submissions
SHARDS = 4
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")


def install_slurm() -> None:
    if all(shutil.which(c) for c in ("slurmctld", "slurmd", "sbatch", "munged")):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"Slurm is not installed: apt-get install {' '.join(PACKAGES)} (as root), then run again")
    subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], check=True, capture_output=True, timeout=900,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """munged + slurmctld + slurmd on this machine, everything under ``folder``."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.host = socket.gethostname().split(".")[0]
        self.conf = folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.pidfiles = [folder / "munged.pid", folder / "slurmctld.pid", folder / "slurmd.pid"]

    def start(self) -> None:
        f = self.folder
        for d in ("state", "spool"):
            (f / d).mkdir()
        (f / "munge.key").write_bytes(os.urandom(1024))
        (f / "munge.key").chmod(0o400)
        subprocess.run(["munged", "--force", f"--socket={f / 'munge.sock'}", f"--key-file={f / 'munge.key'}",
                        f"--pid-file={f / 'munged.pid'}", f"--log-file={f / 'munged.log'}",
                        f"--seed-file={f / 'munge.seed'}"], check=True, timeout=60)
        cpus = os.cpu_count() or 1
        self.conf.write_text(f"""\
ClusterName=grading
SlurmctldHost={self.host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={f / 'munge.sock'}
CredType=cred/munge
StateSaveLocation={f / 'state'}
SlurmdSpoolDir={f / 'spool'}
SlurmctldPidFile={f / 'slurmctld.pid'}
SlurmdPidFile={f / 'slurmd.pid'}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmctldLogFile={f / 'slurmctld.log'}
SlurmdLogFile={f / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={self.host} CPUs={cpus} State=UNKNOWN
PartitionName=grading Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(self.conf)], check=True, env=self.env, timeout=60)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-o", "%T").stdout.strip()
            if state == "idle":
                return
            time.sleep(1)
        raise AssertionError(f"the node did not become idle (state {state!r}); see {f}/slurmctld.log")

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=timeout, cwd=ROOT)

    def sbatch(self, array: str, course: Path, *extra: str, timeout: float = 1800) -> subprocess.CompletedProcess:
        """``GRADER_SHARDS=N sbatch --array=... grader/slurm/grade.sbatch``, as the README shows it."""
        env = {**self.env, "GRADER_SHARDS": str(SHARDS), "GRADER_COURSE_DIR": str(course),
               "GRADER_PYTHON": sys.executable}
        return subprocess.run(["sbatch", f"--array={array}", "--cpus-per-task=1",
                               f"--output={self.folder}/task-%A_%a.out", *extra, str(JOB)],
                              capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)

    def stop(self) -> None:
        """Cancel this cluster's jobs (so no job step outlives it), then stop each daemon by its pid."""
        if (self.folder / "slurmctld.pid").exists():
            self.run("scancel", "--full", "--partition=grading")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.run("squeue", "-h").stdout.strip():
                time.sleep(1)
        for pidfile in reversed(self.pidfiles):
            try:
                pid = int(pidfile.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path_factory):
    install_slurm()
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


def write_class(course: Path) -> None:
    """20 students per assignment: correct, partly done, untouched and broken, in turn."""
    for name in ASSIGNMENTS:
        solved = trust.solutions(name)
        first = next(gid for gid, code in solved.items() if "def " in code)  # the first coding exercise
        broken = solved[first] + "\n)"  # a cell that does not parse: the exercise is missing
        kinds = [trust.correct(name), trust.fill(name, {first: solved[first]}), trust.release(name),
                 trust.correct(name, **{first: broken})]
        for i in range(STUDENTS):
            path = course / "submitted" / f"student{i:02d}" / name / f"{name}.ipynb"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(kinds[i % len(kinds)]))


def grader(course: Path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "grader", "--course-dir", str(course), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=1800)
    assert proc.returncode == 0, f"grader {args}: {proc.stdout}\n{proc.stderr[-3000:]}"
    return proc


def graded(course: Path) -> dict[tuple[str, str], dict]:
    """(assignment, student) -> what the result says about the submission (not how long it took)."""
    out = {}
    for path in (course / "grading" / "results").glob("*/*.json"):
        r = json.loads(path.read_text())
        out[(r["assignment"], r["student"])] = {k: r[k] for k in ("status", "score", "max_score", "tests", "problems")}
    return out


@pytest.mark.timeout(2700)  # two gradings of 40 submissions, one of them as a Slurm array with a rerun
def test_array_job_with_a_killed_task_equals_one_machine(cluster, tmp_path, trained_model):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    write_class(single)
    shutil.copytree(single / "submitted", sharded / "submitted")

    start = time.perf_counter()
    grader(single, "autograde", "--jobs", "2", "--quiet")
    single_seconds = time.perf_counter() - start

    start = time.perf_counter()
    submitted = cluster.sbatch(f"1-{SHARDS}", sharded, "--parsable")
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    # kill task 2 once it has graded something, then wait for the others
    shard2 = sharded / "grading" / "shards" / "2"
    deadline = time.monotonic() + 900
    while not list(shard2.glob("*/*.json")):
        assert time.monotonic() < deadline, f"task 2 graded nothing in 15 minutes: {cluster.run('squeue').stdout}"
        if not cluster.run("squeue", "-h", "-j", job).stdout.strip():  # the whole array ended
            said = "".join(p.read_text() for p in sorted(cluster.folder.glob("task-*.out")))
            raise AssertionError(f"the array ended before task 2 graded anything:\n{said[-3000:]}")
        time.sleep(0.5)
    assert cluster.run("scancel", f"{job}_2").returncode == 0
    while cluster.run("squeue", "-h", "-j", job).stdout.strip():
        assert time.monotonic() < deadline, cluster.run("squeue").stdout
        time.sleep(1)
    before_rerun = {p.name for p in shard2.glob("*/*.json")}
    rerun = cluster.sbatch("2", sharded, "--wait", "--parsable")
    assert rerun.returncode == 0, (rerun.stdout, rerun.stderr, (cluster.folder / "slurmctld.log").read_text()[-2000:])
    slurm_seconds = time.perf_counter() - start
    said = (cluster.folder / f"task-{rerun.stdout.strip().split(';')[0]}_2.out").read_text()
    assert f"{len(before_rerun)} unchanged since the last run" in said, said  # kept what task 2 had graded
    merged = grader(sharded, "merge", *map(str, sorted((sharded / "grading" / "shards").iterdir())))
    assert f"merged {2 * STUDENTS} result(s)" in merged.stdout, merged.stdout

    assert before_rerun  # task 2 had really graded part of its shard before it was killed
    got, expected = graded(sharded), graded(single)
    assert len(expected) == 2 * STUDENTS and got == expected  # scores, messages, problems: bit for bit
    for course in (single, sharded):
        grader(course, "export", "--out", str(course / "grades.csv"))
    assert (sharded / "grades.csv").read_bytes() == (single / "grades.csv").read_bytes()
    rows = (single / "grades.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 * STUDENTS and len({tuple(r.split(",")[:2]) for r in rows}) == 2 * STUDENTS  # none twice
    scores = {json.dumps(r["score"]) for r in expected.values()}
    assert len(scores) >= 3  # a real mix: full, partial and zero
    print(f"\nSlurm array ({SHARDS} tasks, one killed and rerun): {slurm_seconds:.0f} s; "
          f"one machine, --jobs 2: {single_seconds:.0f} s; {2 * STUDENTS} submissions")
