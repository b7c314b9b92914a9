"""The pairwise kernel (forvalue.valuation.pairwise) behind every pairwise selection strategy, against a dense
float64 reference, and the fast selection path's order against the dense definition of each strategy."""

import numpy as np
import pytest

import forvalue.valuation.pairwise as pairwise
import forvalue.curation.selection as sel
from forvalue.valuation.features import SparseFeatures
from test_selection import dense_round_robin

VOCAB = 300


def zipf_features(n, *, r=16, rows=12, seed=0, prefix="s", dtype=np.float16, centers=None):
    """Samples whose tokens follow a Zipf law (a few tokens in most samples, a long tail held by
    few), rows near one of 3 cluster directions per token so that cosines are well separated; each
    has 1-200 scored positions (the balanced strategy's length factor)."""
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(99).normal(size=(3, VOCAB, r)) if centers is None else centers
    toks, vecs, owner = [], [], []
    for i in range(n):
        t = np.unique(rng.zipf(1.3, size=4 * rows) % VOCAB)[:rows]
        c = rng.integers(3)
        toks.append(t)
        vecs.append(centers[c, t] + 0.5 * rng.normal(size=(len(t), r)))
        owner.append(np.full(len(t), i))
    return SparseFeatures(sample_ids=[f"{prefix}{i}" for i in range(n)], row_sample=np.concatenate(owner),
                          token_ids=np.concatenate(toks), vectors=np.concatenate(vecs).astype(dtype),
                          emb=np.zeros((n, 2), np.float32),
                          n_positions=np.random.default_rng(seed + 1000).integers(1, 201, size=n))


def dense(f: SparseFeatures) -> np.ndarray:
    out = np.zeros((len(f), VOCAB, f.vectors.shape[1]))
    out[f.row_sample, f.token_ids] = f.vectors.astype(np.float64)
    return out.reshape(len(f), -1)


@pytest.mark.parametrize("dense_units,max_bytes", [(10 ** 9, 2 ** 27), (1, 2 ** 27), (1, 40 * 16 * 4 * 7)])
def test_dots_equal_the_dense_product_with_either_kernel(monkeypatch, dense_units, max_bytes):
    """Pairs only, every shared token a padded table, and a table cap that splits the tokens
    between the two kernels: the same inner products as the dense matrices (float32 accuracy)."""
    train, val = zipf_features(150, seed=1), zipf_features(40, seed=2, prefix="v")
    monkeypatch.setattr(pairwise, "DENSE_UNITS", dense_units)
    table = pairwise.PairTable(val, max_bytes=max_bytes)
    kinds = np.bincount(table.kind, minlength=3)
    if dense_units > 1:
        assert kinds[2] == 0
    elif max_bytes < 2 ** 20:
        assert kinds[2] == 7 and kinds[0] > 0        # the 7 most widely held tokens take the tables
    else:
        assert kinds[0] > 0 and kinds[2] > 0         # tokens held by < 25% of the units stay pairs
    want = dense(train) @ dense(val).T
    got = table.dots(train)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    # float64 features: float64 all the way
    t64 = SparseFeatures(**{**train.__dict__, "vectors": train.vectors.astype(np.float64), "norms": None})
    v64 = SparseFeatures(**{**val.__dict__, "vectors": val.vectors.astype(np.float64), "norms": None})
    np.testing.assert_allclose(pairwise.PairTable(v64, max_bytes=max_bytes).dots(t64), want, rtol=1e-12, atol=1e-9)


def test_dots_of_a_part_are_the_same_bits_on_every_pass_and_chunking_keeps_samples_whole(monkeypatch):
    train, val = zipf_features(200, seed=3), zipf_features(30, seed=4, prefix="v")
    monkeypatch.setattr(pairwise, "DENSE_UNITS", 1)
    table = pairwise.PairTable(val)
    first = table.dots(train)
    assert np.array_equal(table.dots(train), first)       # buffers reused between calls: same bits
    monkeypatch.setattr(pairwise, "ROW_CHUNK", 7)          # chunks of ~one sample, never splitting one
    monkeypatch.setattr(pairwise, "PAIR_CHUNK", 5)
    np.testing.assert_allclose(table.dots(train), first, rtol=1e-6, atol=1e-5)


def length_share(train, val, near):
    """[units, n] min(1, a training sample's scored positions / the mean of its unit's samples')."""
    unit = val.n_positions[near].mean(axis=1)
    return np.minimum(1.0, train.n_positions[None, :] / unit[:, None]) ** sel.LENGTH_POWER


def cosine64(train, units):
    d = dense(units)
    return (d @ dense(train).T) / np.linalg.norm(d, axis=1)[:, None] / np.linalg.norm(dense(train), axis=1)[None, :]


