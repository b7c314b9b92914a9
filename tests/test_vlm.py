"""VLM valuation on tiny random VLMs built from a config, processors built locally: LLaVA-style
(CLIP tower, fixed image size, <image> tokens), Qwen2-VL-style (patch-merging ViT, variable image
grids, <|image_pad|> tokens, multimodal RoPE with per-token mm_token_type_ids) and Idefics3/SmolVLM-style
(images split into a variable number of tiles: [1, n_tiles, C, H, W] pixels padded per batch) and
Mllama-style (cross-attention to image tiles, per-token [1, T, images, tiles] cross-attention masks)."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from forvalue.data.samples import Columns, DataError, load_samples, samples_from_records
from forvalue.valuation.features import FeatureConfig, dense_batches, encode_all, hidden_states, lm_head_of
from forvalue.valuation.scoring import score


ARCHS = ["llava", "qwen2vl", "idefics3", "mllama"]


def _builder(arch):
    from tiny import build_tiny_idefics3, build_tiny_mllama, build_tiny_qwen2vl, build_tiny_vlm

    return {"llava": build_tiny_vlm, "qwen2vl": build_tiny_qwen2vl, "idefics3": build_tiny_idefics3,
            "mllama": build_tiny_mllama}[arch]


@pytest.fixture(scope="module", params=ARCHS)
def vlm_dir(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"tiny-{request.param}")
    _builder(request.param)(d, seed=0)
    return d


@pytest.fixture(scope="module")
def vlm(vlm_dir):
    """Loaded from its folder like any user model (AutoModelForImageTextToText + processor)."""
    from forvalue.models.loading import load_model

    return load_model(str(vlm_dir), device="cpu", dtype="float32")


@pytest.fixture(scope="module", params=ARCHS)
def vlm64(request):
    from forvalue.models.loading import from_objects

    model, processor = _builder(request.param)(None, seed=1, dtype=torch.float64)
    return from_objects(model, processor.tokenizer, name=f"tiny-{request.param}-64", processor=processor)


def image_token_id(lm):
    cfg = lm.model.config
    return getattr(cfg, "image_token_id", None) or cfg.image_token_index


def model_inputs(e, dtype=None):
    """Model inputs of one encoded sample, for calling the model directly."""
    extra = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v) for k, v in e.inputs().items()}
    return dict(input_ids=torch.tensor([e.input_ids]), **extra)


def png(color, size=(40, 40), shape=None):
    img = Image.new("RGB", size, color)
    if shape:
        from PIL import ImageDraw

        ImageDraw.Draw(img).ellipse([5, 5, 30, 30], fill=shape)
    b = io.BytesIO()
    img.save(b, "PNG")
    return b.getvalue()


def vlm_samples(n, seed=0):
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        c = tuple(int(x) for x in rng.integers(0, 255, 3))
        label = ["cat", "dog", "bird"][i % 3]
        recs.append({"id": f"v{seed}-{i}", "prompt": "What is the object in the image?",
                     "response": f"It is a {label}" + "!" * (i % 4),
                     "image": png(c, size=[(40, 40), (48, 24), (24, 40)][i % 3], shape=(255, 255, 255) if i % 2 else None)})
    return samples_from_records(recs, columns=Columns(image="image")).samples


def test_vlm_fingerprint_and_scored_positions(vlm):
    assert vlm.fingerprint.kind == "vlm" and vlm.processor is not None
    s = vlm_samples(1)[0]
    (enc,), _ = encode_all(vlm, [s], FeatureConfig())
    image_token = image_token_id(vlm)
    start, end = enc.target_range("response")
    assert image_token in enc.input_ids[:start]            # the image comes before the answer
    assert image_token not in enc.input_ids[start:end]
    assert vlm.tokenizer.decode(enc.input_ids[start:end]).startswith(s.response)
    assert "pixel_values" in enc.extra_shapes and not enc.extra   # pixels are rebuilt per batch
    assert {k: tuple(v.shape) for k, v in enc.inputs().items()} == enc.extra_shapes


def test_vlm_hidden_state_is_lm_head_input(vlm):
    (enc,), _ = encode_all(vlm, vlm_samples(1), FeatureConfig())
    h = hidden_states(vlm, [enc])
    with torch.no_grad():
        logits = vlm.model(**model_inputs(enc)).logits
        assert torch.allclose(lm_head_of(vlm.model)(h), logits, atol=1e-5)


def test_vlm_image_reaches_the_answer_positions(vlm):
    """Same question and answer, different images: the answer's hidden states differ, so the image
    inputs reach the language model through the batched inputs."""
    recs = [{"prompt": "What is the object in the image?", "response": "It is a cat", "image": png(c, shape=s)}
            for c, s in [((250, 0, 0), None), ((0, 0, 250), (255, 255, 0))]]
    samples = samples_from_records(recs, columns=Columns(image="image")).samples
    enc, _ = encode_all(vlm, samples, FeatureConfig())
    h = hidden_states(vlm, enc)
    (s0, e0), (s1, e1) = enc[0].target_range("response"), enc[1].target_range("response")
    assert e0 - s0 == e1 - s1
    assert (h[0, s0 - 1:e0 - 1] - h[1, s1 - 1:e1 - 1]).abs().max() > 1e-4


def test_vlm_full_equals_lm_head_gradient_oracle(vlm64):
    lm = vlm64
    config = FeatureConfig()
    samples = vlm_samples(3, seed=2)
    enc, _ = encode_all(lm, samples, config)
    model = lm.model
    for idx, G, _ in dense_batches(lm, enc, config, batch_size=2):
        for j, i in enumerate(idx):
            e = enc[i]
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                out = model(**model_inputs(e, torch.float64))
                logp = torch.log_softmax(out.logits[0], -1)
                s, t = e.target_range("response")
                sum(logp[k - 1, e.input_ids[k]] for k in range(s, t)).backward()
            g = model.get_output_embeddings().weight.grad
            assert torch.allclose(G[j], g, rtol=1e-9, atol=1e-9)
    full = score(lm, samples[:2], samples[2:], method="full-vocab", pairwise=True).matrix
    assert np.isfinite(full).all() and np.abs(full).max() > 0


@pytest.mark.parametrize("method", ["sparse", "exact", "full-vocab", "emb"])
def test_vlm_scores_batch_and_padding_invariant(vlm, method):
    train, val = vlm_samples(6, seed=3), vlm_samples(2, seed=4)
    lengths = {len(e.input_ids) for e in encode_all(vlm, train, FeatureConfig())[0]}
    assert len(lengths) > 1  # batches of 4 are padded
    a = score(vlm, train, val, method=method, pairwise=True, batch_size=1).matrix
    b = score(vlm, train, val, method=method, pairwise=True, batch_size=4).matrix
    assert np.isfinite(a).all()
    assert np.abs(a - b).max() / np.abs(a).max() < 1e-5


def test_vlm_sparse_full_support_equals_full(vlm64):
    V = vlm64.model.get_output_embeddings().weight.shape[0]
    train, val = vlm_samples(3, seed=5), vlm_samples(2, seed=6)
    full = score(vlm64, train, val, method="full-vocab", pairwise=True).matrix
    sparse = score(vlm64, train, val, method="sparse", pairwise=True,
                   config=FeatureConfig(k=V, r=None, store_dtype="float32", energy=1.0, max_rows=None)).matrix
    assert np.abs(sparse - full).max() / np.abs(full).max() < 1e-6


def test_vlm_stored_features_match(vlm, tmp_path):
    from forvalue.store.feature_store import FeatureStore

    train, val = vlm_samples(4, seed=7), vlm_samples(2, seed=8)
    store = FeatureStore(tmp_path / "fs")
    a = score(vlm, train, val, store=store).values
    b = score(vlm, train, val, store=store)
    assert b.info["computed"] == 0 and np.allclose(a, b.values, rtol=1e-6)


def test_vlm_bad_images_name_the_row(vlm, tmp_path):
    rows = [{"prompt": "q", "response": "a", "image": "ok.png"}, {"prompt": "q", "response": "a", "image": "bad.png"}]
    (tmp_path / "ok.png").write_bytes(png((1, 2, 3)))
    (tmp_path / "bad.png").write_bytes(b"this is not an image")
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = load_samples(p, image="image").samples
    with pytest.raises(DataError) as e:
        encode_all(vlm, samples, FeatureConfig())
    assert (e.value.file, e.value.row, e.value.field) == (str(p), 2, "image") and "unreadable image" in e.value.reason
    bad_bytes = samples_from_records([{"prompt": "q", "response": "a", "image": b"\x89PNG broken"}],
                                     columns=Columns(image="image")).samples
    with pytest.raises(DataError, match="row 1, field 'image': unreadable image"):
        encode_all(vlm, bad_bytes, FeatureConfig())
    with pytest.raises(DataError, match="zero bytes"):
        samples_from_records([{"prompt": "q", "response": "a", "image": b""}], columns=Columns(image="image"))


def test_vlm_several_images_per_sample_from_parquet(vlm, tmp_path):
    """A Parquet image column holding a list of image bytes: samples with one and two images mixed
    in one batch give the same scores as one sample per batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(11)
    rows = []
    for i in range(5):
        imgs = [png(tuple(int(x) for x in rng.integers(0, 255, 3)), size=[(40, 40), (48, 24)][j % 2])
                for j in range(1 + i % 2)]
        rows.append({"prompt": "Compare the pictures.", "response": f"Picture set {i}", "image": imgs})
    path = tmp_path / "multi.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    samples = load_samples(path, image="image").samples
    assert [len(s.images) for s in samples] == [1, 2, 1, 2, 1]
    enc, _ = encode_all(vlm, samples, FeatureConfig())
    one, two = enc[0], enc[1]
    n_image_tokens = [sum(t == image_token_id(vlm) for t in e.input_ids) for e in (one, two)]
    assert n_image_tokens[1] > n_image_tokens[0] > 0
    train, val = samples[:4], samples[4:]
    a = score(vlm, train, val, method="sparse", pairwise=True, batch_size=1).matrix
    b = score(vlm, train, val, method="sparse", pairwise=True, batch_size=4).matrix
    assert np.isfinite(a).all() and np.abs(a - b).max() / np.abs(a).max() < 1e-5


def test_vlm_training_losses_see_the_image(vlm):
    """The LoRA baselines' per-sample losses and the fine-tuning/eval NLL batch the image inputs
    too: same text, different images -> different losses."""
    from forvalue.baselines.lora import sample_losses
    from forvalue.training.evaluate import response_nll

    recs = [{"prompt": "What is the object in the image?", "response": "It is a cat", "image": png(c, shape=s)}
            for c, s in [((250, 0, 0), None), ((0, 0, 250), (255, 255, 0))]]
    enc, _ = encode_all(vlm, samples_from_records(recs, columns=Columns(image="image")).samples, FeatureConfig())
    pad = vlm.tokenizer.pad_token_id
    with torch.no_grad():
        per = sample_losses(vlm.model, enc, "response", pad, "cpu")
        sums, counts = response_nll(vlm.model, enc, "response", pad, "cpu")
    assert torch.isfinite(per).all() and abs(float(per[0] - per[1])) > 1e-6
    assert counts.tolist()[0] == counts.tolist()[1] and torch.allclose(sums / counts, per.to(sums.dtype), rtol=1e-4)
