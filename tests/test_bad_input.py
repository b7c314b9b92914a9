"""Bad input, table-driven: every case exits with status 2 and one line on stderr that names what is
wrong (the file, row and field where they exist), with no traceback; no output is written and every
input file is unchanged."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forvalue.cli import main
from tests.conftest import make_records

GOOD = [{"id": f"g{i}", "prompt": f"What is {i} plus {i}?", "response": f"It is {2 * i}."} for i in range(6)]


def jl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("bad")
    f = {"dir": d, "model": str(tiny_model_dir)}
    f["train"] = jl(d / "train.jsonl", GOOD)
    f["val"] = jl(d / "val.jsonl", GOOD[:2])
    f["empty"] = jl(d / "empty.jsonl", [])
    (d / "blank.jsonl").write_text("\n   \n\n")
    f["blank"] = d / "blank.jsonl"
    f["badjson"] = jl(d / "badjson.jsonl", [GOOD[0], '{"prompt": "x", "response": ', GOOD[1]])
    f["array"] = jl(d / "array.jsonl", [GOOD[0], "[1, 2]"])
    (d / "latin1.jsonl").write_bytes(json.dumps(GOOD[0]).encode() + b"\n" + b'{"prompt": "caf\xe9", "response": "x"}\n')
    f["latin1"] = d / "latin1.jsonl"
    f["noprompt"] = jl(d / "noprompt.jsonl", [{"question": "q", "response": "r"}] * 2)
    f["noresponse"] = jl(d / "noresponse.jsonl", [{"prompt": "q", "answer": "r"}] * 2)
    f["emptyresp"] = jl(d / "emptyresp.jsonl", GOOD[:2] + [{"prompt": "q", "response": "   "}])
    f["nullresp"] = jl(d / "nullresp.jsonl", GOOD[:1] + [{"prompt": "q", "response": None}])
    f["numresp"] = jl(d / "numresp.jsonl", GOOD[:1] + [{"prompt": "q", "response": 42}])
    f["listprompt"] = jl(d / "listprompt.jsonl", [{"prompt": ["a"], "response": "b"}])
    f["badmsgs"] = jl(d / "badmsgs.jsonl", [{"messages": "not json ["}])
    f["lastuser"] = jl(d / "lastuser.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    f["msgnorole"] = jl(d / "msgnorole.jsonl", [{"messages": [{"content": "hi"}, {"role": "assistant", "content": "x"}]}])
    f["notext"] = jl(d / "notext.jsonl", [{"body": "x"}])
    f["emptytext"] = jl(d / "emptytext.jsonl", [{"text": "hello there"}, {"text": ""}])
    f["dupid"] = jl(d / "dupid.jsonl", [GOOD[0], {**GOOD[1], "id": "g0"}])
    f["nolabel"] = jl(d / "nolabel.jsonl", GOOD[:2])
    f["long"] = jl(d / "long.jsonl", [{"prompt": "q", "response": "word " * 400}])
    (d / "notes.txt").write_text("hello")
    f["txt"] = d / "notes.txt"
    (d / "cols.csv").write_text("prompt,response\nq,a\nq2,a2,extra\n")
    f["csvcols"] = d / "cols.csv"
    (d / "quote.csv").write_text('prompt,response\nq,a\n"open,b\nc,d\n')
    f["csvquote"] = d / "quote.csv"
    (d / "header.csv").write_text("prompt,response\n")
    f["csvheader"] = d / "header.csv"
    (d / "broken.parquet").write_bytes(b"PAR1" + b"\x00" * 40)
    f["badparquet"] = d / "broken.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "q", "answer": "a"}]), d / "cols.parquet")
    f["parquetcols"] = d / "cols.parquet"
    (d / "arr.json").write_text('[{"prompt": "q", "response": "a"}, ')
    f["badarray"] = d / "arr.json"
    hf = d / "hf_broken"
    hf.mkdir()
    (hf / "state.json").write_text("{not json")
    f["hfbroken"] = hf
    hfd = d / "hf_dict"
    (hfd / "test").mkdir(parents=True)
    (hfd / "dataset_dict.json").write_text(json.dumps({"splits": ["test"]}))
    f["hfnotrain"] = hfd
    (d / "plain_dir").mkdir()
    f["plaindir"] = d / "plain_dir"
    f["afile"] = d / "a_file"
    f["afile"].write_text("x")
    f["outdir"] = d / "out_dir"
    f["outdir"].mkdir()
    (d / "val_link.jsonl").symlink_to(f["val"])
    f["vallink"] = d / "val_link.jsonl"
    # models
    trunc = d / "trunc_model"
    shutil.copytree(tiny_model_dir, trunc)
    w = next(trunc.glob("*.safetensors"))
    w.write_bytes(w.read_bytes()[:100])
    f["trunc"] = trunc
    (d / "junk.gguf").write_bytes(b"this is not gguf" * 8)
    f["junkgguf"] = d / "junk.gguf"
    (d / "noconfig").mkdir()
    f["noconfig"] = d / "noconfig"
    # scores tables
    f["badscores"] = jl(d / "scores_bad.jsonl", [{"sample_id": "abc", "score": "high"}])
    f["noscoreid"] = jl(d / "scores_noid.jsonl", [{"score": 1.0}])
    # issue 23: a document spread over lines, a FIFO, a file whose only row is not UTF-8
    f["pretty"] = d / "pretty.jsonl"
    f["pretty"].write_text(json.dumps(GOOD[0], indent=2) + "\n")
    os.mkfifo(d / "fifo.jsonl")
    f["fifo"] = d / "fifo.jsonl"
    (d / "latin1only.jsonl").write_bytes(b'{"prompt": "caf\xe9", "response": "x"}\n')
    f["latin1only"] = d / "latin1only.jsonl"
    f["ft_out"] = d / "ft_out"
    (f["ft_out"]).mkdir()
    (f["ft_out"] / "keep.txt").write_text("do not delete")
    return f


def score(f, train="train", val="val", *extra, out=None):
    return ["score", "--train", str(f[train]), "--val", str(f[val]), "--model", f["model"],
            "--out", str(out or f["dir"] / "out" / "s.parquet"), "--no-store", *extra]


CASES = {
    # ---- data files
    "missing train file": (lambda f: score(f, "dir", "val")[:2] + [str(f["dir"] / "nope.jsonl")] + score(f)[3:],
                           ["nope.jsonl", "file not found"]),
    "missing val file": (lambda f: score(f)[:4] + [str(f["dir"] / "gone.jsonl")] + score(f)[5:], ["gone.jsonl", "not found"]),
    "unknown format": (lambda f: score(f, "txt"), ["notes.txt", "unknown format"]),
    "empty file": (lambda f: score(f, "empty"), ["empty.jsonl", "no rows"]),
    "blank lines only": (lambda f: score(f, "blank"), ["blank.jsonl", "no rows"]),
    "empty valuation file": (lambda f: score(f, "train", "empty"), ["empty.jsonl", "no rows"]),
    "invalid JSON line": (lambda f: score(f, "badjson"), ["badjson.jsonl, row 2", "invalid JSON"]),
    "JSON line not an object": (lambda f: score(f, "array"), ["array.jsonl, row 2", "expected a JSON object"]),
    "not UTF-8": (lambda f: score(f, "latin1"), ["latin1.jsonl, row 2", "UTF-8"]),
    "no prompt column": (lambda f: score(f, "noprompt"), ["noprompt.jsonl", "field 'prompt'", "missing column"]),
    "no response column": (lambda f: score(f, "noresponse"), ["noresponse.jsonl", "field 'response'", "missing column"]),
    "empty response": (lambda f: score(f, "emptyresp"), ["emptyresp.jsonl, row 3, field 'response': empty"]),
    "null response": (lambda f: score(f, "nullresp"), ["nullresp.jsonl, row 2, field 'response'", "missing value"]),
    "number as response": (lambda f: score(f, "numresp"), ["numresp.jsonl, row 2, field 'response'", "expected text"]),
    "list as prompt": (lambda f: score(f, "listprompt"), ["listprompt.jsonl, row 1, field 'prompt'", "expected text"]),
    "messages not JSON": (lambda f: score(f, "badmsgs"), ["badmsgs.jsonl, row 1, field 'messages'"]),
    "messages end with user": (lambda f: score(f, "lastuser"), ["lastuser.jsonl, row 1, field 'messages'", "assistant"]),
    "message without role": (lambda f: score(f, "msgnorole"), ["msgnorole.jsonl, row 1, field 'messages[0]'"]),
    "text column missing": (lambda f: score(f, "notext", "val", "--text-column", "text"),
                            ["notext.jsonl", "field 'text'", "missing column"]),
    "empty text": (lambda f: score(f, "emptytext", "val", "--text-column", "text"), ["emptytext.jsonl, row 2, field 'text'"]),
    "duplicate id": (lambda f: score(f, "dupid"), ["dupid.jsonl, row 2", "id"]),
    "label column missing": (lambda f: score(f, "nolabel", "val", "--label-column", "cls"),
                             ["nolabel.jsonl", "field 'cls'"]),
    "longer than max length": (lambda f: score(f, "long", "val", "--max-length", "64"),
                               ["long.jsonl, row 1, field 'response'", "longer than"]),
    "CSV row with extra values": (lambda f: score(f, "csvcols"), ["cols.csv, row 2", "values for 2 columns"]),
    "CSV unterminated quote": (lambda f: score(f, "csvquote"), ["quote.csv, row 2", "never closed"]),
    "CSV header only": (lambda f: score(f, "csvheader"), ["header.csv", "no rows"]),
    "broken Parquet": (lambda f: score(f, "badparquet"), ["broken.parquet", "unreadable Parquet"]),
    "Parquet without the columns": (lambda f: score(f, "parquetcols"), ["cols.parquet", "field 'prompt'"]),
    "broken JSON array file": (lambda f: score(f, "badarray"), ["arr.json", "invalid JSON"]),
    "HF folder with broken state.json": (lambda f: score(f, "hfbroken"), ["state.json", "not valid JSON"]),
    "HF DatasetDict without train": (lambda f: score(f, "hfnotrain"), ["hf_dict", "no 'train' split"]),
    "folder that is not a dataset": (lambda f: score(f, "plaindir"), ["plain_dir", "not a Hugging Face"]),
    # ---- options
    "batch size 0": (lambda f: score(f, "train", "val", "--batch-size", "0"), ["batch_size must be >= 1"]),
    "batch size -3": (lambda f: score(f, "train", "val", "--batch-size", "-3"), ["batch_size must be >= 1"]),
    "top tokens -1": (lambda f: score(f, "train", "val", "--top-tokens", "-1"), ["top tokens", ">= 0"]),
    "r -1": (lambda f: score(f, "train", "val", "--r", "-1"), ["r (the projection width) must be >= 1, or 0 on the "
                                                               "command line for every dimension; got -1"]),
    "dtype int8": (lambda f: score(f, "train", "val", "--dtype", "int8"), ["dtype 'int8'"]),
    "device gpu0": (lambda f: score(f, "train", "val", "--device", "gpu0"), ["device 'gpu0'"]),
    "device cuda without CUDA": (lambda f: score(f, "train", "val", "--device", "cuda:7"), ["device 'cuda:7'"]),
    "max length 0": (lambda f: score(f, "train", "val", "--max-length", "0"), ["max_length must be >= 2"]),
    # ---- outputs
    "out is the train file": (lambda f: score(f, out=f["train"]), ["train.jsonl", "would replace the input"]),
    "out is a link to the val file": (lambda f: score(f, out=f["vallink"]), ["val_link.jsonl", "would replace"]),
    "out is a folder": (lambda f: score(f, out=f["outdir"]), ["out_dir", "is a folder"]),
    "out under a file": (lambda f: score(f, out=f["afile"] / "s.parquet"), ["a_file", "is a file"]),
    "out with an unknown suffix": (lambda f: score(f, out=f["dir"] / "s.txt"), ["s.txt", "unknown output format"]),
    "store is a file": (lambda f: [*score(f)[:-1], "--store", str(f["afile"])], ["a_file", "feature store", "is a file"]),
    # ---- models
    "model folder missing": (lambda f: [*score(f)[:6], "./no/such/model", *score(f)[7:]], ["./no/such/model", "not found"]),
    "truncated weights": (lambda f: [*score(f)[:6], str(f["trunc"]), *score(f)[7:]], ["trunc_model", "weights"]),
    "not a GGUF file": (lambda f: [*score(f)[:6], str(f["junkgguf"]), *score(f)[7:]], ["junk.gguf", "GGUF"]),
    "folder without config.json": (lambda f: [*score(f)[:6], str(f["noconfig"]), *score(f)[7:]],
                                   ["noconfig", "config.json"]),
    # ---- other commands
    "features shard size 0": (lambda f: ["features", "--data", str(f["train"]), "--out", str(f["dir"] / "fs0"),
                                         "--model", f["model"], "--shard-size", "0"], ["--shard-size must be >= 1"]),
    "features shard size -2": (lambda f: ["features", "--data", str(f["train"]), "--out", str(f["dir"] / "fs0"),
                                          "--model", f["model"], "--shard-size", "-2"], ["--shard-size must be >= 1"]),
    "features store is a file": (lambda f: ["features", "--data", str(f["train"]), "--out", str(f["afile"]),
                                            "--model", f["model"]], ["a_file", "is a file"]),
    "features bad data": (lambda f: ["features", "--data", str(f["emptyresp"]), "--out", str(f["dir"] / "fs0"),
                                     "--model", f["model"]], ["emptyresp.jsonl, row 3, field 'response'"]),
    "curate percentage over 100": (lambda f: ["curate", "--train", str(f["train"]), "--val", str(f["val"]),
                                              "--model", f["model"], "--top-p", "150", "--out",
                                              str(f["dir"] / "out" / "c.jsonl"), "--no-store"], ["--top-p", "0 to 100"]),
    "curate negative k": (lambda f: ["curate", "--train", str(f["train"]), "--val", str(f["val"]), "--model",
                                     f["model"], "--top-k", "-1", "--out", str(f["dir"] / "out" / "c.jsonl"),
                                     "--no-store"], ["--top-k", ">= 0"]),
    **{f"curate {flag} {v} keeps nothing": (
        lambda f, flag=flag, v=v: ["curate", "--train", str(f["train"]), "--val", str(f["val"]), "--model", f["model"],
                                   flag, v, "--out", str(f["dir"] / "out" / "c.jsonl"), "--no-store"],
        [f"{flag} {v} keeps no sample"]) for flag, v in (("--top-p", "0"), ("--top-k", "0"), ("--drop-lowest-p", "100"),
                                                         ("--bottom-p", "0"))},
    "curate top-p 1 of a few rows": (lambda f: ["curate", "--train", str(f["train"]), "--val", str(f["val"]),
                                                "--model", f["model"], "--top-p", "1", "--out",
                                                str(f["dir"] / "out" / "c.jsonl"), "--no-store"],
                                     ["--top-p 1 keeps no sample of the", "nothing was written"]),
    "curate out is the val file": (lambda f: ["curate", "--train", str(f["train"]), "--val", str(f["val"]),
                                              "--model", f["model"], "--top-k", "2", "--out", str(f["val"])],
                                   ["val.jsonl", "would replace"]),
    "select scores missing": (lambda f: ["select", "--scores", str(f["dir"] / "none.parquet"), "--train",
                                         str(f["train"]), "--top-k", "2", "--out", str(f["dir"] / "out" / "k.jsonl")],
                              ["none.parquet", "not found"]),
    "select score not a number": (lambda f: ["select", "--scores", str(f["badscores"]), "--train", str(f["train"]),
                                             "--strategy", "raw-mean", "--top-k", "2", "--out",
                                             str(f["dir"] / "out" / "k.jsonl")],
                                  ["scores_bad.jsonl, row 1, field 'score'", "not a number"]),
    "select score without id": (lambda f: ["select", "--scores", str(f["noscoreid"]), "--train", str(f["train"]),
                                           "--strategy", "raw-mean", "--top-k", "2", "--out",
                                           str(f["dir"] / "out" / "k.jsonl")],
                                ["scores_noid.jsonl, row 1, field 'sample_id'"]),
    "select out is the scores file": (lambda f: ["select", "--scores", str(f["badscores"]), "--train",
                                                 str(f["train"]), "--top-k", "2", "--out", str(f["badscores"])],
                                      ["scores_bad.jsonl", "would replace"]),
    "eval bad extractor": (lambda f: ["eval", "--data", str(f["val"]), "--extractor", "regex:(", "--no-track",
                                      "--model", f["model"]], ["invalid regular expression"]),
    "eval missing data": (lambda f: ["eval", "--data", str(f["dir"] / "nothing.jsonl"), "--no-track", "--model",
                                     f["model"]], ["nothing.jsonl", "not found"]),
    "finetune into a non-empty folder": (lambda f: ["finetune", "--train", str(f["train"]), "--part", "random",
                                                    "--subset-size", "2", "--out", str(f["ft_out"]), "--no-track",
                                                    "--model", f["model"]], ["ft_out", "not empty"]),
    "finetune bad scores": (lambda f: ["finetune", "--train", str(f["train"]), "--subset-scores",
                                       str(f["badscores"]), "--top-k", "2", "--strategy", "raw-mean", "--out",
                                       str(f["dir"] / "ft_new"), "--no-track", "--model", f["model"]],
                            ["scores_bad.jsonl, row 1, field 'score'"]),
    "finetune zero steps": (lambda f: ["finetune", "--train", str(f["train"]), "--part", "random",
                                       "--subset-size", "2", "--steps", "0", "--out", str(f["dir"] / "ft_new"),
                                       "--no-track", "--model", f["model"]], ["steps"]),
    # a size keeps what it keeps in curate and select: refused before any training when that is nothing
    "finetune top-p 1 of a few rows": (lambda f: ["finetune", "--train", str(f["train"]), "--top-p", "1", "--out",
                                                  str(f["dir"] / "ft_new"), "--no-track", "--model", f["model"]],
                                       ["--top-p 1 keeps no sample of the", "nothing was written"]),
    "finetune subset percent 0": (lambda f: ["finetune", "--train", str(f["train"]), "--part", "random",
                                             "--subset-percent", "0", "--out", str(f["dir"] / "ft_new"), "--no-track",
                                             "--model", f["model"]], ["--subset-percent 0 keeps no sample"]),
    "finetune subset size -1": (lambda f: ["finetune", "--train", str(f["train"]), "--part", "random",
                                           "--subset-size", "-1", "--out", str(f["dir"] / "ft_new"), "--no-track",
                                           "--model", f["model"]], ["--subset-size", ">= 0"]),
    "finetune bottom-p over 100": (lambda f: ["finetune", "--train", str(f["train"]), "--bottom-p", "150", "--out",
                                              str(f["dir"] / "ft_new"), "--no-track", "--model", f["model"]],
                                   ["--bottom-p", "0 to 100"]),
    "store verify without a store": (lambda f: ["store", "verify", "--store", str(f["dir"] / "no_store")],
                                     ["no_store", "no feature store"]),
    # ---- issue 23: what still gave a traceback or a wrong message
    "score out where no file can be made": (lambda f: score(f, out=Path("/proc/fv_x.parquet")),
                                            ["/proc/fv_x.parquet", "cannot create a file in /proc"]),
    "features store where no folder can be made": (lambda f: ["features", "--data", str(f["train"]), "--out",
                                                              "/proc/fv_store", "--model", f["model"]],
                                                   ["/proc/fv_store", "cannot create the feature store in /proc"]),
    "curate out where no file can be made": (lambda f: ["curate", "--train", str(f["train"]), "--val", str(f["val"]),
                                                        "--model", f["model"], "--top-k", "2", "--out",
                                                        "/proc/fv_c.jsonl", "--no-store"],
                                             ["/proc/fv_c.jsonl", "cannot create a file"]),
    "explain json where no file can be made": (lambda f: ["explain", "--train", str(f["train"]), "--val",
                                                          str(f["val"]), "--sample-id", "g0", "--model", f["model"],
                                                          "--json", "/proc/fv_x.json", "--no-store"],
                                               ["/proc/fv_x.json", "cannot create a file"]),
    "bench json where no file can be made": (lambda f: ["bench", "mislabeled", "--model", f["model"], "--json",
                                                        "/proc/fv_b.json"], ["/proc/fv_b.json", "cannot create a file"]),
    "validate not UTF-8": (lambda f: ["validate", "--data", str(f["latin1"])], ["latin1.jsonl, row 2", "UTF-8"]),
    "only row not UTF-8": (lambda f: score(f, "latin1only"), ["latin1only.jsonl, row 1", "UTF-8"]),
    "validate duplicate id": (lambda f: ["validate", "--data", str(f["dupid"])],
                              ["dupid.jsonl, row 2, field 'id': duplicate id 'g0' (first at row 1)"]),
    "validate a FIFO": (lambda f: ["validate", "--data", str(f["fifo"])], ["fifo.jsonl", "not a regular file"]),
    "score a FIFO": (lambda f: score(f, "train", "fifo"), ["fifo.jsonl", "not a regular file"]),
    **{f"{cmd} a pretty-printed JSON object": (
        lambda f, cmd=cmd: ["validate", "--data", str(f["pretty"])] if cmd == "validate" else score(f, "pretty"),
        ["pretty.jsonl, row 1: a JSON object spread over several lines (rows 1 to 5): JSONL needs one object per "
         "line"]) for cmd in ("validate", "score")},
    "bench scale shard size 0": (lambda f: ["bench", "scale", "--samples", "10", "--shard-size", "0"],
                                 ["--shard-size must be >= 1, got 0"]),
    "bench scale percent 150": (lambda f: ["bench", "scale", "--samples", "10", "--strategy", "balanced",
                                           "--subset-percent", "150"], ["--subset-percent", "at most 100, got 150"]),
    "bench scale store is a file": (lambda f: ["bench", "scale", "--samples", "10", "--store", str(f["afile"])],
                                    ["a_file", "must be a folder"]),
    "bench scale rows 0": (lambda f: ["bench", "scale", "--samples", "10", "--rows", "0"], ["--rows must be >= 1"]),
    "bench scale more than the disk holds": (lambda f: ["bench", "scale", "--samples", "2000000000", "--store",
                                                        str(f["dir"] / "scale_store")],
                                             ["--samples 2000000000 writes about", "GB free"]),
    "store verify a folder that is not a store": (lambda f: ["store", "verify", "--store", str(f["plaindir"])],
                                                  ["plain_dir", "no feature store here"]),
    "store verify a file": (lambda f: ["store", "verify", "--store", str(f["afile"])], ["a_file", "must be a folder"]),
}


def _snapshot(folder: Path) -> dict:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_the_commands_the_cases_break_work_on_good_input(files, tmp_path, capsys):
    """The table's control: the score, features and curate commands that the cases break run on the
    good files (exit 0, their output written, no error on stderr), so each case's status 2 comes from
    what the case breaks."""
    assert main([*score(files, out=tmp_path / "s.parquet"), "--quiet"]) == 0
    assert sorted(r["id"] for r in pq.read_table(tmp_path / "s.parquet").to_pylist()) == [r["id"] for r in GOOD]
    assert main(["features", "--data", str(files["train"]), "--out", str(tmp_path / "fs"), "--model", files["model"],
                 "--shard-size", "2", "--quiet"]) == 0
    assert "6 samples: 6 computed, 0 already stored" in capsys.readouterr().out
    assert main(["curate", "--train", str(files["train"]), "--val", str(files["val"]), "--model", files["model"],
                 "--top-k", "2", "--out", str(tmp_path / "c.jsonl"), "--no-store", "--quiet"]) == 0
    kept = [json.loads(x)["id"] for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(kept) == 2 and set(kept) < {r["id"] for r in GOOD}
    # nothing but the one-line warnings of the CLI (the tiny records compute nothing for the answer check)
    err = capsys.readouterr().err.splitlines()
    assert all(x.startswith("forvalue: warning: ") for x in err), err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, files, capsys):
    argv, expected = CASES[name]
    argv = argv(files)
    before = _snapshot(files["dir"])
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("forvalue: error: "), err
    assert "Traceback" not in err
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    after = _snapshot(files["dir"])
    assert {k: v for k, v in after.items() if k in before} == before        # every input unchanged
    new = set(after) - set(before)
    assert not new, new                                                      # nothing written


def test_what_used_to_fail_now_works(files, tmp_path, capsys):
    """A UTF-8 byte order mark is accepted; JSONL output holds null where a value is not finite; a
    nested column goes into CSV as JSON."""
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in GOOD).encode())
    bom_csv = tmp_path / "bom.csv"
    bom_csv.write_bytes(b"\xef\xbb\xbfprompt,response\nWhat is 1?,One.\nWhat is 2?,Two.\n")
    nested = jl(tmp_path / "nested.jsonl", [{**r, "meta": {"source": "web", "tags": ["a", "b"]},
                                             "weight": float("nan") if i == 0 else 1.0}
                                            for i, r in enumerate(GOOD)])
    for train, out in ((bom, "a.jsonl"), (bom_csv, "b.csv"), (nested, "c.csv"), (nested, "d.jsonl")):
        assert main(["score", "--train", str(train), "--val", str(files["val"]), "--model", files["model"],
                     "--out", str(tmp_path / out), "--no-store", "--quiet"]) == 0, capsys.readouterr().err
    rows = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]   # strict JSON: no NaN
    assert {r["id"]: r["weight"] for r in rows}["g0"] is None
    import csv

    cells = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert json.loads(cells[0]["meta"]) == {"source": "web", "tags": ["a", "b"]}


def test_options_removed_in_0_2_0_are_refused(files, capsys):
    """0.2.0 removed the deprecated spellings: ``--k`` (now only ``--top-tokens``) and the scoring
    method ``full`` (now ``full-vocab``) stop with argparse's usage error, before any work."""
    for extra, named in ((["--k", "4"], "unrecognized arguments: --k 4"), (["--method", "full"], "invalid choice: 'full'")):
        with pytest.raises(SystemExit) as exc:
            main(score(files, "train", "val", *extra))
        assert exc.value.code == 2
        assert named in capsys.readouterr().err


