"""Vector indexes behind fleet detection: all prompts seen so far, and known incidents.

What it knows: how to keep L2-normalised prompt embeddings searchable by inner product
(= cosine) as they arrive, exactly while the index is small and approximately once it is
large; how to list neighbour pairs above a similarity threshold with a per-query cap; how to
name the known harvesting campaign that a group of prompts most resembles.

What it does not know: accounts, templates, fleets or scores (see ``model/fleet.py``).

Index choice, by size
---------------------
* Below ``exact_max`` vectors (20k by default) it is a FAISS ``IndexFlatIP`` over the full
  embedding: exact, no training, adds cost nothing. 20k rather than 50k because the exact
  self-join grows as N^2: on 2 cores it took ~8 s at 20k x 384-d (so ~50 s at 50k), while
  IVF finds 99.9% of the same near-duplicate pairs in well under a second at 20k.
* Above, it is an ``IndexIVFFlat`` (inner product) over a PCA projection to ``reduce_to``
  dimensions (64 by default), re-normalised so that inner products stay cosines.
  IVF rather than HNSW because, measured on 2 cores with 64-d vectors: HNSW (M=16,
  efConstruction=40) took 38 s to build 200k vectors (minutes at 1M) and 0.5 s per 1,000
  adds already at 200k, while IVF trains in seconds, adds and searches 1,000 vectors in
  ~0.1 s at 1M (one centroid lookup each, no graph repair) and self-joins 1M vectors in
  under a minute as a bounded scan of ``nprobe`` lists. Its weakness is drift: the coarse
  centroids are trained once, so when traffic moves a lot the lists become
  unbalanced (``imbalance()`` reports it) and ``train()`` on fresh data rebuilds it.
* The coarse assignment is computed once per vector with a BLAS matrix product and reused
  for both the add and the search of the same vectors, which halves the cost of the
  batch self-join.

Similarities returned in IVF mode are cosines in the projected space: for near duplicates
(cosine >= 0.85) the error is about ``(1 - s**2) / sqrt(reduce_to)``, i.e. ~0.03 at 64-d.

Example::

    index = PromptIndex(dim=384)
    index.add(embeddings)                       # ids 0..n-1
    sims, ids = index.search(embeddings[:5], k=10)
    q, nb, s = index.neighbour_pairs(embeddings, np.arange(len(embeddings)), 8, 0.9)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

IndexKind = Literal["auto", "flat", "ivf"]

#: Vectors per coarse centroid that training draws (faiss wants at least 39).
_TRAIN_PER_LIST = 48
_KMEANS_ITERATIONS = 6


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Float32 C-contiguous copy of ``x`` with each row scaled to unit L2 norm."""
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    x /= norms
    return x


class GrowableArray:
    """A 1-D numpy array with amortised O(1) appends (capacity doubles)."""

    def __init__(self, dtype: Any, capacity: int = 1024) -> None:
        self._data = np.empty(max(capacity, 1), dtype=dtype)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=self._data.dtype).ravel()
        need = self._size + len(values)
        if need > len(self._data):
            grown = np.empty(max(need, 2 * len(self._data)), dtype=self._data.dtype)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : need] = values
        self._size = need

    def view(self) -> np.ndarray:
        """The filled part, without copying (invalidated by the next ``extend``)."""
        return self._data[: self._size]


def _auto_nlist(n: int) -> int:
    """About 2 * sqrt(n) coarse lists, a power of two: ~500 vectors per list at 1M."""
    target = 2.0 * math.sqrt(max(n, 1))
    return int(min(16384, max(16, 2 ** round(math.log2(target)))))


