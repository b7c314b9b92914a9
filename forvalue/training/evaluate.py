"""Evaluate a (fine-tuned) causal LM on a valuation set: loss, perplexity and task accuracy.

- Valuation loss: mean negative log-likelihood per *response token* (the tokens For-Value scores
  and the SFT loss trains on, :meth:`forvalue.valuation.features.Encoded.target_range`), over the whole set
  (token-weighted); perplexity = exp(loss).
- Accuracy: greedy decoding from the rendered prompt (chat template as in training), an answer
  extractor applied to the generated text, exact match against the reference answer: the
  record's ``answer`` field when it has one, else the extractor applied to the reference response.

Extractors (``parse_extractor``): ``last-number`` (default; the final number, ``1,000`` and
``5.0`` normalised to ``1000`` and ``5``), ``regex:PATTERN`` (the last match; its first group if it
has one), ``exact`` (the whole stripped text), or any Python callable ``str -> str | None``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from ..config import opt
from ..data.samples import DataError, Sample
from ..errors import ConfigError
from ..valuation.features import FeatureConfig, base_model_of, encode_all, lm_head_of, render

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
STOP_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "</s>")


# ----------------------------------------------------------------------------- extractors
def normalize_number(text: str) -> str | None:
    s = text.replace(",", "").strip()
    try:
        value = float(s)
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text or "")
    for token in reversed(found):
        n = normalize_number(token)
        if n is not None:
            return n
    return None


@dataclass(frozen=True)
class Extractor:
    name: str
    fn: Callable[[str], str | None]
    numeric: bool = False

    def __call__(self, text: str) -> str | None:
        return self.fn(text)

    def reference(self, value: Any) -> str | None:
        """Normalise a reference answer (the record's answer field) like an extracted one."""
        if value is None:
            return None
        if self.numeric:
            return normalize_number(str(value))
        return str(value).strip()


def parse_extractor(spec: str | Callable[[str], str | None] | Extractor = "last-number") -> Extractor:
    if isinstance(spec, Extractor):
        return spec
    if callable(spec):
        return Extractor(getattr(spec, "__name__", "custom"), spec)
    if spec in ("last-number", "last_number", "number"):
        return Extractor("last-number", last_number, numeric=True)
    if spec == "exact":
        return Extractor("exact", lambda t: (t or "").strip())
    if spec.startswith("regex:"):
        pattern = spec[len("regex:"):]
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"extractor {spec!r}: invalid regular expression: {e}") from None

        def fn(text: str) -> str | None:
            matches = list(rx.finditer(text or ""))
            if not matches:
                return None
            m = matches[-1]
            return (m.group(1) if rx.groups else m.group(0)).strip()

        return Extractor(spec, fn)
    raise ConfigError(f"unknown extractor {spec!r}: use last-number, exact or regex:PATTERN")


def reference_answer(sample: Sample, extractor: Extractor, answer_field: str | None = "answer") -> str | None:
    if answer_field and answer_field in sample.record and sample.record[answer_field] is not None:
        return extractor.reference(sample.record[answer_field])
    if sample.kind == "messages":
        return extractor(sample.messages[-1]["content"])
    if sample.kind == "text":
        return None
    return extractor(sample.response)


# ----------------------------------------------------------------------------- loss
def _causal_lm(model):
    """The *ForCausalLM module (a PEFT wrapper's base model, LoRA layers included)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


# Target positions whose full-vocabulary logits exist at once: the loss is computed chunk by chunk (in
# training each chunk's logits are computed again in the backward pass instead of being kept), so the
# fp32 [positions x vocabulary] logits of a whole batch never exist (SmolLM2: 49,152 x 4 bytes a position).
LOSS_CHUNK = 256


def _chunk_nll(head, h, y):
    """NLL of each position of one chunk: the head's logits in fp32, then cross-entropy."""
    import torch

    logits = head(h.to(head.weight.dtype)).float()
    return torch.nn.functional.cross_entropy(logits, y.to(logits.device), reduction="none")


def chunked_nll(head, h, y, chunk: int = LOSS_CHUNK):
    """[N] NLL of hidden states ``h`` [N, d] predicting tokens ``y`` [N], ``chunk`` positions at a time;
    with gradients, each chunk is checkpointed (its logits recomputed in the backward pass), so one
    chunk's logits and their gradient are the most that exist at once. The same numbers as one
    cross-entropy over all positions."""
    import torch
    from torch.utils.checkpoint import checkpoint

    if h.shape[0] == 0:
        return torch.zeros(0, dtype=torch.float32, device=h.device)
    grad = torch.is_grad_enabled() and (h.requires_grad or head.weight.requires_grad)
    parts = []
    for a in range(0, h.shape[0], max(1, int(chunk))):
        hc, yc = h[a:a + chunk], y[a:a + chunk]
        parts.append(checkpoint(_chunk_nll, head, hc, yc, use_reentrant=False) if grad else _chunk_nll(head, hc, yc))
    return torch.cat(parts)


