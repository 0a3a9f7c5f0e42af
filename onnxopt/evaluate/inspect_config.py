"""`onnxopt inspect`'s options."""

from __future__ import annotations

from dataclasses import dataclass

from onnxopt.options import Options, option


@dataclass(frozen=True)
class InspectConfig(Options):
    nodes: bool = option(False, "Also list every node's name and op type.", recipe=False)
