"""Embedder, HashingEmbedder and EmbeddingCache: dedupe, caching, identity, truncation.

Fast tests use the hashing fake and the in-memory or tmp_path caches; the real MiniLM runs
only under ``-m slow``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from model.embedder import (
    EmbedConfig,
    Embedder,
    HashingEmbedder,
    TextEncoder,
    _CachingEncoder,
    _TokenBatcher,
    default_model_path,
    truncate_text,
)
from model.embedding_cache import EmbeddingCache, default_cache_path, text_key


class CountingHashingEmbedder(HashingEmbedder):
    """Records every text handed to the expensive step."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.seen: list[str] = []

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.seen.extend(texts)
        return super()._embed(texts)


# -- dedupe and cache ----------------------------------------------------------------------------


def test_duplicates_are_embedded_once() -> None:
    fake = CountingHashingEmbedder()
    texts = ["continue", "What is 2+2?", "continue", "continue", "What is 2+2?", "hi"]
    out = fake.encode(texts)
    assert sorted(fake.seen) == sorted({"continue", "What is 2+2?", "hi"})
    assert np.array_equal(out[0], out[2]) and np.array_equal(out[1], out[4])
    assert fake.stats.texts == 6 and fake.stats.unique == 3 and fake.stats.embedded == 3


def test_cache_hit_avoids_reembedding() -> None:
    fake = CountingHashingEmbedder(cache=EmbeddingCache.memory())
    texts = [f"prompt number {i}" for i in range(10)]
    first = fake.encode(texts)
    fake.seen.clear()
    second = fake.encode(list(reversed(texts)))
    assert fake.seen == []
    assert fake.stats.cache_hits == 10
    assert np.array_equal(first, second[::-1])


def test_warm_up_runs_the_encoder_even_when_its_text_is_cached() -> None:
    """A service's warm-up must load the encoder: a cached warm-up text would load nothing
    and leave the load to the first real prompt."""
    cache = EmbeddingCache.memory()
    fake = CountingHashingEmbedder(cache=cache)
    fake.encode(["warm-up"])
    fake.seen.clear()
    n_cached = len(cache)
    fake.warm_up()
    assert fake.seen == ["warm-up"] and len(cache) == n_cached  # ran, wrote nothing


def test_only_misses_are_embedded_and_written_back() -> None:
    cache = EmbeddingCache.memory()
    fake = CountingHashingEmbedder(cache=cache)
    fake.encode(["a b c", "d e f"])
    fake.seen.clear()
    fake.encode(["a b c", "g h i", "d e f"])
    assert fake.seen == ["g h i"]
    assert len(cache) == 3


def test_vectors_do_not_depend_on_cache_or_batching() -> None:
    texts = [f"solve for x: {i} x + 3 = {i * 7}" for i in range(40)] + ["short", "x" * 5000]
    plain = HashingEmbedder(batch_size=7).encode(texts)
    cached = HashingEmbedder(cache=EmbeddingCache.memory())
    cached.encode(texts[::2])
    assert np.array_equal(plain, cached.encode(texts))


def test_identity_change_while_loading_stores_under_the_new_identity() -> None:
    """An encoder whose backend falls back while loading must not write under the old name."""

    class FallingBack(_CachingEncoder):
        def __init__(self, cache: EmbeddingCache) -> None:
            self.cache = cache
            from model.embedder import EncodeStats

            self.stats = EncodeStats()
            self.name = "fast-backend"

        identity = property(lambda self: self.name)  # type: ignore[assignment]
        dim = property(lambda self: 8)  # type: ignore[assignment]
        batch_size = property(lambda self: 4)  # type: ignore[assignment]

        def _prepare(self) -> None:
            self.name = "fallback-backend"

        def _embed(self, texts: list[str]) -> np.ndarray:
            return np.ones((len(texts), 8), dtype=np.float32)

    cache = EmbeddingCache.memory()
    FallingBack(cache).encode(["one", "two"])
    assert cache.identities() == ["fallback-backend"]


def test_progress_bar_only_when_there_is_work(capsys: pytest.CaptureFixture[str]) -> None:
    fake = HashingEmbedder(cache=EmbeddingCache.memory())
    fake.encode(["alpha", "beta"], progress=True)
    assert "embedding" in capsys.readouterr().err
    fake.encode(["alpha", "beta"], progress=True)
    assert "embedding" not in capsys.readouterr().err


