"""Synthetic VLM benchmarks generated with Pillow (no download), after the paper's VLM experiments.

``vlm-style``: drawings of several subjects in several styles, each (subject, style) a class; the
caption names both ("A striped drawing of a triangle."). 3 training samples per class, the rest
valuation; the paper's AUC and recall (same class = pseudo-label 1).

``vlm-mislabeled``: the cat/dog task with drawn objects: two classes of images, "What is the object
in the image?" -> "It is a {label}", 50% of training labels flipped; pseudo-label 1 when the
training sample has the valuation sample's label and is clean.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np

SUBJECTS = ("circle", "square", "triangle", "cross", "star", "ring")
STYLES = ("solid", "outline", "striped", "dotted")


def draw(subject: str, style: str, rng: np.random.Generator, size: int = 64) -> bytes:
    """One PNG: ``subject`` drawn in ``style`` with seeded jitter of colour, position and size."""
    from PIL import Image, ImageDraw

    bg = tuple(int(x) for x in rng.integers(200, 256, 3))
    fg = tuple(int(x) for x in rng.integers(0, 120, 3))
    img = Image.new("RGB", (size, size), bg)
    canvas = ImageDraw.Draw(img)
    r = size * rng.uniform(0.25, 0.38)
    cx, cy = size / 2 + rng.uniform(-4, 4), size / 2 + rng.uniform(-4, 4)
    box = [cx - r, cy - r, cx + r, cy + r]
    width = max(2, size // 16)

    def shape(d, fill, outline):
        if subject == "circle":
            d.ellipse(box, fill=fill, outline=outline, width=width)
        elif subject == "square":
            d.rectangle(box, fill=fill, outline=outline, width=width)
        elif subject == "triangle":
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill, outline=outline, width=width)
        elif subject == "cross":
            t = r / 3
            d.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill or outline)
            d.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill or outline)
        elif subject == "star":
            pts = [(cx + (r if i % 2 == 0 else r / 2.5) * math.sin(i * math.pi / 5),
                    cy - (r if i % 2 == 0 else r / 2.5) * math.cos(i * math.pi / 5)) for i in range(10)]
            d.polygon(pts, fill=fill, outline=outline, width=width)
        elif subject == "ring":
            d.ellipse(box, outline=fill or outline, width=max(3, int(r / 3)))
        else:
            raise ValueError(f"unknown subject {subject!r}")

    if style == "solid":
        shape(canvas, fg, None)
    elif style == "outline":
        shape(canvas, None, fg)
    elif style in ("striped", "dotted"):
        mask = Image.new("L", (size, size), 0)
        shape(ImageDraw.Draw(mask), 255, None)
        pattern = Image.new("RGB", (size, size), bg)
        pd = ImageDraw.Draw(pattern)
        if style == "striped":
            for x in range(-size, size * 2, 6):
                pd.line([(x, 0), (x + size, size)], fill=fg, width=2)
        else:
            for x in range(2, size, 6):
                for y in range(2, size, 6):
                    pd.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=fg)
        img.paste(pattern, (0, 0), mask)
    else:
        raise ValueError(f"unknown style {style!r}")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def make_vlm_style(seed: int = 0, n_subjects: int = 3, n_styles: int = 2, n_train_per_class: int = 3,
                   n_val_per_class: int = 2, size: int = 64) -> tuple[list[dict], list[dict]]:
    """Records with ``prompt``, ``response`` (caption), ``image`` (PNG bytes), ``class``, ``class_id``."""
    if not 1 <= n_subjects <= len(SUBJECTS) or not 1 <= n_styles <= len(STYLES):
        raise ValueError(f"n_subjects <= {len(SUBJECTS)} and n_styles <= {len(STYLES)}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 61]))
    train, val = [], []
    classes = [(s, st) for s in SUBJECTS[:n_subjects] for st in STYLES[:n_styles]]
    for cid, (subject, style) in enumerate(classes):
        for j in range(n_train_per_class + n_val_per_class):
            rec = {"prompt": "Describe the drawing.", "response": f"A {style} drawing of a {subject}.",
                   "image": draw(subject, style, rng, size), "class": f"{style} {subject}", "class_id": cid}
            split = train if j < n_train_per_class else val
            rec["id"] = f"vlm-style-{'train' if split is train else 'val'}-{len(split):04d}"
            split.append(rec)
    return train, val


def make_vlm_mislabeled(seed: int = 0, n_train: int = 40, n_val: int = 10, flip_rate: float = 0.5,
                        classes: Sequence[str] = ("circle", "square"), size: int = 64):
    """Two classes of drawn objects; exactly round(flip_rate * n_train) training labels flipped."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 62]))
    a, b = classes

    def rec(i, split, true):
        style = STYLES[int(rng.integers(0, 2))]
        return {"id": f"vlm-mislabeled-{split}-{i:04d}", "prompt": "What is the object in the image?",
                "image": draw(true, style, rng, size), "true_label": true}

    train = [rec(i, "train", a if i % 2 == 0 else b) for i in range(n_train)]
    val = [rec(i, "val", a if i % 2 == 0 else b) for i in range(n_val)]
    flip = set(rng.choice(n_train, size=int(round(flip_rate * n_train)), replace=False).tolist())
    for i, r in enumerate(train):
        r["label"] = (b if r["true_label"] == a else a) if i in flip else r["true_label"]
        r["is_clean"] = i not in flip
    for r in val:
        r["label"], r["is_clean"] = r["true_label"], True
    for r in train + val:
        r["response"] = f"It is a {r['label']}"
    return train, val