def _err_lines(capsys) -> tuple[str, list[str]]:
    captured = capsys.readouterr()
    return captured.out, [x for x in captured.err.splitlines() if x.strip()]


def test_numbers_arrow_cannot_hold_are_written_faithfully_and_named(files, tmp_path, capsys):
    """An input column holding 1e999 (inf), a 30-digit integer or values of mixed types used to stop
    the write with ArrowInvalid after the scoring. Parquet keeps inf as a double, such an integer as
    decimal(38, 0) and a mixed column as text, and one note names the columns converted; CSV writes
    the digits; JSONL the exact integer (and null for inf: strict JSON). A column only later rows have
    is carried too (the table's columns are every row's, not the first row's)."""
    import csv
    from decimal import Decimal

    big = 123456789012345678901234567890
    lines = [json.dumps(r)[:-1] + f', "w": {"1e999" if i == 0 else "1.5"}, "big": {big if i == 1 else 7}, '
             f'"mix": {json.dumps("a") if i == 2 else 3}' + (', "late": "x"}' if i == 5 else "}")
             for i, r in enumerate(GOOD)]
    train = tmp_path / "meta.jsonl"
    train.write_text("\n".join(lines) + "\n")
    for out in ("m.parquet", "m.csv", "m.jsonl"):
        err = _score_notes(files, train, tmp_path / out, capsys)
        if out.endswith(".parquet"):
            assert err == [f"forvalue: note: {tmp_path / out}: column 'big' holds integers beyond 64 bits: written as "
                           "decimal(38, 0); column 'mix' fits no one Parquet type (values: int, str): written as text"]
        else:
            assert err == []
    by_id = {r["id"]: r for r in pq.read_table(tmp_path / "m.parquet").to_pylist()}
    assert by_id["g0"]["w"] == float("inf") and by_id["g1"]["big"] == Decimal(big) and by_id["g0"]["big"] == 7
    assert by_id["g2"]["mix"] == "a" and by_id["g3"]["mix"] == "3" and by_id["g5"]["late"] == "x"
    assert by_id["g0"]["late"] is None
    cells = {r["id"]: r for r in csv.DictReader((tmp_path / "m.csv").open())}
    assert cells["g1"]["big"] == str(big) and cells["g0"]["w"] == "inf"
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "m.jsonl").read_text().splitlines())}
    assert rows["g1"]["big"] == big and rows["g0"]["w"] is None


