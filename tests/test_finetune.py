"""Fine-tuning and evaluation on a tiny model: response-token loss, subsets, accuracy on a hand-made
set with known answers, saved outputs, the command line and its errors."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from forvalue.data.samples import DataError, samples_from_records
from forvalue.training.evaluate import (EvalConfig, evaluate, evaluate_accuracy, evaluate_loss, last_number,
                                        parse_extractor, reference_answer, response_nll)
from forvalue.valuation.features import FeatureConfig, encode_all
from forvalue.training.finetune import (FinetuneError, TrainConfig, finetune, load_finetuned, select_subset,
                                        subset_size)
from forvalue.models.loading import from_objects, load_model, state_dict_hash
from tiny import build_tiny_text_model


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- extractors
def test_extractors():
    ex = parse_extractor("last-number")
    assert ex("Reason: 97 + 9 = 106. Left = 29 - 106. Answer: -77") == "-77"
    assert ex("It costs 1,000.0 dollars") == "1000" and ex("ratio 2.50") == "2.5"
    assert ex("no digits here") is None and ex("") is None
    assert ex.reference(-77) == "-77" and ex.reference("5.0") == "5"
    rx = parse_extractor(r"regex:label: (\w+)")
    assert rx("label: cat, then label: dog.") == "dog" and rx("nothing") is None
    assert parse_extractor("regex:[A-D]")("B or C") == "C"
    assert parse_extractor("exact")("  Paris \n") == "Paris"
    assert parse_extractor(lambda t: t[:2])("hello") == "he"
    with pytest.raises(ValueError, match="unknown extractor"):
        parse_extractor("first-word")
    with pytest.raises(ValueError, match="invalid regular expression"):
        parse_extractor("regex:(")
    s_field, s_resp = samples_from_records([{"prompt": "q", "response": "Answer: 4", "answer": 7},
                                            {"prompt": "q", "response": "Answer: 4"}]).samples
    assert reference_answer(s_field, ex) == "7" and reference_answer(s_resp, ex) == "4"
    assert last_number("-0") == "0"


# ----------------------------------------------------------------------------- subsets
def test_select_subset():
    values = np.array([0.5, 3.0, -1.0, 2.0, 0.0, 1.0])
    assert select_subset(6, "top", values=values, k=2).tolist() == [1, 3]
    assert select_subset(6, "bottom", values=values, k=2).tolist() == [2, 4]
    assert select_subset(6, "top", values=values, p=50).tolist() == [1, 3, 5]
    assert select_subset(6, "full").tolist() == list(range(6))
    r1, r2 = select_subset(6, "random", k=3, seed=7), select_subset(6, "random", k=3, seed=7)
    assert r1.tolist() == r2.tolist() and len(set(r1.tolist())) == 3
    assert any(select_subset(6, "random", k=3, seed=s).tolist() != r1.tolist() for s in range(8, 14))
    assert subset_size(900, p=5) == 45 and subset_size(10, k=50) == 10 and subset_size(10, p=10) == 1
    with pytest.raises(FinetuneError, match="p 1% keeps no sample of the 10"):     # as curate: 0.1 rounds to 0
        subset_size(10, p=1)
    with pytest.raises(FinetuneError, match="k 0 keeps no sample"):
        subset_size(10, k=0)
    with pytest.raises(FinetuneError, match="percentage"):
        subset_size(10, p=150)
    with pytest.raises(FinetuneError, match="needs For-Value scores"):
        select_subset(6, "top", k=2)
    with pytest.raises(FinetuneError, match="strategy must be one of"):
        select_subset(6, "best", values=values, k=2)
    with pytest.raises(FinetuneError, match="exactly one of k"):
        select_subset(6, "random")
    with pytest.raises(FinetuneError, match="keeps no sample"):
        select_subset(6, "top", values=values, p=0)
    with pytest.raises(FinetuneError, match="method must be"):
        TrainConfig(method="qlora")


# ----------------------------------------------------------------------------- loss masking
def test_loss_is_on_exactly_the_tokens_forvalue_scores(tiny_lm):
    """response_nll == the HF causal-LM loss with labels masked outside Encoded.target_range."""
    import torch

    from forvalue.data.samples import Columns

    samples = samples_from_records([
        {"prompt": "What is 2 plus 3?", "response": "It is 5."},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"}]},
    ]).samples + samples_from_records([{"text": "plain text counts every token"}], columns=Columns(text="text")).samples
    enc, _ = encode_all(tiny_lm, samples, FeatureConfig(positions="response"))
    with torch.no_grad():
        sums, counts = response_nll(tiny_lm.model, enc, "response", tiny_lm.tokenizer.pad_token_id, tiny_lm.device)
        for b, e in enumerate(enc):
            start, end = e.target_range("response")
            ids = torch.tensor([e.input_ids])
            labels = torch.full_like(ids, -100)
            labels[0, start:end] = ids[0, start:end]
            ref = tiny_lm.model(input_ids=ids, labels=labels).loss
            assert counts[b] == end - start
            assert float(sums[b] / counts[b]) == pytest.approx(float(ref), rel=1e-5)
    # the chat-templated prompt is not trained on: the first target is the response's first token
    e0 = enc[0]
    start, _ = e0.target_range("response")
    assert tiny_lm.tokenizer.decode(e0.input_ids[start:start + 5]) == "It is"
    loss = evaluate_loss(tiny_lm, samples)
    assert loss.n_tokens == int(counts.sum()) and loss.perplexity == pytest.approx(math.exp(loss.loss))


def test_chunked_loss_is_the_plain_loss(tiny_lm):
    """The loss and its gradient computed a few positions at a time (each chunk's logits recomputed in
    the backward pass) equal one cross-entropy over the whole batch's full-vocabulary logits."""
    import torch

    from forvalue.training.evaluate import _causal_lm, chunked_nll
    from forvalue.valuation.features import base_model_of, collate, lm_head_of, targets

    samples = samples_from_records([{"prompt": f"What is {i} plus {i}?", "response": f"It is {2 * i}, I think."}
                                    for i in range(3)]).samples
    enc, _ = encode_all(tiny_lm, samples, FeatureConfig(positions="response"))
    model, pad = tiny_lm.model, tiny_lm.tokenizer.pad_token_id
    params = [p for p in model.parameters()]

    def plain():
        tg = targets(enc, "response")
        h = base_model_of(model)(**collate(enc, pad, tiny_lm.device, torch.float32), use_cache=False).last_hidden_state
        b_idx, t_idx, y = tg.tensors(h.device)
        logits = lm_head_of(_causal_lm(model))(h[b_idx, t_idx]).float()          # [positions, vocabulary] at once
        nll = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        return torch.zeros(len(enc)).index_add_(0, b_idx, nll), logits.shape[0]

    def grads(loss):
        model.zero_grad(set_to_none=True)
        loss.backward()
        out = [p.grad.clone() for p in params]
        model.zero_grad(set_to_none=True)
        return out

    with torch.enable_grad():
        want, n = plain()
        want_grads = grads(want.sum())
        for chunk in (1, 3, n - 1, n + 5):
            got, counts = response_nll(model, enc, "response", pad, tiny_lm.device, chunk=chunk)
            assert counts.sum() == n and torch.allclose(got, want.detach(), rtol=0, atol=1e-5), chunk
            for g, w in zip(grads(got.sum()), want_grads):         # float32 sums in another order
                assert float((g - w).abs().max()) <= 1e-5 * max(1.0, float(w.abs().max())), chunk
    assert n > 3 and chunked_nll(lm_head_of(model), torch.zeros(0, 16), torch.zeros(0, dtype=torch.long)).shape == (0,)
    with torch.no_grad():                                         # evaluation: no graph, the same numbers
        got, _ = response_nll(model, enc, "response", pad, tiny_lm.device, chunk=2)
    assert torch.allclose(got, want.detach(), atol=1e-5)


