"""Where trials are built and evaluated: in this process (`local`), or as Ray tasks (`ray`).

Both take a job with the folder of its nearest model already built, and give back its
evaluation; the search decides what to run (onnxopt.search.strategy) and measures latency
itself, on this machine, one model at a time. A Ray task gets its model and data as file
contents and returns the models it built the same way (onnxopt.search.remote), and the driver
writes them into OUT, staged and renamed like every output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from onnxopt.errors import first_line
from onnxopt.io.outputs import staged_dir
from onnxopt.search.config import SearchConfig
from onnxopt.search.jobs import EvalSpec, Evaluated, Job, run_job
from onnxopt.search.ray_session import connect, import_ray, signals_between_calls
from onnxopt.search.remote import data_files, pack, run_remote, unpack

Progress = Callable[[str, int, int], None]
FolderOf = Callable[[str], Path]  # a step's hash -> its folder under OUT


class LocalExecutor:
    """One job at a time, in this process; latency can be measured right after each."""

    times_inline = True

    def __init__(self, folder_of: FolderOf, spec: EvalSpec, progress: Progress):
        self.folder_of, self.spec, self.progress = folder_of, spec, progress
        self.queued: list[tuple[Job, Path]] = []

    def free(self) -> int:
        return 1 - len(self.queued)

    def running(self) -> int:
        return len(self.queued)

    def submit(self, job: Job, src: Path) -> None:
        self.queued.append((job, src))

    def wait_one(self) -> Evaluated:
        job, src = self.queued.pop(0)
        return run_job(job, src, lambda step: self.folder_of(step.hash), self.spec, self.progress)

    def close(self) -> None:
        pass


class RayExecutor:
    """Jobs as Ray tasks of one CPU each, as many at once as the cluster has CPUs. Latency waits
    until the builds are done (`times_inline` False): timing never shares cores with them.

    Every Ray call runs with the stop signals held back (onnxopt.search.ray_session), and waits
    are short, so a signal lands within WAIT_SECONDS; a stopped search cancels its running tasks
    (each removes its temporary folder as it ends) before Ray shuts down."""

    times_inline = False
    WAIT_SECONDS = 0.5  # how long a signal may wait for Ray to hand back control
    CANCEL_SECONDS = 5.0  # how long cancelled tasks get to clean up before Ray is shut down

    def __init__(self, config: SearchConfig, folder_of: FolderOf, spec: EvalSpec, progress: Progress):
        self.ray = import_ray()
        self.folder_of, self.spec, self.progress = folder_of, spec, progress
        self.tasks: dict[object, Job] = {}
        self.models: dict[Path, object] = {}  # folder -> its files in Ray's object store
        try:
            connect(self.ray, config)
            with signals_between_calls():
                self.slots = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
                self.task = self.ray.remote(num_cpus=1)(run_remote)
        except BaseException:
            self.close()  # a signal as Ray came up: the search never gets this executor to close
            raise

    def free(self) -> int:
        return self.slots - len(self.tasks)

    def running(self) -> int:
        return len(self.tasks)

    def submit(self, job: Job, src: Path) -> None:
        data = {path: Path(path).read_bytes() for path in data_files(job, self.spec)}
        with signals_between_calls():
            if src not in self.models:
                self.models[src] = self.ray.put(pack(src))
            self.tasks[self.task.remote(job, self.models[src], data, self.spec)] = job
        self.progress(f"{job.key}: sent to Ray", 0, 0)

    def wait_one(self) -> Evaluated:
        done: list = []
        while not done:
            with signals_between_calls():
                done, _ = self.ray.wait(list(self.tasks), num_returns=1, timeout=self.WAIT_SECONDS)
        job = self.tasks.pop(done[0])
        try:
            with signals_between_calls():
                result, made = self.ray.get(done[0])
        except Exception as exc:  # the task died (a node lost, out of memory): the trial failed
            return Evaluated(job.key, job.eval_hash, error=f"Ray task failed: {first_line(exc)}")
        for step_hash, files in made.items():
            target = self.folder_of(step_hash)
            if not target.exists():
                with staged_dir(target) as tmp:
                    unpack(files, tmp)
        return result

    def close(self) -> None:
        """Cancel the tasks still running (a KeyboardInterrupt in each, so its temporary folder goes
        with it), give them CANCEL_SECONDS to end, then shut Ray down."""
        with signals_between_calls():
            try:
                self._cancel()
            finally:
                self.ray.shutdown()

    def _cancel(self) -> None:
        if not self.tasks:
            return
        for ref in self.tasks:
            with contextlib.suppress(Exception):  # a task that ended meanwhile
                self.ray.cancel(ref)
        with contextlib.suppress(Exception):
            self.ray.wait(list(self.tasks), num_returns=len(self.tasks), timeout=self.CANCEL_SECONDS)
        self.tasks.clear()


def make_executor(config: SearchConfig, folder_of: FolderOf, spec: EvalSpec, progress: Progress):
    if config.executor == "ray":
        return RayExecutor(config, folder_of, spec, progress)
    return LocalExecutor(folder_of, spec, progress)
