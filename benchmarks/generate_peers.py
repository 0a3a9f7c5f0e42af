"""The generation peers side by side (issue 29, item 4): onnxopt and llama.cpp, ORT GenAI's model
builder and OpenVINO GenAI, all made from ONE off-grid copy of the bundled SmolLM2 (benchmarks/
offgrid.py: sigma 0.2, seed 0), each measured in its own runtime, each peer in a venv of its own
(`make llama-venv genai-venv openvino-venv`; ORT GenAI's builder runs in its venv, its models are
served by .venv's onnxruntime-genai, the same 0.18.0, onnxopt's pinned `genai` extra):

- onnxopt fp32, int4 (block 32, default options), 8-bit (--dynamic), through onnxopt's loop; its
  int4 also through onnxruntime-genai's loop (its genai_config.json).
- llama.cpp (llama-cpp-python, built from its sdist): the sdist's own convert_hf_to_gguf.py writes
  an F32 GGUF, llama_model_quantize makes Q4_0, Q4_K_M and Q8_0 of it.
- ORT GenAI builder (`python -m onnxruntime_genai.models.builder`): int4 with its defaults, int4 with
  its best options, int8.
- OpenVINO GenAI: `optimum-cli export openvino` int4 with its best options that need no download
  (data-free AWQ; --ov-data-aware times --dataset auto + AWQ + scale estimation instead, and
  --add-ov-data-aware builds that one apart and adds its accuracy, untimed: 19 min to build here),
  int8; served by openvino_genai.LLMPipeline.

Every runtime reads the same token ids (benchmarks/peer_runner.py feeds ids, never text):
perplexity on `onnxopt eval --task perplexity`'s windows of the held-out text (300 STS-B train
sentences, 128 tokens a window, each a prefill of its own); greedy agreement with onnxopt fp32 on 8
held-out prompts x 32 new tokens; decode tokens/s (1000 / p50 of the per-token times after the
first), time to the first token (p50) and peak RSS of the serving process (VmHWM: load + warm-up +
timed generations), batch 1, prompt 128 random ids (seed 0), 64 new tokens, 2 threads, one fresh
process per candidate per round, the candidates' order rotating round by round.

    python benchmarks/generate_peers.py [--source HF_DIR] [--work build/generate-peers] [--rounds 3]
    python benchmarks/generate_peers.py --report      # generate_peers.md again from the JSON
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MAIN_PY = Path(sys.executable)
LLAMA_VENV = ROOT / "build" / "llama-venv"
LLAMA_SRC = ROOT / "build" / "llama-src" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
OPENVINO_VENV = ROOT / "build" / "openvino-venv"
GENAI_VENV = ROOT / "build" / "genai-venv"  # the builder only: .venv's onnxruntime-genai serves
# ORT GenAI builder int4 (block 32 and accuracy level 4 are its CPU defaults): its defaults, and a
# sweep of its options; the sweep's lowest perplexity is "its best int4" and is timed.
GENAI_INT4 = {
    "int4-default": [],
    "int4-asym": ["is_symmetric=false"],
    "int4-kquant": ["algo_config=k_quant"],
    "int4-asym-last8": ["is_symmetric=false", "matmul_mixed_precision=last_matmul:int8"],
    "int4-kquant-last8": [
        "is_symmetric=false",
        "algo_config=k_quant",
        "matmul_mixed_precision=last_matmul:int8",
    ],
    "int4-kquant-mixed": ["algo_config=k_quant", "matmul_mixed_precision=last_matmul:int8,mixed_layers:int8"],
}
OV_BEST = ["--weight-format", "int4", "--group-size", "32", "--ratio", "1.0", "--awq"]  # asym; head int8
OV_DATA_AWARE = ["--dataset", "auto", "--scale-estimation"]  # with OV_BEST's --awq


class Log:
    def __init__(self):
        self.commands: list[str] = []
        self.failures: dict[str, str] = {}

    def run(self, argv: list[str], env: dict | None = None, show: str | None = None) -> None:
        text = show or shlex.join(str(a) for a in argv)
        self.commands.append(text.replace(str(ROOT) + "/", ""))
        print(f"$ {self.commands[-1]}", flush=True)
        done = subprocess.run([str(a) for a in argv], env={**os.environ, **(env or {})},
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
        sys.stderr.write(done.stderr[-4000:])
        if done.returncode != 0:
            tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:]
            raise RuntimeError(f"exit {done.returncode}: {' '.join(tail)[:400]}")


# --- candidates ------------------------------------------------------------------------------


SMALL = "--head-bits 4 --embedding-bits 4"  # onnxopt's int4 with its head and table in 4 bits too


def candidates(work: Path, ov_data_aware: bool) -> list[dict]:
    """name, family, precision, backend (peer_runner), python, model path, how it is built."""
    llama = work / "llama"
    ov_best = "int4, group 32, ratio 1.0, asym, " + ("AWQ + scale estimation, --dataset auto"
                                                     if ov_data_aware else "data-free AWQ")  # fmt: skip
    main, lpy, opy = MAIN_PY, LLAMA_VENV / "bin" / "python", OPENVINO_VENV / "bin" / "python"
    return [
        dict(name="onnxopt fp32", family="onnxopt", bits="fp32", backend="onnxopt", python=main,
             model=work / "onnxopt" / "fp32"),
        dict(name="onnxopt int4 b32 (default)", family="onnxopt", bits="int4", backend="onnxopt",
             python=main, model=work / "onnxopt" / "int4"),
        dict(name="onnxopt int4 b32, in ORT GenAI's runtime", family="onnxopt", bits="int4",
             backend="genai", python=main, model=work / "onnxopt" / "int4"),
        dict(name="onnxopt int4 b32, --algo asym", family="onnxopt", bits="int4", backend="onnxopt",
             python=main, model=work / "onnxopt" / "int4-asym"),
        dict(name=f"onnxopt int4 b32, {SMALL}", family="onnxopt", bits="int4", backend="onnxopt",
             python=main, model=work / "onnxopt" / "int4-small"),
        dict(name="onnxopt 8-bit (--dynamic)", family="onnxopt", bits="8-bit", backend="onnxopt",
             python=main, model=work / "onnxopt" / "dynamic"),
        dict(name="llama.cpp F32 GGUF (conversion check)", family="llama.cpp", bits="fp32",
             backend="llama", python=lpy, model=llama / "f32.gguf", timed=False),
        dict(name="llama.cpp Q4_0", family="llama.cpp", bits="int4", backend="llama", python=lpy,
             model=llama / "q4_0.gguf"),
        dict(name="llama.cpp Q4_K_M", family="llama.cpp", bits="int4", backend="llama", python=lpy,
             model=llama / "q4_k_m.gguf"),
        dict(name="llama.cpp Q8_0", family="llama.cpp", bits="8-bit", backend="llama", python=lpy,
             model=llama / "q8_0.gguf"),
        *[dict(name="ORT GenAI builder int4 (" + (", ".join(opts) or "defaults") + ")", family="ORT GenAI",
               bits="int4", backend="genai", python=main, model=work / "genai" / key,
               sweep=bool(opts)) for key, opts in GENAI_INT4.items()],
        dict(name="ORT GenAI builder int8", family="ORT GenAI", bits="8-bit", backend="genai",
             python=main, model=work / "genai" / "int8"),
        dict(name=f"OpenVINO GenAI int4 ({ov_best})", family="OpenVINO", bits="int4",
             backend="openvino", python=opy,
             model=work / "openvino" / ("int4-best" + ("-data" if ov_data_aware else ""))),
        dict(name="OpenVINO GenAI int8", family="OpenVINO", bits="8-bit", backend="openvino", python=opy,
             model=work / "openvino" / "int8"),
    ]  # fmt: skip


def _done(path: Path, log: Log | None = None) -> bool:
    """Whether `path` was built by an earlier run (its marker holds the commands, logged again)."""
    marker = path.parent / f".{path.name}.done"
    if marker.is_file() and log is not None:
        log.commands += marker.read_text().splitlines()
    return marker.is_file()


def _attempt(log: Log, target: Path, build) -> None:
    """Build `target` unless an earlier run did; a failure is recorded for its row, the rest go on."""
    if _done(target, log):
        return
    since, start = len(log.commands), time.perf_counter()
    try:
        build()
        log.commands.append(f"# {target.name}: built in {(time.perf_counter() - start) / 60:.1f} min")
    except Exception as exc:
        log.failures[str(target)] = f"{type(exc).__name__}: {exc}"
        print(f"{target}: {log.failures[str(target)]}", flush=True)
        return
    _mark(target, log, since)


def _mark(path: Path, log: Log, since: int) -> None:
    """Mark `path` built, with the commands logged since index `since`."""
    (path.parent / f".{path.name}.done").write_text("\n".join(log.commands[since:]) + "\n")


def build_onnxopt(source: Path, work: Path, log: Log, reuse: Path | None) -> None:
    cli = MAIN_PY.with_name("onnxopt")
    out = work / "onnxopt"
    out.mkdir(parents=True, exist_ok=True)
    steps = [("fp32", ["export", source]), ("int4", ["quantize", out / "fp32", "--int4"]),
             ("int4-asym", ["quantize", out / "fp32", "--int4", "--algo", "asym"]),
             ("int4-small", ["quantize", out / "fp32", "--int4", *SMALL.split()]),
             ("dynamic", ["quantize", out / "fp32", "--dynamic"])]  # fmt: skip
    for name, args in steps:
        target = out / name

        def make(target=target, name=name, args=args):
            if reuse is not None and (reuse / name / "model.onnx").is_file():
                if target.is_symlink() or target.exists():
                    target.unlink()
                target.symlink_to(reuse / name)
                log.commands.append(f"# onnxopt {name}: {reuse / name} reused, made by the same command:")
                made = [reuse / "fp32" if a == out / "fp32" else a for a in args]
                log.commands.append("onnxopt " + shlex.join(str(a) for a in [*made, "-o", reuse / name]))
            else:
                log.run([cli, "-q", *args, "-o", target, "--overwrite"])

        _attempt(log, target, make)


def build_llama(source: Path, work: Path, log: Log, threads: int) -> None:
    out = work / "llama"
    out.mkdir(parents=True, exist_ok=True)
    f32 = out / "f32.gguf"
    env = {"PYTHONPATH": str(LLAMA_SRC / "gguf-py"), "NO_LOCAL_GGUF": ""}
    convert = [LLAMA_VENV / "bin" / "python", LLAMA_SRC / "convert_hf_to_gguf.py", source,
               "--outtype", "f32", "--outfile", f32]  # fmt: skip
    _attempt(log, f32, lambda: log.run(convert, env=env))
    for kind in ("Q4_0", "Q4_K_M", "Q8_0"):
        target = out / f"{kind.lower()}.gguf"
        job = {"mode": "quantize", "model": str(f32), "out": str(target), "type": kind, "threads": threads}
        show = f"llama_cpp.llama_model_quantize({f32.name} -> {target.name}, LLAMA_FTYPE_MOSTLY_{kind})"
        _attempt(
            log,
            target,
            lambda job=job, kind=kind, show=show: _runner(
                LLAMA_VENV / "bin" / "python", job, work / "jobs" / f"quantize-{kind}", log, show=show
            ),
        )


def genai_source(source: Path, work: Path, log: Log) -> Path:
    """The source as the builder's transformers 5 reads it: the same files (links), but
    tokenizer_config.json's `"add_prefix_space": null` (what transformers 4.57 wrote from the GGUF)
    made false, the value of tokenizer.json's pre-tokenizer; 5.23 refuses null there."""
    folder = work / "genai-source"
    folder.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        target = folder / item.name
        if target.is_symlink() or target.exists():
            target.unlink()
        if item.name == "tokenizer_config.json":
            config = json.loads(item.read_text(encoding="utf-8"))
            if config.get("add_prefix_space", False) is None:
                config["add_prefix_space"] = False
            target.write_text(json.dumps(config, indent=2), encoding="utf-8")
        else:
            target.symlink_to(item)
    log.commands.append(
        f"# {folder}: links to {source}'s files; tokenizer_config.json add_prefix_space null -> false"
    )
    return folder


