import collections
import re

import pytest

from forvalue.benchmarks.noise import NOISE_TOKENS, inject_noise, make_noise_corpus
from forvalue.benchmarks.tasks import (
    MATH_TEMPLATES,
    PHRASES,
    TASKS,
    TRANSFORMATION_TITLES,
    TRANSFORMATIONS,
    make_mislabeled,
    make_task,
    read_jsonl,
    write_jsonl,
)

SENTENCE_RE = re.compile(
    r"^(?P<name>[a-z]+) is a chatbot that performs a specific transformation on sentences: "
    r"(?P<title>.+)\n    For example:\n    (?P<sentence>.+) -> $"
)
MATH_RE = re.compile(r"^Solve the following math problem\. (?P<q>.+) -> $")


@pytest.fixture(scope="module")
def all_tasks():
    return {name: make_task(name, seed=0) for name in TASKS}


def test_tasks_listing():
    assert set(TASKS) == {"sentence", "math", "math-reason"}
    assert len(TRANSFORMATION_TITLES) == 10 and len(MATH_TEMPLATES) == 10
    assert len(PHRASES) == 100 and len(set(PHRASES)) == 100


@pytest.mark.parametrize("name", TASKS)
def test_balanced_and_unique_ids(all_tasks, name):
    train, val = all_tasks[name]
    assert len(train) == 900 and len(val) == 100
    for records, per_class in ((train, 90), (val, 10)):
        counts = collections.Counter(r["class_id"] for r in records)
        assert sorted(counts) == list(range(10))
        assert set(counts.values()) == {per_class}
        # class name <-> class id is a bijection
        pairs = {(r["class"], r["class_id"]) for r in records}
        assert len(pairs) == 10 and len({c for c, _ in pairs}) == 10
    ids = [r["id"] for r in train + val]
    assert len(set(ids)) == len(ids) == 1000
    assert train[3]["id"] == f"{name}-train-0003"
    assert val[0]["id"] == f"{name}-val-0000"
    for r in train + val:
        assert {"id", "prompt", "response", "text", "class", "class_id"} <= set(r)
        assert "</s>" not in r["text"]


@pytest.mark.parametrize("name", TASKS)
def test_deterministic_and_seed_dependent(all_tasks, name, tmp_path):
    again = make_task(name, seed=0)
    assert again == all_tasks[name]
    p1, p2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_jsonl(all_tasks[name][0], p1)
    write_jsonl(again[0], p2)
    assert p1.read_bytes() == p2.read_bytes()
    other = make_task(name, seed=1)
    assert [r["text"] for r in other[0]] != [r["text"] for r in again[0]]


def test_sentence_format_and_transformations(all_tasks):
    train, val = all_tasks["sentence"]
    names_by_class = collections.defaultdict(set)
    for r in train + val:
        m = SENTENCE_RE.match(r["prompt"])
        assert m, r["prompt"]
        assert m["title"] == r["class"] == TRANSFORMATION_TITLES[r["class_id"]]
        assert m["sentence"] == r["source"]
        assert r["prompt"] == (
            f"{r['chatbot']} is a chatbot that performs a specific transformation on sentences: "
            f"{r['class']}\n    For example:\n    {r['source']} -> "
        )
        assert r["response"] == TRANSFORMATIONS[r["class"]](r["source"])
        assert r["text"] == r["prompt"] + " " + r["response"]
        names_by_class[r["class_id"]].add(r["chatbot"])
    # one distinct chatbot name per class
    assert all(len(v) == 1 for v in names_by_class.values())
    assert len({next(iter(v)) for v in names_by_class.values()}) == 10
    # DataInf split: first 90 phrases train, last 10 valuation, for every class
    assert {r["source"] for r in train} == set(PHRASES[:90])
    assert {r["source"] for r in val} == set(PHRASES[90:])


