"""UI metadata with user text: sample lists are tables (text shown as it is), and Markdown built
from user text is escaped, so '*', '_', '`', '[', ']', '#', '|', '<', '>', '&' in a prompt or a
response render as those characters. Also: the subset defaults come from the curation resource
(the environment, read by ``from_env``) at run time, and run config overrides them."""

from html.parser import HTMLParser
from types import SimpleNamespace

import pytest
from dagster import AssetKey, TableMetadataValue
from markdown_it import MarkdownIt

from forvalue_assets import metadata as md
from forvalue_assets.testing import platform_for_test
from resources import CurationResource, FeatureStoreResource, FinetuneResource

NASTY = "Use **bold**, _under_, `code`, [link](http://x.test) # no heading | pipe <b>tag</b> & co"


def render(text: str) -> str:
    return MarkdownIt("commonmark").enable("table").enable("strikethrough").render(text)


def sample(i: int, prompt: str, response: str):
    return SimpleNamespace(kind="prompt_response", prompt=prompt, response=response, user_id=f"id_{i}*",
                           sample_id=f"{i:064x}", row=i)


def test_escape_md_makes_every_special_character_literal():
    assert md.escape_md("*a* _b_ `c` [d](e) #f |g| <h> & ~i~ \\") == (
        "\\*a\\* \\_b\\_ \\`c\\` \\[d\\](e) \\#f \\|g\\| &lt;h&gt; &amp; \\~i\\~ \\\\")
    html = render(md.escape_md(NASTY))
    for tag in ("<em>", "<strong>", "<code>", "<a ", "<h1>", "<b>", "<del>"):
        assert tag not in html, (tag, html)
    assert "**bold**" in html and "_under_" in html and "`code`" in html and "&lt;b&gt;tag&lt;/b&gt;" in html


def test_markdown_tables_escape_user_text():
    rows = [sample(1, "What is *this*?", NASTY), sample(2, "# title", "a | b")]
    preview = md.md_preview(rows).value
    html = render(preview)
    assert "<table>" in html and "<em>" not in html and "<strong>bold" not in html and "<h1>" not in html
    assert html.count("<tr>") == 3                        # header + 2 rows: no '|' split a row
    assert "*this*" in html and "id_1*" in html
    assert "\\*this\\*" in preview and "a \\| b" in preview
    assert "\\*" in md.md_cell("*x*") and len(md.md_cell("y" * 500, 10)) == 10


def test_sample_lists_are_tables_with_the_text_as_it_is():
    # ranked by a cosine that falls, raw scores that do not (a round-robin order)
    ranked = [md.Shown(i + 1, 1.0 / (i + 3), 13363.123456789 + 1000 * (i % 3), sample(i, f"prompt {i} *", NASTY))
              for i in range(7)]
    tables = md.top_bottom_tables(ranked, "samples", "balanced order, cosine with the valuation unit")
    assert set(tables) == {"top_samples", "bottom_samples"}
    top = tables["top_samples"]
    assert isinstance(top, TableMetadataValue)
    assert [c.name for c in top.schema.columns] == ["rank", "ranked_by", "score", "id", "prompt", "response"]
    assert "balanced order, cosine with the valuation unit" in top.schema.columns[1].description
    assert [r.data["rank"] for r in top.records] == [1, 2, 3, 4, 5]
    assert [r.data["ranked_by"] for r in top.records] == [0.3333, 0.25, 0.2, 0.1667, 0.1429]   # 4 digits
    assert [r.data["score"] for r in top.records] == [13360.0, 14360.0, 15360.0, 13360.0, 14360.0]
    assert [r.data["rank"] for r in tables["bottom_samples"].records] == [3, 4, 5, 6, 7]
    assert top.records[0].data["response"] == NASTY and top.records[0].data["prompt"] == "prompt 0 *"
    assert set(md.top_bottom_tables(ranked[:3], "kept", "x")) == {"top_kept"}
    cut = md.kept_dropped_table([r._replace(kept=r.rank <= 2, check="grounding" if r.rank == 3 else None)
                                 for r in ranked[:4]], "x")
    assert [c.name for c in cut.schema.columns][:3] == ["rank", "kept", "dropped_by_check"]
    assert [(r.data["kept"], r.data["dropped_by_check"]) for r in cut.records] == [
        (True, ""), (True, ""), (False, "grounding"), (False, "")]
    assert md.sig(float("nan")) is None and md.sig(None) is None and md.sig(-0.000123456) == -0.0001235