def build_genai(source: Path, work: Path, log: Log) -> None:
    out = work / "genai"
    out.mkdir(parents=True, exist_ok=True)
    source = genai_source(source, work, log)
    for name, precision, extra in [*[(k, "int4", v) for k, v in GENAI_INT4.items()], ("int8", "int8", [])]:
        target = out / name
        options = ["--extra_options", *extra] if extra else []
        builder = [GENAI_VENV / "bin" / "python", "-m", "onnxruntime_genai.models.builder"]
        argv = [*builder, "-i", source, "-o", target,
                "-p", precision, "-e", "cpu", "-c", work / "genai-cache", *options]  # fmt: skip
        _attempt(log, target, lambda argv=argv: log.run(argv))


def build_openvino(source: Path, work: Path, log: Log, data_aware: bool) -> None:
    out = work / "openvino"
    out.mkdir(parents=True, exist_ok=True)
    best = OV_BEST + (OV_DATA_AWARE if data_aware else [])
    for name, options in (("int4-best" + ("-data" if data_aware else ""), best),
                          ("int8", ["--weight-format", "int8"])):  # fmt: skip
        target = out / name
        argv = [OPENVINO_VENV / "bin" / "optimum-cli", "export", "openvino", "-m", source,
                "--task", "text-generation-with-past", *options, target]  # fmt: skip
        _attempt(log, target, lambda argv=argv: log.run(argv))