# -- shapes, dtype, normalisation, input errors --------------------------------------------------


def test_output_shape_dtype_and_unit_norm(hashing_embedder: HashingEmbedder) -> None:
    out = hashing_embedder.encode(["hello there", "", "   ", "日本語のテキスト", "x" * 100_000])
    assert out.shape == (5, hashing_embedder.dim) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    empty = hashing_embedder.encode([])
    assert empty.shape == (0, hashing_embedder.dim) and empty.dtype == np.float32


def test_encode_rejects_a_bare_string_and_non_strings(hashing_embedder: HashingEmbedder) -> None:
    with pytest.raises(TypeError, match="wrap a single text"):
        hashing_embedder.encode("just one prompt")
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        hashing_embedder.encode(["ok", 3])  # type: ignore[list-item]


def test_hashing_embedder_is_a_text_encoder_and_rebuilds_from_its_dict() -> None:
    fake = HashingEmbedder(dim=64, seed=3)
    assert isinstance(fake, TextEncoder)
    clone = HashingEmbedder(**fake.to_dict())
    assert clone.identity == fake.identity
    assert np.array_equal(clone.encode(["same text"]), fake.encode(["same text"]))


def test_hashing_similarity_follows_shared_words_and_templates() -> None:
    fake = HashingEmbedder()
    a, b, c, d = fake.encode(
        [
            "Natalia sold clips to 48 of her friends in April. How many clips did she sell?",
            "Natalia sold clips to 31 of her friends in May. How many clips did she sell?",
            "Write a Python function that returns the longest palindromic substring.",
            "Translate the following sentence into French: the weather is nice today.",
        ]
    )
    assert a @ b > 0.7
    assert abs(a @ c) < 0.25 and abs(a @ d) < 0.25 and abs(c @ d) < 0.25


def test_hashing_vectors_are_stable_across_instances_and_seeds_differ() -> None:
    text = ["The same prompt, embedded twice."]
    assert np.array_equal(HashingEmbedder().encode(text), HashingEmbedder().encode(text))
    other = HashingEmbedder(seed=1)
    assert other.identity != HashingEmbedder().identity
    assert float(HashingEmbedder().encode(text)[0] @ other.encode(text)[0]) < 0.5


# -- identity ------------------------------------------------------------------------------------


def test_identity_differs_across_configs_and_is_stable() -> None:
    configs = [
        EmbedConfig(),
        EmbedConfig(max_seq_length=256),
        EmbedConfig(backend="torch"),
        EmbedConfig(backend="onnx-int8"),
        EmbedConfig(head_chars=1000),
        EmbedConfig(tail_chars=0),
        EmbedConfig(normalize=False),
    ]
    identities = [Embedder(c).identity for c in configs]
    assert len(set(identities)) == len(configs)
    assert Embedder(EmbedConfig()).identity == identities[0]
    assert identities[0].startswith("all-MiniLM-L6-v2-")
    # batch size and device do not change the vectors, so they share cache rows
    assert Embedder(EmbedConfig(batch_size=8, device="cuda")).identity == identities[0]


def test_dim_and_identity_do_not_load_the_model() -> None:
    embedder = Embedder()
    assert embedder.dim == 384 and embedder.identity
    assert embedder._runner is None


def test_identity_follows_the_weights_of_a_model_directory(tmp_path: Path) -> None:
    model = tmp_path / "tiny-encoder"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (model / "model.safetensors").write_bytes(b"weights v1")
    config = EmbedConfig(model=str(model))
    before = Embedder(config).identity
    assert before.startswith("tiny-encoder-")
    (model / "model.safetensors").write_bytes(b"weights v2")
    assert Embedder(config).identity != before


# -- truncation ----------------------------------------------------------------------------------


def test_truncate_text_keeps_head_and_tail() -> None:
    text = "HEAD" + "m" * 10_000 + "TAIL"
    cut = truncate_text(text, head_chars=10, tail_chars=6)
    assert cut.startswith("HEADmmmmmm") and cut.endswith("mmTAIL")
    assert len(cut) < 30
    assert truncate_text("short prompt", 10, 6) == "short prompt"
    assert truncate_text(text, 4, 0).startswith("HEAD") and "TAIL" not in truncate_text(text, 4, 0)


