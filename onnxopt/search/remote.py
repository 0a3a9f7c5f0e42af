"""A trial's build and evaluation in a Ray task, on any node of a cluster: the models and data it
reads arrive as file contents and the models it built go back the same way, so no node needs to
see the driver's disk (only onnxopt installed, at the same version). Imports no Ray: the task is
a plain function that the executor wraps with `ray.remote`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path, PurePosixPath

from onnxopt.errors import OnnxoptError
from onnxopt.io.leftovers import temp_dir
from onnxopt.search.jobs import EvalSpec, Job, Step, built, run_job

Files = dict[str, bytes]  # path relative to its folder -> contents
PATH_OPTIONS = ("calib_data", "eval_data")


def pack(folder: Path) -> Files:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def unpack(files: Files, folder: Path) -> Path:
    for name, data in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise OnnxoptError(f"a model file named {name!r} would leave its folder", "report it")
        path = folder.joinpath(*relative.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def data_files(job: Job, spec: EvalSpec) -> list[str]:
    """The files a job reads besides its model: the evaluation data, and data files of its steps."""
    found = [spec.data]
    for step in job.steps:
        found += [
            v
            for k, v in step.options.items()
            if k in PATH_OPTIONS and isinstance(v, str) and Path(v).is_file()
        ]
    return list(dict.fromkeys(found))


def run_remote(job: Job, model: Files, data: dict[str, bytes], spec: EvalSpec):
    """In the task's own temporary folder: (Evaluated, {step hash: the files of the model it built})."""
    with temp_dir("search") as tmp:
        root = Path(tmp)
        src = unpack(model, root / "input")
        local = {}
        for i, (path, contents) in enumerate(data.items()):
            local[path] = root / "data" / f"{i}-{Path(path).name}"
            local[path].parent.mkdir(parents=True, exist_ok=True)
            local[path].write_bytes(contents)

        def moved(step: Step) -> Step:
            options = {
                k: str(local[v]) if k in PATH_OPTIONS and v in local else v for k, v in step.options.items()
            }
            return replace(step, options=options)

        here = replace(job, steps=tuple(moved(s) for s in job.steps))
        result = run_job(
            here, src, lambda s: root / s.hash[:16], replace(spec, data=str(local[spec.data])), _quiet
        )
        made = {s.hash: pack(root / s.hash[:16]) for s in job.steps if built(root / s.hash[:16])}
        return result, made


def _quiet(_stage: str, _done: int, _total: int) -> None:
    pass
