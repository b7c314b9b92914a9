"""Eq. (1) == Eq. (2) == full == autograd lm_head gradients; sparse vs full; invariances."""

import numpy as np
import pytest
import torch

from forvalue.data.samples import samples_from_records
from forvalue.valuation.features import FeatureConfig, dense_batches, encode_all, position_terms
from forvalue.valuation.scoring import score
from tests.conftest import make_records


FULL_ROWS = dict(store_dtype="float32", energy=1.0, max_rows=None)   # every row in the compute dtype: exact identities


def _samples(n, seed=0, prefix="s"):
    return samples_from_records(make_records(n, seed, prefix)).samples


def _autograd_grad(lm, sample, config):
    """d log p(y|x) / d lm_head.weight through autograd (fp64)."""
    (enc,), _ = encode_all(lm, [sample], config)
    model = lm.model
    model.zero_grad(set_to_none=True)
    ids = torch.tensor([enc.input_ids])
    with torch.enable_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0], dim=-1)
        start, end = enc.target_range(config.positions)
        ll = sum(logp[t - 1, enc.input_ids[t]] for t in range(start, end))
        ll.backward()
    g = model.get_output_embeddings().weight.grad.detach().clone()
    model.zero_grad(set_to_none=True)
    return g


@pytest.mark.parametrize("positions", ["response", "all"])
def test_eq1_eq2_full_and_autograd_agree(tiny_lm64, positions):
    lm = tiny_lm64
    assert not lm.model.config.tie_word_embeddings
    config = FeatureConfig(positions=positions)
    train, val = _samples(4, 0, "t"), _samples(2, 1, "v")

    # Eq. (1): double sum over token pairs, sum_{k,l} <e_yk - p_k, e_yl - p_l> <h_k, h_l>
    def terms(s):
        H, P, Y = position_terms(lm, s, config)
        E = torch.nn.functional.one_hot(Y, P.shape[1]).to(P.dtype) - P
        return H, E

    eq1 = np.zeros((len(val), len(train)))
    for a, v in enumerate(val):
        Hv, Ev = terms(v)
        for b, t in enumerate(train):
            Ht, Et = terms(t)
            total = 0.0
            for k in range(Hv.shape[0]):
                for l in range(Ht.shape[0]):
                    total += float(Ev[k] @ Et[l]) * float(Hv[k] @ Ht[l])
            eq1[a, b] = total
    # Eq. (2): matrix form <sum_k e_k h_k^T, sum_l e_l h_l^T>
    eq2 = np.zeros_like(eq1)
    for a, v in enumerate(val):
        Hv, Ev = terms(v)
        Gv = Ev.T @ Hv
        for b, t in enumerate(train):
            Ht, Et = terms(t)
            eq2[a, b] = float((Gv * (Et.T @ Ht)).sum())
    full = score(lm, train, val, method="full-vocab", config=config, pairwise=True, batch_size=3).matrix
    grads_v = [_autograd_grad(lm, v, config) for v in val]
    grads_t = [_autograd_grad(lm, t, config) for t in train]
    oracle = np.array([[float((gv * gt).sum()) for gt in grads_t] for gv in grads_v])

    def rel(a, b):
        return np.abs(a - b).max() / np.abs(b).max()

    assert rel(eq1, eq2) < 1e-6
    assert rel(full, eq2) < 1e-6
    assert rel(full, oracle) < 1e-6
    assert np.abs(oracle).max() > 1.0  # a real, non-trivial signal


def test_dense_G_is_the_lm_head_gradient(tiny_lm64):
    lm = tiny_lm64
    config = FeatureConfig()
    samples = _samples(3, 2)
    enc, _ = encode_all(lm, samples, config)
    for idx, G, _ in dense_batches(lm, enc, config, batch_size=2):
        for j, i in enumerate(idx):
            g = _autograd_grad(lm, samples[i], config)
            assert torch.allclose(G[j], g, rtol=1e-9, atol=1e-9)


