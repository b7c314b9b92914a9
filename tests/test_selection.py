"""Selection strategies (forvalue.curation.selection) on synthetic sparse features with known clusters and noise."""

import numpy as np
import pytest

import forvalue.valuation.pairwise as pairwise
import forvalue.curation.selection as sel
from forvalue.valuation.features import SparseFeatures
from forvalue.valuation.scoring import sparse_scores


def synthetic(n_per_cluster, *, n_clusters=4, r=8, noisy_share=0.0, seed=0, prefix="s", big=None):
    # the clusters' directions are the same for every call (training and valuation share them)
    """Samples of clusters (templates): each cluster has its own 6 tokens and a direction per token.
    Noisy samples get 4 junk tokens with large rows (a large ||G||, a low cosine). ``big`` makes one
    cluster's rows larger, so it dominates the raw mean. Returns (features, cluster, is_clean)."""
    centers = np.random.default_rng(1234).normal(size=(n_clusters, 6, r))
    rng = np.random.default_rng(seed)
    counts = n_per_cluster if isinstance(n_per_cluster, (list, tuple)) else [n_per_cluster] * n_clusters
    ids, row_sample, toks, vecs, cls, clean = [], [], [], [], [], []
    for c, count in enumerate(counts):
        for j in range(count):
            i = len(ids)
            noisy = rng.random() < noisy_share
            scale = (3.0 if big == c else 1.0)
            t = list(range(c * 6, c * 6 + 6))
            v = [scale * (centers[c, q] + 0.3 * rng.normal(size=r)) for q in range(6)]
            if noisy:
                t += list(range(100 + 4 * i, 104 + 4 * i))
                v += [4.0 * rng.normal(size=r) for _ in range(4)]
            ids.append(f"{prefix}{i}")
            row_sample += [i] * len(t)
            toks += t
            vecs += v
            cls.append(c)
            clean.append(not noisy)
    n = len(ids)
    f = SparseFeatures(sample_ids=ids, row_sample=np.array(row_sample), token_ids=np.array(toks),
                       vectors=np.array(vecs, dtype=np.float32), emb=np.zeros((n, 2), np.float32),
                       n_positions=np.ones(n, np.int64))
    return f, np.array(cls), np.array(clean)


def dense_cosine(train, val):
    m = sparse_scores(train, val, pairwise=True)
    return m / val.sample_norms()[:, None] / train.sample_norms()[None, :]


def dense_round_robin(C, visit, need, units=False):
    """The round-robin's picks (``units``: and the unit whose turn took each)."""
    order = np.argsort(-C, axis=1, kind="stable")
    taken = np.zeros(C.shape[1], bool)
    ptr = np.zeros(C.shape[0], int)
    out, who = [], []
    while len(out) < need:
        for u in visit:
            while ptr[u] < C.shape[1] and taken[order[u, ptr[u]]]:
                ptr[u] += 1
            if ptr[u] < C.shape[1]:
                taken[order[u, ptr[u]]] = True
                out.append(order[u, ptr[u]])
                who.append(u)
                if len(out) == need:
                    break
    return (np.array(out), np.array(who)) if units else np.array(out)


def test_norms_are_the_frobenius_norm_of_the_rows():
    f, _, _ = synthetic(3)
    dense = np.zeros((len(f), 200, f.vectors.shape[1]))
    dense[f.row_sample, f.token_ids] = f.vectors
    assert np.allclose(f.sample_norms(), np.sqrt((dense ** 2).sum((1, 2))))
    part = f.take(2, 5)
    assert part.sample_ids == f.sample_ids[2:5] and np.allclose(part.sample_norms(), f.sample_norms()[2:5])
    assert np.allclose(f.select(f.sample_ids[::-1]).sample_norms(), f.sample_norms()[::-1])


