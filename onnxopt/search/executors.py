"""Where trials are built and evaluated: in this process (`local`), or as Ray tasks (`ray`).

Both take a job with the folder of its nearest model already built, and give back its
evaluation; the search decides what to run (onnxopt.search.strategy) and measures latency
itself, on this machine, one model at a time. A Ray task gets its model and data as file
contents and returns the models it built the same way (onnxopt.search.remote), and the driver
writes them into OUT, staged and renamed like every output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from onnxopt.errors import OnnxoptError, first_line
from onnxopt.io.outputs import staged_dir
from onnxopt.search.config import SearchConfig
from onnxopt.search.jobs import EvalSpec, Evaluated, Job, run_job
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
    until the builds are done (`times_inline` False): timing never shares cores with them."""

    times_inline = False

    def __init__(self, config: SearchConfig, folder_of: FolderOf, spec: EvalSpec, progress: Progress):
        self.ray = import_ray()
        self.folder_of, self.spec, self.progress = folder_of, spec, progress
        _connect(self.ray, config)
        self.slots = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        self.task = self.ray.remote(num_cpus=1)(run_remote)
        self.tasks: dict[object, Job] = {}
        self.models: dict[Path, object] = {}  # folder -> its files in Ray's object store

    def free(self) -> int:
        return self.slots - len(self.tasks)

    def running(self) -> int:
        return len(self.tasks)

    def submit(self, job: Job, src: Path) -> None:
        if src not in self.models:
            self.models[src] = self.ray.put(pack(src))
        data = {path: Path(path).read_bytes() for path in data_files(job, self.spec)}
        self.tasks[self.task.remote(job, self.models[src], data, self.spec)] = job
        self.progress(f"{job.key}: sent to Ray", 0, 0)

    def wait_one(self) -> Evaluated:
        (ref,), _ = self.ray.wait(list(self.tasks), num_returns=1)
        job = self.tasks.pop(ref)
        try:
            result, made = self.ray.get(ref)
        except Exception as exc:  # the task died (a node lost, out of memory): the trial failed
            return Evaluated(job.key, job.eval_hash, error=f"Ray task failed: {first_line(exc)}")
        for step_hash, files in made.items():
            target = self.folder_of(step_hash)
            if not target.exists():
                with staged_dir(target) as tmp:
                    unpack(files, tmp)
        return result

    def close(self) -> None:
        self.ray.shutdown()


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise OnnxoptError(
            f"--executor ray needs Ray, which is not installed here ({first_line(exc)})",
            "pip install 'onnxopt[ray]' (`make install` does it), or use --executor local",
        ) from exc
    return ray


def _connect(ray, config: SearchConfig) -> None:
    """The cluster at --address, or a local Ray of --ray-cpus CPUs started for this run."""
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if config.address is not None:
            ray.init(address=config.address, **quiet)
        else:
            # "local": a new Ray for this run, even where a cluster's address is on record here.
            ray.init(address="local", num_cpus=config.ray_cpus, include_dashboard=False, **quiet)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, ...
        where = f"the Ray cluster at {config.address}" if config.address else "a local Ray"
        raise OnnxoptError(
            f"cannot start or reach {where}: {first_line(exc)}",
            "check --address (ray://HOST:10001, or auto for the cluster this machine is in)",
        ) from exc


def make_executor(config: SearchConfig, folder_of: FolderOf, spec: EvalSpec, progress: Progress):
    if config.executor == "ray":
        return RayExecutor(config, folder_of, spec, progress)
    return LocalExecutor(folder_of, spec, progress)
