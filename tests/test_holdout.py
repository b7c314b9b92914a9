"""The evaluation-set rules (forvalue/data/holdout.py): a hash split that depends on content ids only,
evaluation files minus what the selection saw, and the warnings users get."""

import random

import pytest

from forvalue.data.samples import samples_from_records
from forvalue.data.holdout import MIN_PART, from_file, from_valuation, held_out, part_warnings, split


def ids(n, prefix="s"):
    return [f"{prefix}{i:05d}" for i in range(n)]


def test_split_depends_on_each_id_only():
    pool = ids(2000)
    out = held_out(pool, 20.0)
    assert 0.17 < len(out) / len(pool) < 0.23                       # about the asked share
    shuffled = pool[:]
    random.Random(0).shuffle(shuffled)
    assert held_out(shuffled, 20.0) == out                           # order does not matter
    assert held_out(pool[:500], 20.0) == out & set(pool[:500])       # a new version keeps every old sample's part
    assert held_out(pool, 50.0) >= out                               # a larger share only adds samples
    sel, ev = split(pool, 20.0)
    assert set(ev) == out and sorted(sel + ev) == pool
    assert sel == [i for i in pool if i not in out]                  # each part keeps the given order


def test_small_sets_keep_both_parts_non_empty():
    assert held_out([], 20.0) == set() and held_out(["a"], 20.0) == set()
    for n in (2, 3, 5):
        sel, ev = split(ids(n), 20.0)
        assert len(sel) >= 1 and len(ev) >= 1
    sel, ev = split(ids(4), 99.0)
    assert len(sel) == 1 and len(ev) == 3
    assert split(ids(10), 0.0) == (ids(10), [])
    with pytest.raises(ValueError, match="percentage in \\[0, 100\\), not 100"):
        held_out(ids(3), 100.0)


def test_part_warnings():
    assert part_warnings(MIN_PART, MIN_PART) == []
    (w,) = part_warnings(100, 3)
    assert "evaluation part holds 3 samples" in w
    assert len(part_warnings(5, 1)) == 2


def samples(n, start=0):
    return samples_from_records([{"prompt": f"q{i}", "response": f"a{i}"} for i in range(start, start + n)]).samples


def test_valuation_set_hold_out_or_whole():
    val = samples(40)
    ev = from_valuation(val, name="v1", version="ver", holdout=25.0)
    expect = held_out([s.sample_id for s in val], 25.0)
    assert ev.source == "holdout" and {s.sample_id for s in ev.samples} == expect
    assert ev.n_selection == 40 - len(expect) and not ev.seen_by_selection
    assert ev.params() == {"eval_source": "holdout", "eval_set": "v1", "eval_version": "ver", "eval_holdout": 25.0,
                           "n_eval": len(expect), "n_eval_removed": 0, "eval_seen_by_selection": False}
    whole = from_valuation(val, name="v1", version="ver")
    assert whole.source == "valuation" and whole.seen_by_selection and len(whole.samples) == 40
    assert "which chose the subset" in whole.warnings[0]
    assert "it chose the subset, so its losses favour it" in whole.describe()


def test_evaluation_file_minus_what_the_selection_saw():
    val, other = samples(5), samples(30, start=100)
    ev = from_file(other + val[:2], name="/data/eval.jsonl", version="h", seen_ids=[s.sample_id for s in val])
    assert [s.sample_id for s in ev.samples] == [s.sample_id for s in other] and ev.n_removed == 2
    assert ev.describe() == "evaluation file /data/eval.jsonl (30 samples, 2 samples also in the valuation set left out)"
    assert any("2 samples of /data/eval.jsonl are also in the valuation set" in w for w in ev.warnings)
    small = from_file(other[:3], name="e", version="h")
    assert small.n_removed == 0 and "3 usable samples" in small.warnings[0]
    with pytest.raises(ValueError, match="every one of its 2 samples is in the valuation set"):
        from_file(val[:2], name="e", version="h", seen_ids=[s.sample_id for s in val])