def test_transformations_on_known_input():
    s = "Hope shines through storms."
    expected = {
        "Reverse Order of Words": "storms. through shines Hope",
        "Capitalize Every Other Letter": "hOpE ShInEs tHrOuGh sToRmS.",
        "Insert Number 1 Between Every Word": "Hope 1 shines 1 through 1 storms.",
        "Replace Vowels with *": "H*p* sh*n*s thr**gh st*rms.",
        "Double Every Consonant": "HHoppe sshhinness tthhrrougghh ssttorrmmss.",
        "Capitalize Every Word": "Hope Shines Through Storms.",
        "Remove All Vowels": "Hp shns thrgh strms.",
        "Add 'ly' To End of Each Word": "Hopely shinesly throughly storms.ly",
        "Remove All Consonants": "oe ie ou o.",
        "Repeat Each Word Twice": "Hope Hope shines shines through through storms. storms.",
    }
    assert set(expected) == set(TRANSFORMATION_TITLES)
    for title, out in expected.items():
        assert TRANSFORMATIONS[title](s) == out


def _ints(question):
    return [int(x) for x in re.findall(r"\d+", question)]


SOLVERS = {
    "pizza_slices": lambda a, b, c: c - (a + b),
    "field_trip": lambda a, b, c: (b * c) // a,
    "aquarium_adventure": lambda a, b, c: a + c,
    "basketball_game": lambda a, b, c, d: a + b + c + d,
    "time_challenge": lambda a, b: a * b,
    "garden_layout": lambda a, b: a * b,
    "savings_plan": lambda a, b: a * b,
    "bakery_delight": lambda a, b: b // a,
    "discount_day": lambda a, b: a - b,
    "simple_interest": lambda a, b, c: (a * b * c) // 100,
}


@pytest.mark.parametrize("name", ["math", "math-reason"])
def test_math_answers_consistent_with_question(all_tasks, name):
    train, val = all_tasks[name]
    assert set(SOLVERS) == set(MATH_TEMPLATES)
    for r in train + val:
        m = MATH_RE.match(r["prompt"])
        assert m, r["prompt"]
        nums = _ints(m["q"])
        assert all(1 <= x <= 99 for x in nums)
        n = SOLVERS[r["class"]](*nums)
        if name == "math":
            assert r["response"] == f"Answer: {n}"
        else:
            assert r["response"].startswith("Reason: ")
            assert r["response"].endswith(f" Answer: {n}")
            assert r["response"] == f"Reason: {r['reason']} Answer: {n}"
        assert r["answer"] == n
        assert r["text"] == r["prompt"] + r["response"]


def test_math_variants_share_numbers(all_tasks):
    a, b = all_tasks["math"][0], all_tasks["math-reason"][0]
    assert [r["prompt"] for r in a] == [r["prompt"] for r in b]


def test_custom_sizes_and_errors():
    train, val = make_task("math", seed=3, n_train_per_class=5, n_val_per_class=2)
    assert len(train) == 50 and len(val) == 20
    with pytest.raises(ValueError, match="pool"):
        make_task("sentence", n_train_per_class=95, n_val_per_class=10)
    with pytest.raises(ValueError, match="unknown task"):
        make_task("poetry")
    with pytest.raises(ValueError):
        make_task("math", seed=-1)


def test_write_jsonl_atomic_roundtrip(tmp_path):
    train, _ = make_task("math", n_train_per_class=2, n_val_per_class=0)
    path = tmp_path / "sub" / "train.jsonl"
    path.parent.mkdir()
    path.write_text("old content\n")
    write_jsonl(train, path)
    assert read_jsonl(path) == train
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.jsonl"]


# ----------------------------------------------------------------- mislabeled


def test_mislabeled_flips_exactly_half():
    train, val = make_mislabeled(seed=0, n_train=200, n_val=50)
    assert len(train) == 200 and len(val) == 50
    dirty = [r for r in train if not r["is_clean"]]
    assert len(dirty) == 100
    for r in train + val:
        assert r["is_clean"] == (r["label"] == r["true_label"])
        assert r["class"] == r["label"] and r["response"] == r["label"]
        assert r["text"] == r["prompt"] + r["label"]
        assert r["text"].startswith("Question: ") and "Answer: " in r["text"]
        assert r["review"] in r["prompt"]
    assert all(r["is_clean"] for r in val)
    true_counts = collections.Counter(r["true_label"] for r in train)
    assert true_counts == {"positive": 100, "negative": 100}
    reviews = [r["review"] for r in train + val]
    assert len(set(reviews)) == len(reviews)
    ids = [r["id"] for r in train + val]
    assert len(set(ids)) == len(ids)