def test_hidden_state_is_lm_head_input(tiny_lm):
    from forvalue.valuation.features import hidden_states, lm_head_of

    lm = tiny_lm
    (enc,), _ = encode_all(lm, _samples(1), FeatureConfig())
    h = hidden_states(lm, [enc])
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([enc.input_ids])).logits
        assert torch.allclose(lm_head_of(lm.model)(h), logits, atol=1e-5)


def test_sparse_with_full_support_and_no_projection_equals_full(tiny_lm64):
    lm = tiny_lm64
    V = lm.model.config.vocab_size
    train, val = _samples(6, 3, "t"), _samples(3, 4, "v")
    full = score(lm, train, val, method="full-vocab", pairwise=True).matrix
    sparse = score(lm, train, val, method="sparse", config=FeatureConfig(k=V, r=None, **FULL_ROWS), pairwise=True).matrix
    assert np.abs(sparse - full).max() / np.abs(full).max() < 1e-6


def _spearman(a, b):
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def test_sparse_defaults_rank_like_full(tiny_lm):
    lm = tiny_lm
    train, val = _samples(40, 5, "t"), _samples(6, 6, "v")
    full = score(lm, train, val, method="full-vocab").values
    sparse = score(lm, train, val, method="sparse").values  # k=8, r=64
    rho = _spearman(full, sparse)
    assert rho >= 0.9, rho


def test_exact_restricts_full_G_to_the_union_vocabulary(tiny_lm64):
    lm = tiny_lm64
    config = FeatureConfig()
    train, val = _samples(5, 7, "t"), _samples(2, 8, "v")
    enc_t, _ = encode_all(lm, train, config)
    enc_v, _ = encode_all(lm, val, config)
    union = sorted({t for e in enc_t + enc_v for t in e.input_ids})
    assert len(union) < lm.model.config.vocab_size

    def G(enc):
        out = {}
        for idx, g, _ in dense_batches(lm, enc, config, batch_size=4):
            for j, i in enumerate(idx):
                out[i] = g[j][union]
        return [out[i] for i in range(len(enc))]

    gt, gv = G(enc_t), G(enc_v)
    expected = np.array([[float((a * b).sum()) for b in gt] for a in gv])
    exact = score(lm, train, val, method="exact", config=config, pairwise=True).matrix
    assert np.allclose(exact, expected, rtol=1e-9)
    # the per-batch vocabulary equals the union when one batch holds every training sample
    batch = score(lm, train, val, method="exact", config=config, pairwise=True, exact_vocab="batch",
                  batch_size=len(train)).matrix
    assert np.allclose(batch, expected, rtol=1e-9)
    small = score(lm, train, val, method="exact", config=config, pairwise=True, exact_vocab="batch",
                  batch_size=1).matrix
    assert not np.allclose(small, expected)


def test_emb_is_dot_of_summed_hidden_states(tiny_lm64):
    lm = tiny_lm64
    config = FeatureConfig()
    train, val = _samples(3, 9, "t"), _samples(2, 10, "v")
    hs = lambda s: position_terms(lm, s, config)[0].sum(0)
    expected = np.array([[float(hs(v) @ hs(t)) for t in train] for v in val])
    got = score(lm, train, val, method="emb", config=FeatureConfig(**FULL_ROWS), pairwise=True).matrix
    assert np.allclose(got, expected, rtol=1e-9)


@pytest.mark.parametrize("method", ["sparse", "exact", "full-vocab", "emb"])
def test_batch_size_and_order_do_not_change_scores(tiny_lm, method):
    lm = tiny_lm
    train, val = _samples(12, 11, "t"), _samples(3, 12, "v")
    a = score(lm, train, val, method=method, batch_size=1, pairwise=True).matrix
    b = score(lm, train, val, method=method, batch_size=8, pairwise=True).matrix
    perm = np.random.default_rng(0).permutation(len(train))
    c = score(lm, [train[i] for i in perm], val, method=method, batch_size=8, pairwise=True).matrix
    c_back = np.empty_like(c)
    c_back[:, perm] = c
    scale = np.abs(a).max()
    assert np.abs(a - b).max() / scale < 1e-5
    assert np.abs(a - c_back).max() / scale < 1e-5
    # the samples differ in length, so batches of 8 really were padded
    lengths = {len(e.input_ids) for e in encode_all(lm, train, FeatureConfig())[0]}
    assert len(lengths) > 1


