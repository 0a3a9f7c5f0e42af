"""STS: Spearman (x100) between gold scores and the cosines of sentence embeddings."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxopt.data.samples import clip_text, complete_inputs, input_types, load_tokenizer
from onnxopt.data.sts_pairs import StsPair
from onnxopt.io import model_files
from onnxopt.runtime.sessions import make_session

# A genre's own Spearman is reported only with this many pairs; fewer rank too noisily to compare.
MIN_GENRE_PAIRS = 20


def embed(session, tokenizer, types, texts: list[str], seq_len: int = 128, batch: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings (the sentence-transformers recipe)."""
    out = []
    for i in range(0, len(texts), batch):
        chunk = [clip_text(t, seq_len) for t in texts[i : i + batch]]
        enc = dict(tokenizer(chunk, padding=True, truncation=True, max_length=seq_len, return_tensors="np"))
        hidden = session.run(None, complete_inputs(enc, types))[0]
        mask = enc["attention_mask"][..., None].astype(np.float32)
        pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
        out.append(pooled)
    emb = np.concatenate(out)
    return emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)


def sts_spearman(
    model: Path, pairs: list[StsPair], seq_len: int = 128, threads: int | None = None, settings=None
) -> float:
    return sts_spearman_by_genre(model, pairs, seq_len, threads, settings)[0]


def sts_spearman_by_genre(
    model: Path, pairs: list[StsPair], seq_len: int = 128, threads: int | None = None, settings=None
) -> tuple[float, dict[str, float]]:
    """Spearman (x100) over all pairs, and within each genre that has MIN_GENRE_PAIRS pairs, when
    there are several: an overall figure can hide a loss in one genre behind a gain in another."""
    ref = model_files.resolve(model)
    tokenizer = load_tokenizer(ref.folder)
    types = input_types(model_files.load(ref, load_weights=False))
    session = make_session(ref.onnx_path, "cpu", threads, settings=settings)
    cosines = sts_cosines(session, tokenizer, types, pairs, seq_len)
    genres: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        genres.setdefault(pair.genre, []).append(i)
    by_genre = {}
    if len(genres) > 1:
        for genre, rows in sorted(genres.items()):
            if len(rows) >= MIN_GENRE_PAIRS:
                by_genre[genre] = _spearman_x100([pairs[i] for i in rows], cosines[rows])
    return _spearman_x100(pairs, cosines), by_genre


PADDING_CHECK = 64  # sentences embedded both alone and in padded batches, to see masking hold


def padded_batch_agreement(
    model: Path, texts: list[str], seq_len: int = 128, batch: int = 16, settings=None
) -> float:
    """The lowest cosine between a sentence's embedding alone and inside a padded batch, over the
    first PADDING_CHECK texts. The metric embeds sentences alone, which cannot see a model whose
    attention no longer masks padding: the static QDQ peer quantizes the mask add too, and scored
    STS-B dev 84.17 alone but 77.71 in padded batches of 64. Near 1 means padding is masked."""
    ref = model_files.resolve(model)
    tokenizer = load_tokenizer(ref.folder)
    types = input_types(model_files.load(ref, load_weights=False))
    session = make_session(ref.onnx_path, "cpu", settings=settings)
    texts = texts[:PADDING_CHECK]
    alone = embed(session, tokenizer, types, texts, seq_len, batch=1)
    padded = embed(session, tokenizer, types, texts, seq_len, batch=batch)
    return float((alone * padded).sum(1).min())


def sts_cosines(session, tokenizer, types, pairs: list[StsPair], seq_len: int = 128) -> np.ndarray:
    """The cosine of each pair's two embeddings, each sentence embedded alone (batch 1, no padding).

    Int8 models make a batched figure depend on the batch: dynamic int8 quantizes activations
    with one scale per tensor across the padded batch (padding rows included), so a sentence's
    embedding moved with its neighbours (up to 8.8e-5; a genre's Spearman 16.97 alone vs 17.20 in a
    mixed file on an AVX2 CPU), and on STS-B dev merely moving batch boundaries shifted dynamic int8
    MiniLM by 0.11 (86.72 -> 86.61) and genres by up to 0.35: the size of the drops being measured.
    Alone, every cosine depends on its own pair only, on every CPU, as a batch-1 server sees it;
    and without padding it was faster too (10 s against 23 s for STS-B dev, dynamic int8)."""
    a = embed(session, tokenizer, types, [p.first for p in pairs], seq_len, batch=1)
    b = embed(session, tokenizer, types, [p.second for p in pairs], seq_len, batch=1)
    return (a * b).sum(1)


def _spearman_x100(pairs: list[StsPair], cosines: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(100 * spearmanr([p.score for p in pairs], cosines).statistic)


def sts_score(session, tokenizer, types, pairs: list[StsPair], seq_len: int = 128) -> float:
    """Spearman (x100) between gold scores and the cosine of the two sentences' embeddings."""
    return _spearman_x100(pairs, sts_cosines(session, tokenizer, types, pairs, seq_len))