@pytest.mark.parametrize("limit", [60, None])
def test_fast_paths_give_the_dense_float64_order(monkeypatch, limit):
    """round-robin, max-cosine and balanced through candidate lists, thresholds and refills (short
    lists) over both kernels give the order of their dense definitions computed in float64."""
    train, val = zipf_features(400, seed=5), zipf_features(24, seed=6, prefix="v")
    monkeypatch.setattr(pairwise, "DENSE_UNITS", 1)         # frequent tokens through the padded tables
    need = limit or len(train)
    C = cosine64(train, val)
    rr = sel.rank_features(train, val, "round-robin", limit=limit)
    assert np.array_equal(rr.order, dense_round_robin(C, np.arange(len(val)), need))
    mc = sel.rank_features(train, val, "max-cosine")
    np.testing.assert_allclose(mc.key, C.max(0), atol=1e-5)
    assert np.array_equal(mc.order, np.argsort(-C.max(0), kind="stable"))
    # balanced: the same units (smoothed over the 3 nearest) as a dense matrix
    units, visit, _ = sel.valuation_units(val, smooth=3, max_units=1024, seed=0)
    near, w = units.mix
    base = dense(units.feats)
    smoothed = np.stack([(w[u][:, None] * base[near[u]]).sum(0) for u in range(len(near))])
    Cb = (smoothed @ dense(train).T) / np.linalg.norm(smoothed, axis=1)[:, None] / np.linalg.norm(dense(train), axis=1)
    # each unit prefers cosine x min(1, scored positions / its own: the mean of its 3 samples')
    Kb = Cb * length_share(train, val, near)
    bal = sel.rank_features(train, val, "balanced", limit=limit)
    want, who = dense_round_robin(Kb, visit, need, units=True)
    assert np.array_equal(bal.order, want)
    np.testing.assert_allclose(bal.picked_cosine[want], Kb[who, want], atol=1e-5)
    assert not np.array_equal(want, dense_round_robin(Cb, visit, need))    # the length factor matters here
    # short candidate lists: refills of the units that ran short only, same order
    units = units.with_length_power(sel.LENGTH_POWER)
    got, stats = sel.round_robin(units, train, visit, need, list_length=2, dense_elements=1)
    assert np.array_equal(got, bal.order) and stats["passes"] > 1 and 0 < stats["refilled_units"]


def test_candidates_merge_in_any_order():
    """The per-unit best lists do not depend on the order the parts' candidates arrive in (Ray
    returns them as they finish), ties going to the lowest position."""
    rng = np.random.default_rng(7)
    vals = np.round(rng.normal(size=(5, 300)), 1).astype(np.float32)    # many ties
    pos = np.arange(300)
    want = [np.lexsort((pos, -vals[u]))[:20] for u in range(5)]
    for perm in (np.arange(6), rng.permutation(6), rng.permutation(6)):
        best = sel._Best(5, 20)
        for k in perm:
            cols = np.arange(k * 50, (k + 1) * 50)
            rows, v, p = sel._top(vals[:, cols].copy(), cols, 20, best.theta.copy())
            best.add(rows, v, p)
        assert all(np.array_equal(a, b) for a, b in zip(best.lists(), want))


@pytest.mark.parametrize("strategy", ["balanced", "round-robin", "max-cosine"])
def test_the_selection_pass_gives_the_scoring_values(strategy):
    """The pairwise strategies compute the set-mean values in their own pass over the features (the
    rows converted once for both): the same raw, normalized and norm as scoring."""
    from forvalue.valuation.scoring import source_values

    train, val = zipf_features(300, seed=8), zipf_features(20, seed=9, prefix="v")
    raw, normalized, norm = source_values(train, val)
    r = sel.rank_features(train, val, strategy, limit=30)
    np.testing.assert_allclose(r.raw, raw, rtol=1e-6, atol=1e-6 * np.abs(raw).max())
    np.testing.assert_allclose(r.normalized, normalized, rtol=1e-6, atol=1e-7)
    assert np.array_equal(r.norm, norm)


def test_balanced_on_float64_features_follows_its_dense_definition():
    train, val = zipf_features(200, seed=10, dtype=np.float64), zipf_features(12, seed=11, prefix="v", dtype=np.float64)
    units, visit, _ = sel.valuation_units(val, smooth=3, max_units=1024, seed=0)
    assert units.table.dtype == np.float64
    near, w = units.mix
    base = dense(units.feats)
    smoothed = np.stack([(w[u][:, None] * base[near[u]]).sum(0) for u in range(len(near))])
    C = (smoothed @ dense(train).T) / np.linalg.norm(smoothed, axis=1)[:, None] / np.linalg.norm(dense(train), axis=1)
    C *= length_share(train, val, near)
    assert np.array_equal(sel.rank_features(train, val, "balanced", limit=50).order, dense_round_robin(C, visit, 50))