def _score_notes(files, train, out, capsys) -> list[str]:
    """``forvalue score`` of ``train`` against the good valuation file into ``out`` (exit 0): its stderr lines."""
    capsys.readouterr()
    argv = score(files, "train", "val", "--quiet", out=out)
    argv[2] = str(train)
    assert main(argv) == 0
    return _err_lines(capsys)[1]


def test_binary_columns_left_out_are_named(files, tmp_path, capsys):
    """Image bytes (a bytes column, a Hugging Face image dict) stay in the input file; every output
    says in one line which columns it left out."""
    train = tmp_path / "bin.parquet"
    pq.write_table(pa.Table.from_pylist([{**r, "thumb": b"\x89PNG" + bytes([i]), "img": {"bytes": b"xy", "path": None}}
                                         for i, r in enumerate(GOOD)]), train)
    for out in ("b.parquet", "b.jsonl", "b.csv"):
        err = _score_notes(files, train, tmp_path / out, capsys)
        assert err == [f"forvalue: note: {tmp_path / out}: left out the binary columns 'thumb', 'img' (image bytes and "
                       "the like stay in the input file)"]
    assert set(pq.read_schema(tmp_path / "b.parquet").names) >= {"id", "prompt", "response"}
    assert not {"thumb", "img"} & set(pq.read_schema(tmp_path / "b.parquet").names)


