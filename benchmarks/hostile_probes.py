"""Issue 14's probes, rerun as a new user would: each through the installed `onnxopt` command, timed,
its peak memory read, every input's sha256 compared before and after, and anything left beside
its output listed. Prints one row per probe; exit status 1 if any probe misbehaves.

    .venv/bin/python benchmarks/hostile_probes.py --work /tmp/probes

Needs a tiny BERT export (made here from code) and, for the ALBERT and ViT probes, transformers.
Not a test (it takes minutes); tests/*/test_hostile_*.py hold the same findings as tests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ONNXOPT = str(Path(sys.executable).parent / "onnxopt")
# Runs the command in a child and reports the child's peak RSS: one wrapper per probe, so the
# figure is that probe's alone.
_WRAP = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:])\n"
    "sys.stderr.write(f'\\n@rss {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\\n')\n"
    "sys.exit(r.returncode)\n"
)


@dataclass
class Outcome:
    name: str
    code: int
    seconds: float
    peak_mb: float
    err: str


def run(
    name: str, args: list, expect: int = 2, timeout: float = 120, signal_after: float | None = None
) -> Outcome:
    cmd = [sys.executable, "-c", _WRAP, ONNXOPT, *map(str, args)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if signal_after is not None:
        time.sleep(signal_after)
        for child in _children(proc.pid):
            os.kill(child, signal.SIGTERM if expect == 143 else signal.SIGHUP)
    out, err = proc.communicate(timeout=timeout)
    seconds = time.perf_counter() - start
    lines = err.strip().splitlines()
    rss = next((int(line.split()[1]) for line in lines if line.startswith("@rss ")), 0)
    message = "\n".join(line for line in lines if not line.startswith("@rss ")).strip()
    return Outcome(name, proc.returncode, seconds, rss / 1024, message)


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in found]


def sha(paths: list[Path]) -> dict[str, str]:
    digests = {}
    for root in paths:
        files = (
            [root]
            if root.is_file()
            else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        )
        for f in files:
            digests[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return digests


def build(work: Path) -> dict[str, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.conftest import build_tiny_bert

    hf = build_tiny_bert(work / "hf")
    subprocess.run([ONNXOPT, "export", hf, "-o", work / "T"], check=True, capture_output=True)
    return {"hf": hf, "T": work / "T"}


def probes(work: Path, m: dict[str, Path]) -> list[tuple[str, list, int, dict]]:
    """(name, args, expected exit, extra) per finding; set up on disk as each needs."""
    t = m["T"]
    found: list[tuple[str, list, int, dict]] = []

    victim = work / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    recipe = work / "victim.yaml"
    recipe.write_text("model: null\nsteps:\n  - export: {name: ../victim}\n")
    found.append(("recipe step name ../victim", ["run", recipe, "-o", work / "rout"], 2, {}))
    found.append(("bench --json T/model.onnx", ["bench", t, "--json", t / "model.onnx"], 2, {}))
    found.append(("bench --json /dev/stdout", ["bench", t, "--json", "/dev/stdout"], 2, {}))
    home = work / "fakehome"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("secret")
    found.append(
        ("quantize -o ~ --overwrite", ["quantize", t, "--dynamic", "-o", home, "--overwrite"], 2, {})
    )
    d, link = work / "D", work / "L"
    shutil.copytree(t, d)
    shutil.copytree(t, link)
    (link / "model.onnx").unlink()
    (link / "model.onnx").symlink_to(d / "model.onnx")
    found.append(
        ("model.onnx linked into OUT", ["quantize", link, "--dynamic", "-o", d, "--overwrite"], 2, {})
    )
    bomb = work / "bomb.yaml"
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    bomb.write_text("model: null\nsteps:\n  - export: {}\n  - quantize:\n      static: true\n      exclude:\n"
                    + "".join(f"        - {line}\n" for line in levels))  # fmt: skip
    found.append(("YAML alias bomb", ["run", bomb, "-o", work / "bout"], 2, {}))
    big = work / "big.csv"
    big.write_text("text\nfine\n" + "y" * (50 * 2**20) + "\n")
    found.append(("csv with a 50 MB field", ["quantize", t, "--static", "--calib-data", big, "--text-column",
                                             "text", "-o", work / "bq"], 2, {}))  # fmt: skip
    fifo = work / "fifo"
    shutil.copytree(t, fifo)
    (fifo / "model.onnx").unlink()
    os.mkfifo(fifo / "model.onnx")
    found.append(("model.onnx a FIFO", ["inspect", fifo], 2, {}))
    zero = work / "zero"
    shutil.copytree(t, zero)
    (zero / "model.onnx").unlink()
    (zero / "model.onnx").symlink_to("/dev/zero")
    found.append(("model.onnx -> /dev/zero", ["inspect", zero], 2, {}))
    steps = work / "steps.yaml"
    steps.write_text(
        "model: null\nsteps:\n  - export: {}\n  - optimize: {atol: x}\n" + "  - optimize: {}\n" * 200_000
    )
    found.append(("200k-step recipe", ["run", steps, "-o", work / "sout"], 2, {}))
    exfil = work / "exfil"
    shutil.copytree(t, exfil)
    (exfil / "extra.json").symlink_to("/etc/passwd")
    found.append(("extra.json -> /etc/passwd", ["quantize", exfil, "--dynamic", "-o", work / "eq"], 2, {}))
    found.append(("OUT inside the input", ["quantize", t, "--dynamic", "-o", t / "q"], 2, {}))
    for name, edit in [
        ("config.json not JSON", lambda c: "{oops"),
        ("config.json a list", lambda c: "[1, 2]"),
        ("vocab_size 0", lambda c: json.dumps({**json.loads(c), "vocab_size": 0})),
    ]:
        folder = work / name.replace(" ", "-").replace(".", "")
        shutil.copytree(t, folder)
        (folder / "config.json").write_text(edit((folder / "config.json").read_text()))
        found.append((name, ["bench", folder, "--runs", "1", "--min-time", "0"], 2, {}))
    garbage = work / "garbage-runtime"
    shutil.copytree(t, garbage)
    manifest = json.loads((garbage / "onnxopt.json").read_text())
    (garbage / "onnxopt.json").write_text(json.dumps({**manifest, "runtime": {"selected": "garbage"}}))
    found.append(
        ("garbage runtime in onnxopt.json", ["bench", garbage, "--runs", "1", "--min-time", "0"], 2, {})
    )
    found.append(("bench --seq 600", ["bench", t, "--seq", "600", "--runs", "1", "--min-time", "0"], 2, {}))
    pairs = work / "pairs.csv"
    evaluated = work / "evaluated"  # eval records its result in the model's manifest, by design
    shutil.copytree(t, evaluated)
    pairs.write_text("g\tf\t2012\t1\t5.0\t" + "w " * 70_000 + "\ta b\n" + "g\tf\t2012\t2\t1.0\ta\tb\n")
    found.append(
        ("eval csv field of 140,000 bytes", ["eval", evaluated, "--task", "sts", "--data", pairs], 0, {})
    )
    bad_tok = work / "bad-tokenizer"
    shutil.copytree(m["hf"], bad_tok)
    (bad_tok / "tokenizer.json").write_text("{ not a tokenizer")
    found.append(("bad tokenizer.json at export", ["export", bad_tok, "-o", work / "bt"], 2, {}))
    blocker = work / "a-file"
    blocker.write_text("x")
    found.append(("unwritable OUT", ["quantize", t, "--static", "-o", blocker / "q"], 2, {}))
    found.append(("unwritable --json", ["bench", t, "--json", blocker / "r.json"], 2, {}))
    loop = work / "loop"
    shutil.copytree(t, loop)
    (loop / "1_Pooling").mkdir()
    (loop / "1_Pooling" / "self").symlink_to(loop / "1_Pooling")
    found.append(("symlink loop in 1_Pooling", ["quantize", loop, "--dynamic", "-o", work / "lq"], 2, {}))
    missing = work / "missing-data.yaml"
    missing.write_text("model: null\nsteps:\n  - export: {}\n  - eval: {task: sts, data: nope.csv}\n")
    found.append(("recipe data file missing", ["run", missing, "-o", work / "mout"], 2, {}))
    # Export of the tiny model takes about 8 s here (imports, exporter, PyTorch check): a signal at
    # 5 s lands in the middle, with the staged folder and optimum's files on disk.
    found.append(("SIGTERM mid-export", ["export", m["hf"], "-o", work / "sig"], 143, {"signal_after": 5.0}))
    found.append(("SIGHUP mid-export", ["export", m["hf"], "-o", work / "hup"], 129, {"signal_after": 5.0}))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/probes-of-onnxopt"))
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    models = build(args.work)
    cases = probes(args.work, models)
    inputs = [p for p in args.work.iterdir() if p.name not in ("hf",)]
    before = sha(inputs)
    bad = 0
    print(f"{'probe':38} {'exit':>4} {'s':>6} {'peak MB':>8}  message")
    for name, argv, expect, extra in cases:
        o = run(name, argv, expect, **extra)
        ok = o.code == expect and o.peak_mb < 2048 and (expect == 0 or o.err.count("\n") == 0)
        bad += not ok
        verdict = "" if ok else "UNEXPECTED "
        print(f"{name:38} {o.code:>4} {o.seconds:>6.1f} {o.peak_mb:>8.0f}  {verdict}{o.err[:150]}")
    changed = [k for k, v in sha([p for p in inputs if p.exists()]).items() if before.get(k) not in (None, v)]
    leftovers = sorted(p.name for p in args.work.iterdir() if ".tmp-" in p.name or p.name.endswith(".lock"))
    temp = sorted(p.name for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("onnxopt-*"))
    print(f"inputs changed: {changed or 'none'}; staged or lock files left: {leftovers or 'none'}; "
          f"onnxopt-* temporary folders left: {temp or 'none'}")  # fmt: skip
    return 1 if bad or changed or leftovers else 0


if __name__ == "__main__":
    sys.exit(main())