def test_progress_reports_and_step_metrics(tiny_lm, tmp_path):
    train = samples_from_records(KNOWN).samples
    seen = []
    res = finetune(tiny_lm, train, out_dir=tmp_path / "ad", config=TrainConfig(steps=7, batch_size=2),
                   run_name="probe", log_every=3, on_progress=seen.append)
    assert [p.step for p in seen] == [1, 3, 6, 7] and {p.steps for p in seen} == {7}
    assert seen[1].line().startswith("probe: step 3/7 loss ") and "tokens/s" in seen[1].line()
    assert [p.loss for p in seen] == [res.history[s - 1]["train_loss"] for s in (1, 3, 6, 7)]
    elapsed = [h["elapsed_s"] for h in res.history]
    assert elapsed == sorted(elapsed) and all(h["tokens_per_s"] > 0 for h in res.history)
    # the process's peak memory: per step, when training ended, and at the end of the run
    assert 0 < res.history[0]["peak_rss_mb"] <= res.metrics["train_peak_rss_mb"] <= res.metrics["peak_rss_mb"]


def test_gradient_checkpointing_trains_the_same_numbers(tiny_lm, tmp_path, monkeypatch):
    from transformers.models.llama.modeling_llama import LlamaMLP

    calls = []   # the MLP of a decoder layer runs again when its checkpointed layer is recomputed
    real = LlamaMLP.forward
    monkeypatch.setattr(LlamaMLP, "forward", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    train = samples_from_records(KNOWN).samples
    runs = {}
    for on in (True, False):
        calls.clear()
        cfg = TrainConfig(steps=3, batch_size=2, gradient_checkpointing=on, lora_targets="q_proj,v_proj")
        res = finetune(tiny_lm, train, out_dir=tmp_path / f"ad-{on}", config=cfg)
        runs[on] = ([h["train_loss"] for h in res.history], len(calls), res.params["gradient_checkpointing"])
    (with_losses, with_calls, p_on), (without_losses, without_calls, p_off) = runs[True], runs[False]
    assert with_losses == pytest.approx(without_losses, rel=1e-6) and (p_on, p_off) == (True, False)
    assert with_calls == 2 * without_calls > 0      # each layer's forward runs again in the backward pass


# ----------------------------------------------------------------------------- accuracy
KNOWN = [{"id": "a", "prompt": "2+3?", "response": "5", "answer": 5},
         {"id": "b", "prompt": "4+4?", "response": "8", "answer": 8},
         {"id": "c", "prompt": "9-7?", "response": "2", "answer": 2},
         {"id": "d", "prompt": "3*3?", "response": "9", "answer": 9}]


@pytest.fixture(scope="module")
def memorized(tmp_path_factory):
    """A tiny model fully fine-tuned until it answers the hand-made set from memory."""
    import torch

    torch.set_num_threads(1)
    model, tok = build_tiny_text_model(None, seed=0)
    base = from_objects(model, tok, name="tiny-mem")
    before = state_dict_hash(base.model)
    out = tmp_path_factory.mktemp("mem") / "model"
    res = finetune(base, samples_from_records(KNOWN).samples, out_dir=out,
                   config=TrainConfig(method="full", steps=60, batch_size=4, lr=1e-2, schedule="constant"))
    assert state_dict_hash(base.model) == before  # the caller's model is untouched
    return base, out, res


def test_accuracy_on_a_hand_made_set_with_known_answers(memorized):
    base, out, res = memorized
    assert res.history[-1]["train_loss"] < 0.05 < res.history[0]["train_loss"]
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".bin", ".pt", ".pkl")) == []
    ft = load_model(str(out), device="cpu")  # a full fine-tune is a plain model folder
    samples = samples_from_records(KNOWN).samples
    acc = evaluate_accuracy(ft, samples, max_new_tokens=4)
    assert (acc.accuracy, acc.n_correct, acc.n) == (1.0, 4, 4)
    assert [p["prediction"] for p in acc.predictions] == ["5", "8", "2", "9"]
    assert [p["generated"] for p in acc.predictions] == ["5", "8", "2", "9"]

    # a wrong reference answer and a reference taken from the response text
    wrong = [dict(r) for r in KNOWN]
    wrong[0]["answer"] = 6
    del wrong[1]["answer"]
    wrong[1]["response"] = "The sum is 8"
    acc = evaluate_accuracy(ft, samples_from_records(wrong).samples, max_new_tokens=4)
    assert acc.accuracy == 0.75 and [p["correct"] for p in acc.predictions] == [False, True, True, True]
    assert acc.predictions[0]["reference"] == "6" and acc.predictions[0]["prediction"] == "5"

    # a configurable extractor for user tasks
    words = [{"prompt": r["prompt"], "response": r["response"], "label": f"n{r['answer']}"} for r in KNOWN]
    acc = evaluate_accuracy(ft, samples_from_records(words).samples, extractor=r"regex:(\d)", answer_field=None,
                            max_new_tokens=4)
    assert acc.accuracy == 1.0
    acc = evaluate_accuracy(ft, samples_from_records(words).samples, extractor="exact", answer_field="label",
                            max_new_tokens=4)
    assert acc.accuracy == 0.0 and acc.predictions[0]["reference"] == "n5"

    # the base model does not know the answers; evaluate() gives loss, perplexity and accuracy together
    before = evaluate(base, samples, EvalConfig(max_new_tokens=4))
    after = evaluate(ft, samples, EvalConfig(max_new_tokens=4, accuracy_limit=2))
    assert before.metrics["accuracy"] < 1.0 and after.metrics["n_eval"] == 2
    assert after.metrics["val_loss"] < before.metrics["val_loss"] / 10


