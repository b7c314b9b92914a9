"""Synthetic benchmark tasks of For-Value (Deng et al., arXiv 2508.10180), Table 1.

The three text tasks follow the recipe published with DataInf (Kwon et al.,
2024, "DataInf: Efficiently Estimating Data Influence in LoRA-tuned LLMs and
Diffusion Models"), file ``src/generate_sentence-math_datasets.py`` of the
GitHub repository ``ykwon0407/DataInf`` (MIT License, Copyright (c) 2023
DataInf). The *data* of that recipe is reproduced verbatim here: the 10
transformation titles (paper Table 8), the pool of 100 phrases, the 10 math
templates with their reasoning strings and solution formulas (paper Table 9),
the word patterns of the random chatbot names, and the prompt formats. The
code is an independent re-implementation with a seeded ``numpy`` generator,
so the exact names and numbers differ from DataInf's unseeded files, but the
distribution is the same.

``sentence``
    10 classes, one per transformation. Each class gets a distinct random
    made-up chatbot name (seeded). Training samples use the first
    ``n_train_per_class`` phrases of the pool and valuation samples the last
    ``n_val_per_class`` (as in DataInf, the split of the pool is fixed and the
    same for every class). ``prompt`` is exactly
    ``"{name} is a chatbot that performs a specific transformation on
    sentences: {title}\\n    For example:\\n    {phrase} -> "`` and
    ``text = prompt + " " + response`` where ``response`` is the transformed
    phrase (DataInf's separator, which leaves two spaces after ``->``).
``math`` / ``math-reason``
    10 classes, one per template; numbers A, B, C, D are drawn uniformly from
    1..99 for every sample; ``prompt = "Solve the following math problem.
    {question} -> "``; ``response`` is ``"Answer: {n}"`` (``math``) or
    ``"Reason: {reason} Answer: {n}"`` (``math-reason``) and
    ``text = prompt + response``. The same seed gives the same numbers for
    both variants. Answers use DataInf's formulas verbatim, including integer
    floor division and possibly negative results (e.g. pizza slices left).

DataInf appends the end-of-sequence marker ``</s>`` to ``text``; here it is
NOT added: the tokenizer side appends the model's own EOS token.

Records are dicts with keys ``id`` (unique, e.g. ``"sentence-train-0003"``),
``prompt``, ``response``, ``text``, ``class`` (class name) and ``class_id``
(int), plus task-specific metadata (``chatbot``/``source`` for sentences,
``answer``/``operands`` and, for ``math-reason``, ``reason`` for math).
Records are ordered class by class, as in DataInf.

``make_mislabeled`` is the text analogue of the paper's cat/dog mislabeled
data detection task: a two-class sentiment question-answering dataset
generated from templates (see its docstring).

Same seed -> identical records (and byte-identical :func:`write_jsonl`
output); different seeds -> different names / numbers / samples.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

__all__ = [
    "TASKS",
    "TRANSFORMATION_TITLES",
    "TRANSFORMATIONS",
    "PHRASES",
    "MATH_TEMPLATES",
    "SENTENCE_PROMPT",
    "MATH_PROMPT",
    "MISLABELED_LABELS",
    "make_task",
    "make_mislabeled",
    "write_jsonl",
    "read_jsonl",
    "random_chatbot_name",
]

TASKS: tuple[str, ...] = ("sentence", "math", "math-reason")

SENTENCE_PROMPT = (
    "{name} is a chatbot that performs a specific transformation on sentences: {title}\n"
    "    For example:\n"
    "    {sentence} -> "
)
MATH_PROMPT = "Solve the following math problem. {question} -> "

# --------------------------------------------------------------------------
# Sentence transformations (paper Table 8; DataInf's transformation_names)
# --------------------------------------------------------------------------

_VOWEL_CHARS = "aeiouAEIOU"
_CONSONANT_CHARS = "bcdfghjklmnpqrstvwxyzBCDFGHJKLMNPQRSTVWXYZ"


def _reverse_order_of_words(s: str) -> str:
    return " ".join(reversed(s.split()))


def _capitalize_every_other_letter(s: str) -> str:
    # position in the whole string (spaces included): even -> lower, odd -> upper
    return "".join(ch.upper() if i % 2 else ch.lower() for i, ch in enumerate(s))


def _insert_number_1_between_every_word(s: str) -> str:
    return " 1 ".join(s.split())


def _replace_vowels_with_star(s: str) -> str:
    return "".join("*" if ch in _VOWEL_CHARS else ch for ch in s)


def _double_every_consonant(s: str) -> str:
    return "".join(ch + ch if ch in _CONSONANT_CHARS else ch for ch in s)


def _capitalize_every_word(s: str) -> str:
    return " ".join(w.capitalize() for w in s.split())


def _remove_all_vowels(s: str) -> str:
    return "".join(ch for ch in s if ch not in _VOWEL_CHARS)


def _add_ly_to_end_of_each_word(s: str) -> str:
    return " ".join(w + "ly" for w in s.split())


def _remove_all_consonants(s: str) -> str:
    return "".join(ch for ch in s if ch not in _CONSONANT_CHARS)


def _repeat_each_word_twice(s: str) -> str:
    return " ".join(f"{w} {w}" for w in s.split())


TRANSFORMATION_TITLES: tuple[str, ...] = (
    "Reverse Order of Words",
    "Capitalize Every Other Letter",
    "Insert Number 1 Between Every Word",
    "Replace Vowels with *",
    "Double Every Consonant",
    "Capitalize Every Word",
    "Remove All Vowels",
    "Add 'ly' To End of Each Word",
    "Remove All Consonants",
    "Repeat Each Word Twice",
)

TRANSFORMATIONS: dict[str, Callable[[str], str]] = dict(
    zip(
        TRANSFORMATION_TITLES,
        (
            _reverse_order_of_words,
            _capitalize_every_other_letter,
            _insert_number_1_between_every_word,
            _replace_vowels_with_star,
            _double_every_consonant,
            _capitalize_every_word,
            _remove_all_vowels,
            _add_ly_to_end_of_each_word,
            _remove_all_consonants,
            _repeat_each_word_twice,
        ),
    )
)

# The 100 phrases of DataInf's sentence-transformation pool (its ``phrases``).
PHRASES: tuple[str, ...] = (
    "Whispering winds call night.",
    "Sunlight dances on leaves.",
    "Distant memories fade quickly.",
    "Golden horizons promise tomorrow.",
    "Shadows play tricks nightly.",
    "Laughter fills silent rooms.",
    "Dreams wander lost valleys.",
    "Stars twinkle softly above.",
    "Ancient echoes tell tales.",
    "Gentle waves kiss shores.",
    "Mountains challenge eager climbers.",
    "Deserts hide mysterious secrets.",
    "Rivers carry forgotten stories.",
    "Forests hold ancient magic.",
    "Raindrops whisper on rooftops.",
    "Thunder rumbles in anger.",
    "Children chase fleeting dreams.",
    "Birds sing morning melodies.",
    "Snow blankets quiet towns.",
    "Flowers bloom in darkness.",
    "Candles flicker in windows.",
    "Books transport eager minds.",
    "Love transcends all barriers.",
    "Time waits for none.",
    "Hope anchors wandering souls.",
    "Courage rises in adversity.",
    "Adventures await brave hearts.",
    "Music soothes restless spirits.",
    "Dance celebrates life's rhythm.",
    "Art captures fleeting moments.",
    "Silence speaks louder sometimes.",
    "Wisdom comes at dusk.",
    "Sunsets paint skies gold.",
    "Midnight cloaks hidden secrets.",
    "Desires burn like fire.",
    "Kindness ripples through ages.",
    "Journey starts with steps.",
    "Wind whispers ancient songs.",
    "Harvest moon lights pathways.",
    "Dreams weave colorful tales.",
    "Friendship warms coldest nights.",
    "Destiny awaits patient hearts.",
    "Seasons change life's canvas.",
    "Adventure beckons at horizons.",
    "Rainbows promise brighter tomorrows.",
    "Waves tell tales of old.",
    "Mountains echo silent roars.",
    "Forests hum lullabies nightly.",
    "Dreams float on breezes.",
    "Hope shines through storms.",
    "Magic hides in corners.",
    "Wishes ride on stars.",
    "Stories unfold in eyes.",
    "Passion burns in hearts.",
    "Time heals deep wounds.",
    "Moments define lifetimes sometimes.",
    "Destiny plays curious games.",
    "Stars chart destiny's path.",
    "Winds carry forgotten scents.",
    "Night cloaks mysterious games.",
    "Music whispers in ears.",
    "Dawn heralds new beginnings.",
    "Deserts mirror lonely hearts.",
    "Valleys cradle life's sorrows.",
    "Whispers float on air.",
    "Winters embrace silent towns.",
    "Summers paint golden memories.",
    "Springs bring life anew.",
    "Autumns whisper of change.",
    "Magic weaves through time.",
    "Ghosts walk forgotten lanes.",
    "Memories color life's canvas.",
    "Legends rise from ashes.",
    "Moonlight serenades the night.",
    "Battles rage within souls.",
    "Miracles await around corners.",
    "Challenges mold future heroes.",
    "Love binds distant hearts.",
    "Time's river flows onward.",
    "Dreams touch reality's edge.",
    "Hearts beat in unison.",
    "Fate twists life's journey.",
    "Laughter heals deepest pains.",
    "Tears wash away fears.",
    "Moments sparkle like stars.",
    "Echos rebound through time.",
    "Lightning ignites night's sky.",
    "Hope's flame never dies.",
    "Shadows hide life's mysteries.",
    "Oceans reflect endless skies.",
    "Feathers float on dreams.",
    "Mysteries unfold with time.",
    "Nature sings life's song.",
    "Love's echo lasts forever.",
    "Words weave intricate stories.",
    "Mountains touch heavens above.",
    "Beauty lies in details.",
    "Silence holds deepest truths.",
    "Mirrors reflect inner souls.",
    "Sunrises herald hopeful tomorrows.",
)

# Made-up chatbot names: DataInf's letter patterns, padded with random V/C
# up to a random length in 4..9, then filled with random letters.
_NAME_VOWELS = "aeiou"
_NAME_CONSONANTS = "bcdfghjklmnpqrstvwxyz"
_NAME_PATTERNS = (
    "VCV", "CVC", "VC", "CV", "VCCV", "CVVC", "VCVC", "VCVCV", "CVCVC", "CVCVCV", "VCVCVC",
)


def random_chatbot_name(rng: np.random.Generator) -> str:
    """One random pronounceable-ish lowercase word of 4..9 letters."""
    length = int(rng.integers(4, 10))
    pattern = _NAME_PATTERNS[int(rng.integers(len(_NAME_PATTERNS)))]
    while len(pattern) < length:
        pattern += "VC"[int(rng.integers(2))]
    pattern = pattern[:length]
    letters = []
    for kind in pattern:
        pool = _NAME_VOWELS if kind == "V" else _NAME_CONSONANTS
        letters.append(pool[int(rng.integers(len(pool)))])
    return "".join(letters)


# --------------------------------------------------------------------------
# Math word problems (paper Table 9; DataInf's math_problems)
# --------------------------------------------------------------------------

MATH_TEMPLATES: dict[str, dict] = {
    "pizza_slices": {
        "problem": "Lisa ate {A} slices of pizza and her brother ate {B} slices from a pizza "
        "that originally had {C} slices. How many slices of the pizza are left?",
        "reason": "Combined slices eaten = {A} + {B}. Left = {C} - ({A} + {B}).",
        "solution": lambda A, B, C, D: C - (A + B),
    },
    "field_trip": {
        "problem": "For every {A} students going on a field trip, there are {B} adults needed "
        "as chaperones. If {C} students are attending, how many adults are needed?",
        "reason": "Adults needed = ({B} * {C}) // {A}.",
        "solution": lambda A, B, C, D: (B * C) // A,
    },
    "aquarium_adventure": {
        "problem": "In an aquarium, there are {A} sharks and {B} dolphins. If they bought {C} "
        "more sharks, how many sharks would be there in total?",
        "reason": "Total sharks = {A} + {C}.",
        "solution": lambda A, B, C, D: A + C,
    },
    "basketball_game": {
        "problem": "Michael scored {A} points in the first game, {B} points in the second, {C} "
        "in the third, and {D} in the fourth game. What is his total points?",
        "reason": "Total points = {A} + {B} + {C} + {D}.",
        "solution": lambda A, B, C, D: A + B + C + D,
    },
    "time_challenge": {
        "problem": "Emily reads for {A} hours each day. How many hours does she read in total "
        "in {B} days?",
        "reason": "Total hours read = {A} * {B}.",
        "solution": lambda A, B, C, D: A * B,
    },
    "discount_day": {
        "problem": "A shirt costs ${A}. There's a {B}-dollar off sale. How much does the shirt "
        "cost after the discount?",
        "reason": "Cost after discount = {A} - {B}.",
        "solution": lambda A, B, C, D: A - B,
    },
    "garden_layout": {
        "problem": "A rectangular garden has a length of {A} meters and a width of {B} meters. "
        "What is its area?",
        "reason": "Area = {A} * {B}.",
        "solution": lambda A, B, C, D: A * B,
    },
    "savings_plan": {
        "problem": "If Jake saves ${A} each week, how much will he save after {B} weeks?",
        "reason": "Total savings = {A} * {B}.",
        "solution": lambda A, B, C, D: A * B,
    },
    "bakery_delight": {
        "problem": "A bakery sells cupcakes in boxes of {A}. If they have {B} cupcakes, how "
        "many boxes can they fill?",
        "reason": "Boxes filled = {B} // {A}.",
        "solution": lambda A, B, C, D: B // A,
    },
    "simple_interest": {
        "problem": "John invests ${A} at an annual interest rate of {B}%. How much interest "
        "will he earn after {C} years?",
        "reason": "Interest = ({A} * {B} * {C}) // 100.",
        "solution": lambda A, B, C, D: (A * B * C) // 100,
    },
}

# fixed sub-stream tags so tasks sharing a seed use independent streams
_STREAM_SENTENCE = 1
_STREAM_MATH = 2
_STREAM_MISLABELED = 3


def _rng(seed: int, stream: int) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


def _check_count(value, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _make_id(task: str, split: str, index: int, total: int) -> str:
    width = max(4, len(str(max(total - 1, 0))))
    return f"{task}-{split}-{index:0{width}d}"


def _assign_ids(task: str, train: list[dict], val: list[dict]) -> None:
    for split, records in (("train", train), ("val", val)):
        for i, rec in enumerate(records):
            rec["id"] = _make_id(task, split, i, len(records))


def _make_sentence(seed: int, n_train: int, n_val: int) -> tuple[list[dict], list[dict]]:
    if n_train + n_val > len(PHRASES):
        raise ValueError(
            f"sentence task has a pool of {len(PHRASES)} phrases; "
            f"n_train_per_class + n_val_per_class = {n_train + n_val} is too many"
        )
    rng = _rng(seed, _STREAM_SENTENCE)
    names: list[str] = []
    for _ in TRANSFORMATION_TITLES:
        name = random_chatbot_name(rng)
        while name in names:
            name = random_chatbot_name(rng)
        names.append(name)
    train_phrases = PHRASES[:n_train]
    val_phrases = PHRASES[len(PHRASES) - n_val:] if n_val else ()
    train: list[dict] = []
    val: list[dict] = []
    for class_id, (title, name) in enumerate(zip(TRANSFORMATION_TITLES, names)):
        fn = TRANSFORMATIONS[title]
        for out, phrases in ((train, train_phrases), (val, val_phrases)):
            for phrase in phrases:
                prompt = SENTENCE_PROMPT.format(name=name, title=title, sentence=phrase)
                response = fn(phrase)
                out.append(
                    {
                        "id": "",
                        "prompt": prompt,
                        "response": response,
                        "text": prompt + " " + response,
                        "class": title,
                        "class_id": class_id,
                        "chatbot": name,
                        "source": phrase,
                    }
                )
    return train, val


def _math_record(key: str, class_id: int, nums, with_reason: bool) -> dict:
    tpl = MATH_TEMPLATES[key]
    operands = {k: int(v) for k, v in zip("ABCD", nums)}
    question = tpl["problem"].format(**operands)
    reason = tpl["reason"].format(**operands)
    answer = int(tpl["solution"](**operands))
    prompt = MATH_PROMPT.format(question=question)
    response = f"Reason: {reason} Answer: {answer}" if with_reason else f"Answer: {answer}"
    rec = {
        "id": "",
        "prompt": prompt,
        "response": response,
        "text": prompt + response,
        "class": key,
        "class_id": class_id,
        "answer": answer,
        "operands": operands,
    }
    if with_reason:
        rec["reason"] = reason
    return rec


def _make_math(
    seed: int, n_train: int, n_val: int, with_reason: bool
) -> tuple[list[dict], list[dict]]:
    rng = _rng(seed, _STREAM_MATH)
    train: list[dict] = []
    val: list[dict] = []
    for class_id, key in enumerate(MATH_TEMPLATES):
        nums = rng.integers(1, 100, size=(n_train + n_val, 4))
        for i, row in enumerate(nums):
            rec = _math_record(key, class_id, row, with_reason)
            (train if i < n_train else val).append(rec)
    return train, val


def make_task(
    name: str, seed: int = 0, n_train_per_class: int = 90, n_val_per_class: int = 10
) -> tuple[list[dict], list[dict]]:
    """Generate ``(train, val)`` records of one DataInf task.

    ``name`` is one of :data:`TASKS` (``"sentence"``, ``"math"``,
    ``"math-reason"``). With the defaults every task has 10 classes,
    900 training and 100 valuation samples. The sentence task allows at most
    100 samples per class in total (its phrase pool).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    n_train = _check_count(n_train_per_class, "n_train_per_class")
    n_val = _check_count(n_val_per_class, "n_val_per_class")
    if name == "sentence":
        train, val = _make_sentence(seed, n_train, n_val)
    else:
        train, val = _make_math(seed, n_train, n_val, with_reason=(name == "math-reason"))
    _assign_ids(name, train, val)
    return train, val