@pytest.mark.parametrize("list_length,dense", [(None, None), (1, 30), (3, 10 ** 9)])
def test_bounded_round_robin_equals_the_dense_one(list_length, dense):
    train, _, _ = synthetic(15, noisy_share=0.3, seed=1)
    val, _, _ = synthetic(3, seed=2, prefix="v")
    C = dense_cosine(train, val)
    visit = np.array([4, 0, 7, 2, 9, 11, 1, 3, 5, 6, 8, 10])
    want, who = dense_round_robin(C, visit, len(train), units=True)
    cosines = np.full(len(train), np.nan, np.float32)
    got, stats = sel.round_robin(sel.Units(val), train, visit, len(train),
                                 list_length=list_length, dense_elements=dense, cosines=cosines)
    assert np.array_equal(got, want)
    # each pick's cosine with the unit whose turn took it, from the lists and from the dense finish alike
    assert np.allclose(cosines, C[who, want], atol=1e-5)
    if list_length == 1:
        assert stats["passes"] > 1   # short lists were refilled


def test_sorting_strategies_follow_their_values():
    train, _, _ = synthetic(10, noisy_share=0.4, seed=3)
    val, _, _ = synthetic(2, seed=4, prefix="v")
    raw = sparse_scores(train, val)
    r = sel.rank_features(train, val, "raw-mean")
    assert np.array_equal(r.order, np.argsort(-raw, kind="stable")) and np.allclose(r.raw, raw)
    r = sel.rank_features(train, val, "cosine-mean")
    gbar = np.sqrt(sparse_scores(val, val).mean())
    assert np.allclose(r.normalized, raw / train.sample_norms() / gbar)
    assert np.array_equal(r.order, np.argsort(-r.normalized, kind="stable"))
    assert np.all(np.abs(r.normalized) <= 1 + 1e-9)
    assert r.ranked_by()[0] == "cosine with the mean valuation gradient" and r.ranked_by()[1] is r.key
    r = sel.rank_features(train, val, "max-cosine")
    assert np.allclose(r.key, dense_cosine(train, val).max(0)) and r.ranked_by()[1] is r.key
    # round-robin: valuation samples in file order; ranked by the cosine with the unit that took the sample
    r = sel.rank_features(train, val, "round-robin")
    want, who = dense_round_robin(dense_cosine(train, val), np.arange(len(val)), len(train), units=True)
    assert np.array_equal(r.order, want)
    what, value = r.ranked_by()
    assert what.startswith("cosine with the valuation sample") and np.allclose(value[want], dense_cosine(
        train, val)[who, want], atol=1e-5)
    part = sel.rank_features(train, val, "round-robin", limit=5)   # beyond the order: NaN
    assert np.isnan(part.ranked_by()[1]).sum() == len(train) - 5 and not np.isnan(part.ranked_by()[1][want[:5]]).any()
    assert sel.rank_features(train, val, "raw-mean").ranked_by()[1] is not None


def test_balanced_covers_every_cluster_and_drops_noise_where_raw_mean_does_not():
    # cluster 0 has large rows: it dominates the mean valuation gradient; 40% of training samples are noisy
    train, cls, clean = synthetic([30, 30, 30, 30], noisy_share=0.4, seed=5, big=0)
    val, vcls, _ = synthetic([4, 4, 4, 4], seed=6, prefix="v", big=0)
    k = 12
    bal = sel.rank_features(train, val, "balanced")
    raw = sel.rank_features(train, val, "raw-mean")
    assert len(set(cls[bal.order[:4]])) == 4                 # the first turns visit every cluster
    assert len(set(cls[bal.order[:k]])) == 4 and clean[bal.order[:k]].all()
    assert len(set(cls[raw.order[:k]])) < 4                   # the raw mean piles into the dominant cluster
    assert clean[raw.order[:k]].mean() < 1.0                  # and rewards the large-norm noisy samples
    assert bal.complete and sorted(bal.order.tolist()) == list(range(len(train)))
    # the worst are the noisy ones
    assert not clean[bal.order[-10:]].any()