def test_subset_histogram_marks_kept_and_dropped_and_the_cut_off():
    import io

    import numpy as np
    from matplotlib.image import imread

    def colours(png):
        rgb = (imread(io.BytesIO(png))[..., :3] * 255).round().astype(int).reshape(-1, 3)
        return {tuple(c) for c in np.unique(rgb, axis=0)}

    def has(cs, hex_colour):
        want = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
        return any(np.abs(np.array(c) - want).max() <= 2 for c in cs)

    values = np.linspace(-1, 1, 50)
    kept = values > 0.2
    both = colours(md.histogram_png(values, kept=kept, cut=0.2, title="t"))
    assert has(both, md.KEPT_COLOUR) and has(both, md.DROPPED_COLOUR) and has(both, md.CUT_COLOUR)
    plain = colours(md.histogram_png(values))
    assert has(plain, md.KEPT_COLOUR) and not has(plain, md.DROPPED_COLOUR) and not has(plain, md.CUT_COLOUR)
    assert has(colours(md.histogram_png(values, kept=np.ones(50, bool))), md.KEPT_COLOUR)   # nothing dropped


def test_finetune_steps_default_comes_from_the_resource(monkeypatch):
    from forvalue_assets.finetuning.config import TrainFields

    monkeypatch.setenv("FORVALUE_FT_STEPS", "7")
    fcfg = FeatureStoreResource().config()
    steps = FinetuneResource.from_env().steps
    assert steps == 7 and FinetuneResource().steps == 30
    assert TrainFields().train_config(fcfg, default_steps=steps).steps == 7
    assert TrainFields(steps=3).train_config(fcfg, default_steps=steps).steps == 3


def test_finetune_threads_are_a_platform_setting(monkeypatch):
    import torch

    assert FinetuneResource().threads == 1 and FinetuneResource.from_env().threads == 1   # docs/finetune.md's advice
    monkeypatch.setenv("FORVALUE_FT_THREADS", "3")
    resource = FinetuneResource.from_env()
    before = torch.get_num_threads()
    with resource.cpu_threads():
        assert resource.threads == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with FinetuneResource(threads=0).cpu_threads():                # 0: torch's own choice, untouched
        assert torch.get_num_threads() == before
    monkeypatch.setenv("FORVALUE_FT_THREADS", "many")
    with pytest.raises(ValueError, match="FORVALUE_FT_THREADS"):
        FinetuneResource.from_env()


class _Marks(HTMLParser):
    """The text inside <strong> and <s> of rendered HTML, per line of a list item (split at <br>)."""

    def __init__(self):
        super().__init__()
        self.lines, self.open = [[]], None

    def handle_starttag(self, tag, attrs):
        if tag == "br":
            self.lines.append([])
        elif tag in ("strong", "s"):
            self.open = [tag, ""]

    def handle_endtag(self, tag):
        if tag in ("strong", "s") and self.open:
            self.lines[-1].append((self.open[0], self.open[1].replace("\u2060", "")))
            self.open = None

    def handle_data(self, data):
        if self.open:
            self.open[1] += data


