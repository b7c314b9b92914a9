"""Gradient-based valuation baselines on LoRA gradients: Hessian-free, DataInf, HyperINF.

Sign convention (the same as For-Value and :mod:`forvalue.metrics`): **higher = more valuable**.
With loss gradients g (per layer l) and a damped per-layer curvature H_l, the classical influence of
up-weighting training sample i on the loss of valuation sample v is

    I(i -> v) = - sum_l g_v,l^T H_l^{-1} g_i,l          (negative = helpful: the loss goes down)

and every function here returns the *value* ``-I = sum_l g_v,l^T H_l^{-1} g_i,l``. (DataInf's
``IFEngine`` for classification returns ``I``; its ``IFEngineGeneration``, used for the
sentence/math tasks, returns ``g_v^T H^{-1} g_i`` without the minus, i.e. our value. Note that its
notebooks rank by ``|value|`` for recall; we rank by the signed value, as :mod:`forvalue.metrics` does.)

- ``hessian-free``: H = I, value = <g_v, g_i> (TracIn at the last checkpoint, one learning-rate factor
  dropped). Log-likelihood gradients are minus loss gradients, so the product is the same.
- ``datainf`` (Kwon et al. 2024, Eq. 5, their ``compute_hvp_proposed``): per layer,
  lambda_l = 0.1 * mean_i mean_j (g_i,l[j]^2) (the mean over training samples of the mean *squared
  entry*, exactly as their code computes it) and

      H_l^{-1} v ~= 1/(n lambda_l) * sum_i ( v - (v . g_i) / (lambda_l + ||g_i||^2) g_i ),

  evaluated for all valuation samples at once through the n x n Gram matrix of each layer.
- ``hyperinf`` (Zhou et al. 2024, their ``compute_hvp_iterative``): per layer the generalized Fisher
  F_l = 1/n sum_i g_i^T g_i + lambda_l I (g_i in DataInf's [r, dim] layout, so F_l is dim x dim),
  inverted by Schulz iteration X <- X (2I - F X); value = <g_v F_l^{-1}, g_i>. Their code starts from
  X0 = 5e-5 I and adds 0.001 I, both scale-dependent; here X0 = I / ||F||_F (convergent for any SPD
  F) and the extra damping is a parameter (default 0), and iteration stops at a relative residual of
  1e-6 or ``max_iter``.

All functions take :class:`~.gradients.LoraGradients` for the training and the valuation samples
and return ``[n_val, n_train]`` float64 numpy arrays (``pairwise=False``: the mean over the
valuation set, ``[n_train]``).
"""

from __future__ import annotations

import time

import numpy as np

from .gradients import LoraGradients

GRADIENT_METHODS = ("hessian-free", "datainf", "hyperinf")
LAMBDA_CONST_PARAM = 10.0  # DataInf / HyperINF: lambda_l = mean squared gradient entry / 10


def _check(train: LoraGradients, val: LoraGradients):
    if train.names != val.names:
        raise ValueError("training and valuation gradients come from different LoRA layers")
    if len(train) == 0 or len(val) == 0:
        raise ValueError("need at least one training and one valuation gradient")


def _finish(m, pairwise: bool) -> np.ndarray:
    m = m.cpu().numpy()
    return m if pairwise else m.mean(0)


def layer_lambda(G, lambda_const_param: float = LAMBDA_CONST_PARAM) -> float:
    """DataInf's layer-wise damping: mean over samples of the mean squared entry, / 10."""
    return float((G.double() ** 2).mean()) / lambda_const_param


def hessian_free(train: LoraGradients, val: LoraGradients, *, pairwise: bool = True) -> np.ndarray:
    """value(i -> v) = <g_v, g_i> summed over layers."""
    import torch

    _check(train, val)
    out = torch.zeros((len(val), len(train)), dtype=torch.float64)
    for name in train.names:
        out += (val.flat(name).double() @ train.flat(name).double().T)
    return _finish(out, pairwise)