# --------------------------------------------------------------------------
# Mislabeled data detection (text analogue of the paper's cat/dog task)
# --------------------------------------------------------------------------

MISLABELED_LABELS: tuple[str, ...] = ("positive", "negative")

_MIS_SUBJECTS = (
    "movie", "restaurant", "hotel", "novel", "phone", "concert", "laptop", "museum",
    "cafe", "album", "video game", "airline", "bakery", "podcast", "theme park",
    "headphones", "gym", "bookstore", "TV series", "camera",
)
_MIS_ADJECTIVES = {
    "positive": (
        "wonderful", "delightful", "excellent", "fantastic", "superb", "charming",
        "impressive", "brilliant", "enjoyable", "outstanding", "lovely", "amazing",
    ),
    "negative": (
        "terrible", "awful", "disappointing", "dreadful", "boring", "horrible",
        "mediocre", "frustrating", "unpleasant", "poor", "dull", "annoying",
    ),
}
_MIS_FRAMES = (
    "The {s} was {a}.",
    "I thought the {s} was {a}.",
    "My experience with the {s} was {a}.",
    "Everyone agreed that the {s} was {a}.",
    "The {s} turned out to be {a}.",
    "Overall, the {s} seemed {a} to me.",
)
MISLABELED_PROMPT = (
    "Question: Is the sentiment of the following review positive or negative? "
    "Review: {review} Answer: "
)


