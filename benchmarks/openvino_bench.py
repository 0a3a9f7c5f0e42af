"""`make bench-openvino`: int8 for OpenVINO against NNCF, side by side, on the bundled MiniLM.

Models: fp32; onnxopt's static int8 for the CPU provider (the default target); onnxopt's
`--target openvino`; the pruned model of `make bench` (heads and FFN, --sparsity 0.5) quantized
for either target, since issue 17's bar for pruning + int8 names no provider and selection picks
one by measurement; the NNCF 3.4 default recipe (benchmarks/nncf_peer.py, run by the Python of
build/nncf-venv, which `make nncf-venv` builds, so NNCF's pins never touch ours). Every model
runs on every provider that can read it (the CPU layout cannot be read by OpenVINO), timed
interleaved in one run at batch 1 and 32. Accuracy: STS-B dev (the tuning text), train (held
out: nothing was tuned or calibrated on it) and the everyday pairs written for this project
(benchmarks/data), Spearman x100, on OpenVINO for the OpenVINO models.
Writes benchmarks/openvino.json and benchmarks/openvino.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from run import SECOND_DOMAIN, cpu_name

from onnxopt.data.sts_pairs import load_sts_pairs
from onnxopt.evaluate.sts import sts_spearman
from onnxopt.export.workflow import export
from onnxopt.io import model_files
from onnxopt.prune.workflow import prune
from onnxopt.quantize.workflow import quantize
from onnxopt.runtime.measure import bench
from onnxopt.runtime.providers import openvino_route
from onnxopt.runtime.sessions import SessionSettings

NNCF_PYTHON = Path("build/nncf-venv/bin/python")


def build(work: Path) -> dict[str, tuple[Path, str]]:
    """name -> (folder, provider its accuracy is measured on)."""
    if not (work / "fp32" / "model.onnx").is_file():
        export(None, work / "fp32", overwrite=True)
    quantize(work / "fp32", work / "static", mode="static", calib=40, overwrite=True)
    quantize(work / "fp32", work / "openvino", mode="static", calib=40, target="openvino", overwrite=True)
    prune(work / "fp32", work / "pruned", sparsity=0.5, overwrite=True)
    quantize(work / "pruned", work / "pruned-static", mode="static", calib=40, overwrite=True)
    quantize(
        work / "pruned", work / "pruned-openvino", mode="static", calib=40, target="openvino", overwrite=True
    )
    models = {
        "fp32": (work / "fp32", "openvino"),
        "static int8 (--target cpu)": (work / "static", "cpu"),
        "static int8 (--target openvino)": (work / "openvino", "openvino"),
        "pruned 0.5 + static int8 (--target cpu)": (work / "pruned-static", "cpu"),
        "pruned 0.5 + static int8 (--target openvino)": (work / "pruned-openvino", "openvino"),
    }
    if NNCF_PYTHON.is_file():
        script = Path(__file__).resolve().parent / "nncf_peer.py"
        subprocess.run([str(NNCF_PYTHON), str(script), str(work / "fp32"), str(work / "nncf")], check=True)
        models["peer: NNCF 3.4 defaults"] = (work / "nncf", "openvino")
    else:
        print(f"no {NNCF_PYTHON}: run `make nncf-venv` for the NNCF row", file=sys.stderr)
    return models


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/stsb"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--work", type=Path, default=Path("build/bench-openvino"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    models = build(args.work)
    texts = {split: load_sts_pairs(args.data / f"sts-{split}.csv") for split in ("dev", "train")}
    texts["everyday"] = load_sts_pairs(SECOND_DOMAIN)
    scores = {}
    for name, (path, provider) in models.items():
        settings = SessionSettings(provider=provider, intra_threads=args.threads)
        scores[name] = {s: sts_spearman(path, pairs, settings=settings) for s, pairs in texts.items()}
        print(name, provider, {s: round(v, 2) for s, v in scores[name].items()}, flush=True)
    refs = [model_files.resolve(path) for path, _ in models.values()]
    report = bench(refs, [1, 32], 128, threads=args.threads, runs=args.runs, min_seconds=4.0,
                   providers=["cpu", "openvino"])  # fmt: skip
    base = report.timings[0]  # fp32 on the CPU provider, batch 1
    rows = []
    for name, (path, provider) in models.items():
        for t in (t for t in report.timings if t.model == model_files.resolve(path).name):
            rows.append({
                "model": name, "provider": t.provider, "batch": t.batch, "p50_ms": round(t.p50_ms, 1),
                "speedup_vs_fp32_cpu": round(t.speedup, 2),
                "stsb_dev": round(scores[name]["dev"], 2), "stsb_train": round(scores[name]["train"], 2),
                "dev_drop": round(scores["fp32"]["dev"] - scores[name]["dev"], 2),
                "train_drop": round(scores["fp32"]["train"] - scores[name]["train"], 2),
                "everyday_drop": round(scores["fp32"]["everyday"] - scores[name]["everyday"], 2),
                "accuracy_on": provider, "size_mb": round(model_files.resolve(path).size_bytes() / 1e6, 1),
            })  # fmt: skip
    write(args, rows, report, base)


def write(args, rows: list[dict], report, base) -> None:
    fp32_ov = {r["batch"]: r["p50_ms"] for r in rows if r["model"] == "fp32" and r["provider"] == "openvino"}
    head = (
        "| model | provider | batch | p50 ms | vs fp32 on cpu | vs fp32 on openvino | STS-B dev (drop) "
        "| STS-B train, held out (drop) | everyday drop | size MB |\n" + "|---" * 10 + "|\n"
    )
    lines = [
        f"| {r['model']} | {r['provider']} | {r['batch']} | {r['p50_ms']} | "
        f"{r['speedup_vs_fp32_cpu']:.2f}x | "
        f"{fp32_ov[r['batch']] / r['p50_ms']:.2f}x | {r['stsb_dev']:.2f} ({r['dev_drop']:+.2f}) | "
        f"{r['stsb_train']:.2f} ({r['train_drop']:+.2f}) | {r['everyday_drop']:+.2f} | {r['size_mb']} |"
        for r in sorted(rows, key=lambda r: (r["batch"], r["provider"]))
    ]
    route = ": ".join(openvino_route())
    cannot = "; ".join(f"{u.provider} {u.reason}" for u in report.unavailable if u.provider == "openvino")
    note = (
        f"\n{cpu_name()}; {args.threads} threads, seq 128, one interleaved run (at least {args.runs} runs "
        f"and 4 s per pair and batch). fp32's accuracy measured on OpenVINO. OpenVINO route: {route}.\n"
        + (f"Not run: {cannot}.\n" if cannot else "")
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "openvino.json").write_text(json.dumps({"rows": rows, "cpu": cpu_name()}, indent=2) + "\n")
    (args.out / "openvino.md").write_text(head + "\n".join(lines) + "\n" + note)
    print(head + "\n".join(lines) + "\n" + note)


if __name__ == "__main__":
    main()