def test_mislabeled_deterministic_and_rates():
    assert make_mislabeled(seed=4) == make_mislabeled(seed=4)
    assert make_mislabeled(seed=4) != make_mislabeled(seed=5)
    train, _ = make_mislabeled(seed=1, n_train=7, n_val=3, flip_rate=0.3)
    assert sum(not r["is_clean"] for r in train) == round(0.3 * 7)
    train, _ = make_mislabeled(seed=1, n_train=10, n_val=2, flip_rate=0.0)
    assert all(r["is_clean"] for r in train)


# ----------------------------------------------------------------- noise


def _words(s):
    return s.split()


def test_inject_noise_exact_rate_and_kinds():
    train, _ = make_task("math-reason", seed=0, n_train_per_class=10, n_val_per_class=0)
    snapshot = [dict(r) for r in train]
    noisy = inject_noise(train, rate=0.4, seed=0)
    assert train == snapshot  # input untouched
    assert len(noisy) == 100
    corrupted = [(o, n) for o, n in zip(train, noisy) if n["noise"] != "none"]
    assert len(corrupted) == 40
    assert sum(not n["is_clean"] for n in noisy) == 40
    kinds = collections.Counter(n["noise"] for _, n in corrupted)
    assert set(kinds) == {"deletion", "insertion"}
    for o, n in zip(train, noisy):
        if n["noise"] == "none":
            assert n == {**o, "noise": "none", "is_clean": True}
            continue
        assert n["response"] != o["response"]
        assert n["original_response"] == o["response"]
        assert n["text"] == n["prompt"] + n["response"]
        ow, nw = _words(o["response"]), _words(n["response"])
        if n["noise"] == "deletion":
            assert len(nw) < len(ow) and len(nw) >= 1
            remaining = collections.Counter(ow)
            remaining.subtract(nw)
            assert all(v >= 0 for v in remaining.values())  # only removals
            assert sorted(remaining.elements()) == sorted(n["noise_tokens"])
        else:
            assert len(nw) > len(ow)
            added = collections.Counter(nw)
            added.subtract(ow)
            assert all(v >= 0 for v in added.values())
            assert set(added.elements()) <= set(NOISE_TOKENS)
            assert sorted(added.elements()) == sorted(n["noise_tokens"])


def test_inject_noise_deterministic_and_prompt_field():
    train, _ = make_task("sentence", seed=0, n_train_per_class=5, n_val_per_class=0)
    a = inject_noise(train, rate=0.4, seed=3, field="prompt")
    assert a == inject_noise(train, rate=0.4, seed=3, field="prompt")
    assert a != inject_noise(train, rate=0.4, seed=4, field="prompt")
    assert sum(r["noise"] != "none" for r in a) == 20
    for r in a:
        assert r["text"] == r["prompt"] + " " + r["response"]
    # a one-word field cannot lose a word: it gets an insertion instead
    one = inject_noise([{"response": "yes"}] * 4, rate=1.0, seed=0)
    assert all(r["noise"] == "insertion" for r in one)
    with pytest.raises(ValueError):
        inject_noise(train, rate=1.5)
    with pytest.raises(ValueError):
        inject_noise([{"prompt": "x"}], field="response")


def test_make_noise_corpus():
    train, val = make_noise_corpus(seed=0, n_train=105, n_val=20)
    assert len(train) == 105 and len(val) == 20
    assert sum(r["noise"] != "none" for r in train) == round(0.4 * 105)
    assert all(r["is_clean"] and r["noise"] == "none" for r in val)
    counts = collections.Counter(r["class_id"] for r in train)
    assert sorted(counts.values()) == [10] * 5 + [11] * 5
    ids = [r["id"] for r in train + val]
    assert len(set(ids)) == len(ids) and train[0]["id"] == "noise-train-0000"
    assert make_noise_corpus(seed=0, n_train=105, n_val=20) == (train, val)
    assert make_noise_corpus(seed=1, n_train=105, n_val=20) != (train, val)