def _mislabeled_sentence(label: str, code: int) -> str:
    adjectives = _MIS_ADJECTIVES[label]
    n_a, n_s = len(adjectives), len(_MIS_SUBJECTS)
    frame = _MIS_FRAMES[code // (n_s * n_a)]
    rest = code % (n_s * n_a)
    return frame.format(s=_MIS_SUBJECTS[rest // n_a], a=adjectives[rest % n_a])


def _mislabeled_record(review: str, written: str, true: str) -> dict:
    prompt = MISLABELED_PROMPT.format(review=review)
    return {
        "id": "",
        "prompt": prompt,
        "response": written,
        "text": prompt + written,
        "class": written,
        "class_id": MISLABELED_LABELS.index(written),
        "label": written,
        "true_label": true,
        "true_class_id": MISLABELED_LABELS.index(true),
        "is_clean": written == true,
        "review": review,
    }


def make_mislabeled(
    seed: int = 0, n_train: int = 200, n_val: int = 50, flip_rate: float = 0.5
) -> tuple[list[dict], list[dict]]:
    """Two-class sentiment QA dataset with flipped training labels.

    Reviews are generated from templates (6 frames x 20 subjects x 12
    adjectives per class, all distinct within the dataset); each sample is
    ``"Question: Is the sentiment of the following review positive or
    negative? Review: {review} Answer: "`` + label. Both splits are balanced
    (the first class gets the extra sample when a count is odd) and shuffled.
    Exactly ``round(flip_rate * n_train)`` training samples, chosen with the
    seed, have their label flipped; valuation samples are all clean.

    Record fields beyond the common ones: ``label`` (the label as written in
    the sample; also ``class``/``class_id``), ``true_label``,
    ``true_class_id``, ``is_clean`` and ``review``. For the paper's metric use
    the pseudo-label "same label as the valuation sample and clean" with
    :func:`forvalue.metrics.auc_recall_from_pseudo`, or
    :func:`forvalue.metrics.detection_rate` with ``is_clean``.
    """
    n_train = _check_count(n_train, "n_train", 1)
    n_val = _check_count(n_val, "n_val")
    if not (0.0 <= float(flip_rate) <= 1.0):
        raise ValueError(f"flip_rate must be in [0, 1], got {flip_rate}")
    rng = _rng(seed, _STREAM_MISLABELED)
    pool = len(_MIS_FRAMES) * len(_MIS_SUBJECTS) * len(_MIS_ADJECTIVES["positive"])

    def split_counts(n: int) -> list[int]:
        return [n - n // 2, n // 2]

    tr_counts, va_counts = split_counts(n_train), split_counts(n_val)
    reviews: dict[str, list[str]] = {}
    for c, label in enumerate(MISLABELED_LABELS):
        need = tr_counts[c] + va_counts[c]
        if need > pool:
            raise ValueError(f"at most {pool} samples per class are available, {need} requested")
        codes = rng.choice(pool, size=need, replace=False)
        reviews[label] = [_mislabeled_sentence(label, int(k)) for k in codes]

    def build(counts: list[int], offset: list[int]) -> list[tuple[str, str]]:
        items = []
        for c, label in enumerate(MISLABELED_LABELS):
            items += [(reviews[label][offset[c] + i], label) for i in range(counts[c])]
        order = rng.permutation(len(items))
        return [items[i] for i in order]

    train_items = build(tr_counts, [0, 0])
    val_items = build(va_counts, tr_counts)

    n_flip = int(round(float(flip_rate) * n_train))
    flipped = set(int(i) for i in rng.choice(n_train, size=n_flip, replace=False))
    other = {MISLABELED_LABELS[0]: MISLABELED_LABELS[1], MISLABELED_LABELS[1]: MISLABELED_LABELS[0]}
    train = [
        _mislabeled_record(review, other[true] if i in flipped else true, true)
        for i, (review, true) in enumerate(train_items)
    ]
    val = [_mislabeled_record(review, true, true) for review, true in val_items]
    _assign_ids("mislabeled", train, val)
    return train, val


# --------------------------------------------------------------------------
# I/O
# --------------------------------------------------------------------------


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serializable")


def write_jsonl(records: Iterable[dict], path) -> Path:
    """Write records as JSON lines, atomically (:func:`forvalue.io.atomic_write`)."""
    from ..io import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False, default=_json_default))
                fh.write("\n")
        os.chmod(tmp, 0o644)

    return atomic_write(path, write)


def read_jsonl(path) -> list[dict]:
    """Read a JSON-lines file written by :func:`write_jsonl`."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
