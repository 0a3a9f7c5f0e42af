"""int4 methods on off-grid weights in a PyTorch proxy (issue 29, item 3): fake-quantized decoder
linears of an HF folder (benchmarks/offgrid.py writes one), perplexity on windows of 128 tokens.

Tune on one text, report on another: calibration and tuning read onnxopt's embedded corpus
(calibration: its first --calib samples, as `onnxopt quantize` takes them; tuning: the rest),
the report reads held-out STS-B train sentences (benchmarks/offgrid_measure.py's heldout_text).
The LM head stays fp32 (onnxopt keeps it at 8 bits).

    python benchmarks/int4_probe.py --model /work/og/s02 --methods offset,smooth,wclip,awq [--block 32]
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch

from onnxopt.graph_queries.weight_grids import fitted_weights

LEVELS = 15


def minmax(w: torch.Tensor, block: int, d=None) -> torch.Tensor:
    """Plain min-max rounding per block (w [n, k])."""
    n, k = w.shape
    b = w.reshape(n, k // block, block)
    low, high = b.amin(-1, keepdim=True), b.amax(-1, keepdim=True)
    step = ((high - low) / LEVELS).clamp_min(1e-12)
    return (low + torch.round((b - low) / step).clamp(0, LEVELS) * step).reshape(n, k)


def offset(w: torch.Tensor, block: int, d=None) -> torch.Tensor:
    """onnxopt's offset grid today: min-max levels, scale and offset refitted by least squares."""
    return torch.from_numpy(fitted_weights(w.double().numpy(), block)).to(w.dtype)


def _weighted_fit(b, q, d):
    """Weighted least squares of b on (scale * q + low) per block: (scale, low)."""
    sw, sq, sx = d.sum(-1, keepdim=True), (d * q).sum(-1, keepdim=True), (d * b).sum(-1, keepdim=True)
    sqq, sqx = (d * q * q).sum(-1, keepdim=True), (d * q * b).sum(-1, keepdim=True)
    det = sw * sqq - sq * sq
    ok = det > 1e-20 * sw * sqq
    scale = torch.where(ok, (sw * sqx - sq * sx) / torch.where(ok, det, 1.0), 0.0)
    low = torch.where(ok, (sx - scale * sq) / sw, sx / sw)
    return scale, low


