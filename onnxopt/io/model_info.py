"""A model's facts, read once: what kind of model it is, its cache, its config.json.

Every question "what is this model?" is asked here, of one `ModelInfo`, instead of each command
reading config.json and the graph again in its own way. config.json itself is opened only by
onnxopt.io.hf_config (below onnxopt.io.model_files, which genai_config needs), and only for this
object, genai_config and the quantize workflow's model_type.

    info = ModelInfo.read(path)      # a model folder, a folder in parts, an .onnx file, a ModelRef
                                     # (a ModelRef is one graph, a part's included)
    info.kind                        # "encoder", "decoder" (one graph with a KV cache),
                                     # "encoder-decoder" (a folder in parts, onnxopt.io.parts)
    info.in_parts, info.has_cache, info.cache       # CacheLayout or None
    info.ref, info.graph             # the (encoder's) ModelRef; its graph without weights
    info.config                      # config.json as a dict ({} without one)
    info.model_type, info.task       # config.json's model_type; the task its architecture implies
    info.layers, info.heads, info.kv_heads, info.head_size, info.hidden_size
    info.vocab_size, info.max_positions             # checked positive where config.json sets them
    info.decoder_start_token, info.end_token, info.external_data, info.files
    info.config_int(keys)            # the first of `keys` config.json sets (a positive integer)
    info.auto_config                 # transformers' AutoConfig of the folder

Each fact is computed when first asked and kept (functools.cached_property), so building one costs
nothing and a bad config.json fails where a caller first needs it, with the same message as
before. The graph is parsed without its weights. An info describes the files as they were when
first asked: a step that rewrites the folder reads a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from onnxopt.io import files, hf_config, parts
from onnxopt.io.cache_layout import CacheLayout, cache_layout

if TYPE_CHECKING:
    import onnx

    from onnxopt.io.model_files import ModelRef

Kind = Literal["encoder", "decoder", "encoder-decoder"]
# Models whose position ids start after the padding index, so max_position_embeddings overstates
# the longest sequence by pad_token_id + 1 (RoBERTa: 514 positions, 512 tokens).
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "ibert")
# Architecture class suffix -> optimum task, for local folders (optimum infers tasks for hub ids only).
_ARCHITECTURE_TASKS = (
    ("ForSequenceClassification", "text-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForTokenClassification", "token-classification"),
    ("ForMultipleChoice", "multiple-choice"),
    ("ForMaskedLM", "fill-mask"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("Model", "feature-extraction"),
)


def _token(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass(frozen=True)
class ModelInfo:
    """What onnxopt knows of one model, each fact read at most once (see the module's docstring)."""

    path: Path | None  # what was given: a folder, an .onnx file (None: no model, no config)
    folder: Path | None  # where config.json, the tokenizer and the manifest live
    given: ModelRef | None = field(default=None, repr=False, compare=False)

    @classmethod
    def read(cls, source: Path | str | ModelRef | ModelInfo | None) -> ModelInfo:
        """The info of a folder, an .onnx file, or an already resolved ModelRef; nothing is read yet.
        An info is returned as it is, so a function may take a folder or its caller's info."""
        if isinstance(source, ModelInfo):
            return source
        if source is None:
            return cls(None, None)
        if not isinstance(source, (str, Path)):  # a ModelRef: one graph, its folder's config
            return cls(source.onnx_path, source.folder, source)
        path = Path(source)
        if path.is_dir():
            return cls(path, path)
        from onnxopt.io.manifest import MANIFEST_NAME

        return cls(path, path.parent if (path.parent / MANIFEST_NAME).is_file() else None)

    @cached_property
    def config(self) -> dict[str, Any]:
        """config.json as a dict, {} without one; a file that is not a JSON object is an error."""
        return hf_config.read_config(self.folder)

    @cached_property
    def parts(self) -> dict[str, Path] | None:
        """part -> .onnx file of a folder in parts (onnxopt.io.parts), None for one graph (a file,
        a ModelRef)."""
        return parts.part_files(self.folder if self.given is None and self.folder == self.path else None)

    @property
    def in_parts(self) -> bool:
        return self.parts is not None

    @cached_property
    def ref(self) -> ModelRef:
        """The model's ModelRef (a folder in parts: its encoder's), resolved and checked once."""
        from onnxopt.io import model_files

        if self.given is not None:
            return self.given
        if self.in_parts:
            return model_files.part_ref(self.folder, "encoder")
        return model_files.resolve(self.path)

    @cached_property
    def graph(self) -> onnx.ModelProto:
        """The graph of `ref`, parsed and checked without its weights."""
        from onnxopt.io import model_files

        return model_files.load(self.ref, load_weights=False)

    @cached_property
    def cache(self) -> CacheLayout | None:
        """The KV-cache layout (a folder in parts: its decoder_with_past's), None without a cache."""
        if self.in_parts:
            from onnxopt.io import model_files

            with_past = model_files.ModelRef(self.parts["decoder_with_past"], self.folder)
            return cache_layout(model_files.load(with_past, load_weights=False))
        return cache_layout(self.graph)

    @property
    def has_cache(self) -> bool:
        return self.cache is not None

    @property
    def kind(self) -> Kind:
        """encoder-decoder: a folder in parts; decoder: one graph with a KV cache; encoder: the rest
        (a decoder exported without its cache runs, as an encoder does, as one whole pass)."""
        if self.in_parts:
            return "encoder-decoder"
        return "decoder" if self.has_cache else "encoder"

    @cached_property
    def model_type(self) -> str | None:
        value = self.config.get("model_type")
        return value if isinstance(value, str) else None

    @cached_property
    def task(self) -> str:
        """The task config.json's architecture implies; "feature-extraction" where it names none."""
        architectures = self.config.get("architectures") or []
        for arch in architectures if isinstance(architectures, list) else []:
            if not isinstance(arch, str):
                continue
            for suffix, task in _ARCHITECTURE_TASKS:
                if arch.endswith(suffix):
                    return task
        return "feature-extraction"

    def config_int(self, keys: tuple[str, ...] | str) -> int | None:
        """The first of `keys` config.json sets, which must be a positive integer (else the error of
        onnxopt.io.files.positive_int); None where it sets none."""
        for key in (keys,) if isinstance(keys, str) else keys:
            value = files.positive_int(self.config, key, self.folder)
            if value is not None:
                return value
        return None

    @property
    def vocab_size(self) -> int | None:
        return self.config_int("vocab_size")

    @property
    def hidden_size(self) -> int | None:
        return self.config_int(("hidden_size", "n_embd", "d_model"))

    @property
    def layers(self) -> int | None:
        """Layers config.json states, else those the graph's cache holds."""
        found = self.config_int(("num_hidden_layers", "n_layer", "num_layers"))
        return found if found is not None else (self.cache.layers if self.cache else None)

    @property
    def heads(self) -> int | None:
        return self.config_int(("num_attention_heads", "n_head"))

    @property
    def kv_heads(self) -> int | None:
        """KV heads config.json states, else the widest the graph's cache holds."""
        found = self.config_int("num_key_value_heads")
        return found if found is not None else (max(self.cache.heads.values()) if self.cache else None)

    @property
    def head_size(self) -> int | None:
        """config.json's head_dim, else hidden size / heads, else the graph cache's head dim."""
        found = self.config_int("head_dim")
        if found is None and self.hidden_size and self.heads:
            found = self.hidden_size // self.heads
        return found if found is not None else (max(self.cache.head_dim.values()) if self.cache else None)

    @property
    def max_positions(self) -> tuple[int, str] | None:
        """The longest sequence the position embeddings allow, and the config key that says so."""
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = files.positive_int(self.config, key, self.folder)
            if value is not None:
                if self.config.get("model_type") in _OFFSET_POSITIONS:
                    value -= int(self.config.get("pad_token_id") or 1) + 1
                return value, key
        return None

    @property
    def decoder_start_token(self) -> int:
        """The token an encoder-decoder's decoder starts from (T5: pad 0; BART: eos 2)."""
        for key in ("decoder_start_token_id", "pad_token_id"):
            if _token(self.config.get(key)) is not None:
                return self.config[key]
        return 0

    @property
    def end_token(self) -> int | None:
        """The end-of-text token (config.json's eos_token_id; the first of a list), None without one."""
        value = self.config.get("eos_token_id")
        return _token(value[0] if isinstance(value, list) and value else value)

    @cached_property
    def files(self) -> list[Path]:
        """Every file the graphs and weights are read from (each part's, for a folder in parts)."""
        from onnxopt.io import model_files

        onnx_paths = list(self.parts.values()) if self.in_parts else [self.ref.onnx_path]
        found = []
        for path in onnx_paths:
            found += [path] + [path.parent / loc for loc in model_files.external_locations(path)]
        return found

    @property
    def external_data(self) -> bool:
        """Whether any weights live in files beside the .onnx file(s)."""
        return len(self.files) > (len(self.parts) if self.in_parts else 1)

    @cached_property
    def auto_config(self) -> Any:
        """transformers' AutoConfig of the folder (rope tables need its derived settings)."""
        return hf_config.auto_config(self.folder)