# ----------------------------------------------------------------------------- runners
def _bench_data(name, train, val, positions, k, r, seed):
    from ..data.samples import Columns, samples_from_records
    from ..valuation.features import FeatureConfig
    from .runner import BenchData

    cols = Columns(image="image")
    return BenchData(name=name, train=samples_from_records(train, source=f"{name}:train", columns=cols).samples,
                     val=samples_from_records(val, source=f"{name}:val", columns=cols).samples,
                     train_records=train, val_records=val,
                     config=FeatureConfig(positions=positions, k=k, r=r, seed=seed))


def run_vlm_style(model, *, methods=("sparse", "exact", "emb"), seed: int = 0, positions: str = "response",
                  n_subjects: int = 3, n_styles: int = 2, n_val_per_class: int = 2, batch_size: int = 4,
                  k: int = 8, r: int | None = 64, device: str = "auto", dtype: str = "auto",
                  progress: bool = False) -> list[dict]:
    from ..metrics import auc_recall
    from .runner import _row, resolve_model, value_matrices

    lm = resolve_model(model, device=device, dtype=dtype)
    train, val = make_vlm_style(seed, n_subjects, n_styles, 3, n_val_per_class)
    data = _bench_data("vlm-style", train, val, positions, k, r, seed)
    mats = value_matrices(lm, data, list(methods), batch_size=batch_size, progress=progress)
    y_t = np.array([x["class_id"] for x in train])
    y_v = np.array([x["class_id"] for x in val])
    return [_row(m, auc_recall(res["matrix"], y_t, y_v), res) for m, res in mats.items()]


def run_vlm_mislabeled(model, *, methods=("sparse", "exact", "emb"), seed: int = 0, positions: str = "response",
                       n_train: int = 40, n_val: int = 10, flip_rate: float = 0.5, batch_size: int = 4,
                       k: int = 8, r: int | None = 64, device: str = "auto", dtype: str = "auto",
                       progress: bool = False) -> list[dict]:
    from ..metrics import auc_recall_from_pseudo, detection_rate, roc_auc
    from .runner import _row, resolve_model, value_matrices

    lm = resolve_model(model, device=device, dtype=dtype)
    train, val = make_vlm_mislabeled(seed, n_train, n_val, flip_rate)
    data = _bench_data("vlm-mislabeled", train, val, positions, k, r, seed)
    mats = value_matrices(lm, data, list(methods), batch_size=batch_size, progress=progress)
    clean = np.array([x["is_clean"] for x in train])
    pseudo = np.array([[t["label"] == v["label"] and t["is_clean"] for t in train] for v in val], dtype=int)
    rows = []
    for m, res in mats.items():
        values = res["matrix"].mean(0)
        rows.append(_row(m, auc_recall_from_pseudo(res["matrix"], pseudo), res,
                         clean_auc=roc_auc(values, clean.astype(int)),
                         clean_in_top_half=detection_rate(values, clean, top_frac=0.5)))
    return rows
