"""Fingerprints of the models `onnxopt` makes for `make bench` (the bundled MiniLM, `--set
encoder`) and the generation bench (the bundled SmolLM2, `--set generate`: every model
benchmarks/generation.py builds), to prove that a refactor changed no graph: node list (op,
domain, inputs, outputs, attributes) and every initializer's name, type, shape and sha256, per
model. Manifests (timestamps) are left out.

    .venv/bin/python benchmarks/graph_fingerprint.py --work /tmp/fp --out before.json
    (change the code)
    .venv/bin/python benchmarks/graph_fingerprint.py --work /tmp/fp2 --out after.json --compare before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import onnx
from onnx import numpy_helper

ONNXOPT = str(Path(sys.executable).parent / "onnxopt")
# name -> the onnxopt command that makes it (FP32 is the export every other step reads).
ENCODER_STEPS = {
    "fp32": ["export", "-o", "{work}/fp32"],
    "dynamic": ["quantize", "{work}/fp32", "--dynamic", "-o", "{work}/dynamic"],
    "static": ["quantize", "{work}/fp32", "--static", "--calib", "40", "-o", "{work}/static"],
    "static-qdq": [
        "quantize",
        "{work}/fp32",
        "--static",
        "--calib",
        "40",
        "--qdq",
        "-o",
        "{work}/static-qdq",
    ],
    "optimized": ["optimize", "{work}/fp32", "-o", "{work}/optimized"],
    "pruned": ["prune", "{work}/fp32", "--sparsity", "0.5", "-o", "{work}/pruned"],
    "pruned-static": ["quantize", "{work}/pruned", "--static", "--calib", "40", "-o", "{work}/pruned-static"],
}
# The models benchmarks/generation.py's build() makes, by the CLI.
GENERATE_STEPS = {
    "smollm2-fp32": ["export", "--bundled", "smollm2", "-o", "{work}/smollm2-fp32"],
    "smollm2-dynamic": ["quantize", "{work}/smollm2-fp32", "--dynamic", "-o", "{work}/smollm2-dynamic"],
    "smollm2-static": [
        "quantize",
        "{work}/smollm2-fp32",
        "--static",
        "--calib",
        "40",
        "-o",
        "{work}/smollm2-static",
    ],
    "smollm2-int4": ["quantize", "{work}/smollm2-fp32", "--int4", "-o", "{work}/smollm2-int4"],
    "smollm2-int4-rtn": [
        "quantize",
        "{work}/smollm2-fp32",
        "--int4",
        "--algo",
        "rtn",
        "-o",
        "{work}/smollm2-int4-rtn",
    ],
    "smollm2-pruned": ["prune", "{work}/smollm2-fp32", "--sparsity", "0.1", "-o", "{work}/smollm2-pruned"],
    "smollm2-pruned-int4": [
        "quantize",
        "{work}/smollm2-pruned",
        "--int4",
        "-o",
        "{work}/smollm2-pruned-int4",
    ],
}
SETS = {"encoder": ENCODER_STEPS, "generate": GENERATE_STEPS}


def fingerprint(path: Path) -> dict:
    model = onnx.load(str(path))
    nodes = [
        [n.name, n.op_type, n.domain, list(n.input), list(n.output)]
        + sorted(a.SerializeToString().hex() for a in n.attribute)
        for n in model.graph.node
    ]
    inits = {
        t.name: [t.data_type, list(t.dims), hashlib.sha256(numpy_helper.to_array(t).tobytes()).hexdigest()]
        for t in model.graph.initializer
    }
    return {
        "nodes": hashlib.sha256(json.dumps(nodes).encode()).hexdigest(),
        "node_count": len(nodes),
        "initializers": hashlib.sha256(json.dumps(inits, sort_keys=True).encode()).hexdigest(),
        "initializer_count": len(inits),
        "inputs": [i.name for i in model.graph.input],
        "outputs": [o.name for o in model.graph.output],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path)
    parser.add_argument("--command", nargs="*", default=[ONNXOPT], help="how to run onnxopt")
    parser.add_argument("--set", choices=[*SETS, "all"], default="all", help="which bench's models")
    args = parser.parse_args()
    steps = {k: v for name, s in SETS.items() if args.set in (name, "all") for k, v in s.items()}
    found = {}
    for name, step in steps.items():
        argv = [part.format(work=args.work) for part in step]
        subprocess.run([*args.command, *argv, "--overwrite"], check=True, capture_output=True)
        found[name] = fingerprint(args.work / name / "model.onnx")
        print(f"{name:14} {found[name]['node_count']:5} nodes {found[name]['initializer_count']:4} weights")
    args.out.write_text(json.dumps(found, indent=2) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())
        differ = [name for name in found if found[name] != before.get(name)]
        print("identical: every graph and initializer" if not differ else f"DIFFERENT: {', '.join(differ)}")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