def test_balanced_with_prototypes_and_small_tables_stays_the_same_order(monkeypatch):
    train, cls, clean = synthetic([20, 20, 20], noisy_share=0.3, seed=7)
    val, _, _ = synthetic([6, 6, 6], seed=8, prefix="v")
    full = sel.rank_features(train, val, "balanced")
    assert not (sel.Units(val).table.kind == 2).any()     # every token held by 6 of 18 units: pairs only
    # every token a padded [P, r] table (matrix products), then a table cap that leaves some tokens to pairs
    monkeypatch.setattr(pairwise, "DENSE_UNITS", 1)
    assert (sel.Units(val).table.kind == 2).all()
    padded = sel.rank_features(train, val, "balanced")
    monkeypatch.setattr(sel, "TABLE_BYTES", 18 * 8 * 4 * 5)   # room for 5 of the 18 tokens' tables
    assert (sel.Units(val).table.kind == 2).sum() == 5
    mixed = sel.rank_features(train, val, "balanced")
    assert np.array_equal(padded.order, full.order) and np.array_equal(mixed.order, full.order)
    # more valuation samples than units: cells of seeded prototypes, still covering the clusters
    proto = sel.rank_features(train, val, "balanced", max_units=6, seed=0)
    assert proto.info["prototypes"] == 6 and proto.info["smooth"] == 1
    assert len(set(cls[proto.order[:6]])) == 3 and clean[proto.order[:9]].all()


def test_balanced_discounts_a_sample_shorter_than_the_unit_and_never_rewards_a_longer_one():
    """A unit's turn takes the highest cosine x min(1, response tokens / the unit's)^LENGTH_POWER.
    Three copies of one sample (the same G, so the same cosine with every unit) with 4, 20 and 100
    tokens, against valuation samples of 20: the 4-token one comes last; 20 and 100 tie (the lower
    index first). With power 0 (the cosine alone) all three tie. The value recorded is the one the
    turn took: the cosine x the share."""
    f, _, _ = synthetic([5, 5], seed=11)
    val, _, _ = synthetic([2, 2], seed=12, prefix="v")
    val.n_positions = np.full(len(val), 20)
    rows, n = f.row_sample == 0, len(f)
    train = SparseFeatures(sample_ids=f.sample_ids + ["c20", "c100"],
                           row_sample=np.concatenate([f.row_sample, np.full(rows.sum(), n),
                                                      np.full(rows.sum(), n + 1)]),
                           token_ids=np.concatenate([f.token_ids] + [f.token_ids[rows]] * 2),
                           vectors=np.concatenate([f.vectors] + [f.vectors[rows]] * 2),
                           emb=np.zeros((n + 2, 2), np.float32), n_positions=np.array([4] * n + [20, 100]))
    default = sel.rank_features(train, val, "balanced")
    cosine = sel.rank_features(train, val, "balanced", length_power=0)
    half = sel.rank_features(train, val, "balanced", length_power=0.5)
    assert default.info["length_power"] == sel.LENGTH_POWER == 1.0
    r = default.rank
    assert r[n] < r[n + 1] < r[0] and cosine.rank[0] < cosine.rank[n] < cosine.rank[n + 1]
    # the value each copy was taken by: its cosine with one of the (smoothed) units x (4 / 20)^p for the
    # short copy
    units, _, _ = sel.valuation_units(val, smooth=sel.SMOOTH, max_units=sel.MAX_UNITS, seed=0)
    cos = np.concatenate([c for _, c in units.blocks(train)], axis=1)[:, [0, n, n + 1]]
    for ranking, share in ((default, [0.2, 1, 1]), (half, [0.2 ** 0.5, 1, 1]), (cosine, [1, 1, 1])):
        got = ranking.picked_cosine[[0, n, n + 1]] / share
        assert all(np.isclose(got[j], cos[:, j], atol=1e-6).any() for j in range(3))
    with pytest.raises(ValueError, match="length_power must be between 0"):
        sel.rank_features(train, val, "balanced", length_power=1.5)