def _top_lists(x: np.ndarray, centroids: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest ``nprobe`` centroids by inner product: (ids (n, nprobe), sims (n, nprobe))."""
    ids = np.empty((len(x), nprobe), dtype=np.int64)
    best = np.empty((len(x), nprobe), dtype=np.float32)
    for start in range(0, len(x), 16_384):  # bounds the (block, nlist) score matrix
        sims = x[start : start + 16_384] @ centroids.T  # (b, nlist)
        rows = np.arange(len(sims))
        for p in range(nprobe):
            col = sims.argmax(axis=1)
            ids[start : start + len(sims), p] = col
            best[start : start + len(sims), p] = sims[rows, col]
            sims[rows, col] = -np.inf
    return ids, best


class PromptIndex:
    """Growing inner-product index of prompt embeddings with integer ids.

    Parameters
    ----------
    dim:
        Embedding dimension ``D`` of the vectors given to ``add`` and ``search``.
    kind:
        ``"auto"``: exact until ``exact_max`` vectors, then IVF (trained on what is
        indexed plus the incoming batch, or on ``train()``'s sample). ``"flat"``: always
        exact. ``"ivf"``: approximate from the first ``add``, which trains it and so needs
        at least 64 vectors (or call ``train()`` first).
    exact_max:
        Size at which ``"auto"`` turns approximate.
    reduce_to:
        Dimension of the PCA projection used in IVF mode (``None``: no projection).
    nlist, nprobe:
        IVF lists (default about ``2 * sqrt(expected_size)``) and lists scanned per query.
    expected_size:
        Hint for ``nlist`` when the final size is known (batch linking).
    chunk:
        Queries / vectors handled per step; bounds temporary memory.
    seed:
        Seed of training-sample draws and k-means.
    """

    def __init__(
        self,
        dim: int,
        *,
        kind: IndexKind = "auto",
        exact_max: int = 20_000,
        reduce_to: int | None = 64,
        nlist: int | None = None,
        nprobe: int = 2,
        expected_size: int | None = None,
        chunk: int = 65_536,
        seed: int = 0,
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if kind not in ("auto", "flat", "ivf"):
            raise ValueError(f"kind must be 'auto', 'flat' or 'ivf', got {kind!r}")
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        self.dim = dim
        self.kind = kind
        self.exact_max = exact_max
        self.reduce_to = reduce_to
        self.nlist = nlist
        self.nprobe = nprobe
        self.expected_size = expected_size
        self.chunk = chunk
        self.seed = seed
        self._ids = GrowableArray(np.int64)
        # faiss's type stubs miss its numpy wrappers (search_preassigned): typed loosely
        self._flat: Any = None  # faiss.IndexFlatIP while exact
        self._ivf: Any = None  # faiss.IndexIVFFlat once trained
        self._quantizer: Any = None  # its coarse quantizer, kept alive
        self._centroids: np.ndarray | None = None  # (nlist, d')
        self._projection: np.ndarray | None = None  # (D, d') or None

    # ------------------------------------------------------------------ state
    @property
    def ntotal(self) -> int:
        return len(self._ids)

    @property
    def is_exact(self) -> bool:
        """True while searches are exact (flat index over the full embedding)."""
        return self._ivf is None

    def imbalance(self) -> float:
        """IVF list-size imbalance (1.0 = even; retrain when it climbs past ~3); 1.0 if exact."""
        if self._ivf is None:
            return 1.0
        return float(self._ivf.invlists.imbalance_factor())

    # ------------------------------------------------------------------ build
    def train(self, sample: np.ndarray) -> PromptIndex:
        """Fit the projection and coarse quantizer on ``sample`` (n, D) and switch to IVF.

        Vectors already indexed are moved over in chunks, keeping their ids. Call it on a
        random sample of the data when the final size is known; ``add`` calls it by itself
        when an ``"auto"`` index crosses ``exact_max``.
        """
        import faiss

        sample = self._check(sample)
        n = len(sample)
        nlist = self.nlist or _auto_nlist(max(self.expected_size or 0, self.ntotal, n))
        nlist = int(min(nlist, max(1, n // 39)))
        if n < 2 * nlist or n < 64:
            raise ValueError(f"need at least {max(2 * nlist, 64)} training vectors, got {n}")
        rng = np.random.default_rng(self.seed)
        if n > _TRAIN_PER_LIST * nlist:
            sample = sample[np.sort(rng.choice(n, _TRAIN_PER_LIST * nlist, replace=False))]
        self._projection = self._fit_projection(sample)
        reduced = self._project(sample)
        d = reduced.shape[1]
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter = _KMEANS_ITERATIONS
        ivf.cp.seed = self.seed
        ivf.cp.max_points_per_centroid = _TRAIN_PER_LIST
        ivf.train(reduced)
        ivf.nprobe = self.nprobe
        old = self._flat
        self._quantizer, self._ivf, self._flat = quantizer, ivf, None
        self._centroids = quantizer.reconstruct_n(0, nlist)
        if old is not None:
            for start in range(0, old.ntotal, self.chunk):
                stop = min(old.ntotal, start + self.chunk)
                self._ivf_add(self._project(old.reconstruct_n(start, stop - start)))
        return self

    def add(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        """Index unit-norm ``vectors`` (n, D) under ``ids`` (default: ntotal, ntotal+1, ...)."""
        self.add_search(vectors, ids, k=0)

    def add_search(
        self, vectors: np.ndarray, ids: np.ndarray | None = None, k: int = 8
    ) -> tuple[np.ndarray, np.ndarray]:
        """Add ``vectors`` then return their ``k`` nearest among everything indexed.

        Chunk by chunk, so a vector finds the earlier ones and those of its own chunk (itself
        included). The coarse assignment is computed once for both steps.
        Returns ``(sims (n, k) float32, ids (n, k) int64)``; missing results are -1 / -inf.
        """
        vectors = self._check(vectors)
        n = len(vectors)
        ids = self._check_ids(ids, n)
        sims_out = np.full((n, k), -np.inf, dtype=np.float32)
        ids_out = np.full((n, k), -1, dtype=np.int64)
        for start in range(0, n, self.chunk):
            stop = min(n, start + self.chunk)
            block = vectors[start:stop]
            self._maybe_convert(block)
            self._ids.extend(ids[start:stop])
            if self._ivf is None:
                flat = self._flat_index()
                flat.add(block)
                if k:
                    s, p = flat.search(block, k)
                    sims_out[start:stop], ids_out[start:stop] = self._label(s, p)
            else:
                reduced = self._project(block)
                lists, dists = self._assign(reduced)
                self._ivf_add(reduced, lists)
                if k:
                    s, p = self._ivf.search_preassigned(reduced, k, lists, dists)
                    sims_out[start:stop], ids_out[start:stop] = self._label(s, p)
        return sims_out, ids_out

    # ----------------------------------------------------------------- search
    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``k`` nearest indexed vectors by cosine: ``(sims (n, k), ids (n, k))``, best first."""
        vectors = self._check(vectors)
        n = len(vectors)
        sims_out = np.full((n, k), -np.inf, dtype=np.float32)
        ids_out = np.full((n, k), -1, dtype=np.int64)
        if self.ntotal == 0 or k < 1:
            return sims_out, ids_out
        for start in range(0, n, self.chunk):
            stop = min(n, start + self.chunk)
            block = vectors[start:stop]
            if self._ivf is None:
                s, p = self._flat_index().search(block, k)
            else:
                reduced = self._project(block)
                lists, dists = self._assign(reduced)
                s, p = self._ivf.search_preassigned(reduced, k, lists, dists)
            sims_out[start:stop], ids_out[start:stop] = self._label(s, p)
        return sims_out, ids_out

    def neighbour_pairs(
        self, vectors: np.ndarray, ids: np.ndarray, k: int, threshold: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Range-style pairs: each query's neighbours with similarity >= ``threshold``.

        Capped at ``k`` neighbours per query so that a burst of identical prompts (a viral
        question asked 50,000 times) yields ``50,000 * k`` pairs, not 50,000 squared.
        ``ids`` are the queries' own ids, used to drop self-matches.
        Returns ``(query_ids, neighbour_ids, sims)``, flat arrays of equal length.
        """
        ids = np.asarray(ids, dtype=np.int64)
        sims, nbrs = self.search(vectors, k + 1)
        keep = (nbrs >= 0) & (sims >= threshold) & (nbrs != ids[:, None])
        rows = np.broadcast_to(ids[:, None], nbrs.shape)
        return rows[keep], nbrs[keep], sims[keep]

    # ---------------------------------------------------------------- helpers
    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        return vectors

    def _check_ids(self, ids: np.ndarray | None, n: int) -> np.ndarray:
        if ids is None:
            return np.arange(self.ntotal, self.ntotal + n, dtype=np.int64)
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) != n:
            raise ValueError(f"got {len(ids)} ids for {n} vectors")
        return ids

    def _flat_index(self) -> Any:
        if self._flat is None:
            import faiss

            self._flat = faiss.IndexFlatIP(self.dim)
        return self._flat

    def _maybe_convert(self, block: np.ndarray) -> None:
        if self._ivf is not None or self.kind == "flat":
            return
        if self.kind == "ivf" or self.ntotal + len(block) > self.exact_max:
            pool = block
            if self._flat is not None and self._flat.ntotal:
                pool = np.vstack([self._flat.reconstruct_n(0, self._flat.ntotal), block])
            self.train(pool)

    def _fit_projection(self, sample: np.ndarray) -> np.ndarray | None:
        """Top principal directions of the uncentred sample (best inner-product keepers)."""
        if self.reduce_to is None or self.reduce_to >= self.dim:
            return None
        second_moment = (sample.T @ sample).astype(np.float64)  # (D, D)
        _, vecs = np.linalg.eigh(second_moment)
        return np.ascontiguousarray(vecs[:, ::-1][:, : self.reduce_to], dtype=np.float32)

    def _project(self, x: np.ndarray) -> np.ndarray:
        if self._projection is None:
            return np.ascontiguousarray(x, dtype=np.float32)
        return unit_rows(x @ self._projection)

    def _assign(self, reduced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        assert self._centroids is not None
        return _top_lists(reduced, self._centroids, self.nprobe)

    def _ivf_add(self, reduced: np.ndarray, lists: np.ndarray | None = None) -> None:
        import faiss

        assert self._ivf is not None
        if lists is None:
            lists, _ = self._assign(reduced)
        primary = np.ascontiguousarray(lists[:, 0])  # keep alive during the C++ call
        self._ivf.add_core(len(reduced), faiss.swig_ptr(reduced), None, faiss.swig_ptr(primary))

    def _label(self, sims: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        missing = positions < 0
        labels = self._ids.view()[np.where(missing, 0, positions)]
        labels[missing] = -1
        sims = np.where(missing, -np.inf, sims).astype(np.float32)
        return sims, labels


class IncidentIndex:
    """Embeddings of labelled harvesting prompts, grouped by campaign id.

    Built at training time from prompts of accounts whose label carries a ``campaign``;
    at scoring time it names the known campaign that a fleet (or account) most resembles,
    for reasons such as "prompts 0.93-similar to known campaign c-12".

    Parameters
    ----------
    max_per_campaign:
        Prompts kept per campaign (a seeded random subset), bounding size and bias.
    seed:
        Seed of that subset.

    Example::

        incidents = IncidentIndex().fit(train_embeddings, train_campaigns)
        vectors, meta = incidents.to_arrays()          # float16 .npy + JSON
        incidents = IncidentIndex.from_arrays(vectors, meta)
        campaign, similarity = incidents.nearest_campaign(fleet_embeddings)
    """

    def __init__(self, max_per_campaign: int = 256, seed: int = 0) -> None:
        self.max_per_campaign = max_per_campaign
        self.seed = seed

    def fit(self, embeddings: np.ndarray, campaigns: Sequence[str]) -> IncidentIndex:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or len(embeddings) != len(campaigns):
            raise ValueError(
                f"expected embeddings (n, D) and n campaign ids, got {embeddings.shape} "
                f"and {len(campaigns)}"
            )
        if len(campaigns) == 0:
            raise ValueError("IncidentIndex.fit needs at least one labelled prompt")
        names, codes = np.unique(
            np.asarray(campaigns, dtype=object).astype(str), return_inverse=True
        )
        rng = np.random.default_rng(self.seed)
        keep: list[np.ndarray] = []
        for code in range(len(names)):
            rows = np.flatnonzero(codes == code)
            if len(rows) > self.max_per_campaign:
                rows = np.sort(rng.choice(rows, self.max_per_campaign, replace=False))
            keep.append(rows)
        rows = np.concatenate(keep)
        self.vectors_ = unit_rows(embeddings[rows])  # (m, D)
        self.row_campaign_ = codes[rows].astype(np.int32)  # (m,)
        self.campaigns_ = [str(name) for name in names]
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "vectors_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                "This IncidentIndex is not fitted yet: call fit(embeddings, campaigns) or "
                "IncidentIndex.from_arrays(vectors, meta) first."
            )

    def nearest_prompts(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per prompt, the campaign code and cosine of its most similar incident prompt."""
        self._check_fitted()
        embeddings = np.asarray(embeddings, dtype=np.float32)
        codes = np.empty(len(embeddings), dtype=np.int32)
        sims = np.empty(len(embeddings), dtype=np.float32)
        for start in range(0, len(embeddings), 4096):
            block = embeddings[start : start + 4096] @ self.vectors_.T  # (b, m)
            best = block.argmax(axis=1)
            codes[start : start + 4096] = self.row_campaign_[best]
            sims[start : start + 4096] = block[np.arange(len(block)), best]
        return codes, sims

    def nearest_campaign(self, embeddings: np.ndarray) -> tuple[str | None, float]:
        """The campaign a group of prompts most resembles, and how closely.

        Each prompt votes for the campaign of its nearest incident prompt with weight equal
        to that similarity; the campaign with the largest total wins, and the similarity
        reported is the median over the prompts that voted for it. ``(None, 0.0)`` for an
        empty group.
        """
        codes, sims = self.nearest_prompts(embeddings)
        if len(codes) == 0:
            return None, 0.0
        mass = np.bincount(codes, weights=np.maximum(sims, 0.0), minlength=len(self.campaigns_))
        best = int(mass.argmax())
        return self.campaigns_[best], float(np.median(sims[codes == best]))

    def to_arrays(self) -> tuple[np.ndarray, dict[str, Any]]:
        """``(vectors float16 (m, D), JSON-ready metadata)`` for the model directory."""
        self._check_fitted()
        meta = {
            "campaigns": list(self.campaigns_),
            "row_campaign": self.row_campaign_.tolist(),
            "max_per_campaign": self.max_per_campaign,
            "seed": self.seed,
        }
        return self.vectors_.astype(np.float16), meta

    @classmethod
    def from_arrays(cls, vectors: np.ndarray, meta: dict[str, Any]) -> IncidentIndex:
        """Inverse of ``to_arrays``."""
        rows = np.asarray(meta["row_campaign"], dtype=np.int32)
        if len(rows) != len(vectors):
            raise ValueError(
                f"incident metadata names {len(rows)} rows but the vector file has {len(vectors)}"
            )
        index = cls(int(meta.get("max_per_campaign", 256)), int(meta.get("seed", 0)))
        index.vectors_ = unit_rows(np.asarray(vectors, dtype=np.float32))
        index.row_campaign_ = rows
        index.campaigns_ = [str(c) for c in meta["campaigns"]]
        return index
