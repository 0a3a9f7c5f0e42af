"""int4 on off-grid weights (issue 29, item 2): the bundled SmolLM2 and its off-grid copies
(benchmarks/offgrid.py) through the same onnxopt commands, perplexity on held-out text.

- The CLI itself runs each step (export, quantize --int4 / --int4 --algo rtn / --dynamic, eval
  --task perplexity), so the figures are what a user gets; the commands go into the JSON.
- Held-out text: STS-B *train* sentences (the layout decisions were made on STS-B dev), written to
  WORK, outside the repository.
- A PyTorch proxy sweeps the scales' spread (sigma): fake-quantized weights, 4-bit min-max and
  4-bit symmetric per 32 input channels, scored on the same windows. Symmetric RTN cannot use
  Q4_1's asymmetric grid, so its rise with sigma is the difficulty the transform itself adds, apart
  from moving the weights off the grid.

    python benchmarks/offgrid_measure.py --work /tmp/og [--sigmas 0.2,0.4]   # offgrid.json + .md
    python benchmarks/offgrid_measure.py --report                            # offgrid.md again
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import offgrid
import torch

HERE = Path(__file__).resolve().parent
VARIANTS = [  # (row, folder, quantize options); fp32 is the export itself
    ("fp32", "fp32", None),
    ("int4 b32, offset (default: blocks searched)", "int4", ["--int4"]),
    ("int4 b32, offset, --no-block-search (min-max)", "int4-minmax", ["--int4", "--no-block-search"]),
    ("int4 b64, offset", "int4-b64", ["--int4", "--block-size", "64"]),
    ("int4 b128, offset", "int4-b128", ["--int4", "--block-size", "128"]),
    ("int4 b32, --algo rtn", "int4-rtn", ["--int4", "--algo", "rtn"]),
    ("dynamic 8-bit", "dynamic", ["--dynamic"]),
]
PROXY_SIGMAS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4]


def heldout_text(data: Path, path: Path, count: int) -> int:
    """`count` STS-B train sentences, evenly spaced rows, column 6 of even picks and 7 of odd ones (no
    paraphrase pair side by side), one a line, into `path`."""
    with (data / "sts-train.csv").open(encoding="utf-8") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(r) > 6]
    picks = rows[:: max(1, len(rows) // count)][:count]
    path.write_text("".join(f"{r[5 + i % 2].strip()}\n" for i, r in enumerate(picks)), encoding="utf-8")
    return len(picks)


def _onnxopt(args: list[str], log: list[str]) -> None:
    log.append("onnxopt " + shlex.join(args))
    print(f"$ {log[-1]}", flush=True)
    subprocess.run([str(Path(sys.executable).with_name("onnxopt")), "-q", *args], check=True)


def measure_weights(source: list[str], work: Path, text: Path, limit: int, log: list[str]) -> list[dict]:
    """Export `source` (a folder, or --bundled smollm2), quantize it each way, perplexity of each."""
    from onnxopt.io import model_files

    rows = []
    for name, folder, options in VARIANTS:
        t0 = time.perf_counter()
        if options is None:
            _onnxopt(["export", *source, "-o", str(work / folder), "--overwrite"], log)
        else:
            _onnxopt(["quantize", str(work / "fp32"), *options, "-o", str(work / folder), "--overwrite"], log)
        seconds = time.perf_counter() - t0
        result = work / f"{folder}.eval.json"
        _onnxopt(["eval", str(work / folder), "--task", "perplexity", "--data", str(text), "--limit",
                  str(limit), "--json", str(result)], log)  # fmt: skip
        found = json.loads(result.read_text())
        rows.append({
            "model": name,
            "perplexity": round(found["metric"], 3),
            "tokens_scored": int(found["extras"]["tokens scored"][0]),
            "size_mb": round(model_files.resolve(work / folder).size_bytes() / 1e6, 1),
            "seconds": round(seconds),  # export or quantize, wall clock
        })  # fmt: skip
    for row in rows:
        row["change_pct"] = round(100 * (row["perplexity"] / rows[0]["perplexity"] - 1), 2)
    return rows


def _fake_quant(weight: torch.Tensor, symmetric: bool) -> torch.Tensor:
    """4-bit round-to-nearest per 32 input channels: min-max (16 levels) or +-absmax (15 levels)."""
    out = []
    for chunk in torch.split(weight.double(), offgrid.BLOCK, dim=1):
        high = chunk.abs().max(1, keepdim=True).values if symmetric else chunk.max(1, keepdim=True).values
        low = -high if symmetric else chunk.min(1, keepdim=True).values
        step = torch.where(high > low, (high - low) / (14 if symmetric else 15), torch.ones_like(high))
        out.append(low + torch.round((chunk - low) / step) * step)
    return torch.cat(out, 1).to(weight.dtype)


def _proxy_perplexity(model, windows: list[torch.Tensor], symmetric: bool | None) -> float:
    """Perplexity of `model` (its decoder linears fake-quantized unless symmetric is None; the head
    stays fp32, as onnxopt keeps it at 8 bits) over the windows, each a prefill of its own."""
    if symmetric is not None:
        model = copy.deepcopy(model)
        with torch.no_grad():
            for layer in model.model.layers:
                for linear in [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]:
                    linear.weight.copy_(_fake_quant(linear.weight, symmetric))
    total = count = 0.0
    with torch.no_grad():
        for window in windows:
            logp = torch.log_softmax(model(input_ids=window[None, :-1]).logits[0].double(), -1)
            total -= float(logp[torch.arange(len(window) - 1), window[1:]].sum())
            count += len(window) - 1
    return float(torch.exp(torch.tensor(total / count)))


def proxy_sweep(text: Path, seed: int, limit: int) -> dict:
    """The proxy's rise in perplexity against sigma, on onnxopt eval's own windows of the text."""
    from itertools import islice

    from onnxopt.evaluate.perplexity import token_pieces, windows

    original, tokenizer = offgrid.load_bundled(text.parent / "tokenizer")
    chunks = [torch.from_numpy(w) for w in islice(windows(token_pieces(tokenizer, text), 128), limit)]
    base = _proxy_perplexity(original, chunks, None)
    rows = []
    for sigma in PROXY_SIGMAS:
        model = original if sigma == 0 else offgrid.offgrid_copy(original, seed, sigma)
        offsets = [offgrid.grid_offset(m.weight) for m in model.model.layers.modules()
                   if isinstance(m, torch.nn.Linear)]  # fmt: skip
        row = {"sigma": sigma, "offset_steps": round(sum(offsets) / len(offsets), 3)}
        for name, symmetric in (("minmax_pct", False), ("symmetric_pct", True)):
            row[name] = round(100 * (_proxy_perplexity(model, chunks, symmetric) / base - 1), 1)
        print(row, flush=True)
        rows.append(row)
    return {"fp32_perplexity": round(base, 3), "rows": rows}


def measure(args) -> None:
    """The bundled weights and an off-grid copy per sigma through the same commands, then the proxy."""
    from run import cpu_name  # benchmarks/ is sys.path[0] when this file runs as a script

    work, t0 = args.work, time.perf_counter()
    log = [shlex.join(["python", "benchmarks/offgrid_measure.py", *sys.argv[1:]])]  # this run, then each step
    work.mkdir(parents=True, exist_ok=True)
    text = work / "heldout.txt"
    sentences = heldout_text(args.data, text, args.sentences)
    on_grid = measure_weights(["--bundled", "smollm2"], work / "ongrid", text, args.limit, log)
    off_grid = []
    for sigma in args.sigmas:
        folder = work / f"offgrid-hf-{sigma}"
        check = offgrid.build(folder, args.seed, sigma)
        log.append(f"python benchmarks/offgrid.py --out {folder} --seed {args.seed} --sigma {sigma}")
        print(json.dumps(check, indent=2), flush=True)
        rows = measure_weights([str(folder)], work / f"offgrid-{sigma}", text, args.limit, log)
        off_grid.append({"sigma": sigma, "check": check, "rows": rows})
    payload = {
        **{"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(), "seed": args.seed},
        "text": f"{sentences} STS-B train sentences (held out), windows of 128 tokens, --limit {args.limit}",
        **{"on_grid": on_grid, "off_grid": off_grid, "proxy": _proxy(args, text)},
        **{"commands": log, "minutes": round((time.perf_counter() - t0) / 60, 1)},
    }
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    report(args.json)


def _proxy(args, text: Path) -> dict:
    """The proxy sweep, or the one in --proxy-from (it measures PyTorch RTN only, no onnxopt code)."""
    if args.proxy_from is None:
        return proxy_sweep(text, args.seed, args.limit)
    return {**json.loads(args.proxy_from.read_text())["proxy"], "from": str(args.proxy_from.name)}


def _grid_line(before: dict, after: dict) -> str:
    """Kinds of linear with the same figures named together: 'q_proj/k_proj 100% -> 0% (...)'."""
    groups: dict[str, list[str]] = {}
    for kind, was in before.items():
        now = after[kind]
        text = (f"{100 * was['on_grid']:.0f}% -> {100 * now['on_grid']:.0f}% on the grid, "
                f"offset {was['offset_steps']:.2f} -> {now['offset_steps']:.2f}")  # fmt: skip
        groups.setdefault(text, []).append(kind)
    return "; ".join(f"{'/'.join(kinds)} {text}" for text, kinds in groups.items())


def _checks(data: dict) -> list[str]:
    lines = []
    for run in data["off_grid"]:
        check, logits = run["check"], run["check"]["logits_reloaded"]
        before, after = check["grid_before"], check["grid_after"]
        lines.append(
            f"- sigma {run['sigma']}: the saved copy's logits against the bundled model's on "
            f"{len(offgrid.PROMPTS)} prompts: max abs diff {logits['max_abs_diff']:.1e} at a logit scale of "
            f"{logits['logit_scale']:.1f} ({logits['relative']:.1e} relative). Blocks of {offgrid.BLOCK} "
            f"input channels against their 16-level min-max grid (offset: mean distance to it, in steps; "
            f"0.23 is values spread evenly), bundled -> copy: {_grid_line(before, after)}. The head on an "
            f"8-bit grid (the bundled head is the tied token_embd, stored Q8_0): "
            f"{100 * before['lm_head']['on_8bit_grid']:.0f}% -> "
            f"{100 * after['lm_head']['on_8bit_grid']:.0f}%."
        )
    return lines


def report(path: Path) -> str:
    """offgrid.md (next to `path`) from offgrid.json."""
    data = json.loads(path.read_text())
    runs = data["off_grid"]
    head = "| model | on-grid (bundled) | " + " | ".join(f"off-grid, sigma {r['sigma']}" for r in runs)
    lines = [
        "# int4 on off-grid weights: SmolLM2-135M-Instruct\n",
        f"{data['date']}, {data['cpu']}; CPU provider; seed {data['seed']}. Perplexity from `onnxopt eval "
        f"--task perplexity` on {data['text']}; in brackets, the change against each column's fp32.\n",
        *_checks(data),
        "",
        head + " | size MB (bundled / copy) | export or quantize s (bundled / copy) |",
        "|---" * (4 + len(runs)) + "|",
    ]
    for i, on in enumerate(data["on_grid"]):
        found = [on] + [r["rows"][i] for r in runs]
        cells = [on["model"], *[f"{c['perplexity']:.2f} ({c['change_pct']:+.1f}%)" for c in found]]
        took = " / ".join(str(c.get("seconds", "-")) for c in found[:2])
        lines.append(f"| {' | '.join(cells)} | {on['size_mb']} / {found[1]['size_mb']} | {took} |")
    lines.append("\nThe copy's fp32 is larger by its untied LM head (576 x 49,152 fp32); quantized, the tied "
                 "model's head is stored apart from the embedding table anyway.")  # fmt: skip
    proxy = data["proxy"]
    lines += [
        "",
        (f"PyTorch proxy, kept from {proxy['from']} (it runs no onnxopt code) " if "from" in proxy else
         "PyTorch proxy ") +
        f"(fp32 perplexity {proxy['fp32_perplexity']:.2f} on the same windows): rise with "
        "4-bit RTN per 32 input channels of the decoder linears, min-max and symmetric (which cannot use "
        "Q4_1's grid), against sigma; offset: mean distance to the min-max grid, in steps.\n",
        "| sigma | offset | min-max RTN | symmetric RTN |",
        "|---|---|---|---|",
        *[f"| {r['sigma']} | {r['offset_steps']:.3f} | {r['minmax_pct']:+.1f}% | {r['symmetric_pct']:+.1f}% |"
          for r in proxy["rows"]],
        "",
        "Commands:",
        "",
        "```sh",
        *data["commands"],
        "```",
        "",
    ]  # fmt: skip
    table = "\n".join(lines)
    path.with_suffix(".md").write_text(table)
    print(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_mutually_exclusive_group(required=True)
    modes.add_argument("--work", type=Path, help="build, export, quantize and eval in this folder")
    modes.add_argument("--report", action="store_true", help="write offgrid.md from offgrid.json")
    parser.add_argument("--sigmas", type=lambda v: [float(x) for x in v.split(",")], default=[0.2, 0.4])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/stsb"))
    parser.add_argument("--sentences", type=int, default=300)
    parser.add_argument("--limit", type=int, default=1000, help="perplexity windows (1000: the whole text)")
    parser.add_argument("--json", type=Path, default=HERE / "offgrid.json")
    parser.add_argument("--proxy-from", type=Path, help="keep the proxy sweep of this earlier offgrid.json")
    args = parser.parse_args()
    if args.report:
        report(args.json)
    else:
        measure(args)


if __name__ == "__main__":
    main()