def test_a_write_that_fails_after_the_work_is_one_line(files, tmp_path, capsys, monkeypatch):
    """A disk that fills up while the table is written: one line naming the output, nothing left."""
    from forvalue.cli import output

    def full(path, write):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output, "atomic_write", full)
    capsys.readouterr()
    assert main(score(files, "train", "val", "--quiet", out=tmp_path / "s.parquet")) == 2
    _, err = _err_lines(capsys)
    assert err == [f"forvalue: error: {tmp_path / 's.parquet'}: cannot write it (No space left on device); nothing was "
                   "written"]
    assert list(tmp_path.iterdir()) == []


def test_unreadable_model_weights_are_one_line(files, tmp_path, capsys, monkeypatch):
    """Weights this user may not read (mode 000; simulated, the tests may run as root): one line naming
    the file, before anything is loaded - whether the check sees it or the read meets it."""
    import builtins

    from forvalue.models import loading

    folder = tmp_path / "model"
    shutil.copytree(files["model"], folder)
    weights = next(folder.glob("*.safetensors"))
    real_access, real_open = os.access, builtins.open
    monkeypatch.setattr(loading.os, "access", lambda p, mode: Path(p) != weights and real_access(p, mode))
    argv = score(files, "train", "val", "--quiet", out=tmp_path / "s.parquet")
    argv[6] = str(folder)
    for _ in range(2):
        capsys.readouterr()
        assert main(argv) == 2
        _, err = _err_lines(capsys)
        assert len(err) == 1 and err[0].startswith(f"forvalue: error: {weights}: no permission to read it"), err
        monkeypatch.setattr(loading.os, "access", real_access)           # the second time: the read itself fails

        def denied(path, *a, **k):
            if Path(str(path)) == weights:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **k)

        monkeypatch.setattr(builtins, "open", denied)
    assert not (tmp_path / "s.parquet").exists()