# --- running a candidate ---------------------------------------------------------------------


def _runner(python: Path, job: dict, stem: Path, log: Log | None = None, show: str | None = None) -> dict:
    stem.parent.mkdir(parents=True, exist_ok=True)
    job_path, out_path = stem.with_suffix(".job.json"), stem.with_suffix(".out.json")
    text = json.dumps(job)
    if (
        job["mode"] == "accuracy"
        and out_path.is_file()
        and job_path.is_file()
        and job_path.read_text() == text
    ):
        return json.loads(out_path.read_text())  # the same job done by an earlier run: deterministic
    out_path.unlink(missing_ok=True)
    job_path.write_text(text)
    argv = [str(python), str(HERE / "peer_runner.py"), str(job_path), str(out_path)]
    if log is not None:
        log.commands.append(show or shlex.join(argv))
    env = {**os.environ, "OMP_NUM_THREADS": str(job.get("threads", 2))}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    return json.loads(out_path.read_text())


def model_bytes(model: Path) -> tuple[int, str]:
    """Bytes of the files the runtime loads as the model, and which ones they are."""
    if model.suffix == ".gguf":
        return model.stat().st_size, "the .gguf file (its vocabulary inside, about 2 MB)"
    names = [p for p in model.iterdir() if p.suffix in (".onnx", ".data")
             or p.name in ("openvino_model.xml", "openvino_model.bin")]  # fmt: skip
    return sum(p.stat().st_size for p in names), " + ".join(sorted(p.name for p in names))