def test_explanations_mark_the_listed_tokens_by_position_and_escape_once():
    from forvalue.valuation.explain import Explanation, TokenContribution

    # the tokens a chat model scores: punctuation right after a word, the end-of-turn marker, a
    # markdown star, a line break and a space among the strongest, neighbours with the same sign
    texts = ["The", " Answer", ":", " 42", "<|im_end|>", " *", "\n", " ", "x", "*", ":", " _a_"]
    contrib = [0.1, 2680.0, 5.0, -3.0, -4.0, 1.0, -9.0, 7.0, 0.0, -1.0, -2.0, 0.5]
    e = Explanation("s", sum(contrib), [TokenContribution(t, i, i, c) for i, (t, c) in enumerate(zip(texts, contrib))])
    text = md.md_explanations([(1, 1.0, sample(1, "p", "".join(texts)), e)], "Top 1")
    html = render(text)
    assert "**" not in html and "~~" not in html                        # every mark rendered, none shown as text
    assert "&amp;lt;" not in html and "&amp;gt;" not in html              # escaped once
    assert "&lt;|im_end|&gt;" in html and "\\|" not in html and "\\_" not in html
    assert "<em>" not in html                                           # the user's _a_ stays literal
    parser = _Marks()
    parser.feed(html[html.index("<li>"):])
    marked, listed = parser.lines[0], parser.lines[1]
    assert all(inside.strip() for _, inside in marked + listed)         # no empty or whitespace-only emphasis
    # the listing: the 3 that add (bold) and the 3 that take (struck), strongest first
    assert listed == [("strong", "Answer"), ("strong", "␣"), ("strong", ":"),
                      ("s", "↵"), ("s", "<|im_end|>"), ("s", "42")]
    # every listed token is marked the same way in the text (neighbours share one mark)
    for tag, token in listed:
        assert any(t == tag and token in inside for t, inside in marked), (tag, token, marked)
    assert {t for t, _ in marked} == {"strong", "s"} and ("strong", "Answer:") in marked
    assert "+2680" in text and "-9" in text


def _event_metadata(result, key):
    (ev,) = [e for e in result.get_asset_materialization_events() if e.asset_key == AssetKey(key)]
    return ev.materialization.metadata


