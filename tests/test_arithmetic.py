"""The arithmetic check (forvalue/valuation/arithmetic.py): statements it can parse are judged, false
ones counted; statements cut out of a sentence, algebra, times and ranges are not judged; it is
computed with the features, stored beside them, and drops a falsified result in curation."""

import math
from dataclasses import replace

import numpy as np
import pytest

from forvalue.valuation.arithmetic import arithmetic_errors, statements
from forvalue.curation.consistency import CheckLimits, inputs_of, rank_checked, run_checks
from forvalue.data.samples import samples_from_records
from forvalue.valuation.features import FeatureConfig, extract_sparse


@pytest.mark.parametrize("text, judged", [
    ("The average is 4 because 16 / 4 = 4\n#### 4", [("16 / 4 = 4", True)]),
    ("The average is 4 because 16 / 4 = 8\n#### 8", [("16 / 4 = 8", False)]),
    # chains, read one "=" at a time, the next step an expression or a number
    ("4 + 4 = 8 + 2 = 10 apples", [("4 + 4 = 8", True), ("8 + 2 = 10", True)]),
    ("Mandy paid 1/3 * 30 = 30 / 3 = $10.", [("1/3 * 30 = 30 / 3", True), ("30 / 3 = 10", True)]),
    ("38390 - (19392 + 11078) = 38390 -  30470 = 7920.",
     [("38390 - ( 19392 + 11078 ) = 38390 - 30470", True), ("38390 - 30470 = 7920", True)]),
    # money, thousands, percentages, x for times, a fraction without spaces, a unary minus
    ("She makes 350 * $1.50 = $525 and $12,000 + $16,000 = $28,000.",
     [("350 * $1.50 = 525", True), ("$12,000 + $16,000 = 28,000", True)]),
    ("100% - 80% = 20% of the class; 20% * 50 = 10 pupils", [("100% - 80% = 20%", True), ("20% * 50 = 10", True)]),
    ("8 x 2 = 16 sets, 25 / 1/3 = 75;\n-5 + 3 = -2", [("8 x 2 = 16", True), ("25 / 1/3 = 75", True),
                                                       ("- 5 + 3 = -2", True)]),
    # integer counts rounded either way, decimals to their places
    ("10 / 3 = 4 buses; 100 / 3 = 33.3 each; 22 / 7 = 3.2", [("10 / 3 = 4", True), ("100 / 3 = 33.3", True),
                                                             ("22 / 7 = 3.2", False)]),
    # an answer stated right after its expression
    ("Reason: Left = 35 - (39 + 48). Answer: -52", [("35 - ( 39 + 48 ) -> answer -52", True)]),
    ("Reason: Left = 35 - (39 + 48). Answer: -53", [("35 - ( 39 + 48 ) -> answer -53", False)]),
    ("Reason: Adults needed = (72 * 62) // 97. Answer: 46", [("( 72 * 62 ) // 97 -> answer 46", True)]),
])
def test_statements_it_can_parse_are_judged(text, judged):
    assert statements(text) == judged
    assert arithmetic_errors(text) == sum(not ok for _, ok in judged)


@pytest.mark.parametrize("text", [
    "Hello there, no numbers here.",
    "2 * 50 photos = 100 photos",                        # a unit inside the expression
    "100 photos + 50 + 130 = 280 photos",                # cut out of a sentence: starts with an operator
    "the week - 5 + 3 = 11 days",                        # a minus that continues the sentence
    "The new edition has 2x - 230 = 450 pages",          # algebra
    "the sun sets at 6:00+48=6:48 PM",                   # a time
    "There are 1591 voters in Districts 1 - 3.\n#### 1591",   # a range before the answer, not its expression
    "2^3 * 2 = 16",                                      # cut out of a longer formula
    "x = 5 and Total = 12",                              # no operator
])
def test_what_it_cannot_parse_is_not_judged(text):
    assert statements(text) == [] and math.isnan(arithmetic_errors(text))


def test_the_check_is_stored_with_the_features_and_drops_a_false_result(tiny_lm64, tmp_path):
    """Computed in the extraction run when the checks are on (NaN where nothing is checkable), kept
    in a stored shard, thresholded on the valuation set: a false statement fails when every
    valuation sample's arithmetic holds; the reason says how many statements do not hold."""
    from forvalue.store.shard_format import read_files, write_files

    responses = ["3 + 4 = 7 apples.", "3 + 4 = 8 apples.", "Hello there!", "5 * 6 = 30 and 30 - 1 = 28, 28 + 2 = 31"]
    train = samples_from_records([{"prompt": f"Q{i}?", "response": r} for i, r in enumerate(responses)]).samples
    val = samples_from_records([{"prompt": "Sum?", "response": "2 + 2 = 4"}, {"prompt": "Hi", "response": "Hi!"}],
                               source="val").samples
    cfg = FeatureConfig()
    tf = extract_sparse(tiny_lm64, train, cfg, grounding=True)
    vf = extract_sparse(tiny_lm64, val, cfg, grounding=True)
    np.testing.assert_array_equal(tf.arith_errors, [0, 1, np.nan, 2])
    assert extract_sparse(tiny_lm64, train, cfg).arith_errors is None    # checks off: not computed
    files = write_files(tmp_path, "a1", tf, {}, arrow=True)
    np.testing.assert_array_equal(read_files(tmp_path, {k: v.name for k, v in files.items()}).arith_errors,
                                  tf.arith_errors)
    checked = run_checks(inputs_of(tf), inputs_of(vf), ("arithmetic",))
    (res,) = checked.results
    assert res.threshold == 0 and list(np.flatnonzero(res.failed)) == [1, 3] and res.summary()["not_judged"] == 1
    assert checked.reasons()[1] == "arithmetic: 1 statement that does not hold > 0 (the valuation set's maximum)"
    assert checked.reasons()[3].startswith("arithmetic: 2 statements that do not hold")
    recs = {r["sample_id"]: r["reason"] for r in checked.records(tf.sample_ids, train)}
    assert recs[train[3].sample_id] == ("arithmetic: 2 statements that do not hold > 0 (the valuation set's maximum): "
                                        "30 - 1 = 28; 28 + 2 = 31")
    ranking = rank_checked(tf, vf, "raw-mean", checks=("arithmetic",))
    assert set(ranking.order[:2]) == {0, 2}
    # a valuation set whose own arithmetic has one error per sample lets one error pass
    loose = run_checks(inputs_of(tf), inputs_of(replace(vf, arith_errors=np.array([1.0, np.nan]))), ("arithmetic",))
    assert list(np.flatnonzero(loose.failed)) == [3]
    # a valuation set that writes no arithmetic: the check cannot set a limit and says so
    with pytest.raises(ValueError, match="arithmetic: no valuation sample has a value"):
        run_checks(inputs_of(tf), inputs_of(replace(vf, arith_errors=np.array([np.nan, np.nan]))), ("arithmetic",))
    assert CheckLimits().arithmetic == 1.0