def parameter_count(source: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in source.glob("*.safetensors"):
        with safe_open(str(file), "np") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
                total += int(np.prod(f.get_slice(key).get_shape()))
    return total


def token_inputs(fp32: Path, text: Path, limit: int, prompts: int) -> tuple[list, list, list]:
    """onnxopt eval's perplexity windows of `text`, the first `prompts` lines as greedy prompts, and
    the speed prompt (128 random ids, seed 0, as `onnxopt bench --generate`), all as token ids."""
    from itertools import islice

    from onnxopt.data.samples import load_tokenizer
    from onnxopt.evaluate.perplexity import token_pieces, windows

    tokenizer = load_tokenizer(fp32)
    chunks = [w.tolist() for w in islice(windows(token_pieces(tokenizer, text), 128), limit)]
    lines = [line for line in text.read_text(encoding="utf-8").splitlines() if line.strip()][:prompts]
    greedy = [tokenizer(line)["input_ids"] for line in lines]
    speed = np.random.default_rng(0).integers(100, len(tokenizer), 128).tolist()
    return chunks, greedy, speed


def agreement(tokens: list[list[int]], reference: list[list[int]]) -> float:
    """Share of positions (x100) with the same token; each prompt counts the longer of the two
    continuations (each cut before its end-of-text), so stopping early or late counts as differing."""
    equal = sum(
        sum(a == b for a, b in zip(x, y, strict=False)) for x, y in zip(tokens, reference, strict=True)
    )
    total = sum(max(len(x), len(y)) for x, y in zip(tokens, reference, strict=True))
    return 100.0 * equal / max(total, 1)


def eos_ids(source: Path) -> list[int]:
    """The end-of-text ids of the source's generation_config.json (or config.json)."""
    for name in ("generation_config.json", "config.json"):
        path = source / name
        if path.is_file():
            value = json.loads(path.read_text()).get("eos_token_id")
            if value is not None:
                return value if isinstance(value, list) else [value]
    return []


SPEED_KEYS = ("decode_tokens_per_s", "tpot_p50_ms", "tpot_p90_ms", "first_token_ms", "peak_rss_mb",
              "timed_tokens", "load_s", "speed_vs_onnxopt_fp32", "speed_vs_llama_q4_k_m")  # fmt: skip


def keep_speed(path: Path, rows: dict, log: Log) -> int:
    """Copy the timed figures of an earlier generate_peers.json, row by row (by name)."""
    earlier = json.loads(path.read_text())
    for row in earlier["rows"]:
        if row["model"] in rows:
            rows[row["model"]].update({k: row[k] for k in SPEED_KEYS if k in row})
    log.commands.append(f"# speed figures kept from {path} ({earlier['date']}, {earlier['rounds']} rounds)")
    return earlier["rounds"]


def measure(args) -> None:
    log, t0 = Log(), time.perf_counter()
    log.commands.append(shlex.join(["python", "benchmarks/generate_peers.py", *sys.argv[1:]]))
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    source = args.source
    if source is None:
        import offgrid

        source = work / "offgrid-hf"
        if not _done(source, log):
            since = len(log.commands)
            log.commands.append(f"python benchmarks/offgrid.py --out {source} --seed 0 --sigma 0.2")
            offgrid.build(source, 0, 0.2)
            _mark(source, log, since)
    source = source.resolve()
    text = args.text or work / "heldout.txt"
    if args.text is None:
        from offgrid_measure import heldout_text

        heldout_text(args.data, text, 300)
    builders = [("onnxopt", lambda: build_onnxopt(source, work, log, args.onnxopt_from)),
                ("llama.cpp", lambda: build_llama(source, work, log, args.threads)),
                ("ORT GenAI", lambda: build_genai(source, work, log)),
                ("OpenVINO", lambda: build_openvino(source, work, log, args.ov_data_aware))]  # fmt: skip
    for family, step in builders:
        if family in args.skip:
            log.failures[family] = "skipped (--skip)"
            continue
        start = time.perf_counter()
        try:
            step()
        except Exception as exc:  # a peer that cannot be built is reported, the rest go on
            log.failures[family] = f"build failed: {exc}"
            print(f"{family}: {log.failures[family]}", flush=True)
        print(f"{family} built in {time.perf_counter() - start:.0f} s", flush=True)
    cands = [c for c in candidates(work, args.ov_data_aware) if c["family"] not in log.failures]
    chunks, prompts, speed = token_inputs(work / "onnxopt" / "fp32", text, args.limit, args.prompts)
    params, eos = parameter_count(source), eos_ids(source)
    rows = {c["name"]: {"model": c["name"], "family": c["family"], "precision": c["bits"],
                        "backend": c["backend"]} for c in cands}  # fmt: skip
    for c in cands:
        if not _done(c["model"]):
            why = log.failures.get(str(c["model"]), "not built")
            rows[c["name"]]["error"] = f"not built: {why}"
        c["model"] = c["model"].resolve()
    for c in [c for c in cands if "error" not in rows[c["name"]]]:  # accuracy: one process each
        job = {"backend": c["backend"], "model": str(c["model"]), "threads": args.threads, "mode": "accuracy",
               "windows": chunks, "prompts": [], "new_tokens": args.greedy_tokens}  # fmt: skip
        try:
            found = _runner(c["python"], job, work / "jobs" / f"ppl-{_slug(c)}")
            greedy = {**job, "windows": [], "prompts": prompts, "eos": eos}
            found["greedy"] = _runner(c["python"], greedy, work / "jobs" / f"greedy-{_slug(c)}")["greedy"]
        except Exception as exc:
            rows[c["name"]]["error"] = f"accuracy: {exc}"
            print(f"{c['name']}: {rows[c['name']]['error']}", flush=True)
            continue
        size, counted = model_bytes(c["model"])
        rows[c["name"]].update(perplexity=found["perplexity"], tokens_scored=found["tokens_scored"],
                               greedy=found["greedy"], size_mb=round(size / 1e6, 1), files=counted,
                               bits_per_weight=round(8 * size / params, 2))  # fmt: skip
        print(f"{c['name']}: perplexity {found['perplexity']:.3f} ({found['perplexity_s']} s)", flush=True)
    genai_check = genai_equal(work, prompts, eos, args, rows)
    swept = [c for c in cands if c.get("sweep") and rows[c["name"]].get("perplexity") is not None]
    best = min(swept, key=lambda c: rows[c["name"]]["perplexity"], default=None)
    for c in swept:  # the sweep's best is timed, the rest are perplexity and agreement only
        c["timed"] = c is best
        rows[c["name"]]["sweep"] = "best of the builder's int4 options: timed" if c is best else "sweep"
    timed = [c for c in cands if c.get("timed", True) and "error" not in rows[c["name"]]]
    if args.speed_from is None:
        rounds = speed_rounds(timed, speed, args, work, rows)
        finish(rows, params, work)
    else:  # the timed figures of an earlier run of the same candidates; the rest measured now
        finish(rows, params, work)
        rounds = keep_speed(args.speed_from, rows, log)
    payload = {
        "date": time.strftime("%Y-%m-%d"), "cpu": _cpu(), "threads": args.threads, "rounds": rounds,
        "generations_per_round": args.generations, "parameters": params, "source": str(source),
        "text": f"{text} ({len(chunks)} windows of 128 tokens, {rows['onnxopt fp32'].get('tokens_scored')} "
                "tokens scored)",
        "greedy": f"{len(prompts)} held-out prompts x {args.greedy_tokens} new tokens",
        "rows": list(rows.values()), "genai_equal": genai_check, "failures": log.failures,
        "versions": versions(), "commands": log.commands,
        "minutes": round((time.perf_counter() - t0) / 60, 1),
        "load": json.loads(args.speed_from.read_text())["load"] if args.speed_from else os.getloadavg()[0],
    }  # fmt: skip
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    report(args.json)


def add_ov_data_aware(args) -> None:
    """OpenVINO int4 with its data-aware options (AWQ + scale estimation on --dataset auto: text the
    model generates itself, no download), too slow for the timed run: perplexity and agreement only,
    added to an existing generate_peers.json as a row of its own."""
    data = json.loads(args.json.read_text())
    log = Log()
    log.commands.append(shlex.join(["python", "benchmarks/generate_peers.py", *sys.argv[1:]]))
    work, source = args.work.resolve(), Path(data["source"])
    text = args.text or work / "heldout.txt"
    build_openvino(source, work, log, True)
    target = work / "openvino" / "int4-best-data"
    name = "OpenVINO GenAI int4 (int4, group 32, ratio 1.0, asym, AWQ + scale estimation, --dataset auto)"
    row = {"model": name, "family": "OpenVINO", "precision": "int4", "backend": "openvino"}
    if not _done(target):
        row["error"] = f"not built: {log.failures.get(str(target), 'not built')}"
    else:
        chunks, prompts, _speed = token_inputs(work / "onnxopt" / "fp32", text, args.limit, args.prompts)
        job = {"backend": "openvino", "model": str(target), "threads": args.threads, "mode": "accuracy",
               "windows": chunks, "prompts": [], "new_tokens": args.greedy_tokens}  # fmt: skip
        python = OPENVINO_VENV / "bin" / "python"
        found = _runner(python, job, work / "jobs" / "ppl-openvino-data-aware")
        greedy = {**job, "windows": [], "prompts": prompts, "eos": eos_ids(source)}
        found["greedy"] = _runner(python, greedy, work / "jobs" / "greedy-openvino-data-aware")["greedy"]
        reference = json.loads((work / "jobs" / "greedy-onnxopt-fp32.out.json").read_text())["greedy"]
        base = next(r for r in data["rows"] if r["model"] == "onnxopt fp32")["perplexity"]
        size, counted = model_bytes(target)
        row.update(perplexity=round(found["perplexity"], 3), tokens_scored=found["tokens_scored"],
                   perplexity_change_pct=round(100 * (found["perplexity"] / base - 1), 2),
                   greedy_agreement_pct=round(agreement(found["greedy"], reference), 1),
                   size_mb=round(size / 1e6, 1), files=counted,
                   bits_per_weight=round(8 * size / data["parameters"], 2))  # fmt: skip
    row["note"] = "built and measured apart (its build time: see the commands), not timed"
    data["rows"] = [r for r in data["rows"] if r["model"] != name] + [row]
    data["commands"] += ["", "# OpenVINO int4, data-aware, apart:", *log.commands]
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    report(args.json)


def _slug(c: dict) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in c["name"].lower())[:60]