def test_store_verify_names_its_folders_refuses_misplaced_shards_and_reads_a_read_only_store(files, tmp_path,
                                                                                          capsys, monkeypatch):
    """verify lists the model/config folders it found; a shard of another model (a folder copied by
    hand, which reading refuses) is a problem, not "sound"; a store this user may not write is
    verified without writing (simulated: the lock cannot be created), and only --repair needs write
    access and says so."""
    store = tmp_path / "fs"
    assert main(["features", "--data", str(files["train"]), "--out", str(store), "--model", files["model"],
                 "--quiet"]) == 0
    folder = next(p for p in store.glob("*/*") if p.is_dir())
    capsys.readouterr()
    assert main(["store", "verify", "--store", str(store)]) == 0
    out, _ = _err_lines(capsys)
    assert f"  {folder}: model tiny-llama-0@" in out and f"feature config {folder.name}, 6 samples" in out
    assert out.rstrip().endswith("sound")
    # read-only: the store's lock cannot be made
    before = _snapshot(store)
    real_open = os.open

    def read_only(path, flags, *a, **k):
        if str(path).endswith("store.lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", read_only)
    assert main(["store", "verify", "--store", str(store)]) == 0
    out, err = _err_lines(capsys)
    assert "read-only: checked without the store's lock" in out and out.rstrip().endswith("sound") and err == []
    assert main(["store", "verify", "--store", str(store), "--repair"]) == 2
    _, err = _err_lines(capsys)
    assert len(err) == 1 and "--repair needs write access to the store" in err[0]
    monkeypatch.setattr(os, "open", real_open)
    assert _snapshot(store) == before
    # another model's shards under this folder's name
    other = store / "other-0123456789ab" / folder.name
    shutil.copytree(folder, other)
    assert main(["store", "verify", "--store", str(store)]) == 1
    out, _ = _err_lines(capsys)
    assert f"misplaced: {next(other.glob('shard-*.json'))}: holds features of model tiny-llama-0@" in out
    assert f"not other-0123456789ab/{folder.name}: reading refuses it" in out and "sound" not in out