def test_megabyte_prompt_never_reaches_the_encoder_whole() -> None:
    fake = CountingHashingEmbedder(head_chars=100, tail_chars=50)
    fake.encode(["q" * 2_000_000])
    # the fake applies the same character truncation as the real embedder
    assert len(fake._features("q" * 2_000_000)[0]) < 200


class _BundledTokenizer:
    """Enough of a transformers fast tokenizer for _TokenBatcher, without importing torch."""

    pad_token_id = 0
    model_input_names = ("input_ids", "token_type_ids", "attention_mask")

    def __init__(self) -> None:
        from tokenizers import Tokenizer

        self.backend_tokenizer = Tokenizer.from_file(str(default_model_path() / "tokenizer.json"))


def test_token_truncation_keeps_head_and_tail_tokens() -> None:
    tokenizer = _BundledTokenizer()
    batcher = _TokenBatcher(tokenizer, max_len=32, tail_share=0.25)
    long_text = "alpha beta gamma " + "filler " * 500 + "final question zebra"
    features = batcher([long_text, "hi"])
    ids = features["input_ids"]
    assert ids.shape == (2, 32)
    decode = tokenizer.backend_tokenizer.decode
    row = ids[0].tolist()
    assert row[0] == 101 and row[-1] == 102  # [CLS] ... [SEP] survive the cut
    assert decode(row[1:4]) == "alpha beta gamma"
    assert decode(row[-4:-1]) == "final question zebra"
    assert features["attention_mask"][1].tolist() == [1, 1, 1] + [0] * 29
    assert set(features) == {"input_ids", "attention_mask", "token_type_ids"}


# -- config --------------------------------------------------------------------------------------


def test_config_round_trips_through_json() -> None:
    config = EmbedConfig(model="/models/x", max_seq_length=64, backend="torch", tail_chars=0)
    assert EmbedConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert EmbedConfig.from_dict({}) == EmbedConfig()


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"max_seq_length": 4}, ValueError, "max_seq_length"),
        ({"max_seq_length": 128.0}, TypeError, "max_seq_length"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": True}, TypeError, "batch_size"),
        ({"backend": "tensorrt"}, ValueError, "backend"),
        ({"head_chars": 0}, ValueError, "head_chars"),
        ({"tail_chars": -1}, ValueError, "tail_chars"),
        ({"normalize": "yes"}, TypeError, "normalize"),
        ({"device": "gpu"}, ValueError, "device"),
        ({"model": ""}, ValueError, "model"),
    ],
)
def test_config_validation_names_the_field(
    kwargs: dict[str, object], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=f"EmbedConfig.{field}"):
        EmbedConfig(**kwargs)  # type: ignore[arg-type]


def test_config_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError, match="max_seq_len"):
        EmbedConfig.from_dict({"max_seq_len": 128})