def _cpu() -> str:
    from run import cpu_name

    return cpu_name()


def genai_equal(work: Path, prompts: list, eos: list[int], args, rows: dict) -> list[dict]:
    """onnxruntime_genai's greedy tokens against onnxopt's own, for onnxopt's three folders."""
    found = []
    for name, folder in (("fp32", "fp32"), ("int8 (--dynamic)", "dynamic"), ("int4", "int4")):
        own = rows.get({"fp32": "onnxopt fp32", "int4": "onnxopt int4 b32 (default)"}.get(
            name, "onnxopt 8-bit (--dynamic)"), {}).get("greedy")  # fmt: skip
        if own is None:
            continue
        model = str((work / "onnxopt" / folder).resolve())
        job = {"backend": "genai", "model": model, "threads": args.threads,
               "mode": "accuracy", "prompts": prompts, "new_tokens": args.greedy_tokens}  # fmt: skip
        job["eos"] = eos
        try:
            theirs = _runner(MAIN_PY, job, work / "jobs" / f"genai-equal-{folder}")["greedy"]
        except Exception as exc:
            found.append({"model": name, "error": str(exc)})
            continue
        same = sum(a == b for a, b in zip(theirs, own, strict=True))  # each cut before end-of-text
        found.append({"model": name, "prompts_equal": same, "prompts": len(own),
                      "tokens_equal_pct": round(agreement(theirs, own), 1)})  # fmt: skip
    return found


def speed_rounds(timed: list[dict], speed: list[int], args, work: Path, rows: dict) -> int:
    """Each round a fresh process per candidate (load, warm-up, `generations` timed), the order rotating."""
    for c in timed:
        rows[c["name"]].update(first_ms=[], steps_ms=[], rss_mb=[], load_s=[])
    for r in range(args.rounds):
        for k in range(len(timed)):
            c = timed[(r + k) % len(timed)]
            row = rows[c["name"]]
            if "error" in row:
                continue
            job = {"backend": c["backend"], "model": str(c["model"]), "threads": args.threads,
                   "mode": "serve", "prompt": speed, "new_tokens": args.new_tokens,
                   "generations": args.generations}  # fmt: skip
            try:
                found = _runner(c["python"], job, work / "jobs" / f"serve-{_slug(c)}-{r}")
            except Exception as exc:
                row["error"] = f"serve: {exc}"
                print(f"{c['name']}: {row['error']}", flush=True)
                continue
            row["first_ms"] += found["first_ms"]
            row["steps_ms"] += found["steps_ms"]
            row["rss_mb"].append(found["peak_rss_mb"])
            row["load_s"].append(found["load_s"])
            tpot = np.percentile(found["steps_ms"], 50)
            print(f"round {r + 1}/{args.rounds} {c['name']}: {1000 / tpot:.1f} tok/s, first "
                  f"{np.percentile(found['first_ms'], 50):.0f} ms, {found['peak_rss_mb']:.0f} MB",
                  flush=True)  # fmt: skip
    return args.rounds