def test_warnings_are_forvalue_lines_each_once(files, tmp_path, capsys, monkeypatch):
    """A warning raised while a command runs is one `forvalue: warning:` line, each message once, never
    a raw `RuntimeWarning` line with its source; another package's deprecation notices are not shown."""
    import warnings

    from forvalue.cli import runner

    capsys.readouterr()
    assert main(["curate", "--train", str(files["train"]), "--val", str(files["val"]), "--model", files["model"],
                 "--top-k", "2", "--out", str(tmp_path / "c.jsonl"), "--no-store", "--quiet"]) == 0
    _, err = _err_lines(capsys)
    assert err == ["forvalue: warning: consistency check answer not applied: no valuation sample has a value (no "
                   "response ends a computation with '= <number>')",
                   "forvalue: warning: consistency check arithmetic not applied: no valuation sample has a value (no "
                   "response writes arithmetic the check can parse)"]
    show = runner.warning_printer(set())
    for _ in range(3):
        show(RuntimeWarning("overflow\n  encountered"), RuntimeWarning, runner.__file__, 1)
    show(FutureWarning("x is deprecated"), FutureWarning, "/v/lib/python3.11/site-packages/torch/a.py", 2)
    show(UserWarning("sparse CSR is beta"), UserWarning, "/v/lib/python3.11/site-packages/torch/b.py", 3)
    _, err = _err_lines(capsys)
    assert err == ["forvalue: warning: overflow encountered", "forvalue: warning: torch: sparse CSR is beta"]
    assert warnings.showwarning is not show                         # only while a command runs


def test_a_permission_problem_is_one_line_naming_the_file(files, monkeypatch, capsys, tmp_path):
    """A folder of a shared store this user may not write (the lock file, a new shard): one line naming
    it, exit 2, no traceback (simulated: tests may run as root, for whom every file is writable)."""
    from forvalue.store.feature_store import FeatureStore

    def denied(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "fs" / ".lock"))

    monkeypatch.setattr(FeatureStore, "ensure", denied)
    argv = [x for x in score(files, out=tmp_path / "s.parquet") if x != "--no-store"]
    rc = main([*argv, "--store", str(tmp_path / "fs"), "--quiet"])
    err = [x for x in capsys.readouterr().err.splitlines() if not x.startswith("forvalue: warning: ")]
    assert rc == 2 and len(err) == 1 and "Traceback" not in "".join(err), err
    assert err[0].startswith(f"forvalue: error: {tmp_path / 'fs' / '.lock'}: permission denied")
    assert not (tmp_path / "s.parquet").exists()