def wclip(w: torch.Tensor, block: int, d=None, steps: int = 10, rounds: int = 1) -> torch.Tensor:
    """Searched per block (llama.cpp's make_qkx2 with an activation weighting): candidate inverse
    steps around min-max's, levels by rounding, then (scale, low) by weighted least squares, the
    candidate with the least sum d (w - q(w))^2 kept; then `rounds` re-roundings on the fit."""
    n, k = w.shape
    b = w.double().reshape(n, k // block, block)
    d = torch.ones_like(b) if d is None else d.double().reshape(1, k // block, block).expand_as(b)
    low, high = b.amin(-1, keepdim=True), b.amax(-1, keepdim=True)
    span = (high - low).clamp_min(1e-12)
    best_err, best = None, None
    for i in range(steps + 1):
        inv = (LEVELS - 1 + 0.1 * i) / span if i else LEVELS / span  # i = 0: min-max itself
        q = torch.round((b - low) * inv).clamp(0, LEVELS)
        scale, lo = _weighted_fit(b, q, d)
        for _ in range(rounds):
            q = torch.round((b - lo) / torch.where(scale > 0, scale, 1.0)).clamp(0, LEVELS)
            scale, lo = _weighted_fit(b, q, d)
        deq = scale * q + lo
        err = (d * (b - deq) ** 2).sum(-1, keepdim=True)
        if best is None:
            best_err, best = err, deq
        else:
            better = err < best_err
            best_err, best = torch.where(better, err, best_err), torch.where(better, deq, best)
    return best.reshape(n, k).to(w.dtype)


def search(w: torch.Tensor, block: int, d=None) -> torch.Tensor:
    """onnxopt's activation-weighted block search (graph_queries/block_search.py)."""
    from onnxopt.graph_queries.block_search import searched_weights

    return torch.from_numpy(searched_weights(w.double().numpy(), block, d.double().numpy())).to(w.dtype)


QUANT = {"minmax": minmax, "offset": offset, "wclip": wclip, "search": search}


def decoder_groups(model):
    """(input name, [linears]) per shared input: qkv, o, gate/up, down; plus the GQA group size."""
    cfg = model.config
    out = []
    for i, layer in enumerate(model.model.layers):
        a, m = layer.self_attn, layer.mlp
        out += [(f"{i}.qkv", [a.q_proj, a.k_proj, a.v_proj]), (f"{i}.o", [a.o_proj])]
        out += [(f"{i}.gu", [m.gate_proj, m.up_proj]), (f"{i}.down", [m.down_proj])]
    return out, cfg.num_attention_heads // cfg.num_key_value_heads, cfg.num_attention_heads


def capture(model, groups, batches, max_rows: int = 2048):
    """Input rows of each group's first linear over the calibration batches (at most max_rows)."""
    rows, hooks = {}, []
    for name, linears in groups:

        def hook(_m, args, _o, name=name):
            rows.setdefault(name, []).append(args[0].detach().reshape(-1, args[0].shape[-1]))

        hooks.append(linears[0].register_forward_hook(hook))
    with torch.no_grad():
        for ids in batches:
            model(input_ids=ids[None])
    for h in hooks:
        h.remove()
    gen = torch.Generator().manual_seed(0)
    found = {}
    for name, parts in rows.items():
        x = torch.cat(parts).double()
        found[name] = x[torch.randperm(len(x), generator=gen)[:max_rows]] if len(x) > max_rows else x
    return found


def _tie_gqa(stat, name, group, heads):
    """o_proj's input channels: one value per (KV head, dim), shared by the query heads reading it."""
    if not name.endswith(".o"):
        return stat
    per_head = stat.reshape(heads // group, group, -1).mean(1, keepdim=True)
    return per_head.expand(-1, group, -1).reshape(-1)


def quantize_group(x, linears, quant, block, scales=None):
    """Fake-quantized weights [n, k] of each linear for inputs x / scales (scales folded back)."""
    s = torch.ones(x.shape[1], dtype=torch.float64) if scales is None else scales
    d = ((x / s) ** 2).mean(0)
    return [(quant(lin.weight.double() * s, block, d) / s) for lin in linears]


def group_error(x, linears, qs):
    num = den = 0.0
    for lin, q in zip(linears, qs, strict=True):
        exact = x @ lin.weight.double().T
        num += float(((x @ q.T - exact) ** 2).sum())
        den += float((exact**2).sum())
    return num / den


def awq_scales(x, linears, quant, block, name, group, heads, alphas, search_quant):
    """AWQ: s = mean|x|^alpha, alpha by the simulated output error (alpha 0: no scaling)."""
    mean = _tie_gqa(x.abs().mean(0), name, group, heads).clamp_min(1e-8)
    best = (group_error(x, linears, quantize_group(x, linears, search_quant, block)), None, 0.0)
    for alpha in alphas:
        s = mean**alpha
        s = s / (s.max() * s.min()).sqrt()
        err = group_error(x, linears, quantize_group(x, linears, search_quant, block, s))
        if err < best[0]:
            best = (err, s, alpha)
    return best


def smooth_scales(x, linears, block, name):
    """onnxopt's smoothing today: SmoothQuant scales on the norm-fed groups (qkv, gate/up), alpha
    from INT4_ALPHAS by weight_only_error on the offset grid."""
    from onnxopt.graph_queries.smooth_error import smoothing_scales
    from onnxopt.graph_queries.weight_grids import weight_only_error
    from onnxopt.quantize.graph_steps import INT4_ALPHAS

    if not (name.endswith(".qkv") or name.endswith(".gu")):
        return None
    stats = argparse.Namespace(rows=x[:512].numpy())
    weights = [lin.weight.double().T.numpy() for lin in linears]
    absmax_x, absmax_w = x.abs().amax(0).numpy(), np.max([np.abs(w).max(1) for w in weights], 0)
    base = weight_only_error(stats, weights, np.ones_like(absmax_w), block=block, algo="offset")
    tried = [(weight_only_error(stats, weights, smoothing_scales(absmax_x, absmax_w, a), block=block,
                                algo="offset"), a) for a in INT4_ALPHAS]  # fmt: skip
    err, alpha = min(tried)
    return torch.from_numpy(smoothing_scales(absmax_x, absmax_w, alpha)) if err < base else None


def quantized_copy(model, method: str, block: int, acts, groups, group, heads):
    """A copy of `model` with its decoder linears fake-quantized by `method` (quantizer[+scales])."""
    quant_name, _, scaling = method.partition("+")
    quant = QUANT[quant_name]
    out = copy.deepcopy(model)
    named = dict(out.named_modules())
    src = {id(m): n for n, m in model.named_modules()}
    alphas = [i / 10 for i in range(1, 11)]
    chosen = {}
    for name, linears in groups:
        x = acts[name]
        scales = None
        if scaling == "smooth":
            scales = smooth_scales(x, linears, block, name)
        elif scaling.startswith("awq"):
            search = QUANT["offset"] if scaling == "awq" else quant
            _, scales, chosen[name] = awq_scales(x, linears, quant, block, name, group, heads, alphas, search)
        qs = quantize_group(x, linears, quant, block, scales)
        with torch.no_grad():
            for lin, q in zip(linears, qs, strict=True):
                named[src[id(lin)]].weight.copy_(q.to(lin.weight.dtype))
    return out, chosen


def perplexity(model, windows) -> float:
    total = count = 0.0
    with torch.no_grad():
        for w in windows:
            logp = torch.log_softmax(model(input_ids=w[None, :-1]).logits[0].double(), -1)
            total -= float(logp[torch.arange(len(w) - 1), w[1:]].sum())
            count += len(w) - 1
    return float(np.exp(total / count))


def texts(tokenizer, calib: int, work: Path, data: Path, tune_windows: int):
    from offgrid_measure import heldout_text

    from onnxopt.data.sources import embedded_samples
    from onnxopt.evaluate.perplexity import token_pieces, windows

    samples = embedded_samples(10**6, clip=True)  # all 342, calibration first
    batches = [torch.tensor(tokenizer(s)["input_ids"][:128]) for s in samples[:calib]]
    tune_path, held_path = work / "tune.txt", work / "heldout.txt"
    tune_path.write_text("\n".join(samples[calib:]) + "\n", encoding="utf-8")
    heldout_text(data, held_path, 300)
    cut = {p: [torch.from_numpy(w) for w in islice(windows(token_pieces(tokenizer, p), 128), n)]
           for p, n in ((tune_path, tune_windows), (held_path, 1000))}  # fmt: skip
    return batches, cut[tune_path], cut[held_path]


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--methods", default="offset,smooth,wclip")
    parser.add_argument("--block", type=int, default=32)
    parser.add_argument("--calib", type=int, default=40)
    parser.add_argument("--work", type=Path, default=Path("/work/og/probe"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/stsb"))
    parser.add_argument("--tune-windows", type=int, default=24, help="windows of the tuning text scored")
    parser.add_argument("--heldout", action="store_true", help="also score the held-out text")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.set_grad_enabled(False)
    args.work.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    batches, tune, held = texts(tokenizer, args.calib, args.work, args.data, args.tune_windows)
    groups, group, heads = decoder_groups(model)
    acts = capture(model, groups, batches)
    base = {"tune": perplexity(model, tune)}
    if args.heldout:
        base["held"] = perplexity(model, held)
    print(json.dumps({"fp32": base, "windows": [len(tune), len(held)]}), flush=True)
    for method in args.methods.split(","):
        t0 = time.perf_counter()
        q, chosen = quantized_copy(model, method, args.block, acts, groups, group, heads)
        row = {"method": method, "block": args.block, "quant_s": round(time.perf_counter() - t0, 1)}
        row["tune_pct"] = round(100 * (perplexity(q, tune) / base["tune"] - 1), 2)
        if args.heldout:
            row["held_pct"] = round(100 * (perplexity(q, held) / base["held"] - 1), 2)
        if chosen:
            row["alphas"] = {k: sum(v for n, v in chosen.items() if n.endswith(k)) / 30
                             for k in (".qkv", ".o", ".gu", ".down")}  # fmt: skip
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
