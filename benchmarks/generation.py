"""`make bench` (generative table): SmolLM2-135M built fp32, dynamic int8, static int8, int4, pruned
+ int4, and two peers run the way their users run them, then measured side by side.

- Perplexity through the KV cache on held-out text: sentences of STS-B *train* (calibration reads
  onnxopt's embedded corpora; the layout decisions were made on STS-B dev text, so dev is not
  reported).
- Greedy agreement with fp32: 8 prompts x 32 new tokens, share of identical tokens.
- Speed: every model timed interleaved in one run (CPU provider, 2 threads, batch 1, prompt 128,
  64 new tokens), decode tokens/s as a ratio to fp32; peak RSS of a fresh process serving it.
Writes benchmarks/generation.json and benchmarks/generation.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from run import cpu_name

from onnxopt.evaluate.generation import cache_perplexity, greedy_agreement, greedy_tokens
from onnxopt.export.workflow import export
from onnxopt.io import model_files
from onnxopt.prune.workflow import prune
from onnxopt.quantize.workflow import quantize
from onnxopt.runtime.generation_bench import bench_generation
from onnxopt.runtime.sessions import SessionSettings


def heldout_sentences(data: Path, count: int) -> list[str]:
    with (data / "sts-train.csv").open(encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    sentences = [r[5] for r in rows if len(r) > 6]
    return sentences[:: max(1, len(sentences) // count)][:count]


def peer_quantize_dynamic(fp32: Path, out: Path) -> Path:
    """optimum's with-past export (onnxopt's fp32 is exactly that) + quantize_dynamic, as its docs show."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from peers import _copy_sidecars

    _copy_sidecars(fp32, out)
    quantize_dynamic(str(fp32 / "model.onnx"), str(out / "model.onnx"), weight_type=QuantType.QInt8)
    return out


def peer_matmul_nbits(fp32: Path, out: Path) -> Path:
    """onnxruntime's MatMulNBitsQuantizer, RTN, int4, block 32, its other defaults."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    from peers import _copy_sidecars

    _copy_sidecars(fp32, out)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32 / "model.onnx")), block_size=32)
    quantizer.process()
    quantizer.model.save_model_to_file(str(out / "model.onnx"), use_external_data_format=False)
    return out


def build(work: Path) -> dict[str, Path]:
    models = {"fp32": work / "fp32"}
    if not (work / "fp32" / "model.onnx").is_file():
        export(None, work / "fp32", bundled="smollm2", overwrite=True)
    quantize(work / "fp32", work / "dynamic", mode="dynamic", overwrite=True)
    models["dynamic int8"] = work / "dynamic"
    quantize(work / "fp32", work / "static", mode="static", calib=40, overwrite=True)
    models["static int8 (--calib 40)"] = work / "static"
    quantize(work / "fp32", work / "int4", mode="int4", block_size=32, overwrite=True)
    models["int4 (block 32, offset)"] = work / "int4"
    quantize(work / "fp32", work / "int4-rtn", mode="int4", block_size=32, algo="rtn", overwrite=True)
    models["int4 (block 32, --algo rtn)"] = work / "int4-rtn"
    prune(work / "fp32", work / "pruned", sparsity=0.1, overwrite=True)
    quantize(work / "pruned", work / "pruned-int4", mode="int4", block_size=32, overwrite=True)
    models["pruned 0.1 + int4"] = work / "pruned-int4"
    models["peer: optimum export + quantize_dynamic"] = peer_quantize_dynamic(
        work / "fp32", work / "peer-dynamic"
    )
    models["peer: MatMulNBitsQuantizer rtn int4 b32"] = peer_matmul_nbits(work / "fp32", work / "peer-int4")
    return models


def accuracy(models: dict[str, Path], texts: list[str], threads: int) -> dict[str, dict]:
    settings = SessionSettings(intra_threads=threads)
    prompts = texts[:8]
    reference = greedy_tokens(models["fp32"], prompts, 32, 64, settings=settings)
    found = {}
    for name, path in models.items():
        ppl = cache_perplexity(path, texts, 128, settings=settings)
        tokens = reference if name == "fp32" else greedy_tokens(path, prompts, 32, 64, settings=settings)
        found[name] = {"perplexity": ppl, "agreement": greedy_agreement(tokens, reference)}
        print(f"{name}: perplexity {ppl:.2f}, agreement {found[name]['agreement']:.1f}%", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/stsb"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks"))
    parser.add_argument("--work", type=Path, default=Path("build/bench-generate"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--sentences", type=int, default=300)
    args = parser.parse_args()
    t0 = time.perf_counter()
    models = build(args.work)
    print(f"built {len(models)} models in {time.perf_counter() - t0:.0f} s", flush=True)
    scores = accuracy(models, heldout_sentences(args.data, args.sentences), args.threads)
    refs = [model_files.resolve(p) for p in models.values()]
    settings = SessionSettings(intra_threads=args.threads)
    timings = bench_generation(refs, [1], 128, 64, lambda _ref: settings, runs=args.runs, min_seconds=20)
    rows = []
    base = scores["fp32"]["perplexity"]
    for (name, path), t in zip(models.items(), timings, strict=True):
        rows.append(
            {
                "model": name,
                "perplexity": round(scores[name]["perplexity"], 3),
                "perplexity_change_pct": round(100 * (scores[name]["perplexity"] / base - 1), 1),
                "greedy_agreement_pct": round(scores[name]["agreement"], 1),
                "decode_tokens_per_s": round(t.tokens_per_s, 1),
                "decode_speedup": round(t.speedup, 2),
                "first_token_ms": round(t.ttft_ms, 1),
                "tpot_p50_ms": round(t.tpot_p50_ms, 2),
                "tpot_p90_ms": round(t.tpot_p90_ms, 2),
                "peak_rss_mb": None if np.isnan(t.rss_mb) else round(t.rss_mb),
                "size_mb": round(model_files.resolve(path).size_bytes() / 1e6, 1),
            }
        )
    write(args, rows, timings[0].generations)


def write(args, rows: list[dict], generations: int) -> None:
    header = (
        "| model | perplexity | change | greedy = fp32 | decode tok/s | speedup | first token ms "
        "| peak RSS MB | size MB |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['model']} | {r['perplexity']:.2f} | {r['perplexity_change_pct']:+.1f}% | "
        f"{r['greedy_agreement_pct']:.1f}% | {r['decode_tokens_per_s']:.1f} | {r['decode_speedup']:.2f}x | "
        f"{r['first_token_ms']:.0f} | {r['peak_rss_mb']} | {r['size_mb']} |"
        for r in rows
    ]
    note = (
        f"\nSmolLM2-135M-Instruct (bundled GGUF, dequantized to fp32). {cpu_name()}; CPU provider, "
        f"{args.threads} threads; batch 1, prompt 128, 64 new tokens, {generations} generations per "
        f"model, interleaved; perplexity through the cache on {args.sentences} STS-B train sentences "
        "(held out); greedy agreement with fp32 on 8 prompts x 32 tokens.\n"
    )
    table = header + "\n".join(lines) + "\n" + note
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"rows": rows, "cpu": cpu_name(), "threads": args.threads, "generations": generations}
    (args.out / "generation.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "generation.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
