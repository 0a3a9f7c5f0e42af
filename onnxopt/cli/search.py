"""`onnxopt search DIR -o OUT --max-drop X --data FILE [--task T] [--budget N | --time T]
[--space FILE.yaml] [--executor local|ray] [--address ADDR]`"""

from __future__ import annotations

from pathlib import Path

from onnxopt.cli import common
from onnxopt.cli.options import command as make_command
from onnxopt.search.config import SearchConfig


def run(config: SearchConfig, model: Path, output: Path, json_path: Path | None) -> None:
    from onnxopt.report.search_plot import PLOT
    from onnxopt.search.best import BEST
    from onnxopt.search.folder import MARK
    from onnxopt.search.trials import EVALUATIONS, MODELS, REFERENCE, TRIALS

    # OUT is a run folder, never replaced whole: a report beside the trials is fine, not over them.
    made = (BEST, MARK, TRIALS, EVALUATIONS, MODELS, REFERENCE, PLOT)
    common.check_json(json_path, [common.existing(model), Path(config.data)], tuple(output / m for m in made))
    with common.progress(f"search {model}") as progress:
        from onnxopt.search.folder import MARK
        from onnxopt.search.workflow import search

        common.RESUMABLE = common.Resumable(output, MARK, "the trials so far")
        result = search(model, output, config, on_progress=progress)
    from onnxopt.report import search_plot, search_tables

    search_plot.plot_search(result, output / search_plot.PLOT)
    common.finish(result, json_path, search_tables.search_result)


command = make_command(
    SearchConfig,
    run,
    "Search pruning x quantization x provider for the fastest model within --max-drop of DIR on your "
    "data: every trial in OUT/trials.jsonl, the Pareto fronts in a table and OUT/pareto.png, the best "
    "model in OUT/best with its recipe. A rerun resumes: no finished trial is redone.",
    arguments=[common.model_argument("Model folder from `onnxopt export` (fp32): the reference.")],
    extras=[common.OUTPUT, common.JSON],
)