def response_nll(model, batch, positions: str, pad_id: int, device, *, chunk: int = LOSS_CHUNK):
    """Summed NLL over the target tokens of each sample of a batch of Encoded: ([B] sums, [B] counts),
    as torch tensors (differentiable when grad is enabled). Hidden state t-1 predicts token t
    (:func:`forvalue.valuation.features.targets`, as in For-Value's features); logits are computed only at
    target positions, ``chunk`` positions at a time (:func:`chunked_nll`). The one next-token loss of
    evaluation, fine-tuning and the gradient baselines."""
    import torch

    from ..valuation.features import collate, targets

    lm_model = _causal_lm(model)
    tg = targets(batch, positions)
    inputs = collate(batch, pad_id, device, next(lm_model.parameters()).dtype)   # ids, mask, image inputs
    h = base_model_of(lm_model)(**inputs, use_cache=False).last_hidden_state
    b_idx, t_idx, y = tg.tensors(h.device)
    nll = chunked_nll(lm_head_of(lm_model), h[b_idx, t_idx], y, chunk)
    sums = torch.zeros(len(batch), dtype=nll.dtype, device=nll.device).index_add_(0, b_idx.to(nll.device), nll)
    counts = torch.bincount(b_idx, minlength=len(batch)).to(nll.device)
    return sums, counts


@dataclass
class LossResult:
    loss: float          # mean NLL per response token over the set
    perplexity: float
    n_tokens: int
    n_samples: int
    per_sample: list[float] = field(default_factory=list)  # mean NLL per token of each sample

    def metrics(self, prefix: str = "val_") -> dict[str, float]:
        return {f"{prefix}loss": self.loss, f"{prefix}perplexity": self.perplexity}


def evaluate_loss(lm, samples: Sequence[Sample], *, chat_template: bool = True, positions: str = "response",
                  max_length: int | None = None, batch_size: int = 8) -> LossResult:
    """Valuation loss and perplexity of ``lm`` (a LoadedModel, or anything with .model/.tokenizer/.device)."""
    import torch

    from ..valuation.features import length_batches

    if not samples:
        raise ValueError("no samples to evaluate")
    config = FeatureConfig(positions=positions, chat_template=chat_template, max_length=max_length)
    encoded, _ = encode_all(lm, samples, config)
    was_training = lm.model.training
    lm.model.eval()
    per = [0.0] * len(encoded)
    total, count = 0.0, 0
    try:
        with torch.inference_mode():
            for batch in length_batches(encoded, batch_size):
                sums, counts = response_nll(lm.model, batch, positions, lm.tokenizer.pad_token_id, lm.device)
                for e, s, c in zip(batch, sums.tolist(), counts.tolist()):
                    per[e.index] = s / max(c, 1)
                total += float(sums.sum())
                count += int(counts.sum())
    finally:
        lm.model.train(was_training)
    loss = total / max(count, 1)
    return LossResult(loss=loss, perplexity=math.exp(min(loss, 700.0)), n_tokens=count, n_samples=len(encoded),
                      per_sample=per)


# ----------------------------------------------------------------------------- generation
def stop_token_ids(tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    for t in STOP_TOKENS:
        if t in vocab and vocab[t] not in ids:
            ids.append(vocab[t])
    return ids


def prompt_ids(sample: Sample, tokenizer, chat_template: bool = True) -> list[int]:
    """Token ids of the prompt exactly as training renders it, up to where the response starts."""
    if sample.kind == "text":
        raise DataError(sample.source, sample.row, "text",
                        "plain-text samples have no prompt to answer; accuracy needs prompt/response or messages")
    prompt, _, templated = render(sample, tokenizer, chat_template)
    return list(tokenizer(prompt, add_special_tokens=not templated)["input_ids"])


def generate(lm, samples: Sequence[Sample], *, max_new_tokens: int = 64, batch_size: int = 16,
             chat_template: bool = True) -> list[str]:
    """Greedy completions of each sample's prompt (left-padded batches; special tokens dropped)."""
    import torch
    from transformers import GenerationConfig

    tok = lm.tokenizer
    model = _causal_lm(lm.model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    stops = stop_token_ids(tok)
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad,
                               eos_token_id=stops or None, bos_token_id=getattr(tok, "bos_token_id", None))
    prompts = [prompt_ids(s, tok, chat_template) for s in samples]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            T = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), T), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), T), dtype=torch.long)
            for b, i in enumerate(idx):
                p = prompts[i]
                ids[b, T - len(p):] = torch.tensor(p)
                mask[b, T - len(p):] = 1
            with torch.inference_mode():
                gen = model.generate(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                                     generation_config=gen_cfg)
            for b, i in enumerate(idx):
                new = gen[b, T:].tolist()
                cut = next((j for j, t in enumerate(new) if t in stops), len(new))
                out[i] = tok.decode(new[:cut], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return out


@dataclass
class AccuracyResult:
    accuracy: float
    n_correct: int
    n: int
    n_no_answer: int                      # generations in which the extractor found nothing
    extractor: str
    predictions: list[dict] = field(default_factory=list)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}accuracy": self.accuracy, f"{prefix}n_correct": float(self.n_correct),
                f"{prefix}n_eval": float(self.n), f"{prefix}no_answer_rate": self.n_no_answer / max(self.n, 1)}