def test_features_stored_before_the_check_get_it_from_the_text(tiny_lm64):
    """Features without the check's values (stored before it existed) are judged from the samples'
    text when the samples are at hand (Valuator.select, rank with samples); without them the check
    is not applied and says why."""
    from forvalue.valuator import Valuator

    responses = ["3 + 4 = 7 apples.", "3 + 4 = 8 apples.", "2 * 5 = 10", "9 - 1 = 8"]
    train = samples_from_records([{"prompt": f"Q{i}?", "response": r} for i, r in enumerate(responses)]).samples
    val = samples_from_records([{"prompt": "Sum?", "response": "2 + 2 = 4"}], source="val").samples
    v = Valuator(tiny_lm64, FeatureConfig())
    tf, vf = (replace(v.featurize(s).features, arith_errors=None) for s in (train, val))
    ranking = v.rank(tf, vf, "raw-mean", samples=(train, val))
    assert ranking.checks.summary()["arithmetic"]["failed"] == 1 and ranking.order[-1] == 1
    with pytest.warns(RuntimeWarning, match="consistency check arithmetic not applied: the features carry no values"):
        bare = v.rank(tf, vf, "raw-mean")
    assert bare.info["checks"]["arithmetic"].startswith("not applied")


def test_curate_drops_false_arithmetic_and_says_which_statement(tiny_model_dir, tmp_path, capsys):
    """`forvalue curate`: the terminal line counts what the arithmetic check dropped against the
    valuation set's limit; no sample with a false statement is kept; the dropped file quotes it."""
    import json

    from forvalue.cli import main

    good = [f"{a} + {b} = {a + b} apples, then {a + b} * 2 = {2 * (a + b)}." for a, b in zip(range(1, 11), range(5, 15))]
    bad = {"t3": "4 + 5 = 9 apples, then 9 * 2 = 19.", "t7": "16 / 4 = 8, so 8 in all."}
    rows = [{"id": f"t{i}", "prompt": f"Problem {i}?", "response": bad.get(f"t{i}", r)} for i, r in enumerate(good)]
    val = [{"id": f"v{i}", "prompt": f"Question {i}?", "response": f"{i} * 3 = {3 * i} in all."} for i in range(1, 5)]
    for name, data in (("t.jsonl", rows), ("v.jsonl", val)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in data))
    out, dropped = tmp_path / "kept.jsonl", tmp_path / "dropped.jsonl"
    assert main(["curate", "--train", str(tmp_path / "t.jsonl"), "--val", str(tmp_path / "v.jsonl"), "--model",
                 str(tiny_model_dir), "--top-k", "5", "--out", str(out), "--dropped", str(dropped), "--no-store",
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "arithmetic check dropped 2 of 10 (value > 0, the valuation set's maximum)" in printed
    kept = {json.loads(x)["id"] for x in out.read_text().splitlines()}
    drops = {json.loads(x)["id"]: json.loads(x) for x in dropped.read_text().splitlines()}
    assert len(kept) == 5 and not kept & set(bad) and set(bad) <= set(drops)
    # a false statement is the reason given, before any model check the sample also failed
    for i, statement in {"t3": "9 * 2 = 19", "t7": "16 / 4 = 8"}.items():
        assert drops[i]["check"] == "arithmetic"
        assert drops[i]["reason"] == ("arithmetic: 1 statement that does not hold > 0 (the valuation set's maximum): "
                                      + statement)


def test_the_text_judged_is_the_response():
    """The check reads what the sample answers with: the response, the last chat message (its text
    parts for a multimodal one), or a plain text."""
    from forvalue.data.samples import Sample
    from forvalue.valuation.features import response_text

    chat = Sample("c", messages=[{"role": "user", "content": "2 + 2 = 5?"}, {"role": "assistant", "content": "2 + 2 = 4"}])
    parts = Sample("m", messages=[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Sum?"}]},
                                  {"role": "assistant", "content": [{"type": "text", "text": "3 * 3 = 10"}]}])
    assert [response_text(s) for s in (chat, parts)] == ["2 + 2 = 4", "3 * 3 = 10"]
    assert [arithmetic_errors(response_text(s)) for s in (chat, parts)] == [0, 1]
    assert response_text(Sample("t", text="7 - 2 = 5")) == "7 - 2 = 5"
    assert response_text(Sample("p", prompt="1 + 1 = 3?", response="No.")) == "No."
