"""VLM feature extraction memory: peak RSS against the size of the dataset's image inputs.

Encoded VLM samples keep only the shapes of their image inputs; the pixel tensors are rebuilt
when a sample's batch runs. This script extracts sparse features of ``--n`` image samples on a
tiny random Qwen2-VL with Qwen2-VL's patch size 14 (so the model itself is small and the pixels dominate) and prints:

- the bytes all image inputs of the dataset would take at once (from the recorded shapes);
- the growth of the process's peak RSS during encoding + extraction, as ForValue does it;
- the same with every sample's image inputs built up front and held (the eager way), in the
  same process afterwards, and the ratio of the two.

    python benchmarks/vlm_memory_bench.py --n 1000 --image-size 224
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: KiB


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="image samples")
    p.add_argument("--image-size", type=int, default=224, help="side of the generated square images (pixels)")
    p.add_argument("--patch-size", type=int, default=14, help="ViT patch size (Qwen2-VL's is 14)")
    p.add_argument("--batch-size", type=int, default=8)
    args = p.parse_args()

    import numpy as np
    from PIL import Image

    from forvalue.data.samples import Columns, samples_from_records
    from forvalue.valuation.features import FeatureConfig, encode_all, extract_sparse
    from forvalue.models.loading import from_objects
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))   # the random test models
    from tiny import build_tiny_qwen2vl

    side = args.image_size
    model, processor = build_tiny_qwen2vl(None, seed=0, patch_size=args.patch_size, max_pixels=side * side)
    lm = from_objects(model, processor.tokenizer, name="tiny-qwen2vl", processor=processor)
    rng = np.random.default_rng(0)
    records = []
    for i in range(args.n):
        img = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
        buf = io.BytesIO()
        img.save(buf, "PNG")
        records.append({"prompt": "Describe the image.", "response": f"Noise pattern number {i}.",
                        "image": buf.getvalue()})
    samples = samples_from_records(records, columns=Columns(image="image")).samples
    config = FeatureConfig()
    base = peak_rss_bytes()
    t0 = time.perf_counter()
    encoded, _ = encode_all(lm, samples, config)
    feats = extract_sparse(lm, samples, config, batch_size=args.batch_size, encoded=encoded)
    seconds = time.perf_counter() - t0
    growth = peak_rss_bytes() - base
    pixel_bytes = sum(int(np.prod(shape)) * 4 for e in encoded for shape in e.extra_shapes.values())
    features_bytes = feats.vectors.nbytes + feats.token_ids.nbytes + feats.emb.nbytes
    # the same extraction with every sample's image inputs built up front and held (the eager way)
    t1 = time.perf_counter()
    for e in encoded:
        e.extra = e.inputs()
    eager = extract_sparse(lm, samples, config, batch_size=args.batch_size, encoded=encoded)
    eager_seconds = time.perf_counter() - t1
    eager_growth = peak_rss_bytes() - base
    same = np.allclose(eager.vectors, feats.vectors, rtol=1e-5, atol=1e-6)
    print(f"samples {args.n}, images {side}x{side}, {len(feats.token_ids)} sparse rows; "
          f"per-batch {seconds:.1f} s, held {eager_seconds:.1f} s; same features: {same}")
    print("| quantity | MiB |")
    print("|---|---:|")
    print(f"| image inputs of the whole dataset (fp32, from the recorded shapes) | {pixel_bytes / 2**20:.0f} |")
    print(f"| peak RSS growth, image inputs rebuilt per batch (ForValue) | {growth / 2**20:.0f} |")
    print(f"| peak RSS growth, image inputs built up front and held | {eager_growth / 2**20:.0f} |")
    print(f"| stored sparse features | {features_bytes / 2**20:.0f} |")
    print(f"ratio peak growth per-batch / held: {growth / eager_growth:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