def finish(rows: dict, params: int, work: Path) -> None:
    """Summaries from the raw figures: change against fp32, agreement, tok/s, ratios."""
    base = rows["onnxopt fp32"]
    reference = base.get("greedy")
    for row in rows.values():
        if row.get("perplexity") is not None and base.get("perplexity"):
            row["perplexity_change_pct"] = round(100 * (row["perplexity"] / base["perplexity"] - 1), 2)
            row["perplexity"] = round(row["perplexity"], 3)
        if row.get("greedy") is not None and reference is not None:
            row["greedy_agreement_pct"] = round(agreement(row["greedy"], reference), 1)
        if row.get("steps_ms"):
            tpot = float(np.percentile(row["steps_ms"], 50))
            row["decode_tokens_per_s"] = round(1000 / tpot, 1)
            row["tpot_p50_ms"], row["tpot_p90_ms"] = (
                round(tpot, 2),
                round(float(np.percentile(row["steps_ms"], 90)), 2),
            )
            row["first_token_ms"] = round(float(np.percentile(row["first_ms"], 50)), 1)
            row["peak_rss_mb"] = round(max(row["rss_mb"]))
            row["timed_tokens"] = len(row["steps_ms"])
        for key in ("greedy", "steps_ms", "first_ms", "rss_mb"):
            row.pop(key, None)
    fp32 = base.get("decode_tokens_per_s")
    q4km = rows.get("llama.cpp Q4_K_M", {}).get("decode_tokens_per_s")
    for row in rows.values():
        if row.get("decode_tokens_per_s") and fp32:
            row["speed_vs_onnxopt_fp32"] = round(row["decode_tokens_per_s"] / fp32, 2)
        if row.get("decode_tokens_per_s") and q4km:
            row["speed_vs_llama_q4_k_m"] = round(row["decode_tokens_per_s"] / q4km, 2)


def versions() -> dict:
    found = {}
    for python, names in ((MAIN_PY, ["onnxruntime", "onnxruntime-genai", "onnxopt"]),
                          (LLAMA_VENV / "bin" / "python", ["llama-cpp-python"]),
                          (GENAI_VENV / "bin" / "python", ["transformers"]),
                          (OPENVINO_VENV / "bin" / "python",
                           ["openvino", "openvino-genai", "optimum-intel", "nncf"])):  # fmt: skip
        if not Path(python).exists():
            continue
        code = f"import importlib.metadata as m; print(' '.join(m.version(n) for n in {names!r}))"
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
        if done.returncode == 0:
            label = {"transformers": "transformers (ORT GenAI builder)"}
            found.update(zip([label.get(n, n) for n in names], done.stdout.split(), strict=True))
    return found


# --- the report ------------------------------------------------------------------------------


def _cell(row: dict, key: str, fmt: str, suffix: str = "") -> str:
    value = row.get(key)
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def reading(rows: list[dict], data: dict) -> list[str]:
    """Why the figures fall as they do, as far as the files and graphs of these models show."""
    by = {r["model"]: r for r in rows}
    fp32, own = by.get("onnxopt fp32", {}), by.get("onnxopt int4 b32 (default)", {})
    default = by.get("ORT GenAI builder int4 (defaults)", {})
    best = next((r for r in rows if str(r.get("sweep", "")).startswith("best")), {})
    q4km = by.get("llama.cpp Q4_K_M", {})
    if not all(r.get("decode_tokens_per_s") for r in (fp32, own, default, best, q4km)):
        return []
    rate, own_rate = fp32["decode_tokens_per_s"], own["decode_tokens_per_s"]
    out = [
        "Why, as far as the files and graphs show (read from the models of this run):",
        "",
        "- Bits: onnxopt's default int4 keeps the embedding table at 8 bits (28.4 MB of its 136) and the "
        "LM head at 8 bits (32.7 MB), stores its int4 scales in fp32 (1 bit per weight at block 32; "
        "GGUF's are fp16) and one extra block per 576-wide row for the offset's remainders (19 blocks "
        "where there are 18). `--head-bits 4 --embedding-bits 4` stores both in 4 bits too: 5.50 bits "
        "per weight, fewer than llama.cpp Q4_K_M's and OpenVINO's int4, at a lower perplexity than "
        "either. llama.cpp Q4_0's 5.29 is below what MatMulNBits can hold at block 32 in an fp32 graph "
        "(its scales take the activations' type: 4 + 1 bits a weight before any zero point).",
        f"- Decode against fp32: fp32 reads ~540 MB a token (linears and head; the embedding table is "
        f"gathered, not read whole) at {rate:.1f} tok/s (~{0.54 * rate:.0f} GB/s); int4 reads ~108 MB at "
        f"{own_rate:.1f} tok/s (~{0.108 * own_rate:.1f} GB/s): int4 decode is bound by per-token work, "
        "not memory. A decode step's kernels (onnxruntime profile, 48 steps, 2 threads, this machine, "
        "2026-12-07): MatMulNBits 8.3 ms of 14.2 (the 8-bit head 2.0), GroupQueryAttention 2.7, and "
        "the offset's block sums, an fp32 MatMul and a Concat before each of the 120 int4 MatMulNBits, "
        "2.4 ms; 642 nodes besides constants against the builder's 339.",
        f"- ORT GenAI builder int4 (defaults), {default['decode_tokens_per_s']:.1f} tok/s: no block sums "
        "(151 MatMulNBits and nothing else per linear) and an int4 LM head (0.9 ms of its 10.4 ms of "
        f"kernels); it pays {default['perplexity_change_pct']:+.1f}% perplexity. Its best int4 (the "
        f"head and 28 more of its 151 MatMuls int8) decodes at {best['decode_tokens_per_s']:.1f} tok/s, "
        f"{best['perplexity_change_pct']:+.1f}% perplexity. onnxopt's --algo asym drops the remainders "
        "and their block sums (faster, +9.7% perplexity): the remainders are what holds int4 within +3%.",
        f"- llama.cpp Q4_K_M at {q4km['decode_tokens_per_s']:.1f} tok/s: one fused graph per token in C++ "
        "with AVX2 kernels for Q5_0/Q4_K/Q6_K against int8-quantized activations.",
        f"- Load average {data['load']:.1f} on 2 cores at the end of the speed run: figures are "
        "comparable with each other (fresh processes, rotating order).",
    ]
    return out