def test_missing_model_directory_fails_before_loading_anything(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    embedder = Embedder(EmbedConfig(model=str(missing)))
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        embedder.encode(["hello"])


# -- the cache itself ----------------------------------------------------------------------------


def test_persistent_cache_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "embeddings.sqlite3"
    texts = [f"probe {i}: what is {i} squared?" for i in range(25)]
    with EmbeddingCache(path) as cache:
        first = HashingEmbedder(cache=cache).encode(texts)
        assert len(cache) == 25
    reopened = EmbeddingCache(path)
    fake = CountingHashingEmbedder(cache=reopened)
    assert np.array_equal(fake.encode(texts), first)
    assert fake.seen == []
    assert reopened.count(fake.identity) == 25 and len(reopened) == 25


def test_cache_namespaces_encoders_and_stores_float16(tmp_path: Path) -> None:
    for cache in (EmbeddingCache(tmp_path / "c.sqlite3"), EmbeddingCache.memory()):
        key = text_key("hello")
        vec = np.linspace(-1, 1, 16, dtype=np.float32)
        cache.put_many("encoder-a", {key: vec})
        assert cache.get_many("encoder-b", [key]) == {}
        got = cache.get_many("encoder-a", [key, text_key("absent")])
        assert list(got) == [key] and got[key].dtype == np.float32
        np.testing.assert_array_equal(got[key], vec.astype(np.float16).astype(np.float32))
        with pytest.raises(ValueError, match="expected \\(16,\\)"):
            cache.put_many("encoder-a", {text_key("other"): np.zeros(8)})


def test_cache_rejects_keys_that_are_not_text_keys() -> None:
    with pytest.raises(ValueError, match="text_key"):
        EmbeddingCache.memory().put_many("enc", {"not a digest": np.zeros(4)})


def test_cache_lookups_cover_more_keys_than_one_sql_statement(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite3")
    keys = [text_key(str(i)) for i in range(2500)]
    cache.put_many("enc", [(k, np.full(4, i % 1000)) for i, k in enumerate(keys)])
    got = cache.get_many("enc", [*keys, text_key("missing")])
    assert len(got) == 2500 and got[keys[2499]][0] == 499


def test_memory_lru_evicts_least_recently_used() -> None:
    cache = EmbeddingCache.memory(max_items=2)
    a, b, c = (text_key(x) for x in "abc")
    cache.put_many("enc", {a: np.ones(4), b: np.ones(4)})
    cache.get_many("enc", [a])
    cache.put_many("enc", {c: np.ones(4)})
    assert set(cache.get_many("enc", [a, b, c])) == {a, c}


def test_persistent_cache_with_lru_front(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite3", lru_size=1)
    a, b = text_key("a"), text_key("b")
    cache.put_many("enc", {a: np.ones(4), b: np.zeros(4)})
    assert set(cache.get_many("enc", [a, b])) == {a, b}
    assert len(cache) == 2


def test_default_cache_path_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTILLWATCH_CACHE_DIR", str(tmp_path))
    assert default_cache_path() == tmp_path / "embeddings.sqlite3"
    monkeypatch.delenv("DISTILLWATCH_CACHE_DIR")
    assert default_cache_path() == Path.home() / ".cache" / "distillwatch" / "embeddings.sqlite3"


def test_corrupt_cache_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "embeddings.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RuntimeError, match=r"embeddings\.sqlite3"):
        len(EmbeddingCache(path))


# -- the real model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # ONNX may fall back to torch in CI
        embedder = Embedder(EmbedConfig(), cache=EmbeddingCache.memory())
        embedder.encode(["warm up"])
    return embedder


@pytest.mark.slow
def test_real_model_puts_similar_prompts_closer(minilm: Embedder) -> None:
    cat, kitten, tax = minilm.encode(
        [
            "A cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "How do I file my quarterly tax return?",
        ]
    )
    assert minilm.dim == 384
    assert cat @ kitten > 0.6 > cat @ tax + 0.3


@pytest.mark.slow
def test_real_model_matches_sentence_transformers_on_short_prompts(minilm: Embedder) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [
        "Natalia sold clips to 48 of her friends in April. How many did she sell?",
        "def add(a, b):\n    return a + b\n\nassert add(2, 3) == ??",
        "continue",
        "Explain the difference between TCP and UDP in three bullet points.",
    ]
    reference = SentenceTransformer(str(default_model_path()), device="cpu").encode(texts)
    cosine = np.sum(minilm.encode(texts) * reference, axis=1)
    assert cosine.min() > 0.999


@pytest.mark.slow
def test_real_model_sees_the_question_after_a_long_document(minilm: Embedder) -> None:
    document = "The committee reviewed the annual budget line by line. " * 400
    about_budget = minilm.encode([document + "Summarise the budget discussion."])[0]
    about_poem = minilm.encode([document + "Now write a limerick about penguins on ice."])[0]
    assert about_budget @ about_poem < 0.98


@pytest.mark.slow
def test_unknown_hub_model_gives_a_clear_error() -> None:
    embedder = Embedder(EmbedConfig(model="nobody-here/no-such-encoder", backend="torch"))
    with pytest.raises(OSError, match="offline"):
        embedder.encode(["hello"])


def test_embedder_and_cache_pickle_without_loaded_state(tmp_path: Path) -> None:
    import pickle

    embedder = Embedder(EmbedConfig(backend="torch"), cache=EmbeddingCache(tmp_path / "c.sqlite3"))
    clone = pickle.loads(pickle.dumps(embedder))
    assert clone.config == embedder.config and clone.identity == embedder.identity
    assert clone.cache is not None and clone.cache.path == tmp_path / "c.sqlite3"
