"""Readers, content ids and the errors bad input gives (file, row and field named)."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forvalue.data.samples import Columns, DataError, load_samples, samples_from_records

RECS = [
    {"id": "a", "prompt": "What is 2+2?", "response": "4", "source": "x"},
    {"id": "b", "prompt": "Capital of France?", "response": "Paris", "source": "y"},
    {"id": "c", "prompt": "Say hi", "response": "hi", "source": "z"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path, rows):
    import csv

    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_all_formats_give_the_same_samples(tmp_path):
    from datasets import Dataset

    paths = {
        "jsonl": write_jsonl(tmp_path / "d.jsonl", RECS),
        "csv": write_csv(tmp_path / "d.csv", RECS),
        "parquet": tmp_path / "d.parquet",
        "hf": tmp_path / "hf",
    }
    pq.write_table(pa.Table.from_pylist(RECS), paths["parquet"])
    Dataset.from_list(RECS).save_to_disk(str(paths["hf"]))
    ids = {}
    for fmt, p in paths.items():
        data = load_samples(p)
        assert [s.user_id for s in data.samples] == ["a", "b", "c"], fmt
        assert data.samples[1].record["source"] == "y", fmt  # metadata carried through
        ids[fmt] = [s.sample_id for s in data.samples]
    assert len({tuple(v) for v in ids.values()}) == 1


def test_hf_dataset_dict_split(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(RECS), "test": Dataset.from_list(RECS[:1])}).save_to_disk(str(tmp_path / "dd"))
    assert len(load_samples(tmp_path / "dd")) == 3
    assert len(load_samples(tmp_path / "dd", split="test")) == 1


def test_content_id_ignores_id_and_metadata_but_not_content():
    a = samples_from_records([{"id": "1", "prompt": "p", "response": "r", "meta": 1}]).samples[0]
    b = samples_from_records([{"id": "2", "prompt": "p", "response": "r", "meta": 2}]).samples[0]
    c = samples_from_records([{"id": "3", "prompt": "p", "response": "r!"}]).samples[0]
    assert a.sample_id == b.sample_id != c.sample_id


def test_messages_and_text_samples(tmp_path):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    data = load_samples(write_jsonl(tmp_path / "m.jsonl", [{"messages": msgs}]))
    assert data.samples[0].kind == "messages"
    data = load_samples(write_jsonl(tmp_path / "t.jsonl", [{"body": "plain text"}]), text="body")
    assert data.samples[0].text == "plain text"


def test_custom_columns_and_label(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [{"q": "x?", "a": "y", "cls": 3}])
    s = load_samples(p, columns=Columns(prompt="q", response="a", label="cls")).samples[0]
    assert (s.prompt, s.response, s.label) == ("x?", "y", 3)


def _err(fn):
    with pytest.raises(DataError) as e:
        fn()
    return e.value


def test_missing_file(tmp_path):
    e = _err(lambda: load_samples(tmp_path / "nope.jsonl"))
    assert "nope.jsonl" in str(e) and "not found" in str(e)


def test_unreadable_format(tmp_path):
    p = tmp_path / "d.xlsx"
    p.write_bytes(b"PK\x03\x04")
    e = _err(lambda: load_samples(p))
    assert "d.xlsx" in str(e) and "unknown format" in str(e)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    e = _err(lambda: load_samples(bad))
    assert "bad.parquet" in str(e) and "unreadable Parquet" in str(e)


def test_invalid_json_line_names_the_row(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(RECS[0]) + "\n{oops\n")
    e = _err(lambda: load_samples(p))
    assert (e.row, e.file) == (2, str(p)) and "invalid JSON" in e.reason


def test_missing_column(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "x"}, {"prompt": "y"}])
    e = _err(lambda: load_samples(p))
    assert e.field == "response" and "missing column" in e.reason and "d.jsonl" in str(e)


def test_empty_column(tmp_path):
    p = write_csv(tmp_path / "d.csv", [{"prompt": "x", "response": ""}, {"prompt": "y", "response": ""}])
    e = _err(lambda: load_samples(p))
    assert e.field == "response" and "empty in every row" in e.reason


def test_empty_response_names_row_and_field(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [RECS[0], {"id": "z", "prompt": "p", "response": "   "}])
    e = _err(lambda: load_samples(p))
    assert (e.row, e.field, e.reason) == (2, "response", "empty")
    assert str(e) == f"{p}, row 2, field 'response': empty"


def test_non_utf8(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(json.dumps(RECS[0]).encode() + b"\n" + b'{"prompt": "caf\xe9", "response": "x"}\n')
    e = _err(lambda: load_samples(p))
    assert e.row == 2 and "UTF-8" in e.reason
    c = tmp_path / "d.csv"
    c.write_bytes(b"prompt,response\nok,fine\ncaf\xe9,x\n")
    e = _err(lambda: load_samples(c))
    assert e.row == 3 and "UTF-8" in e.reason  # line 3 of the file


def test_duplicate_ids(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [RECS[0], RECS[1], dict(RECS[2], id="a")])
    e = _err(lambda: load_samples(p))
    assert (e.row, e.field) == (3, "id") and "duplicate id 'a'" in e.reason and "row 1" in e.reason


def test_skip_mode_counts_and_reasons(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [RECS[0], {"prompt": "p", "response": ""}, RECS[1], dict(RECS[2], id="a")])
    p.write_text(p.read_text() + "{broken\n")
    data = load_samples(p, on_error="skip")
    assert [s.user_id for s in data.samples] == ["a", "b"]
    assert [(s.row, s.field) for s in data.skipped] == [(2, "response"), (4, "id"), (5, None)]


def test_too_long_sample_names_row(tmp_path, tiny_lm):
    from forvalue.valuation.features import FeatureConfig, encode_all

    p = write_jsonl(tmp_path / "d.jsonl", [RECS[0], {"prompt": "x" * 50, "response": "y" * 600}])
    samples = load_samples(p).samples
    e = _err(lambda: encode_all(tiny_lm, samples, FeatureConfig()))
    assert (e.file, e.row, e.field) == (str(p), 2, "response") and "longer than the model context of 512" in e.reason
    kept, skipped = encode_all(tiny_lm, samples, FeatureConfig(), on_error="skip")
    assert len(kept) == 1 and skipped[0][1].row == 2
    e = _err(lambda: encode_all(tiny_lm, samples[:1], FeatureConfig(max_length=10)))
    assert "model context of 10" in e.reason


def test_bad_images(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    rows = [{"prompt": "p", "response": "r", "img": "missing.png"}]
    e = _err(lambda: load_samples(write_jsonl(tmp_path / "a.jsonl", rows), image="img"))
    assert (e.row, e.field) == (1, "img") and "not found" in e.reason
    rows = [{"prompt": "p", "response": "r", "img": "empty.png"}]
    e = _err(lambda: load_samples(write_jsonl(tmp_path / "b.jsonl", rows), image="img"))
    assert "zero size" in e.reason


def _rows(p, **kw):
    from forvalue.data.reader import raw_batches

    return [(row, obj if isinstance(obj, dict) else str(obj)) for rows in raw_batches(p, **kw) for row, obj in rows]


def test_streamed_batches_are_the_loaded_samples(tmp_path):
    """One reader: iter_batches, whatever the batch size, gives load_samples' samples, row numbers and
    bad rows (CSV: blank lines are no rows, a quoted field spans lines; JSONL: rows are lines)."""
    from forvalue.data.stream import iter_batches

    c = tmp_path / "d.csv"
    c.write_bytes(b'prompt,response\nq1,a1\n\n"q\n2",a2\nq3,a3,extra\n"q4"x,a4\nq5,' + b"y" * 200_000 + b"\n")
    j = tmp_path / "d.jsonl"
    j.write_bytes(b"\xef\xbb\xbf" + json.dumps(RECS[0]).encode() + b'\n\n{"prompt": "caf\xe9"}\n{oops\n' +
                  json.dumps(RECS[1]).encode())
    for p, rows, bad in ((c, [1, 2, 5], [3, 4]), (j, [1, 5], [3, 4])):
        whole = load_samples(p, on_error="skip")
        assert [s.row for s in whole.samples] == rows and [s.row for s in whole.skipped] == bad
        for n in (1, 2, 1000):
            batches = list(iter_batches(p, batch_rows=n))
            assert [(s.row, s.sample_id, s.record) for b in batches for s in b.samples] == \
                [(s.row, s.sample_id, s.record) for s in whole.samples]
            assert [(e.row, e.reason) for b in batches for e in b.errors] == [(s.row, s.reason) for s in whole.skipped]
    assert [s.reason for s in load_samples(c, on_error="skip").skipped] == [
        "3 values for 2 columns", "not valid CSV (',' expected after '\"')"]
    e = _err(lambda: load_samples(c))
    assert (e.row, e.reason) == (3, "3 values for 2 columns")


def test_csv_that_is_not_utf8_stops_every_reader_at_its_line(tmp_path):
    from forvalue.data.stream import validate

    c = tmp_path / "d.csv"
    c.write_bytes(b"prompt,response\nok,fine\ncaf\xe9,x\n")
    for read in (load_samples, validate):
        e = _err(lambda: read(c))
        assert (e.file, e.row, e.reason) == (str(c), 3, "not valid UTF-8 (byte 0xe9 at offset 27)")


def test_segments_read_the_rows_of_the_whole_file(tmp_path):
    """A file cut into segments (Ray read tasks) reads, segment by segment, the rows and row numbers
    of the whole file: JSONL by line ends (a byte order mark, blank and bad lines included), Parquet
    by row groups."""
    from forvalue.data.reader import raw_batches, segments

    j = tmp_path / "d.jsonl"
    lines = [json.dumps(dict(RECS[i % 3], id=str(i))) for i in range(12)]
    lines[4], lines[7] = "", "{oops"
    j.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode())
    q = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([dict(RECS[i % 3], id=str(i)) for i in range(10)]), q, row_group_size=3)
    for p, size, n in ((j, 150, 12), (q, 1, 10)):
        fmt, cut = segments(p, size)
        assert len(cut) > 2 and sum(s.rows for s in cut) == n
        by_segment = [r for seg in cut for r in _rows(p, batch_rows=2, segment=seg)]
        assert by_segment == _rows(p) and len(by_segment) == (11 if fmt == "jsonl" else 10)
    assert dict(_rows(j))[8].startswith(f"{j}, row 8: invalid JSON")


def test_validate_finds_repeated_ids_across_batches_as_load_samples_does(tmp_path):
    """validate streams the file and still finds an id an earlier batch had: the same error, row and
    first row that load_samples (score, curate) stops with; content duplicates are counted apart."""
    from forvalue.data.stream import validate

    rows = [{**r, "id": i} for r, i in zip(RECS * 3, ["a", "b", "a", "c", 1, "b", "1", "d", "e"])]
    rows[8] = dict(rows[0], id="e")                      # same content as row 1, its own id: not an id problem
    path = write_jsonl(tmp_path / "ids.jsonl", rows)
    with pytest.raises(DataError) as first:
        load_samples(path)
    res = validate(path, batch_rows=2)
    assert not res.ok and res.n_bad == 0 and res.n_valid == 9 and res.n_duplicates >= 1
    assert res.n_repeated_ids == 3
    assert [str(e) for e in res.repeated_ids] == [
        f"{path}, row 3, field 'id': duplicate id 'a' (first at row 1)",
        f"{path}, row 6, field 'id': duplicate id 'b' (first at row 2)",
        f"{path}, row 7, field 'id': duplicate id '1' (first at row 5)"]
    assert str(res.first_problem()) == str(first.value)
    assert len(validate(path, keep=1).repeated_ids) == 1 and validate(path, keep=1).n_repeated_ids == 3


def test_a_document_spread_over_lines_and_a_pipe_are_refused_by_every_reader(tmp_path):
    """A pretty-printed JSON object or array given as JSON lines is named as such (where it starts and
    ends), by load_samples and validate alike; a first line that is simply broken stays an invalid
    row; a FIFO is refused before it is opened (reading it would wait for a writer for ever)."""
    import os
    import re

    from forvalue.data.stream import validate

    obj = tmp_path / "obj.jsonl"
    obj.write_text("\n" + json.dumps(RECS[0], indent=2) + "\n")
    arr = tmp_path / "arr.jsonl"
    arr.write_text(json.dumps(RECS, indent=1) + "\n")
    for path, what in ((obj, "row 2: a JSON object spread over several lines (rows 2 to 7)"),
                       (arr, "row 1: a JSON array spread over several lines (rows 1 to 20)")):
        for read in (load_samples, validate):
            with pytest.raises(DataError, match=re.escape(f"{path}, {what}: JSONL needs one object per line")):
                read(path)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "x", "response": \n' + "".join(json.dumps(r) + "\n" for r in RECS))
    res = validate(broken)
    assert res.n_bad == 1 and "row 1: invalid JSON" in str(res.first_errors[0])
    os.mkfifo(tmp_path / "pipe.jsonl")
    for read in (load_samples, validate):
        with pytest.raises(DataError, match="pipe.jsonl: not a regular file"):
            read(tmp_path / "pipe.jsonl")
