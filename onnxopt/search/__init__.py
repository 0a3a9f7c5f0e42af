"""`onnxopt search`: the fastest model within an accuracy budget, over pruning x quantization x
provider (config, space, points, strategy, trials, jobs, executors, timing, loop, best, workflow)."""