def bars(rows: list[dict]) -> list[str]:
    """The done-when checks of issue 29 (int4 and 8-bit accuracy, decode speed) from the rows."""
    by = {r["model"]: r for r in rows}
    own, own_genai = (
        by.get("onnxopt int4 b32 (default)", {}),
        by.get("onnxopt int4 b32, in ORT GenAI's runtime", {}),
    )
    eight, fp32 = by.get("onnxopt 8-bit (--dynamic)", {}), by.get("onnxopt fp32", {})
    out = []

    def yes(ok: bool) -> str:
        return "met" if ok else "MISSED"

    if own.get("perplexity_change_pct") is not None:
        change = own["perplexity_change_pct"]
        out.append(f"- onnxopt int4 within +3% of fp32: {change:+.2f}%: {yes(change <= 3)}.")
        bpw = own["bits_per_weight"]
        for r in rows:
            if r["family"] == "onnxopt" or r["precision"] != "int4" or r.get("perplexity") is None:
                continue
            better = own["perplexity"] < r["perplexity"]
            bits = (
                "fewer"
                if bpw < r["bits_per_weight"]
                else "the same"
                if bpw == r["bits_per_weight"]
                else "MORE"
            )
            out.append(
                f"  - against {r['model']}: {own['perplexity']:.2f} vs {r['perplexity']:.2f} perplexity "
                f"({'better' if better else 'WORSE'}), {bpw:.2f} vs {r['bits_per_weight']:.2f} bits/weight "
                f"(onnxopt {bits})."
            )
    if eight.get("perplexity_change_pct") is not None:
        change = eight["perplexity_change_pct"]
        out.append(f"- onnxopt 8-bit within +0.5%: {change:+.2f}%: {yes(change <= 0.5)}.")
    if own.get("speed_vs_onnxopt_fp32") is not None:
        ratio = own["speed_vs_onnxopt_fp32"]
        out.append(f"- onnxopt int4 decode >= 3.5x onnxopt fp32: {ratio:.2f}x: {yes(ratio >= 3.5)}.")
    builder = [
        r
        for r in rows
        if r["family"] == "ORT GenAI" and r["precision"] == "int4" and r.get("decode_tokens_per_s")
    ]
    for rate, where in ((own_genai.get("decode_tokens_per_s"), "in ORT GenAI's runtime"),
                        (own.get("decode_tokens_per_s"), "in onnxopt's loop")):  # fmt: skip
        for r in builder if rate else []:
            out.append(
                f"- onnxopt int4 {where} at least as fast as {r['model']}: {rate:.1f} vs "
                f"{r['decode_tokens_per_s']:.1f} tok/s: {yes(rate >= r['decode_tokens_per_s'])}."
            )
    for r in (own, own_genai):
        if r.get("speed_vs_llama_q4_k_m") is not None:
            ratio = r["speed_vs_llama_q4_k_m"]
            out.append(
                f"- {r['model']} / llama.cpp Q4_K_M decode tok/s: {ratio:.2f} (goal >= 1: {yes(ratio >= 1)})."
            )
    if fp32.get("decode_tokens_per_s") is None:
        out.append("- (no speed figures)")
    return out


def pareto(rows: list[dict]) -> list[str]:
    """For each peer's int4: the onnxopt int4 rows at the same or fewer bits per weight, and
    whether one of them has the lower perplexity."""
    own = [r for r in rows if r["family"] == "onnxopt" and r["precision"] == "int4" and r.get("perplexity")]
    out = ["Each peer's int4 against onnxopt's int4 files at the same or fewer bits per weight:", ""]
    for peer in rows:
        if peer["family"] == "onnxopt" or peer["precision"] != "int4" or peer.get("perplexity") is None:
            continue
        fewer = [r for r in own if r["bits_per_weight"] <= peer["bits_per_weight"]]
        best = min(fewer, key=lambda r: r["perplexity"], default=None)
        if best is None:
            out.append(f"- {peer['model']} ({peer['bits_per_weight']:.2f} bits/weight): none that small.")
            continue
        verdict = "better" if best["perplexity"] < peer["perplexity"] else "WORSE"
        out.append(
            f"- {peer['model']}: {peer['perplexity']:.2f} at {peer['bits_per_weight']:.2f} bits/weight; "
            f"{best['model']}: {best['perplexity']:.2f} at {best['bits_per_weight']:.2f} ({verdict})."
        )
    return out


