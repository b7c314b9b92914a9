"""Gradient baselines: per-sample LoRA gradients, Hessian-free, DataInf, HyperINF."""

import numpy as np
import pytest
import torch

from forvalue.baselines import (LoraSettings, datainf, finetune_lora, hessian_free, hyperinf, per_sample_gradients,
                                schulz_inverse)
from forvalue.baselines.gradients import LoraGradients
from forvalue.baselines.lora import sample_losses
from forvalue.benchmarks.runner import task_data
from forvalue.valuation.features import encode_all
from forvalue.models.loading import from_objects
from tiny import build_tiny_text_model


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread is faster than two and immune to a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_lm():
    torch.manual_seed(0)
    model, tok = build_tiny_text_model(seed=0)
    return from_objects(model, tok, name="tiny")


@pytest.fixture(scope="module")
def tuned(tiny_lm):
    data = task_data("sentence", positions="all", n_train_per_class=1, n_val_per_class=1)
    enc, _ = encode_all(tiny_lm, data.train, data.config)
    lora = finetune_lora(tiny_lm, enc, "all", LoraSettings(epochs=2, batch_size=4, lr=1e-3))
    return lora, enc


def _random_grads(n, shapes, seed):
    g = torch.Generator().manual_seed(seed)
    names = [f"layer{i}" for i in range(len(shapes))]
    return LoraGradients(names=names, grads={nm: torch.randn((n,) + s, generator=g) for nm, s in zip(names, shapes)})


def test_finetune_trains_and_leaves_base_model_alone(tiny_lm, tuned):
    lora, _ = tuned
    assert lora.losses[-1] < lora.losses[0]
    assert not any("lora" in n for n, _ in tiny_lm.model.named_parameters())
    assert len(lora.lora_modules()) == 2 * tiny_lm.model.config.num_hidden_layers  # q_proj and v_proj


def test_batched_gradients_equal_per_sample_autograd(tuned):
    lora, enc = tuned
    sub = enc[:3]
    batched = per_sample_gradients(lora, sub, "all", batch_size=3)
    # explicit autograd, one sample at a time, all LoRA parameters
    params = [p for n, p in lora.model.named_parameters() if p.requires_grad]
    flat = []
    for e in sub:
        loss = sample_losses(lora.causal_lm, [e], "all", lora.pad_id, lora.device)[0]
        gs = torch.autograd.grad(loss, params)
        flat.append(torch.cat([g.reshape(-1) for g in gs]).double())
    flat = torch.stack(flat)
    assert batched.n_params == flat.shape[1]
    explicit = (flat[:2] @ flat.T).numpy()
    hf = hessian_free(batched, LoraGradients(batched.names, {k: v[:2] for k, v in batched.grads.items()}))
    np.testing.assert_allclose(hf, explicit, rtol=1e-4, atol=1e-8)
    loop = per_sample_gradients(lora, sub, "all", mode="loop")
    for name in batched.names:
        torch.testing.assert_close(batched.grads[name], loop.grads[name], rtol=1e-4, atol=1e-6)


def test_datainf_matches_reference_loop():
    tr = _random_grads(7, [(2, 5), (2, 3)], seed=1)
    va = _random_grads(3, [(2, 5), (2, 3)], seed=2)
    got = datainf(tr, va)
    # DataInf's compute_hvp_proposed (IFEngineGeneration), transcribed loop by loop
    ref = np.zeros((3, 7))
    for v in range(3):
        for name in tr.names:
            G = tr.grads[name].double()
            lam = float(torch.stack([torch.mean(G[i] ** 2) for i in range(7)]).mean()) / 10
            hvp = torch.zeros_like(va.grads[name][v]).double()
            for i in range(7):
                c = torch.sum(va.grads[name][v].double() * G[i]) / (lam + torch.sum(G[i] ** 2))
                hvp += (va.grads[name][v].double() - c * G[i]) / (7 * lam)
            for i in range(7):
                ref[v, i] += float(torch.sum(hvp * G[i]))
    np.testing.assert_allclose(got, ref, rtol=1e-9)
    np.testing.assert_allclose(datainf(tr, va, pairwise=False), ref.mean(0), rtol=1e-9)


def test_schulz_and_hyperinf_match_exact_inverse():
    g = torch.Generator().manual_seed(3)
    M = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.01 * torch.eye(6, dtype=torch.float64)
    X, it, res = schulz_inverse(A, max_iter=100, tol=1e-10)
    torch.testing.assert_close(X, torch.linalg.inv(A), rtol=1e-6, atol=1e-6)
    assert res < 1e-10
    tr = _random_grads(9, [(2, 4)], seed=4)
    va = _random_grads(2, [(2, 4)], seed=5)
    G = tr.grads["layer0"].double()
    lam = float((G ** 2).mean()) / 10
    F = sum(G[i].T @ G[i] for i in range(9)) / 9 + lam * torch.eye(4, dtype=torch.float64)
    Finv = torch.linalg.inv(F)
    ref = np.array([[float(torch.sum((va.grads["layer0"][v].double() @ Finv) * G[i])) for i in range(9)]
                    for v in range(2)])
    np.testing.assert_allclose(hyperinf(tr, va, tol=1e-12, max_iter=100), ref, rtol=1e-6)


@pytest.mark.parametrize("method", [hessian_free, datainf, hyperinf])
def test_sign_higher_is_more_valuable(method):
    """A training sample whose gradient equals the valuation gradient is valuable (> 0); its
    negation is harmful (< 0): higher = more valuable, like For-Value."""
    base = _random_grads(4, [(2, 5)], seed=6)
    g = base.grads["layer0"]
    train = LoraGradients(["layer0"], {"layer0": torch.cat([g, -g[:1]])})
    val = LoraGradients(["layer0"], {"layer0": g[:1]})
    v = method(train, val)[0]
    assert v[0] > 0 and v[-1] < 0
    assert v[0] == pytest.approx(-v[-1], rel=1e-6)
