"""`make bench`: build fp32, dynamic and static int8 of the bundled model, then measure side by side.

Accuracy: STS-B dev Spearman (x100). Speed: all models timed interleaved in one run (CPU provider,
2 threads, seq 128), reported as ratios to fp32, since absolute times drift on shared machines.
Writes benchmarks/results.json and benchmarks/results.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import peers

from onnxopt.data.sources import embedded_samples
from onnxopt.data.sts_pairs import load_sts_pairs
from onnxopt.evaluate.sts import sts_spearman
from onnxopt.export.workflow import export
from onnxopt.io import model_files
from onnxopt.prune.workflow import prune
from onnxopt.quantize.workflow import quantize
from onnxopt.runtime.measure import bench

SECOND_DOMAIN = Path(__file__).resolve().parent / "data" / "everyday-sts.csv"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/stsb"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--work", type=Path, default=Path("build/bench"))
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=4.0)
    parser.add_argument("--max-drop", type=float, default=0.1, help="also build static --max-drop X")
    # Written for this project, never tuned on (benchmarks/data/README.md): how pruning holds on text
    # of another kind than the STS-B dev set its defaults were chosen on.
    parser.add_argument("--second-domain", type=Path, default=SECOND_DOMAIN)
    args = parser.parse_args()

    pairs = load_sts_pairs(args.data / "sts-dev.csv")
    second = load_sts_pairs(args.second_domain)
    work = args.work
    models: dict[str, Path] = {}
    t0 = time.perf_counter()
    export(None, work / "fp32", overwrite=True)
    models["fp32"] = work / "fp32"
    quantize(work / "fp32", work / "dynamic", mode="dynamic", overwrite=True)
    models["dynamic int8"] = work / "dynamic"
    quantize(work / "fp32", work / "static", mode="static", calib=40, overwrite=True)
    models["static int8 (--calib 40)"] = work / "static"
    quantize(work / "fp32", work / "no-smooth", mode="static", calib=40, smooth=False, overwrite=True)
    models["static int8 --no-smooth"] = work / "no-smooth"
    quantize(work / "fp32", work / "dynamic-gelu", mode="static", calib=40, dynamic_gelu=True, overwrite=True)
    models["static int8 --dynamic-gelu"] = work / "dynamic-gelu"
    if args.max_drop is not None:
        # The search measures on a slice of the train split, so the dev figures below stay held out.
        search_pairs = work / "search-pairs.csv"
        lines = (args.data / "sts-train.csv").read_text(encoding="utf-8").splitlines()[::12]
        search_pairs.write_text("\n".join(lines) + "\n", encoding="utf-8")
        quantize(
            work / "fp32",
            work / "max-drop",
            mode="static",
            calib=40,
            max_drop=args.max_drop,
            eval_data=str(search_pairs),
            overwrite=True,
        )
        models[f"static int8 --max-drop {args.max_drop:g}"] = work / "max-drop"
    prune(work / "fp32", work / "pruned", sparsity=0.6, heads=False, overwrite=True)
    models["pruned FFN (--sparsity 0.6 --no-heads)"] = work / "pruned"
    quantize(work / "pruned", work / "pruned-static", mode="static", calib=40, overwrite=True)
    models["pruned FFN + static int8"] = work / "pruned-static"
    prune(work / "fp32", work / "pruned-heads", sparsity=0.5, overwrite=True)  # issue 4's setting
    models["pruned heads+FFN (--sparsity 0.5)"] = work / "pruned-heads"
    quantize(work / "pruned-heads", work / "pruned-heads-static", mode="static", calib=40, overwrite=True)
    models["pruned heads+FFN + static int8"] = work / "pruned-heads-static"
    texts = embedded_samples(40)
    models["peer: ORT quantize_static QDQ"] = peers.ort_static_qdq(work / "fp32", work / "peer-static", texts)
    models["peer: ORT fusion + quantize_dynamic"] = peers.ort_fusion_dynamic(
        work / "fp32", work / "peer-dynamic"
    )
    print(f"built {len(models)} models in {time.perf_counter() - t0:.0f} s")

    scores = {name: sts_spearman(path, pairs, threads=args.threads) for name, path in models.items()}
    second_scores = {name: sts_spearman(path, second, threads=args.threads) for name, path in models.items()}
    refs = [model_files.resolve(p) for p in models.values()]
    timings = bench(
        refs, [1, 32], 128, threads=args.threads, runs=args.runs, min_seconds=args.min_time
    ).timings
    rows = []
    for name, path in models.items():
        by_batch = {t.batch: t for t in timings if t.model == model_files.resolve(path).name}
        rows.append(
            {
                "model": name,
                "stsb_dev_spearman": round(scores[name], 2),
                "drop": round(scores["fp32"] - scores[name], 2),
                "second_domain_drop": round(second_scores["fp32"] - second_scores[name], 2),
                "speedup_b1": round(by_batch[1].speedup, 2),
                "speedup_b32": round(by_batch[32].speedup, 2),
                "p50_ms_b1": round(by_batch[1].p50_ms, 1),
                "p50_ms_b32": round(by_batch[32].p50_ms, 1),
                "size_mb": round(model_files.resolve(path).size_bytes() / 1e6, 1),
            }
        )
    header = (
        "| model | STS-B dev | drop | everyday drop | speedup b1 | speedup b32 | size MB |\n"
        "|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['model']} | {r['stsb_dev_spearman']:.2f} | {r['drop']:.2f} | {r['second_domain_drop']:.2f} | "
        f"{r['speedup_b1']:.2f}x | "
        f"{r['speedup_b32']:.2f}x | {r['size_mb']} |"
        for r in rows
    ]
    table = header + "\n".join(lines) + "\n"
    note = (
        f"\n{cpu_name()}; CPU provider, {args.threads} threads, seq 128; models timed interleaved, "
        f"at least {args.runs} runs and {args.min_time:g} s each per batch size; "
        "speedups vs fp32 from the same run.\n"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"rows": rows, "cpu": cpu_name(), "threads": args.threads, "runs": args.runs}, indent=2)
        + "\n"
    )
    (args.out / "results.md").write_text(table + note)
    print(table + note)


def cpu_name() -> str:
    """The machine the figures come from: its CPU model and the int8 path it offers."""
    import platform

    from onnxopt.runtime.cpu import cpu_features

    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor() or platform.machine(),
    )  # fmt: skip
    return f"{model} ({cpu_features().describe().split(':')[0]})"


if __name__ == "__main__":
    main()