def test_limit_and_subset_modes():
    train, _, _ = synthetic(10, seed=9)
    val, _, _ = synthetic(2, seed=10, prefix="v")
    part = sel.rank_features(train, val, "balanced", limit=5)
    full = sel.rank_features(train, val, "balanced")
    assert len(part.order) == 5 and np.array_equal(part.order, full.order[:5])
    assert np.array_equal(full.indices("top_k", 5), full.order[:5])
    assert np.array_equal(full.indices("top_p", 25), full.order[:10])
    assert np.array_equal(full.indices("drop_lowest_p", 25), full.order[:30])
    assert np.array_equal(full.indices("bottom_p", 10), full.order[::-1][:4])
    assert full.rank[full.order[0]] == 1 and part.rank[part.order[-1]] == 5 and (part.rank == 0).sum() == 35
    with pytest.raises(ValueError, match="needs 40"):
        part.indices("bottom_p", 10)
    ranking = sel.rank_features(train, val, "balanced", limit=sel.needed_prefix(len(train), "top_k", 3))
    assert np.array_equal(ranking.indices("top_k", 3), full.order[:3]) and len(ranking.order) == 3
    with pytest.raises(ValueError, match="percentage"):
        sel.subset_count(10, "top_p", 120)
    with pytest.raises(ValueError, match="whole number"):
        sel.subset_count(10, "top_k", 2.5)
    with pytest.raises(ValueError, match="unknown selection strategy"):
        sel.rank_features(train, val, "best")


def test_farthest_point_order_visits_clusters_first():
    sim = np.array([[1.0, 0.9, 0.1, 0.2], [0.9, 1.0, 0.2, 0.1], [0.1, 0.2, 1.0, 0.8], [0.2, 0.1, 0.8, 1.0]])
    order = sel.farthest_point_order(sim)
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert {order[0] // 2, order[1] // 2} == {0, 1}   # the first two come from different clusters


@pytest.mark.parametrize("strategy", sorted(sel.STRATEGIES))
def test_a_store_read_shard_by_shard_ranks_as_features_in_memory(tmp_path, monkeypatch, strategy):
    """The strategies over a feature store streamed shard by shard (StoreSource: memory-mapped
    bounded shards, small blocks so the round-robin refills its lists from several passes) give the
    order and values of the same features in memory."""
    from forvalue.valuation.feature_source import StoreSource
    from forvalue.valuation.features import FeatureConfig
    from forvalue.models.loading import ModelFingerprint
    from forvalue.store.feature_store import FeatureStore

    train, _, _ = synthetic([40, 25, 15, 10], noisy_share=0.3, seed=3)
    val, _, _ = synthetic(3, seed=9, prefix="v")
    store, cfg = FeatureStore(tmp_path), FeatureConfig(r=8, store_dtype="float16", max_rows=9)
    fp = ModelFingerprint(name="synthetic", weights_hash="0" * 64, dtype="float32")
    half = SparseFeatures(sample_ids=train.sample_ids, row_sample=train.row_sample, token_ids=train.token_ids,
                          vectors=train.vectors.astype(np.float16), emb=train.emb, n_positions=train.n_positions)
    for a in range(0, len(half), 16):     # 6 shards
        store.write_shard(half.take(a, min(len(half), a + 16)), fp, cfg)
    wanted = half.sample_ids[5:]          # a subset of what is stored, in another order
    wanted = wanted[::2] + wanted[1::2]
    source = StoreSource(store, fp, cfg, wanted)
    assert sorted(source.sample_ids) == sorted(wanted) and len(source.shards) == 6
    monkeypatch.setattr(sel, "BLOCK_BYTES", 8 * 4 * 12)   # 12 training samples per block
    monkeypatch.setattr(sel, "LIST_FACTOR", 1)           # short candidate lists: refills
    streamed = sel.rank_features(source, val, strategy)
    in_memory = sel.rank_features(half.select(source.sample_ids), val, strategy)
    assert np.array_equal(streamed.order, in_memory.order)
    assert np.allclose(streamed.raw, in_memory.raw) and np.allclose(streamed.normalized, in_memory.normalized)
    if strategy in ("balanced", "round-robin"):
        assert streamed.info["passes"] > 1
    # a pass over some positions reads only the shards holding them
    starts = [st for st, _, _ in source.plan()]
    assert [st for st, _ in source.parts(within=np.array([0, starts[3] + 1]))] == [0, starts[3]]
    assert [st for st, _, _ in source.plan(within=np.array([starts[5]]))] == [starts[5]]
    with pytest.raises(KeyError, match="no stored features"):
        StoreSource(store, fp, cfg, wanted + ["nope"])