def report(path: Path) -> str:
    data = json.loads(path.read_text())
    rows = data["rows"]
    lines = [
        "# Generation peers side by side: off-grid SmolLM2-135M-Instruct\n",
        f"{data['date']}, {data['cpu']}; {data['threads']} threads everywhere; "
        f"{data['parameters']:,} parameters (the off-grid copy's safetensors, LM head untied). "
        f"Versions: {', '.join(f'{k} {v}' for k, v in data['versions'].items())}.\n",
        "| model | runtime | bits/weight | size MB | perplexity | change | greedy = fp32 | decode tok/s "
        "| x onnxopt fp32 | x llama.cpp Q4_K_M | first token ms | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    runtimes = {"onnxopt": "onnxopt (onnxruntime)", "genai": "onnxruntime-genai",
                "llama": "llama.cpp", "openvino": "OpenVINO GenAI"}  # fmt: skip
    for r in rows:
        if r.get("sweep"):
            r = {
                **r,
                "model": r["model"]
                + (" **best of the sweep**" if "best" in r["sweep"] else ", sweep (not timed)"),
            }
        if r.get("note"):
            r = {**r, "model": f"{r['model']}: {r['note']}"}
        if "error" in r and r.get("perplexity") is None:
            lines.append(f"| {r['model']} | {runtimes[r['backend']]} | failed: {r['error'][:160]} |||||||||")
            continue
        lines.append(
            f"| {r['model']} | {runtimes[r['backend']]} | {_cell(r, 'bits_per_weight', '.2f')} | "
            f"{_cell(r, 'size_mb', '.1f')} | {_cell(r, 'perplexity', '.2f')} | "
            f"{_cell(r, 'perplexity_change_pct', '+.1f', '%')} | "
            f"{_cell(r, 'greedy_agreement_pct', '.1f', '%')} | "
            f"{_cell(r, 'decode_tokens_per_s', '.1f')} | {_cell(r, 'speed_vs_onnxopt_fp32', '.2f', 'x')} | "
            f"{_cell(r, 'speed_vs_llama_q4_k_m', '.2f', 'x')} | {_cell(r, 'first_token_ms', '.0f')} | "
            f"{_cell(r, 'peak_rss_mb', 'd')} |"
        )
    lines += [
        "",
        f"- Perplexity: {data['text']}: `onnxopt eval --task perplexity --limit 1000`'s windows, the same "
        "token ids fed to every runtime (each window a prefill of its own; the vocabularies are identical, "
        "no runtime tokenizes). Greedy agreement: share of identical tokens with onnxopt fp32 on "
        f"{data['greedy']}, each continuation cut before its end-of-text (a stop too early or too late "
        "counts as differing).",
        f"- Speed: batch 1, prompt 128 random ids (seed 0), 64 new tokens, {data['threads']} threads; "
        f"{data['rounds']} rounds, each a fresh process per candidate (load, one warm-up generation, "
        f"{data['generations_per_round']} timed), the order rotating round by round. Decode tok/s = 1000 / "
        "p50 of the per-token times after the first; first token = p50 of prefill + first token; peak RSS "
        "= the serving process's VmHWM (load included), the largest of its rounds. Load average at the "
        f"end: {data['load']:.1f} on 2 cores (another engineer's jobs ran beside these).",
        "- Bits per weight = bytes of the model files x 8 / parameters. Counted: onnxopt and ORT GenAI "
        "model.onnx (+ model.onnx.data); llama.cpp the .gguf (its ~2 MB vocabulary inside); OpenVINO "
        "openvino_model.xml + .bin (not its tokenizer IRs). Tokenizer and config files are not counted. "
        "Parameters: 106.2M in the decoder's linears, 28.3M embedding table, 28.3M LM head (untied). What "
        "the bits hold (read from the files): onnxopt int4: linears int4 block 32 with fp32 scales and an "
        "extra block of block sums per row (the offset), embedding int8, head 8-bit; llama.cpp Q4_0: "
        "linears and embedding Q4_0 (4.5 bpw), head Q8_0; Q4_K_M: down_proj Q4_K/Q6_K, every other linear "
        "Q5_0 (5.5 bpw: K-quants need rows that are multiples of 256, and those are 576 wide, so llama.cpp "
        "falls back), embedding Q5_0, head Q8_0; ORT GenAI builder: embedding fp32 (113 MB), every "
        "MatMul int4 by default, the head among them; OpenVINO int4: embedding and head int8 (NNCF's "
        "backup precision), linears int4 group 32.",
    ]
    check = data.get("genai_equal") or []
    if check:
        parts = [f"{c['model']}: error {c['error']}" if "error" in c else
                 f"{c['model']} {c['prompts_equal']}/{c['prompts']} prompts identical "
                 f"({c['tokens_equal_pct']:.1f}% of tokens)" for c in check]  # fmt: skip
        lines.append(f"- onnxruntime_genai greedy tokens equal onnxopt's own: {'; '.join(parts)}.")
    for other in data.get("other_speed_runs", []):
        lines.append(
            f"- Another speed run of the same models ({other['when']}, load average {other['load']:.1f}): "
            + "; ".join(f"{k} {v}" for k, v in other["figures"].items())
            + "."
        )
    lines += ["", "Issue 29's bars, read off this table:", "", *bars(rows), "", *pareto(rows)]
    lines += ["", *reading(rows, data)]
    if data["failures"]:
        lines += ["", "Not measured:", ""]
        lines += [f"- {k}: {v}" for k, v in data["failures"].items()]
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {r['model']}: {r['error']}" for r in errors]
    lines += ["", "Files counted:", ""] + [f"- {r['model']}: {r.get('files', '-')}" for r in rows]
    lines += ["", f"Commands ({data['minutes']} min in all):", "", "```sh", *data["commands"], "```", ""]
    table = "\n".join(lines)
    path.with_suffix(".md").write_text(table)
    print(table)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="write generate_peers.md from the JSON")
    parser.add_argument("--source", type=Path, help="the off-grid HF folder (default: built in WORK)")
    parser.add_argument(
        "--onnxopt-from", type=Path, help="reuse onnxopt's fp32/int4/dynamic folders from here"
    )
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "generate-peers")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/stsb"))
    parser.add_argument("--text", type=Path, help="the held-out text (default: written from --data)")
    parser.add_argument("--limit", type=int, default=1000)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--greedy-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--generations", type=int, default=2, help="timed generations per process")
    parser.add_argument(
        "--ov-data-aware", action="store_true", help="OpenVINO int4 with --dataset auto (slow)"
    )
    parser.add_argument(
        "--add-ov-data-aware",
        action="store_true",
        help="build OpenVINO int4 data-aware (--dataset auto) and add its accuracy to the JSON, untimed",
    )
    parser.add_argument("--speed-from", type=Path, help="keep the timed figures of this earlier JSON")
    parser.add_argument("--skip", default="", help="families not to build or measure, comma-separated")
    parser.add_argument("--json", type=Path, default=HERE / "generate_peers.json")
    args = parser.parse_args()
    args.skip = [s for s in args.skip.split(",") if s]
    if args.report:
        report(args.json)
    elif args.add_ov_data_aware:
        add_ov_data_aware(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