def evaluate_accuracy(lm, samples: Sequence[Sample], *, extractor: str | Callable | Extractor = "last-number",
                      answer_field: str | None = "answer", max_new_tokens: int = 64, batch_size: int = 16,
                      chat_template: bool = True) -> AccuracyResult:
    """Exact match of the extracted answer of a greedy generation against the reference answer."""
    ex = parse_extractor(extractor)
    if not samples:
        raise ValueError("no samples to evaluate")
    refs = []
    for s in samples:
        if s.kind == "text":
            prompt_ids(s, lm.tokenizer)  # raises: a plain-text sample has no prompt to answer
        ref = reference_answer(s, ex, answer_field)
        if ref is None:
            fld = answer_field if answer_field and answer_field in s.record else (
                "messages" if s.kind == "messages" else "response")
            raise DataError(s.source, s.row, fld, f"no reference answer found by extractor {ex.name!r}")
        refs.append(ref)
    texts = generate(lm, samples, max_new_tokens=max_new_tokens, batch_size=batch_size, chat_template=chat_template)
    preds, correct, none = [], 0, 0
    for s, ref, text in zip(samples, refs, texts):
        got = ex(text)
        ok = got is not None and got == ref
        correct += ok
        none += got is None
        preds.append({"sample_id": s.sample_id, "id": s.user_id, "reference": ref, "prediction": got,
                      "correct": bool(ok), "generated": text})
    return AccuracyResult(accuracy=correct / len(samples), n_correct=correct, n=len(samples), n_no_answer=none,
                          extractor=ex.name, predictions=preds)


@dataclass
class EvalConfig:
    """What ``evaluate`` computes. ``accuracy_limit`` / ``loss_limit`` evaluate on n evenly spaced
    samples only (generation is the slow part on a CPU); 0/None = all."""

    accuracy: bool = opt(True, "task accuracy by greedy decoding", cli=False)
    extractor: str = opt("last-number", "answer extractor: last-number (final number, math tasks), exact, or "
                                        "regex:PATTERN (last match; its first group if any)")
    answer_field: str | None = opt("answer", "column with the reference answer (else the extractor is applied to "
                                             "the response)")
    max_new_tokens: int = opt(64, "tokens generated per answer")
    batch_size: int = opt(8, "samples per loss batch", cli=False)
    gen_batch_size: int = opt(16, "prompts per generation batch", flag="--eval-batch-size")
    accuracy_limit: int | None = opt(None, "accuracy on n evenly spaced samples (files are often class-ordered); "
                                           "0: all", flag="--eval-limit", none_as=0)
    loss_limit: int | None = opt(None, "valuation loss on n evenly spaced samples; 0: all", none_as=0, cli=False)
    chat_template: bool = opt(True, "render prompts with the chat template, as in training", cli=False)
    max_length: int | None = opt(None, "longest sample in tokens", cli=False)


def spread(samples: Sequence[Sample], n: int | None) -> list[Sample]:
    """n evenly spaced samples (all of them when n is None/0 or >= len)."""
    samples = list(samples)
    if not n or n >= len(samples):
        return samples
    step = len(samples) / n
    return [samples[int(i * step)] for i in range(n)]


@dataclass
class EvalResult:
    metrics: dict[str, float]
    loss: LossResult
    accuracy: AccuracyResult | None
    seconds: float = 0.0


def evaluate(lm, samples: Sequence[Sample], config: EvalConfig = EvalConfig()) -> EvalResult:
    import time

    t0 = time.perf_counter()
    loss = evaluate_loss(lm, spread(samples, config.loss_limit), chat_template=config.chat_template,
                         max_length=config.max_length, batch_size=config.batch_size)
    metrics = loss.metrics("val_") | {"val_tokens": float(loss.n_tokens), "val_samples": float(loss.n_samples)}
    acc = None
    if config.accuracy:
        subset = spread(samples, config.accuracy_limit)
        acc = evaluate_accuracy(lm, subset, extractor=config.extractor, answer_field=config.answer_field,
                                max_new_tokens=config.max_new_tokens, batch_size=config.gen_batch_size,
                                chat_template=config.chat_template)
        metrics |= acc.metrics()
    seconds = time.perf_counter() - t0
    metrics["eval_seconds"] = seconds
    return EvalResult(metrics=metrics, loss=loss, accuracy=acc, seconds=seconds)


def with_model(lm, model):
    """A copy of a LoadedModel-like object pointing at another model module."""
    try:
        return replace(lm, model=model)
    except TypeError:
        import copy

        new = copy.copy(lm)
        new.model = model
        return new