def test_accuracy_errors_name_file_row_and_field(memorized):
    base = memorized[0]
    from forvalue.data.samples import Columns

    text = samples_from_records([{"text": "just text 3"}], source="plain.jsonl", columns=Columns(text="text")).samples
    with pytest.raises(DataError, match=r"plain.jsonl, row 1, field 'text': plain-text samples have no prompt"):
        evaluate_accuracy(base, text)
    noans = samples_from_records([{"prompt": "2+3?", "response": "five"}], source="v.jsonl").samples
    with pytest.raises(DataError, match=r"v.jsonl, row 1, field 'response': no reference answer"):
        evaluate_accuracy(base, noans)


# ----------------------------------------------------------------------------- LoRA outputs
def test_lora_adapter_is_safetensors_and_reloads(tiny_lm, tmp_path):
    train = samples_from_records(KNOWN).samples
    before = state_dict_hash(tiny_lm.model)
    cfg = TrainConfig(steps=3, batch_size=2, seed=3, lora_targets="q_proj,v_proj")
    res = finetune(tiny_lm, train, out_dir=tmp_path / "ad", config=cfg, val=train)
    assert state_dict_hash(tiny_lm.model) == before
    files = {p.name for p in (tmp_path / "ad").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "forvalue_finetune.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]
    meta = json.loads((tmp_path / "ad" / "forvalue_finetune.json").read_text())
    assert meta["base_fingerprint"]["id"] == tiny_lm.fingerprint.id and meta["config"]["lora_targets"] == "q_proj,v_proj"
    assert meta["subset"]["digest"] == res.subset_digest and meta["mlflow_run_id"] is None
    assert res.params["trainable_params"] < sum(p.numel() for p in tiny_lm.model.parameters()) / 5
    # same seed, same run
    again = finetune(tiny_lm, train, out_dir=tmp_path / "ad2", config=cfg)
    assert [h["train_loss"] for h in again.history] == [h["train_loss"] for h in res.history]
    # reloaded (merged into a fresh base) it gives the valuation loss measured right after training
    lm = load_finetuned(tmp_path / "ad")
    assert lm.fingerprint.id != tiny_lm.fingerprint.id and "+lora-" in lm.fingerprint.name
    assert evaluate_loss(lm, train).loss == pytest.approx(res.metrics["val_loss"], rel=1e-5)
    # refuses a pickled adapter and an occupied output folder
    (tmp_path / "ad" / "adapter_model.safetensors").rename(tmp_path / "ad" / "adapter_model.bin")
    with pytest.raises(FinetuneError, match="pickled adapter weights are not loaded"):
        load_finetuned(tmp_path / "ad")
    with pytest.raises(FinetuneError, match="exists and is not empty"):
        finetune(tiny_lm, train, out_dir=tmp_path / "ad2", config=cfg)
    with pytest.raises(FinetuneError, match="no training samples"):
        finetune(tiny_lm, [], out_dir=tmp_path / "ad3")


def test_lora_last_layers_only(tiny_lm, tmp_path):
    res = finetune(tiny_lm, samples_from_records(KNOWN).samples, out_dir=tmp_path / "ad",
                   config=TrainConfig(steps=1, batch_size=2, lora_layers=1))
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert cfg["layers_to_transform"] == [1]
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert res.params["lora_layers"] == 1


# ----------------------------------------------------------------------------- command line
def test_cli_finetune_and_eval(tiny_model_dir, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from forvalue.cli import main as forvalue_main
    from forvalue.cli import main

    train = [{"id": f"t{i}", "prompt": f"What is {i} plus {i}?", "response": f"It is {2 * i}.", "answer": 2 * i}
             for i in range(8)]
    val = [{"id": f"v{i}", "prompt": f"What is {i} plus {i}?", "response": f"It is {2 * i}.", "answer": 2 * i}
           for i in range(20, 23)]
    for name, rows in (("train", train), ("val", val)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    t, v = str(tmp_path / "train.jsonl"), str(tmp_path / "val.jsonl")
    model = str(tiny_model_dir)
    assert forvalue_main(["score", "--train", t, "--val", v, "--model", model, "--out", str(tmp_path / "s.parquet"),
                          "--quiet"]) == 0
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--model", model, "--tracking-uri", uri, "--quiet", "--threads", "1"]
    assert main(["finetune", "--train", t, "--subset-scores", str(tmp_path / "s.parquet"), "--top-p", "50",
                 "--strategy", "raw-mean", "--val", v, "--out", str(tmp_path / "ft"), "--steps", "2",
                 "--batch-size", "2", "--accuracy", "--max-new-tokens", "4", *common]) == 0
    cap = capsys.readouterr()
    out = cap.out
    assert "on 4 of 8 samples (top, raw-mean)" in out and "accuracy" in out
    # --val is the valuation set that scored the subset: evaluated whole, marked and warned about
    assert f"evaluated on valuation set {Path(v).resolve()} (3 samples; it chose the subset" in out
    assert "warning: evaluated on valuation set" in cap.err and "flattered" in cap.err
    client = MlflowClient(tracking_uri=uri)
    (ft_run,) = client.search_runs([client.get_experiment_by_name("forvalue-finetune").experiment_id],
                                   "tags.`forvalue.run_kind` = 'finetune'")
    assert (ft_run.data.params["strategy"], ft_run.data.params["k"], ft_run.data.params["subset_p"]) == ("top", "4", "50.0")
    assert (ft_run.data.params["eval_source"], ft_run.data.params["eval_seen_by_selection"]) == ("valuation", "True")
    import pyarrow.parquet as pq

    top_ids = [r["sample_id"] for r in pq.read_table(tmp_path / "s.parquet").to_pylist()[:4]]
    sample_ids = json.loads(open(client.download_artifacts(ft_run.info.run_id, "subset/sample_ids.json",
                                                           str(tmp_path / "dl"))).read())["sample_ids"]
    assert sample_ids == top_ids

    assert main(["eval", "--adapter", str(tmp_path / "ft"), "--data", v, "--max-new-tokens", "4",
                 "--out", str(tmp_path / "pred.jsonl"), "--tracking-uri", uri, "--quiet", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 samples" in out and f"child of fine-tune run {ft_run.info.run_id}" in out
    preds = [json.loads(x) for x in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert [p["reference"] for p in preds] == ["40", "42", "44"]

    # --eval: held-out data; its sample that is also in the valuation set is left out, and counted
    held = [{"id": f"e{i}", "prompt": f"What is {i} plus {i}?", "response": f"It is {2 * i}."} for i in range(50, 53)]
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held + val[:1]))
    assert main(["finetune", "--train", t, "--subset-scores", str(tmp_path / "s.parquet"), "--top-p", "50",
                 "--strategy", "raw-mean", "--eval", str(tmp_path / "eval.jsonl"), "--out", str(tmp_path / "ft2"),
                 "--steps", "1", *common]) == 0
    cap = capsys.readouterr()
    assert (f"evaluated on evaluation file {(tmp_path / 'eval.jsonl').resolve()} (3 samples, 1 sample also in the "
            f"valuation set left out): loss") in cap.out
    assert "1 sample of" in cap.err and "left out of the evaluation" in cap.err
    runs = client.search_runs([client.get_experiment_by_name("forvalue-finetune").experiment_id],
                              "params.eval_source = 'file'")
    assert [(r.data.params["n_eval"], r.data.params["n_eval_removed"]) for r in runs] == [("3", "1")]
    with pytest.raises(SystemExit, match="every one of its 3 samples is in the valuation set"):
        main(["finetune", "--train", t, "--subset-scores", str(tmp_path / "s.parquet"), "--top-k", "2",
              "--strategy", "raw-mean", "--eval", v, "--out", str(tmp_path / "z"), "--no-track", *common[:2]])

    # random subsets need no scores; bad requests are one clear line each
    assert main(["finetune", "--train", t, "--part", "random", "--subset-size", "3", "--seed", "2", "--out",
                 str(tmp_path / "rnd"), "--steps", "1", "--no-track", *common[:2], "--quiet"]) == 0
    assert "on 3 of 8 samples (random, seed 2)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="needs --subset-scores"):
        main(["finetune", "--train", t, "--bottom-p", "10", "--out", str(tmp_path / "x"), "--no-track"])
    (tmp_path / "bad.jsonl").write_text(json.dumps({"sample_id": "abc", "score": "high"}) + "\n")
    assert main(["finetune", "--train", t, "--subset-scores", str(tmp_path / "bad.jsonl"), "--top-k", "2",
                 "--out", str(tmp_path / "y"), "--no-track", *common[:2]]) == 2
    assert "bad.jsonl, row 1, field 'score': not a number: 'high'" in capsys.readouterr().err
    assert main(["finetune", "--train", t, "--part", "random", "--subset-size", "2", "--out", str(tmp_path / "ft"),
                 "--no-track", *common[:2]]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["eval", "--data", v, "--extractor", "regex:(", "--no-track", *common[:2]]) == 2
    assert "invalid regular expression" in capsys.readouterr().err


def test_cli_finetune_top_p_uses_the_default_selection(tiny_model_dir, tmp_path, capsys):
    from forvalue.cli import main as forvalue_main
    from forvalue.training.finetune import read_meta, subset_digest
    from forvalue.cli import main

    rows = [{"id": f"t{i}", "prompt": f"What is {i} plus {i}?", "response": f"It is {2 * i}."} for i in range(10)]
    rows += [{"id": f"w{i}", "prompt": f"Spell {w}.", "response": w.upper()} for i, w in enumerate(["cat", "dog", "owl"])]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "val.jsonl").write_text(json.dumps({"prompt": "Spell emu.", "response": "EMU"}) + "\n"
                                        + json.dumps({"prompt": "What is 30 plus 30?", "response": "It is 60."}) + "\n")
    t, v, model = str(tmp_path / "train.jsonl"), str(tmp_path / "val.jsonl"), str(tiny_model_dir)
    scores = str(tmp_path / "s.parquet")
    assert forvalue_main(["score", "--train", t, "--val", v, "--model", model, "--out", scores, "--quiet"]) == 0
    assert forvalue_main(["select", "--scores", scores, "--train", t, "--top-k", "4", "--out",
                          str(tmp_path / "kept.jsonl"), "--quiet"]) == 0
    kept = [json.loads(x)["sample_id"] for x in (tmp_path / "kept.jsonl").read_text().splitlines()]
    capsys.readouterr()
    assert main(["finetune", "--train", t, "--subset-scores", scores, "--top-k", "4", "--out", str(tmp_path / "ft"),
                 "--steps", "2", "--no-track", "--model", model, "--threads", "1"]) == 0
    cap = capsys.readouterr()
    assert "on 4 of 13 samples (top, balanced)" in cap.out
    # without --quiet the progress of the fine-tune, a line per report (after the first and the last step)
    steps = [line.split(": step ")[1].split(" ")[0] for line in cap.err.splitlines() if ": step " in line]
    assert steps == ["1/2", "2/2"] and "tokens/s" in cap.err
    meta = read_meta(tmp_path / "ft")["subset"]
    assert meta["selection"] == "balanced" and meta["digest"] == subset_digest(kept)


def test_cli_finetune_speaks_the_selection_vocabulary(capsys):
    """--strategy is the selection strategy, as in curate and select; --part which samples of its
    order; the 0.1 spellings (--k, --p, --full, --selection) are gone."""
    from forvalue.cli import build_parser
    from forvalue.cli.finetune import choose
    from forvalue.cli.options import UsageError

    parser = build_parser()
    base = ["finetune", "--train", "t.jsonl", "--out", "o"]
    args = parser.parse_args([*base, "--subset-scores", "s.parquet", "--strategy", "max-cosine", "--top-p", "10"])
    assert args.strategy == "max-cosine" and choose(args) == ("top", None, 10.0, "--top-p")
    select = parser.parse_args(["select", "--scores", "s", "--train", "t", "--out", "o", "--top-k", "3"])
    assert parser.parse_args([*base, "--top-k", "3"]).strategy == select.strategy == "balanced"
    assert choose(parser.parse_args([*base, "--part", "bottom", "--subset-percent", "5"])) == (
        "bottom", None, 5.0, "--subset-percent")
    assert choose(parser.parse_args(base))[0] == "full"
    assert choose(parser.parse_args([*base, "--subset-size", "4"])) == ("random", 4, None, "--subset-size")
    assert parser.parse_args([*base, "--full-finetune"]).method == "full"
    with pytest.raises(UsageError, match="--part full trains on every sample; leave out --subset-size"):
        choose(parser.parse_args([*base, "--part", "full", "--subset-size", "3"]))
    with pytest.raises(UsageError, match="--top-k already sets the part and size"):
        choose(parser.parse_args([*base, "--part", "random", "--top-k", "3"]))
    capsys.readouterr()
    for old in (["--k", "3"], ["--p", "5"], ["--full"], ["--selection", "balanced"], ["--strategy", "random"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, *old])
        err = capsys.readouterr().err
        assert f"unrecognized arguments: {old[0]}" in err or "invalid choice: 'random'" in err, (old, err)