def test_platform_metadata_and_subset_defaults_from_the_environment(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("FORVALUE_SUBSET_MODE", "top_k")
    monkeypatch.setenv("FORVALUE_SUBSET_VALUE", "2")
    monkeypatch.setenv("FORVALUE_SUBSET_STRATEGY", "raw-mean")
    train = [{"id": f"t{i}", "prompt": f"Explain *item {i}* <b>now</b>", "response": f"{NASTY} {i}"} for i in range(4)]
    val = [{"id": f"v{i}", "prompt": f"Explain item {i}", "response": f"Item {i} is _fine_"} for i in range(2)]
    with platform_for_test(tmp_path, model=tiny_model_dir, resources={"curation": CurationResource.from_env()}) as p:
        reg = p.register("train", "t1", p.write_jsonl("train", "t1", train))
        preview = _event_metadata(reg, "training_dataset")["preview"].value
        assert "\\*item 0\\*" in preview and "&lt;b&gt;now&lt;/b&gt;" in preview and "<b>" not in preview
        assert "<em>" not in render(preview) and "<strong>" not in render(preview)
        p.register("valuation", "v1", p.write_jsonl("valuation", "v1", val))

        cur = p.curate("t1", "v1")                     # no run config: the curation resource's defaults
        assert cur.success
        scores = _event_metadata(cur, "forvalue_scores")
        responses = {r.data["response"] for r in scores["top_samples"].records}
        assert responses == {f"{NASTY} {i}" for i in range(4)} and "bottom_samples" not in scores
        assert "top_and_bottom" not in scores and scores["strategy"].value == "raw-mean"
        top = scores["top_samples"].records       # raw-mean: ranked by the score itself, in order
        assert [r.data["ranked_by"] for r in top] == [r.data["score"] for r in top]
        assert [r.data["rank"] for r in top] == [1, 2, 3, 4]   # (samples a consistency check dropped come last)
        # explanations: the text with its strongest tokens marked, the user's markdown escaped
        why = scores["explanations"].value
        assert why.startswith("**Top 4**") and why.count("- rank ") == 4 and "**" in why.split("\n", 2)[2]
        html = render(why)
        assert "<em>" not in html and "<code>code</code>" not in html and "<b>" not in html
        assert "\\*\\*" in why or "\\`code\\`" in why         # the response's own markdown, escaped
        assert "<strong>" in html                             # our marks render
        subset = _event_metadata(cur, "curated_subset")
        assert subset["explanations"].value.count("- rank ") == 2
        assert (subset["mode"].value, subset["value"].value, subset["strategy"].value) == ("top_k", 2.0, "raw-mean")
        kept = subset["top_kept"].records
        assert [r.data["rank"] for r in kept] == [1, 2] and kept[0].data["prompt"].startswith("Explain *item")
        assert [r.data["id"] for r in kept] == [r.data["id"] for r in top[:2]]   # the scores' order is the subset's
        sub = p.catalog().latest_subset("t1", "v1")
        assert sub["n_selected"] == 2
        # both sides of the cut: the metadata table and the view agree
        near = subset["kept_and_dropped"].records
        assert [(r.data["rank"], r.data["kept"]) for r in near] == [(1, True), (2, True), (3, False), (4, False)]
        view = p.catalog().query("SELECT * FROM subset_kept_dropped WHERE subset_id = ? ORDER BY rank",
                                 [sub["subset_id"]])
        assert [(r["rank"], r["kept"], r["user_id"]) for r in view] == [
            (r.data["rank"], r.data["kept"], r.data["id"]) for r in near]
        assert {r["cut_rank"] for r in view} == {2} and all(r["score"] == pytest.approx(r["ranked_by"]) for r in view)
        assert "ranks 1 to 2 of the 4" in subset["cut"].value

        # run config overrides one field; the others still come from the resource
        again = p.curate("t1", "v1", subset={"value": 3}, asset_selection=[AssetKey("curated_subset")])
        sub = p.catalog().latest_subset("t1", "v1")
        assert again.success and (sub["mode"], sub["n_selected"], sub["strategy"]) == ("top_k", 3, "raw-mean")


def test_balanced_tables_show_the_cosine_that_ordered_them(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("FORVALUE_GROUNDING_LIMIT", "1")
    train = [{"id": f"t{i}", "prompt": f"Explain item {i}", "response": f"Item {i} is fine"} for i in range(8)]
    val = [{"id": f"v{i}", "prompt": f"Explain item {i}", "response": f"Item {i} is fine"} for i in range(20, 25)]
    resources = {"curation": CurationResource.from_env().model_copy(update={"explain": False})}
    with platform_for_test(tmp_path, model=tiny_model_dir, resources=resources) as p:
        p.register("train", "t1", p.write_jsonl("train", "t1", train))
        p.register("valuation", "v1", p.write_jsonl("valuation", "v1", val))
        cur = p.curate("t1", "v1")
        scores, subset = _event_metadata(cur, "forvalue_scores"), _event_metadata(cur, "curated_subset")
        # forvalue_scores' top 5 are the subset's first 5, in the same order, with the same values
        assert scores["strategy"].value == "balanced" and "balanced" in scores["order"].value
        top, kept = scores["top_samples"].records, subset["top_kept"].records
        assert [r.data["id"] for r in top] == [r.data["id"] for r in kept] and len(top) == 5
        assert [r.data["ranked_by"] for r in top] == [r.data["ranked_by"] for r in kept]
        picked = [r for r in kept if r.data["ranked_by"] is not None]
        assert picked and all(-1 <= r.data["ranked_by"] <= 1 for r in picked)
        assert [r.data["rank"] for r in kept] == [1, 2, 3, 4, 5]
        # the kept and dropped samples nearest the cut (drop the lowest 10% of 8: 7 kept)
        near = subset["kept_and_dropped"].records
        assert [(r.data["rank"], r.data["kept"]) for r in near] == [(i, i <= 7) for i in range(3, 9)]
        assert all((r.data["ranked_by"] is None) == bool(r.data["dropped_by_check"]) for r in near)
        sub = p.catalog().latest_subset("t1", "v1")
        view = {r["user_id"]: r for r in p.catalog().query(
            "SELECT * FROM subset_kept_dropped WHERE subset_id = ?", [sub["subset_id"]])}
        assert len(view) == 8 and sum(r["kept"] for r in view.values()) == 7
        for r in kept + near:
            got = view[r.data["id"]]
            assert got["rank"] == r.data["rank"] and got["score"] == pytest.approx(r.data["score"], rel=1e-3)
            assert (got["ranked_by"] is None) == (r.data["ranked_by"] is None)
            if got["ranked_by"] is not None:
                assert got["ranked_by"] == pytest.approx(r.data["ranked_by"], abs=1e-4)
        (dropped,) = p.catalog().query(
            "SELECT user_id FROM subset_kept_dropped WHERE subset_id = ? AND NOT kept", [sub["subset_id"]])
        assert dropped["user_id"] == near[-1].data["id"]
