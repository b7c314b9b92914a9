"""Forward pass -> per-sample For-Value features.

For scored positions k of a sample, with target y_k, hidden state h_k (the input of lm_head,
after the final norm) and p_k = softmax(W h_k), the sample's lm_head log-likelihood gradient is

    G = sum_k (e_{y_k} - p_k) h_k^T          (|V| x d)

Representations computed here:
- sparse (stored): rows of G on a support (targets + top-k predicted tokens per position), with the
  hidden side projected by a seeded Gaussian d x r matrix (r=None keeps d);
- dense: rows of G on a vocabulary subset (all of it for ``full``, the tokens of the compared texts
  for ``exact``), held in memory for one batch at a time;
- emb: sum of h_k over scored positions (the paper's alpha = 1 ablation).

Logits, log-sum-exp and top-k are computed over chunks of positions: no batch x sequence x
vocabulary tensor is ever held.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any, Iterator, Sequence

import numpy as np

from ..config import opt
from ..data.samples import DataError, Sample
from ..errors import ConfigError

FEATURE_VERSION = "1"      # full rows, float32
BOUNDED_VERSION = "2"      # rows pruned to an energy share and a cap, and/or float16 vectors
# Elements of one logits chunk (positions x vocabulary): 8M floats = 32 MB in fp32.
LOGIT_CHUNK_ELEMENTS = 8 * 1024 * 1024
# The grounding check compares the first this-many response tokens' losses with and without the
# instruction: as separating as the whole response on real data, at a fraction of the second pass
# (docs/benchmarks.md, "Curation on real data").
GROUNDING_TOKENS = 48
# The answer check reads the model's loss on a response's last computed result: the number after its
# last "=" (where the model can judge an answer; docs/benchmarks.md, "Curation on real data").
ANSWER_RESULT = re.compile(r"=\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)")


@dataclass(frozen=True)
class FeatureConfig:
    """What a sample's stored features are: which positions count and the sparse representation.
    Its ``id`` keys the feature store, so every field here changes which features are reused."""

    positions: str = opt("response", "scored positions: response (the tokens the SFT loss trains on) or all "
                         "(every next-token position)", choices=("response", "all"))
    k: int = opt(8, "top-k predicted tokens kept per position besides the target (sparse support)",
                 flag="--top-tokens")
    r: int | None = opt(128, "projection width of the hidden side (sparse); 0 keeps every dimension", none_as=0)
    seed: int = opt(0, "seed of the projection matrix")
    chat_template: bool = opt(True, "render prompts with the tokenizer's chat template (--plain: plain text)",
                              flag="--plain", negate=True)
    max_length: int | None = opt(None, "longest sample in tokens (default: the model context)")
    store_dtype: str = opt("float16", "dtype of the stored vectors: float16 (half the bytes, the default), or float32",
                           choices=("float32", "float16"))
    energy: float = opt(0.99, "keep each sample's largest rows until they hold this share of its ||G||^2 "
                              "(1 keeps every row)")
    max_rows: int | None = opt(112, "at most this many rows per sample, the largest (0: no cap); 112 rows of r=128 "
                                    "in float16 keep a sample within 32 KB", none_as=0)
    checks: bool = opt(True, "compute the forward-only consistency checks with the features and apply them in "
                             "selection (--no-checks: neither); the grounding check costs a light second pass over "
                             "each response's first 48 tokens; positions 'all' has none",
                       flag="--no-checks", negate=True)

    def __post_init__(self):
        if self.positions not in ("response", "all"):
            raise ConfigError(f"positions must be 'response' or 'all', not {self.positions!r}")
        if self.k < 0:
            raise ConfigError("k (top tokens) must be >= 0")
        if self.r is not None and self.r < 1:
            raise ConfigError(f"r (the projection width) must be >= 1, or 0 on the command line for every dimension; "
                              f"got {self.r}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError("max_length must be >= 2 tokens (or None for the model context)")
        if self.checks and self.positions != "response":   # grounding compares response losses
            object.__setattr__(self, "checks", False)
        if self.store_dtype not in ("float32", "float16"):
            raise ConfigError(f"store_dtype must be float32 or float16, not {self.store_dtype!r}")
        if not 0 < self.energy <= 1:
            raise ConfigError(f"energy is a share of ||G||^2 in (0, 1], got {self.energy}")
        if self.max_rows is not None and self.max_rows < 1:
            raise ConfigError("max_rows must be >= 1 (or None / 0: no cap)")

    @property
    def bounded(self) -> bool:
        """Whether rows are pruned or stored in half precision (the stored format's version 2)."""
        return (self.store_dtype, self.energy, self.max_rows) != ("float32", 1.0, None)

    def to_dict(self) -> dict:
        """The fields that key the feature store. A configuration of the first stored format (full
        rows in float32) keeps the keys and the ``version`` it always had, so its stores stay found."""
        d = asdict(self)
        if not self.checks:   # a configuration without checks keeps the id it had before they existed
            d.pop("checks")
        if not self.bounded:
            for key in ("store_dtype", "energy", "max_rows"):
                d.pop(key)
            return d | {"version": FEATURE_VERSION}
        return d | {"version": BOUNDED_VERSION}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        """The config of :meth:`to_dict` (its other keys, such as the version, are ignored)."""
        from dataclasses import fields

        # a config of the first stored format has no bound keys: it kept every row in float32,
        # whatever today's defaults are
        unbounded = {"store_dtype": "float32", "energy": 1.0, "max_rows": None}
        missing = unbounded | {"checks": False}   # stored before the checks existed, or without them
        return cls(**{f.name: d.get(f.name, missing.get(f.name)) for f in fields(cls)
                      if f.name in d or f.name in missing})

    @property
    def id(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- encoding
@dataclass
class Encoded:
    """Token ids of one sample and where its scored targets start."""

    index: int
    input_ids: list[int]
    response_start: int  # first target index t counted under positions="response"
    extra: dict = field(default_factory=dict)  # model inputs beyond input_ids (VLM pixel values ...)
    # VLM samples keep only the shapes of their image inputs; ``make_extra`` rebuilds the tensors
    # when the sample's batch runs, so a dataset's pixels are never all in memory at once.
    extra_shapes: dict = field(default_factory=dict)
    make_extra: Any = None
    # [start, end) target indices of the tokens of the response's last computed result (the answer
    # check's span; None: the response has none, or the tokenizer gives no character offsets)
    answer: tuple[int, int] | None = None

    def inputs(self) -> dict:
        """Model inputs beyond ids and mask (built now for lazily encoded VLM samples)."""
        if self.extra or self.make_extra is None:
            return self.extra
        return self.make_extra()

    def target_range(self, positions: str) -> tuple[int, int]:
        start = 1 if positions == "all" else max(1, self.response_start)
        return start, len(self.input_ids)


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _eos(tokenizer) -> list[int]:
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def answer_tokens(tokenizer, text: str, special: bool) -> tuple[list[int], tuple[int, int] | None]:
    """(token ids of ``text``, [start, end) indices of the tokens of its last computed result, the
    number after its last "=", or None)."""
    found = list(ANSWER_RESULT.finditer(text))
    if not found or not getattr(tokenizer, "is_fast", False):
        return _ids(tokenizer, text, special), None
    enc = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    c0, c1 = found[-1].span(1)
    inside = [j for j, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a < c1 and b > c0]
    return list(enc["input_ids"]), (inside[0], inside[-1] + 1) if inside else None


def render(sample: Sample, tokenizer, chat_template: bool = True) -> tuple[str, str, bool]:
    """(prompt string, response string, strings carry their own special tokens)."""
    if sample.kind == "text":
        return "", sample.text, False
    if sample.kind == "messages":
        history, last = sample.messages[:-1], sample.messages[-1]
    else:
        history, last = [{"role": "user", "content": sample.prompt}], {"role": "assistant", "content": sample.response}
    if chat_template and getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(history, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(history + [last], tokenize=False)
        if full.startswith(prompt):
            return prompt, full[len(prompt):], True
    if sample.kind == "messages":
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in history) + "assistant: "
        return prompt, last["content"], False
    return sample.prompt, sample.response, False


def _vlm_turns(sample: Sample, n_images: int) -> tuple[list[dict], dict]:
    """Chat turns with the images placed in the first user turn (content-list format)."""
    images = [{"type": "image"} for _ in range(n_images)]
    if sample.kind == "messages":
        history = [dict(m) for m in sample.messages[:-1]]
        last = sample.messages[-1]["content"]
        first_user = next((i for i, m in enumerate(history) if m["role"] == "user"), None)
        if first_user is None:
            history.insert(0, {"role": "user", "content": ""})
            first_user = 0
        for i, m in enumerate(history):
            text = [{"type": "text", "text": m["content"]}] if m["content"] else []
            history[i] = {"role": m["role"], "content": (images if i == first_user else []) + text}
    else:
        prompt = sample.prompt if sample.kind == "prompt_response" else ""
        history = [{"role": "user", "content": images + ([{"type": "text", "text": prompt}] if prompt else [])}]
        last = sample.response if sample.kind == "prompt_response" else sample.text
    return history, {"role": "assistant", "content": [{"type": "text", "text": last}]}


def encode_vlm(sample: Sample, index: int, processor, config: FeatureConfig, max_len: int | None) -> Encoded:
    """Image + text sample through the model's processor; scored positions are the answer tokens
    after the images and the question."""
    from ..data.samples import load_image

    tokenizer = getattr(processor, "tokenizer", processor)
    images = [load_image(sample, j) for j in range(len(sample.images))]
    history, last = _vlm_turns(sample, len(images))
    templated = config.chat_template and getattr(processor, "chat_template", None)
    if templated:
        prompt = processor.apply_chat_template(history, add_generation_prompt=True, tokenize=False)
        full = processor.apply_chat_template(history + [last], tokenize=False)
    else:
        token = getattr(processor, "image_token", "<image>")
        text = "".join(c.get("text", token) if c["type"] == "text" else token
                       for m in history for c in m["content"])
        prompt = text + ("\n" if text else "")
        full = prompt + last["content"][0]["text"] + (tokenizer.eos_token or "")
    kw = {"return_tensors": "pt"}
    if templated:
        kw["add_special_tokens"] = False
    imgs = images or None
    enc_full = processor(text=[full], images=imgs, **kw)
    enc_prompt = processor(text=[prompt], images=imgs, **kw)
    ids = enc_full["input_ids"][0].tolist()
    p_ids = enc_prompt["input_ids"][0].tolist()
    start = 0
    while start < min(len(ids), len(p_ids)) and ids[start] == p_ids[start]:
        start += 1
    fld = {"text": "text", "messages": "messages"}.get(sample.kind, "response")
    if start >= len(ids):
        raise DataError(sample.source, sample.row, fld, "empty response after tokenization")
    if max_len is not None and len(ids) > max_len:
        raise DataError(sample.source, sample.row, fld,
                        f"{len(ids)} tokens, longer than the model context of {max_len} tokens")
    extra = _image_inputs(enc_full)
    shapes = {k: tuple(v.shape) for k, v in extra.items()}
    del extra, enc_full, enc_prompt, images
    return Encoded(index=index, input_ids=ids, response_start=max(1, start), extra_shapes=shapes,
                   make_extra=partial(_rebuild_image_inputs, sample, processor, full, kw, ids))


def _image_inputs(enc) -> dict:
    return {k: v for k, v in enc.items() if k not in ("input_ids", "attention_mask") and hasattr(v, "shape")}


def _rebuild_image_inputs(sample: Sample, processor, text: str, kw: dict, ids: list[int]) -> dict:
    """The image inputs of an encoded VLM sample, processed again from its images."""
    from ..data.samples import load_image

    images = [load_image(sample, j) for j in range(len(sample.images))] or None
    enc = processor(text=[text], images=images, **kw)
    if enc["input_ids"][0].tolist() != ids:
        raise RuntimeError(f"{sample.source}, row {sample.row}: the processor gave different tokens on a second pass")
    return _image_inputs(enc)


def encode(sample: Sample, index: int, tokenizer, config: FeatureConfig, max_len: int | None,
           processor=None) -> Encoded:
    if processor is not None and (sample.images or getattr(processor, "chat_template", None)):
        return encode_vlm(sample, index, processor, config, max_len)
    prompt, response, templated = render(sample, tokenizer, config.chat_template)
    if templated:
        p_ids = _ids(tokenizer, prompt, False)
        r_ids, span = answer_tokens(tokenizer, response, False)
    else:
        p_ids = _ids(tokenizer, prompt, True) if prompt else []
        r_ids, span = answer_tokens(tokenizer, response, not prompt)
        r_ids += _eos(tokenizer)
    ids = p_ids + r_ids
    fld = {"text": "text", "messages": "messages"}.get(sample.kind, "response")
    if len(ids) < 2:
        raise DataError(sample.source, sample.row, fld, "too short: needs at least two tokens")
    if len(r_ids) == 0:
        raise DataError(sample.source, sample.row, fld, "empty response after tokenization")
    if max_len is not None and len(ids) > max_len:
        raise DataError(sample.source, sample.row, fld,
                        f"{len(ids)} tokens, longer than the model context of {max_len} tokens")
    return Encoded(index=index, input_ids=ids, response_start=len(p_ids) if prompt else 1,
                   answer=None if span is None else (len(p_ids) + span[0], len(p_ids) + span[1]))


def encode_all(lm, samples: Sequence[Sample], config: FeatureConfig, on_error: str = "raise"):
    """Encode samples; returns (encoded list, [(sample, DataError)] skipped)."""
    from ..models.loading import max_context

    limit = config.max_length or max_context(lm)
    out, skipped = [], []
    for i, s in enumerate(samples):
        try:
            out.append(encode(s, i, lm.tokenizer, config, limit, processor=lm.processor))
        except DataError as e:
            if on_error == "raise":
                raise
            skipped.append((s, e))
    return out, skipped


def image_shape_key(e: Encoded) -> tuple:
    """Shapes of a sample's per-sample image inputs (those with a leading batch axis of 1), the token
    axis left out. Samples are batched only with samples of the same key, so image inputs are never
    padded on an image or tile axis: Mllama lets text rows before the image attend to every image of
    the sample, padded ones included, so padding there would make results depend on the batch."""
    key = []
    shapes = e.extra_shapes or {k: tuple(v.shape) for k, v in e.extra.items()}
    for name in sorted(shapes):
        shape = shapes[name]
        if len(shape) >= 2 and shape[0] == 1:
            dims = tuple(shape[1:])
            if dims[0] == len(e.input_ids):      # token axis: right-padded like the ids
                dims = dims[1:]
            key.append((name, dims))
    return tuple(key)


def length_batches(encoded: Sequence[Encoded], batch_size: int) -> list[list[Encoded]]:
    """Length-bucketed batches: group by image input shapes (:func:`image_shape_key`; text samples
    form one group), sort by length, then cut. Order does not change any result."""
    groups: dict[tuple, list[Encoded]] = {}
    for e in encoded:
        groups.setdefault(image_shape_key(e), []).append(e)
    out = []
    for key in sorted(groups, key=repr):
        order = sorted(groups[key], key=lambda e: (len(e.input_ids), e.index))
        out += [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return out


# ----------------------------------------------------------------------------- forward
def lm_head_of(model):
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings (lm_head)")
    return head


def base_model_of(model):
    """The part of a *ForCausalLM / *ForConditionalGeneration model that returns last_hidden_state."""
    return getattr(model, model.base_model_prefix)


def _stack_extra(parts: list):
    """Batch one model input (beyond ids and mask) of several samples. Inputs the processor returns
    with a leading batch axis of 1 (per-token ids such as Qwen2-VL's ``mm_token_type_ids``, Idefics3's
    ``[1, images, C, H, W]`` pixels, Mllama's cross-attention masks) are zero-padded to the largest
    sample and stacked; :func:`length_batches` groups samples so that only the token axis ever needs
    padding (padding tokens are masked). Per-image inputs (LLaVA / Qwen2-VL pixel values, grids) are
    concatenated along their first axis."""
    import torch

    if all(p.dim() == parts[0].dim() and p.dim() >= 2 and p.shape[0] == 1 for p in parts):
        size = [len(parts)] + [max(p.shape[i] for p in parts) for i in range(1, parts[0].dim())]
        out = parts[0].new_zeros(size)
        for b, p in enumerate(parts):
            out[(b,) + tuple(slice(0, n) for n in p.shape[1:])] = p[0]
        return out
    return torch.cat(parts)


def to_device(t, device):
    """A host tensor on ``device`` without waiting: on CUDA through pinned memory with
    ``non_blocking`` (a plain copy from pageable memory synchronises the stream)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def pad_ids(batch: Sequence[Encoded], pad_id: int):
    """(input_ids, attention_mask) [B, T] long tensors of a batch, right-padded with ``pad_id``."""
    import torch

    T = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), T), dtype=torch.long)
    for b, e in enumerate(batch):
        ids[b, : len(e.input_ids)] = torch.tensor(e.input_ids)
        mask[b, : len(e.input_ids)] = 1
    return ids, mask


def collate(batch: list[Encoded], pad_id: int, device, dtype=None):
    ids, mask = pad_ids(batch, pad_id)
    inputs = {"input_ids": to_device(ids, device), "attention_mask": to_device(mask, device)}
    extras = [e.inputs() for e in batch]
    for key in sorted({k for x in extras for k in x}):
        value = to_device(_stack_extra([x[key] for x in extras if key in x]), device)
        inputs[key] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    return inputs


def hidden_states(lm, batch: list[Encoded]):
    """Last hidden states (input of lm_head) of a right-padded batch: [B, T, d]."""
    import torch

    inputs = collate(batch, lm.tokenizer.pad_token_id, lm.device, lm.dtype)
    with torch.inference_mode():
        out = base_model_of(lm.model)(**inputs, use_cache=False)
    return out.last_hidden_state


@dataclass
class Positions:
    """Scored positions of a batch, flattened: hidden states, targets and owning sample."""

    H: Any        # [N, d] compute dtype
    Y: Any        # [N] long
    S: Any        # [N] long, index within the batch
    n_per_sample: list[int]
    lead: Any = None  # [N] bool: among its sample's first GROUNDING_TOKENS scored positions
    answer: Any = None  # [N] bool: a token of its sample's last computed result (Encoded.answer)
    n_answer: list[int] = field(default_factory=list)   # such positions per sample


@dataclass
class Targets:
    """Where the next-token targets of a right-padded batch are: for every scored target token t of
    sample b, the hidden state at (b, t - 1) predicts ``y`` = input_ids[t]. Feature extraction,
    evaluation, fine-tuning and the gradient baselines all index the batch through this."""

    b: list[int]          # sample within the batch
    t: list[int]          # position of the hidden state (t - 1 for target t)
    y: list[int]          # target token ids
    counts: list[int]     # targets per sample

    def tensors(self, device):
        """(b, t, y) as long tensors on ``device``."""
        import torch

        return tuple(to_device(torch.tensor(v, dtype=torch.long), device) for v in (self.b, self.t, self.y))


def targets(batch: Sequence[Encoded], positions: str) -> Targets:
    bs, ts, ys, counts = [], [], [], []
    for b, e in enumerate(batch):
        start, end = e.target_range(positions)
        bs += [b] * (end - start)
        ts += list(range(start - 1, end - 1))   # hidden state at t-1 predicts token t
        ys += e.input_ids[start:end]
        counts.append(end - start)
    return Targets(b=bs, t=ts, y=ys, counts=counts)


def scored_positions(lm, batch: list[Encoded], positions: str, compute_dtype) -> Positions:
    h = hidden_states(lm, batch)
    tg = targets(batch, positions)
    b_idx, t_idx, y = tg.tensors(h.device)
    H = h[b_idx, t_idx].to(compute_dtype)
    import torch

    lead = to_device(torch.tensor([i < GROUNDING_TOKENS for c in tg.counts for i in range(c)], dtype=torch.bool),
                     h.device)
    spans = [e.answer or (0, 0) for e in batch]
    answer = [spans[b][0] <= t + 1 < spans[b][1] for b, t in zip(tg.b, tg.t)]   # target index t + 1
    n_answer = [0] * len(batch)
    for b, a in zip(tg.b, answer):
        n_answer[b] += a
    return Positions(H=H, Y=y, S=b_idx, n_per_sample=tg.counts, lead=lead,
                     answer=to_device(torch.tensor(answer, dtype=torch.bool), h.device), n_answer=n_answer)


class Head:
    """lm_head weight/bias in the compute dtype, cached once per model."""

    def __init__(self, model, compute_dtype):
        head = lm_head_of(model)
        self.W = head.weight.detach().to(compute_dtype)
        b = getattr(head, "bias", None)
        self.b = None if b is None else b.detach().to(compute_dtype)
        self.V = self.W.shape[0]
        self.chunk = max(1, LOGIT_CHUNK_ELEMENTS // self.V)

    def logits(self, H):
        out = H @ self.W.T
        return out if self.b is None else out + self.b

    def chunks(self, n: int) -> Iterator[slice]:
        for i in range(0, n, self.chunk):
            yield slice(i, min(n, i + self.chunk))


_PROJ_CACHE: dict = {}


def projection(d: int, r: int, seed: int, device, dtype):
    """Seeded Gaussian d x r matrix with N(0, 1/r) entries (inner products kept in expectation).
    Drawn on the CPU so that every device gets the same matrix."""
    import torch

    key = (d, r, seed, str(device), dtype)
    if key not in _PROJ_CACHE:
        g = torch.Generator().manual_seed(seed)
        P = torch.randn(d, r, generator=g, dtype=torch.float64) / math.sqrt(r)
        _PROJ_CACHE[key] = P.to(device=device, dtype=dtype)
    return _PROJ_CACHE[key]


def compute_dtype_for(lm):
    import torch

    return torch.float64 if lm.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------- sparse
# optional [n] per-sample arrays of SparseFeatures: the extraction pass's losses and the checks' values
PER_SAMPLE_LOSSES = ("losses", "losses_first", "losses_alone", "losses_answer", "arith_errors")


@dataclass
class SparseFeatures:
    """Sparse G rows of many samples. Row i belongs to sample_ids[row_sample[i]]."""

    sample_ids: list[str]
    row_sample: np.ndarray   # [R] int64
    token_ids: np.ndarray    # [R] int64
    vectors: np.ndarray      # [R, r]
    emb: np.ndarray          # [n, d] sum of hidden states over scored positions
    n_positions: np.ndarray  # [n] int64
    norms: np.ndarray | None = None  # [n] ||G|| of the stored rows; None: computed from the rows
    # [n] s(A|Q): mean NLL per scored position, from the extraction pass itself (a consistency check's
    # input); None where the features were made or stored without it
    losses: np.ndarray | None = None
    # [n] the mean NLL of the first GROUNDING_TOKENS scored positions, from the same pass: s(A|Q)
    # over the span the grounding check compares
    losses_first: np.ndarray | None = None
    # [n] s(A) over that span: the response's first tokens after an empty instruction (the grounding
    # check's denominator, :func:`alone_losses`); None where not computed, NaN for plain text
    losses_alone: np.ndarray | None = None
    # [n] the mean NLL of the tokens of the response's last computed result (Encoded.answer), from
    # the same pass: the answer check's value; NaN where the response has none
    losses_answer: np.ndarray | None = None
    # [n] how many arithmetic statements of the response do not hold (the arithmetic check's value,
    # :func:`forvalue.valuation.arithmetic.arithmetic_errors`, read from the text); NaN where it
    # states none the check can parse
    arith_errors: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.sample_ids)

    def sample_norms(self) -> np.ndarray:
        """[n] float64 Frobenius norm of each sample's stored G (rows are unique per sample and
        token, so it is the root of the summed squared rows): the denominator of every cosine."""
        if self.norms is None:
            sq = np.einsum("ij,ij->i", self.vectors, self.vectors, dtype=np.float64) if self.n_rows else np.zeros(0)
            self.norms = np.sqrt(np.bincount(self.row_sample, weights=sq, minlength=len(self)))
        return self.norms

    def take(self, start: int, stop: int) -> "SparseFeatures":
        """Samples ``start:stop`` (rows of a sample are contiguous and in sample order, as every
        constructor here leaves them)."""
        lo, hi = np.searchsorted(self.row_sample, [start, stop])
        return SparseFeatures(
            sample_ids=self.sample_ids[start:stop], row_sample=self.row_sample[lo:hi] - start,
            token_ids=self.token_ids[lo:hi], vectors=self.vectors[lo:hi], emb=self.emb[start:stop],
            n_positions=self.n_positions[start:stop],
            norms=None if self.norms is None else self.norms[start:stop],
            **{name: None if getattr(self, name) is None else getattr(self, name)[start:stop]
               for name in PER_SAMPLE_LOSSES})

    @property
    def n_rows(self) -> int:
        return int(self.token_ids.shape[0])

    @staticmethod
    def concat(parts: Sequence["SparseFeatures"]) -> "SparseFeatures":
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError("no features to concatenate")
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        return SparseFeatures(
            sample_ids=[s for p in parts for s in p.sample_ids],
            row_sample=np.concatenate([p.row_sample + o for p, o in zip(parts, offsets)]),
            token_ids=np.concatenate([p.token_ids for p in parts]),
            vectors=np.concatenate([p.vectors for p in parts]),
            emb=np.concatenate([p.emb for p in parts]),
            n_positions=np.concatenate([p.n_positions for p in parts]),
            norms=np.concatenate([p.sample_norms() for p in parts]),
            **{name: None if any(getattr(p, name) is None for p in parts) else np.concatenate(
                [getattr(p, name) for p in parts]) for name in PER_SAMPLE_LOSSES},
        )

    def select(self, sample_ids: Sequence[str]) -> "SparseFeatures":
        """Features of these samples, in this order (ids may repeat)."""
        pos = {s: i for i, s in enumerate(self.sample_ids)}
        missing = [s for s in sample_ids if s not in pos]
        if missing:
            raise KeyError(f"{len(missing)} sample ids have no features, e.g. {missing[0]}")
        want = np.array([pos[s] for s in sample_ids], dtype=np.int64)
        order = np.argsort(self.row_sample, kind="stable")
        starts = np.searchsorted(self.row_sample[order], np.arange(len(self) + 1))
        rows = [order[starts[w]:starts[w + 1]] for w in want]
        counts = [len(r) for r in rows]
        rows_cat = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        return SparseFeatures(
            sample_ids=list(sample_ids),
            row_sample=np.repeat(np.arange(len(want)), counts).astype(np.int64),
            token_ids=self.token_ids[rows_cat],
            vectors=self.vectors[rows_cat],
            emb=self.emb[want],
            n_positions=self.n_positions[want],
            norms=self.sample_norms()[want],
            **{name: None if getattr(self, name) is None else getattr(self, name)[want]
               for name in PER_SAMPLE_LOSSES},
        )


def position_support(H, Y, head: Head, k: int, *, with_nll: bool = False):
    """The support of every scored position and its coefficient in e_y - p: the target y (1 - p_y)
    and the top-k predicted tokens (-p_t; the target counted once). Returns flat tensors
    (position index into H, token id, coefficient), position by position, computed over chunks of
    positions so that no positions x vocabulary tensor beyond one chunk is held; with ``with_nll``
    also the [positions] NLL of each target, -log p_y (the loss the same pass gives for free)."""
    import torch

    toks_all, coefs, src, nll = [], [], [], []
    kk = min(k, head.V)
    for sl in head.chunks(H.shape[0]):
        logits = head.logits(H[sl])
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        y = Y[sl]
        log_p_y = logits.gather(1, y[:, None]) - lse                  # [c, 1]
        p_y = torch.exp(log_p_y)
        if with_nll:
            nll.append(-log_p_y[:, 0].float())
        toks, coef = [y[:, None]], [1.0 - p_y]
        if kk > 0:
            top_v, top_i = torch.topk(logits, kk, dim=-1)
            p_top = torch.exp(top_v - lse)
            p_top = torch.where(top_i == y[:, None], torch.zeros_like(p_top), p_top)  # target counted once
            toks.append(top_i)
            coef.append(-p_top)
        toks, coef = torch.cat(toks, 1), torch.cat(coef, 1)
        toks_all.append(toks.reshape(-1))
        coefs.append(coef.reshape(-1))
        src.append(torch.arange(sl.start, sl.stop, device=H.device).repeat_interleave(toks.shape[1]))
        del logits
    out = (torch.cat(src), torch.cat(toks_all), torch.cat(coefs))
    return out + (torch.cat(nll),) if with_nll else out


def _sparse_batch(pos: Positions, head: Head, k: int, P, B: int):
    """Sparse G rows of one batch, summed per (sample, token) with fixed shapes only, so that nothing
    in it waits for the device (no ``torch.unique``, no ``.item()``, no boolean mask): the keys
    ``sample * V + token`` of all N support entries are sorted, a flag marks the first entry of each
    distinct key, and the entries are summed into the slot ``cumsum(flag) - 1``. Returns (sorted
    keys [N], first-of-key flags [N], summed vectors [N, r] whose first ``flags.sum()`` rows are
    used, emb [B, d], the summed target NLL of each sample [B], of its first GROUNDING_TOKENS
    positions [B] and of its answer positions [B]); :func:`_compact` makes the rows on the host."""
    import torch

    dev = head.W.device  # the last layer and lm_head may sit on different GPUs (device_map="auto")
    H, Y, S = pos.H.to(dev), pos.Y.to(dev), pos.S.to(dev)
    Hp = H if P is None else H @ P
    src, toks, coefs, nll = position_support(H, Y, head, k, with_nll=True)
    keys, perm = torch.sort(S[src] * head.V + toks, stable=True)   # stable: per key, the summation order of before
    first = torch.ones_like(keys, dtype=torch.bool)
    first[1:] = keys[1:] != keys[:-1]
    slot = torch.cumsum(first, 0) - 1
    vec = torch.zeros((keys.shape[0], Hp.shape[1]), dtype=Hp.dtype, device=Hp.device)
    vec.index_add_(0, slot, coefs[perm, None] * Hp[src[perm]])
    emb = torch.zeros((B, H.shape[1]), dtype=H.dtype, device=H.device).index_add_(0, S, H)
    nll_sum = torch.zeros(B, dtype=nll.dtype, device=nll.device).index_add_(0, S, nll)
    lead_sum = torch.zeros(B, dtype=nll.dtype, device=nll.device).index_add_(0, S, nll * pos.lead.to(dev))
    answer_sum = torch.zeros(B, dtype=nll.dtype, device=nll.device).index_add_(0, S, nll * pos.answer.to(dev))
    return keys, first, vec, emb, nll_sum, lead_sum, answer_sum


class _HostCopy:
    """Device tensors copied to the host without waiting: on CUDA into pinned buffers with
    ``non_blocking`` and an event, so the next batch is queued before this one is read (the only
    wait is :meth:`get`, one batch behind); on the CPU the tensors themselves."""

    def __init__(self, tensors):
        import torch

        self.event = None
        if tensors[0].is_cuda:
            self.tensors = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
                            for t in tensors]
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.tensors = list(tensors)

    def get(self) -> list[np.ndarray]:
        if self.event is not None:
            self.event.synchronize()
        return [t.numpy() for t in self.tensors]


def _compact(keys: np.ndarray, first: np.ndarray, vec: np.ndarray, V: int):
    """(row_sample, token_ids, vectors) of :func:`_sparse_batch`'s output, one row per distinct key."""
    uniq = keys[first]
    return uniq // V, uniq % V, vec[:len(uniq)].copy()     # a copy: the buffer may be pinned memory


def response_text(sample: Sample) -> str:
    """The text a sample answers with: its response, its last message's text, or the whole text."""
    if sample.kind == "messages":
        content = sample.messages[-1].get("content") if sample.messages else ""
        if isinstance(content, list):   # parts of a multimodal message
            return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        return content or ""
    return (sample.text if sample.kind == "text" else sample.response) or ""


def without_instruction(sample: Sample) -> Sample:
    """The sample's response after an empty instruction (chat turns before the response dropped)."""
    if sample.kind == "text":
        raise ValueError(f"{sample.source}, row {sample.row}: a plain-text sample has no instruction")
    if sample.kind == "messages":
        return replace(sample, messages=[{"role": "user", "content": ""}, dict(sample.messages[-1])])
    return replace(sample, prompt="")


def alone_losses(lm, samples: Sequence[Sample], config: FeatureConfig = FeatureConfig(), *,
                 batch_size: int = 8, first: int | None = None) -> np.ndarray:
    """[n] s(A): each sample's mean NLL per response token after an empty instruction (the same
    chat template, the same length limit), over its first ``first`` response tokens (None: all),
    computed over chunks of positions like the features. With the extraction pass's loss over the
    same span (``losses_first``) it makes IFD = s(A|Q) / s(A), the grounding check (low: the
    instruction explains the response). NaN for plain-text samples and responses that leave no
    scored token."""
    import torch

    out = np.full(len(samples), np.nan)
    alone = [(i, without_instruction(s)) for i, s in enumerate(samples) if s.kind != "text"]
    if not alone:
        return out
    encoded, _ = encode_all(lm, [a for _, a in alone], config, on_error="skip")
    if first is not None:   # only the span compared: the sequence ends after its first response tokens
        encoded = [replace(e, input_ids=e.input_ids[:e.response_start + first]) for e in encoded]
    cdt = compute_dtype_for(lm)
    head = Head(lm.model, cdt)
    for batch in length_batches(encoded, batch_size):
        pos = scored_positions(lm, batch, "response", cdt)
        H, Y, S = pos.H.to(head.W.device), pos.Y.to(head.W.device), pos.S.to(head.W.device)
        nll = position_support(H, Y, head, 0, with_nll=True)[3]
        total = torch.zeros(len(batch), dtype=torch.float64, device=H.device).index_add_(0, S, nll.double())
        total = total.cpu().numpy()
        for b, e in enumerate(batch):
            if pos.n_per_sample[b]:
                out[alone[e.index][0]] = total[b] / pos.n_per_sample[b]
    return out


def extract_sparse(
    lm,
    samples: Sequence[Sample],
    config: FeatureConfig = FeatureConfig(),
    *,
    batch_size: int = 8,
    progress: bool = False,
    on_error: str = "raise",
    encoded: Sequence[Encoded] | None = None,
    grounding: bool = False,
) -> SparseFeatures:
    """Sparse features of ``samples`` (in their order; with on_error="skip", samples the model
    cannot take are left out). ``encoded`` passes encodings made already (their ``index`` points
    into ``samples``). Every sample's loss over its scored positions comes with them
    (``losses``, and ``losses_first`` over the first GROUNDING_TOKENS); ``grounding`` (response
    positions only) adds s(A) over those tokens, a second, light pass over the responses alone
    (``losses_alone``, :func:`alone_losses`).

    The loop never waits for the device: batch i+1 is queued before batch i's rows are read on the
    host (see :func:`_sparse_batch` and :class:`_HostCopy`)."""
    from tqdm.auto import tqdm

    if encoded is None:
        encoded, _ = encode_all(lm, samples, config, on_error)
    cdt = compute_dtype_for(lm)
    head = Head(lm.model, cdt)
    d = head.W.shape[1]
    P = None if config.r is None else projection(d, config.r, config.seed, head.W.device, cdt)
    parts = {}

    def finish(batch, pos_counts, copy: _HostCopy) -> None:
        n_per_sample, n_answer = pos_counts
        keys, first, vec, emb, nll_sum, lead_sum, answer_sum = copy.get()
        rs, tok, vec = _compact(keys, first, vec, head.V)
        emb = emb.copy()
        bounds = np.searchsorted(rs, np.arange(len(batch) + 1))
        for b, e in enumerate(batch):
            sl = slice(bounds[b], bounds[b + 1])
            n = max(1, int(n_per_sample[b]))
            losses = (float(nll_sum[b]) / n, float(lead_sum[b]) / min(n, GROUNDING_TOKENS),
                      float(answer_sum[b]) / n_answer[b] if n_answer[b] else math.nan)
            parts[e.index] = bound_rows(tok[sl], vec[sl], config) + (emb[b], n_per_sample[b], losses)

    pending = None
    for batch in tqdm(length_batches(encoded, batch_size), desc="features", unit="batch", disable=not progress):
        pos = scored_positions(lm, batch, config.positions, cdt)
        copy = _HostCopy(_sparse_batch(pos, head, config.k, P, len(batch)))
        if pending is not None:
            finish(*pending)
        pending = (batch, (pos.n_per_sample, pos.n_answer), copy)
    if pending is not None:
        finish(*pending)
    order = [e.index for e in sorted(encoded, key=lambda e: e.index)]
    counts = [len(parts[i][0]) for i in order]
    r = parts[order[0]][1].shape[1] if order else (config.r or 0)
    out_dt = np.float16 if config.store_dtype == "float16" else None
    vectors = np.concatenate([parts[i][1] for i in order]) if order else np.zeros((0, r), np.float32)
    emb = np.stack([parts[i][3] for i in order]) if order else np.zeros((0, 0), np.float32)
    if out_dt is not None:
        _check_half_range(vectors, emb, [samples[i].sample_id for i in order], counts)
    losses_alone = arith = None
    if grounding and config.positions == "response":
        from .arithmetic import arithmetic_errors

        losses_alone = alone_losses(lm, [samples[i] for i in order], config, batch_size=batch_size,
                                    first=GROUNDING_TOKENS)
        arith = np.array([arithmetic_errors(response_text(samples[i])) for i in order], dtype=np.float64)
    return SparseFeatures(
        losses_alone=losses_alone, arith_errors=arith,
        sample_ids=[samples[i].sample_id for i in order],
        row_sample=np.repeat(np.arange(len(order)), counts).astype(np.int64),
        token_ids=np.concatenate([parts[i][0] for i in order]).astype(np.int64) if order else np.zeros(0, np.int64),
        vectors=vectors.astype(out_dt) if out_dt else vectors,
        emb=emb.astype(out_dt) if out_dt else emb,
        n_positions=np.array([parts[i][4] for i in order], dtype=np.int64),
        norms=np.array([parts[i][2] for i in order], dtype=np.float64) if config.bounded else None,
        losses=np.array([parts[i][5][0] for i in order], dtype=np.float64),
        losses_first=np.array([parts[i][5][1] for i in order], dtype=np.float64),
        losses_answer=np.array([parts[i][5][2] for i in order], dtype=np.float64),
    )


HALF_MAX = float(np.finfo(np.float16).max)


def _check_half_range(vectors: np.ndarray, emb: np.ndarray, sample_ids: Sequence[str], counts: Sequence[int]) -> None:
    """Stop, naming the sample, before a value beyond float16's range would be stored as inf."""
    row_max = np.abs(vectors).max(axis=1) if vectors.size else np.zeros(0)
    emb_max = np.abs(emb).max(axis=1) if emb.size else np.zeros(0)
    if (row_max > HALF_MAX).any() or (emb_max > HALF_MAX).any():
        owner = np.repeat(np.arange(len(counts)), counts)
        bad = int(owner[np.argmax(row_max > HALF_MAX)]) if (row_max > HALF_MAX).any() else int(np.argmax(emb_max > HALF_MAX))
        worst = max(float(row_max.max(initial=0)), float(emb_max.max(initial=0)))
        raise ConfigError(f"sample {sample_ids[bad]!r}: its features reach {worst:.3g}, beyond float16's range "
                          f"({HALF_MAX:g}); store them in float32 (--store-dtype float32)")


def bound_rows(tok: np.ndarray, vec: np.ndarray, config: FeatureConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """One sample's rows kept by the configuration (the largest, until they hold ``energy`` of
    ||G||^2, at most ``max_rows``; in token order) and the norm of all its rows (so cosines keep
    their denominator whatever is dropped)."""
    sq = np.einsum("ij,ij->i", vec, vec, dtype=np.float64)
    norm = float(np.sqrt(sq.sum()))
    if config.energy >= 1 and (config.max_rows is None or len(tok) <= config.max_rows):
        return tok, vec, norm
    order = np.argsort(-sq, kind="stable")
    cum = np.cumsum(sq[order])
    keep = int(np.searchsorted(cum, config.energy * cum[-1] * (1 - 1e-12))) + 1 if len(cum) and cum[-1] > 0 else 1
    keep = min(keep, len(tok), config.max_rows or len(tok))
    rows = np.sort(order[:keep])
    return tok[rows], vec[rows], norm


# ----------------------------------------------------------------------------- dense
def dense_batches(
    lm,
    encoded: Sequence[Encoded],
    config: FeatureConfig,
    vocab=None,
    *,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "features",
) -> Iterator[tuple[list[int], Any, Any]]:
    """Yield (sample indices, G [B, |U|, d], emb [B, d]) per batch, G restricted to the rows ``vocab``
    (a sorted LongTensor of token ids; None = the whole vocabulary). p_k stays the full softmax."""
    import torch
    from tqdm.auto import tqdm

    cdt = compute_dtype_for(lm)
    head = Head(lm.model, cdt)
    dev = head.W.device
    V, d = head.W.shape
    if vocab is None:
        col = None
        U = V
    else:
        vocab = torch.as_tensor(vocab, dtype=torch.long, device=dev)
        col = torch.full((V,), -1, dtype=torch.long, device=dev)
        col[vocab] = torch.arange(vocab.shape[0], device=dev)
        U = vocab.shape[0]
    for batch in tqdm(length_batches(encoded, batch_size), desc=desc, unit="batch", disable=not progress):
        B = len(batch)
        pos = scored_positions(lm, batch, config.positions, cdt)
        H, Y, S = pos.H.to(dev), pos.Y.to(dev), pos.S.to(dev)
        G = torch.zeros((B, U, d), dtype=cdt, device=dev)
        # target part: + h_k on row y_k
        rows = Y if col is None else col[Y]
        keep = rows >= 0
        G.view(B * U, d).index_add_(0, (S * U + rows)[keep], H[keep])
        # probability part: - sum_k p_k[u] h_k, chunked over positions
        for sl in head.chunks(H.shape[0]):
            logits = head.logits(H[sl])
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            probs = torch.exp((logits if col is None else logits[:, vocab]) - lse)
            del logits
            s_chunk = S[sl]
            for b in torch.unique(s_chunk).tolist():
                m = s_chunk == b
                G[b] -= probs[m].T @ H[sl][m]
        emb = torch.zeros((B, d), dtype=cdt, device=dev).index_add_(0, S, H)
        yield [e.index for e in batch], G, emb


def position_terms(lm, sample: Sample, config: FeatureConfig = FeatureConfig()):
    """(H [n, d], P [n, V], Y [n]) of one sample over the full vocabulary. For tests and small models."""
    import torch

    (enc,), _ = encode_all(lm, [sample], config)
    cdt = compute_dtype_for(lm)
    pos = scored_positions(lm, [enc], config.positions, cdt)
    head = Head(lm.model, cdt)
    return pos.H, torch.softmax(head.logits(pos.H), dim=-1), pos.Y
