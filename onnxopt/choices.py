"""The choice lists of options, in one place.

The configs (and through them the command line's help and the recipe schema), the passes and the
runtime all read them from here, so they cannot disagree (the recipe schema once carried its own
copies). Standard library only: the CLI imports this before anything heavy.
"""

QUANTIZE_MODES = ("static", "dynamic", "int4")
# Where an int8 model will run: onnxruntime's CPU kernels, OpenVINO, or any runtime reading QDQ.
QUANTIZE_TARGETS = ("cpu", "openvino", "portable", "auto")
# int4 weight-only: round, round with a float offset per block, search (HQQ), or correct (GPTQ)
WEIGHT_ALGORITHMS = ("rtn", "offset", "asym", "hqq", "gptq")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Op types with a static int8 kernel on the CPU provider, and the fused ops that only have
# dynamic-activation int8 kernels (QAttention, QEmbedLayerNormalization).
QDQ_OPS = ("MatMul", "Gemm")
DYNAMIC_ONLY_OPS = ("Attention", "EmbedLayerNormalization")
QUANTIZE_OPS = QDQ_OPS + DYNAMIC_ONLY_OPS
EVAL_TASKS = ("fidelity", "sts", "classification", "qa", "perplexity", "generation")
PROVIDERS = ("cpu", "openvino", "cuda")
PROVIDER_SETS = ("all", "auto")  # every provider; every provider and save the fastest
OPT_LEVELS = ("disable", "basic", "extended", "all")
EXECUTION_MODES = ("sequential", "parallel")
# What runs `bench --generate`: onnxopt's own loop (runtime.generation) or onnxruntime-genai.
GENERATION_RUNTIMES = ("onnxopt", "genai")