def datainf(train: LoraGradients, val: LoraGradients, *, pairwise: bool = True,
            lambda_const_param: float = LAMBDA_CONST_PARAM) -> np.ndarray:
    """DataInf value g_v^T H^{-1} g_i with DataInf's closed-form inverse, per layer, summed.

    Vectorised form of their loop: with D = V G^T, K = G G^T, N_i = ||g_i||^2 and
    C = D / (lambda + N), value_l = (n D - C K) / (n lambda)."""
    import torch

    _check(train, val)
    n = len(train)
    out = torch.zeros((len(val), n), dtype=torch.float64)
    for name in train.names:
        G = train.flat(name).double()
        V = val.flat(name).double()
        lam = layer_lambda(G, lambda_const_param)
        if lam == 0.0:   # a layer with no gradient (e.g. lora_A before any training): contributes 0
            continue
        D = V @ G.T
        K = G @ G.T
        C = D / (lam + torch.diagonal(K))[None, :]
        out += (n * D - C @ K) / (n * lam)
    return _finish(out, pairwise)


def schulz_inverse(A, *, max_iter: int = 60, tol: float = 1e-6):
    """Inverse of a symmetric positive definite matrix by Newton-Schulz iteration.

    X0 = I / ||A||_F puts every eigenvalue of A X0 in (0, 1], so X_{k+1} = X_k (2I - A X_k)
    converges quadratically once the residual ||I - A X||_F / sqrt(dim) drops below 1.
    Returns (X, iterations, final relative residual)."""
    import torch

    n = A.shape[0]
    eye = torch.eye(n, dtype=A.dtype, device=A.device)
    X = eye / torch.linalg.matrix_norm(A)
    res = float("inf")
    it = 0
    for it in range(1, max_iter + 1):
        AX = A @ X
        R = eye - AX
        res = float(torch.linalg.matrix_norm(R)) / n ** 0.5
        if res < tol:
            break
        X = X @ (eye + R)          # = X (2I - A X)
    return X, it, res


def hyperinf(train: LoraGradients, val: LoraGradients, *, pairwise: bool = True,
             lambda_const_param: float = LAMBDA_CONST_PARAM, extra_damping: float = 0.0,
             max_iter: int = 60, tol: float = 1e-6, info: dict | None = None) -> np.ndarray:
    """HyperINF value <g_v F^{-1}, g_i> with the generalized Fisher F per layer (Schulz inverse)."""
    import torch

    _check(train, val)
    n = len(train)
    out = torch.zeros((len(val), n), dtype=torch.float64)
    worst = 0.0
    iters = []
    for name in train.names:
        G3 = train.grads[name].double()                 # [n, r, dim]
        lam = layer_lambda(G3, lambda_const_param)
        if lam == 0.0:
            continue
        dim = G3.shape[2]
        Gm = G3.reshape(-1, dim)
        F = Gm.T @ Gm / n + (lam + extra_damping) * torch.eye(dim, dtype=torch.float64)
        X, it, res = schulz_inverse(F, max_iter=max_iter, tol=tol)
        worst = max(worst, res)
        iters.append(it)
        Vh = (val.grads[name].double() @ X).reshape(len(val), -1)
        out += Vh @ G3.reshape(n, -1).T
    if info is not None:
        info.update({"schulz_max_residual": worst, "schulz_iterations_max": max(iters, default=0)})
    return _finish(out, pairwise)


_FUNCS = {"hessian-free": hessian_free, "datainf": datainf, "hyperinf": hyperinf}


def influence_values(method: str, train: LoraGradients, val: LoraGradients, *, pairwise: bool = True,
                     **kwargs) -> tuple[np.ndarray, float]:
    """(values, seconds of this step alone) for one of :data:`GRADIENT_METHODS`."""
    if method not in _FUNCS:
        raise ValueError(f"unknown gradient method {method!r}; choose one of {', '.join(GRADIENT_METHODS)}")
    t0 = time.perf_counter()
    m = _FUNCS[method](train, val, pairwise=pairwise, **kwargs)
    return m, time.perf_counter() - t0
