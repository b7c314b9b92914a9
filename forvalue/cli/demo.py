"""``forvalue demo``: value the bundled demo dataset and print the top and bottom samples."""

from __future__ import annotations

from . import options as o
from .score import METHOD_CHOICES


def register(sub, parents) -> None:
    p = sub.add_parser("demo", parents=parents, help="value the bundled demo dataset and print the top and bottom samples")
    p.add_argument("--method", choices=METHOD_CHOICES, default="sparse")
    p.add_argument("--top", type=int, default=5)
    o.add_model_options(p)
    o.add_feature_options(p)
    p.set_defaults(func=run)


def _short(s, width: int = 90) -> str:
    text = s.response if s.response is not None else (s.text or s.messages[-1]["content"])
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def run(args) -> int:
    from ..data.samples import load_samples
    from ..demo import demo_paths
    from ..valuation.scoring import normalize_method, rank
    from ..valuator import Valuator

    method = normalize_method(args.method)
    train_path, val_path = demo_paths()
    train = load_samples(train_path).samples
    val = load_samples(val_path).samples
    v = Valuator(*o.checked_configs(args))
    result = v.score(train, val, method=method, progress=not args.quiet)
    ranks = rank(result.values)
    order = sorted(range(len(train)), key=lambda i: ranks[i])
    print(f"For-Value ({method}) of {len(train)} training samples against {len(val)} valuation samples")
    print(f"model {v.lm.fingerprint.id}, {result.seconds:.1f}s\n")

    def show(title, idx):
        print(title)
        print(f"{'rank':>4}  {'score':>10}  {'quality':<18}  response")
        for i in idx:
            q = train[i].record.get("quality", "")
            print(f"{ranks[i]:>4}  {result.values[i]:>10.3f}  {q:<18}  {_short(train[i])}")
        print()

    n = min(args.top, len(train))
    show(f"Top {n} (most valuable):", order[:n])
    show(f"Bottom {n} (least valuable):", order[-n:])
    return 0
