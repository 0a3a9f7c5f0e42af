"""`onnxopt optimize`'s options, written once: the command line and the recipe schema derive from it."""

from __future__ import annotations

from dataclasses import dataclass

from onnxopt.options import Options, option


@dataclass(frozen=True)
class OptimizeConfig(Options):
    atol: float = option(1e-3, "Fail if outputs move by more than this from the input model's.", low=0)
    verify_loading: bool = option(
        False, "Load OUTPUT with optimum's ORTModelFor<Task>; compare with the input."
    )
    skip: tuple[str, ...] = option(
        (), "Rules to leave out: fuse, fuse-decoder-attention.", metavar="RULE,RULE"
    )