def test_set_value_is_mean_of_pairwise(tiny_lm):
    train, val = _samples(8, 13, "t"), _samples(4, 14, "v")
    for method in ("sparse", "exact", "emb"):
        pw = score(tiny_lm, train, val, method=method, pairwise=True)
        mean = score(tiny_lm, train, val, method=method, pairwise=False)
        assert np.allclose(pw.matrix.mean(0), mean.values, rtol=1e-5)


def test_scored_positions_follow_config(tiny_lm):
    s = _samples(1)[0]
    (resp,), _ = encode_all(tiny_lm, [s], FeatureConfig(positions="response"))
    (allp,), _ = encode_all(tiny_lm, [s], FeatureConfig(positions="all"))
    r0, r1 = resp.target_range("response")
    a0, a1 = allp.target_range("all")
    assert a0 == 1 and a1 == r1 and r0 > 5
    # the response targets decode to the response plus the chat template's end-of-turn
    decoded = tiny_lm.tokenizer.decode(resp.input_ids[r0:r1])
    assert decoded.startswith(s.response) and "<|im_end|>" in decoded


def test_sparse_pairwise_chunking_does_not_change_scores(tiny_lm, monkeypatch):
    """Pairwise sparse scoring gathers [rows, n_val, r] per chunk; a memory cap that forces
    one-row chunks gives the same matrix."""
    import forvalue.valuation.scoring as scoring
    from forvalue.valuation.features import extract_sparse

    train, val = _samples(6, 21, "t"), _samples(3, 22, "v")
    config = FeatureConfig()
    ftr = extract_sparse(tiny_lm, train, config)
    fva = extract_sparse(tiny_lm, val, config)
    a = scoring.sparse_scores(ftr, fva, pairwise=True)
    monkeypatch.setattr(scoring, "PAIRWISE_CHUNK_BYTES", 1)
    b = scoring.sparse_scores(ftr, fva, pairwise=True)
    assert a.shape == (3, 6) and np.abs(a).max() > 0
    assert np.allclose(a, b, rtol=1e-6, atol=1e-9)


def test_sync_free_sparse_batch_equals_the_unique_reduction(tiny_lm64):
    """The extraction sums support entries per (sample, token) with fixed shapes (sort, flags,
    cumsum) so that the loop never waits for the device; the rows equal a torch.unique reduction,
    and nothing in the batch code asks the device for a value."""
    import inspect

    import torch

    from forvalue.valuation import features as F

    config = FeatureConfig(positions="all", k=5, r=None)
    (encs), _ = F.encode_all(tiny_lm64, _samples(4, 31, "u"), config)
    cdt = F.compute_dtype_for(tiny_lm64)
    head = F.Head(tiny_lm64.model, cdt)
    pos = F.scored_positions(tiny_lm64, list(encs), config.positions, cdt)
    keys, first, vec, emb, nll_sum, lead_sum, answer_sum = F._sparse_batch(pos, head, config.k, None, len(encs))
    rs, tok, rows = F._compact(keys.numpy(), first.numpy(), vec.numpy(), head.V)

    src, toks, coefs = F.position_support(pos.H, pos.Y, head, config.k)
    uniq, inv = torch.unique(pos.S[src] * head.V + toks, sorted=True, return_inverse=True)
    ref = torch.zeros((uniq.shape[0], pos.H.shape[1]), dtype=pos.H.dtype).index_add_(0, inv, coefs[:, None] * pos.H[src])
    assert len(uniq) < len(keys)                              # repeated tokens were merged
    assert np.array_equal(rs, (uniq // head.V).numpy()) and np.array_equal(tok, (uniq % head.V).numpy())
    assert np.allclose(rows, ref.numpy(), rtol=1e-12, atol=1e-12)
    # and each sample's summed target NLL, from the same log-sum-exp
    logp = torch.log_softmax(head.logits(pos.H), dim=-1).gather(1, pos.Y[:, None])[:, 0]
    ref_nll = torch.zeros(len(encs), dtype=torch.float64).index_add_(0, pos.S, -logp)
    assert np.allclose(nll_sum.numpy(), ref_nll.numpy(), rtol=1e-6)
    # and over each sample's first GROUNDING_TOKENS positions only
    within = np.concatenate([np.arange(c) for c in pos.n_per_sample])
    assert np.array_equal(pos.lead.numpy(), within < F.GROUNDING_TOKENS) and not pos.lead.numpy().all()
    ref_lead = torch.zeros(len(encs), dtype=torch.float64).index_add_(0, pos.S, -logp * pos.lead)
    assert np.allclose(lead_sum.numpy(), ref_lead.numpy(), rtol=1e-6)
    ref_answer = torch.zeros(len(encs), dtype=torch.float64).index_add_(0, pos.S, -logp * pos.answer)
    assert np.allclose(answer_sum.numpy(), ref_answer.numpy(), rtol=1e-6)
    # the batch code has no host synchronisation (on CUDA these would each stall the loop)
    for fn in (F._sparse_batch, F.position_support, F.scored_positions, F.hidden_states, F.collate, F.pad_ids, F.Targets.tensors):
        src_text = inspect.getsource(fn).split('"""')[-1]
        for call in (".item(", ".cpu(", ".tolist(", "unique(", ".numpy(", "nonzero("):
            assert call not in src_text, (fn.__name__, call)


@pytest.mark.parametrize("positions", ["response", "all"])
def test_extraction_pass_gives_each_samples_loss_and_the_store_keeps_it(tiny_lm64, tmp_path, positions):
    """The sparse extraction's per-sample loss is the mean NLL over the scored positions (for
    response positions: s(A|Q) of the SFT loss, what a consistency check compares), the same at any
    batch size, and survives the feature store."""
    from forvalue.training.evaluate import evaluate_loss
    from forvalue.valuation.features import extract_sparse
    from forvalue.store.feature_store import FeatureStore
    from forvalue.valuator import Valuator

    samples = samples_from_records(make_records(9, seed=3)).samples
    cfg = FeatureConfig(positions=positions)
    want = evaluate_loss(tiny_lm64, samples, chat_template=cfg.chat_template, positions=positions).per_sample
    for batch_size in (1, 4):
        got = extract_sparse(tiny_lm64, samples, cfg, batch_size=batch_size).losses
        np.testing.assert_allclose(got, want, rtol=1e-6)
    Valuator(tiny_lm64, cfg, store=FeatureStore(tmp_path), batch_size=4).featurize(samples)
    stored = Valuator(tiny_lm64, cfg, store=FeatureStore(tmp_path)).featurize(samples[::-1]).features
    np.testing.assert_allclose(stored.losses, np.asarray(want)[::-1], rtol=1e-6)


def test_grounding_pass_gives_the_response_alone_loss(tiny_lm64, tmp_path, monkeypatch):
    """``grounding``: s(A), the response's loss after an empty instruction, as the evaluation loss of
    the instruction-less sample; NaN for plain text; both losses kept in a stored shard."""
    from forvalue.training.evaluate import evaluate_loss
    from forvalue.valuation.features import alone_losses, extract_sparse, without_instruction
    from forvalue.store.shard_format import read_files, write_files

    from forvalue.valuation import features as F
    from forvalue.valuation.features import encode_all

    monkeypatch.setattr(F, "GROUNDING_TOKENS", 12)   # the tiny model's responses are short
    GROUNDING_TOKENS = F.GROUNDING_TOKENS
    samples = samples_from_records(make_records(7, seed=5)).samples
    feats = extract_sparse(tiny_lm64, samples, FeatureConfig(), batch_size=3, grounding=True)
    want = evaluate_loss(tiny_lm64, [without_instruction(s) for s in samples], chat_template=True,
                         positions="response").per_sample
    np.testing.assert_allclose(alone_losses(tiny_lm64, samples), want, rtol=1e-6)
    # the grounding pass compares the first GROUNDING_TOKENS response tokens on both sides
    lengths = [len(e.input_ids) - e.response_start for e in encode_all(tiny_lm64, samples, FeatureConfig())[0]]
    assert max(lengths) > GROUNDING_TOKENS > min(lengths)          # some responses are cut, some are not
    np.testing.assert_allclose(feats.losses_alone, alone_losses(tiny_lm64, samples, first=12), rtol=1e-12)
    short = np.array(lengths) <= GROUNDING_TOKENS
    np.testing.assert_allclose(feats.losses_alone[short], np.asarray(want)[short], rtol=1e-6)
    np.testing.assert_allclose(feats.losses_first[short], feats.losses[short], rtol=1e-6)
    assert not np.allclose(feats.losses_first[~short], feats.losses[~short])
    assert np.all(feats.losses_alone != feats.losses_first)
    assert extract_sparse(tiny_lm64, samples, FeatureConfig(), batch_size=3).losses_alone is None
    files = write_files(tmp_path, "s1", feats, {}, arrow=True)
    back = read_files(tmp_path, {k: v.name for k, v in files.items()})
    np.testing.assert_array_equal(back.losses_alone, feats.losses_alone)
    np.testing.assert_array_equal(back.losses, feats.losses)
    np.testing.assert_array_equal(back.losses_first, feats.losses_first)
    from forvalue.data.samples import Columns

    text = samples_from_records([{"text": "plain words only"}, {"text": "more"}], columns=Columns(text="text")).samples
    assert np.isnan(alone_losses(tiny_lm64, text)).all()


@pytest.mark.parametrize("chat_template", [True, False])
def test_answer_loss_is_the_nll_of_the_last_computed_result(tiny_lm64, tmp_path, chat_template):
    """The answer check's value: the mean NLL of the tokens of the number after the response's last
    "=", from the extraction pass itself (no other pass); NaN when the response computes nothing;
    kept in a stored shard."""
    from forvalue.valuation.features import encode_all, extract_sparse
    from forvalue.store.shard_format import read_files, write_files

    records = [{"prompt": "Add them.", "response": "3 + 4 = 7, then 7 * 2 = 14 apples."},
               {"prompt": "Cost?", "response": "Total = $1,250.5 in all."},
               {"prompt": "Say hi.", "response": "Hello there!"},
               {"prompt": "Sum?", "response": "5 + 5 = 10\n#### 10"}]
    samples = samples_from_records(records).samples
    cfg = FeatureConfig(chat_template=chat_template)
    encs, _ = encode_all(tiny_lm64, samples, cfg)
    decoded = [tiny_lm64.tokenizer.decode(e.input_ids[e.answer[0]:e.answer[1]]) if e.answer else None for e in encs]
    assert decoded == ["14", "1,250.5", None, "10"]       # the last result after "=", not the #### line
    feats = extract_sparse(tiny_lm64, samples, cfg, batch_size=3)
    for e, got in zip(encs, feats.losses_answer):
        if e.answer is None:
            assert np.isnan(got)
            continue
        ids = torch.tensor([e.input_ids])
        logp = torch.log_softmax(tiny_lm64.model(input_ids=ids).logits[0].double(), dim=-1)
        a, b = e.answer
        want = -np.mean([float(logp[t - 1, e.input_ids[t]]) for t in range(a, b)])
        assert got == pytest.approx(want, rel=1e-6)
    files = write_files(tmp_path, "a1", feats, {}, arrow=True)
    back = read_files(tmp_path, {k: v.name for k, v in files.items()})
    np.testing.assert_array_equal(back.losses_answer, feats.losses_answer)
