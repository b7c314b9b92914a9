"""Samples: schema, readers (JSONL, Parquet, CSV, HF ``save_to_disk`` folders), validation, content ids.

A sample has one of
- ``prompt`` + ``response``,
- ``messages`` (a chat list; the last assistant turn is the response),
- ``text`` (plain text; every token counts as response).
Optional: ``id``, images (VLM), a label/class, and any other columns, carried through as ``record``.

Errors name the file, the row (1-based; JSONL rows are line numbers) and the field. With
``on_error="skip"`` bad rows are skipped and reported in ``LoadedData.skipped``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..config import opt
from ..errors import DataError  # noqa: F401  (re-exported: forvalue.data.samples.DataError)

SUPPORTED = "JSONL (.jsonl/.json), Parquet (.parquet), CSV (.csv) or a Hugging Face save_to_disk folder"




@dataclass
class Sample:
    sample_id: str
    prompt: str | None = None
    response: str | None = None
    messages: list[dict] | None = None
    text: str | None = None
    images: list[Any] = field(default_factory=list)
    label: Any = None
    user_id: str | None = None
    record: dict = field(default_factory=dict)
    source: str = "<memory>"
    row: int | None = None
    image_field: str | None = None

    @property
    def kind(self) -> str:
        if self.messages is not None:
            return "messages"
        if self.text is not None:
            return "text"
        return "prompt_response"


@dataclass
class SkippedRow:
    row: int | None
    field: str | None
    reason: str


@dataclass
class LoadedData:
    path: str
    samples: list[Sample]
    skipped: list[SkippedRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)


@dataclass(frozen=True)
class Columns:
    """Which columns hold what. ``text`` set means plain-text samples."""

    prompt: str = opt("prompt", "column of the prompt (instruction)", flag="--prompt-column")
    response: str = opt("response", "column of the response (what the model learns to answer)",
                        flag="--response-column")
    messages: str = opt("messages", "column of chat messages (the last assistant turn is the response)",
                        flag="--messages-column")
    text: str | None = opt(None, "column of plain-text samples (every token counts; prompt/response unused)",
                           flag="--text-column")
    id: str = opt("id", "column of your own sample ids (optional; carried to every output)", flag="--id-column")
    label: str | None = opt(None, "column of a class label (optional)", flag="--label-column")
    image: str | None = opt(None, "column of image paths or bytes (VLMs)", flag="--image-column")


# ----------------------------------------------------------------------------- content ids
def _image_digest(image: Any) -> str:
    if isinstance(image, (bytes, bytearray)):
        return hashlib.sha256(bytes(image)).hexdigest()
    if isinstance(image, dict):  # HF Image feature: {"bytes": ..., "path": ...}
        if image.get("bytes"):
            return hashlib.sha256(bytes(image["bytes"])).hexdigest()
        image = image.get("path")
    path = Path(str(image))
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return "path:" + str(image)


def load_image(sample: Sample, j: int):
    """Open image j of a sample as RGB; an unreadable image names the file, row and field."""
    from PIL import Image, UnidentifiedImageError

    item = sample.images[j]
    field_name = sample.image_field or "image"
    if len(sample.images) > 1:
        field_name += f"[{j}]"
    try:
        if isinstance(item, (bytes, bytearray)):
            img = Image.open(io.BytesIO(item))
        elif hasattr(item, "convert"):  # already a PIL image
            img = item
        else:
            img = Image.open(item)
        img.load()
        return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataError(sample.source, sample.row, field_name, f"unreadable image: {e}") from None


def content_id(sample: Sample) -> str:
    """Hash of what the model sees (text fields and image bytes), not of ids or metadata."""
    payload = {
        "prompt": sample.prompt,
        "response": sample.response,
        "messages": sample.messages,
        "text": sample.text,
        "images": [_image_digest(i) for i in sample.images],
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


# ----------------------------------------------------------------------------- readers
def detect_format(path: Path) -> str:
    if path.is_dir():
        if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            return "hf"
        raise DataError(str(path), None, None, f"a folder that is not a Hugging Face save_to_disk dataset; use {SUPPORTED}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix == ".csv":
        return "csv"
    raise DataError(str(path), None, None, f"unknown format {suffix!r}; use {SUPPORTED}")


def _decode_utf8(file: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(file, line, None, f"not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None


_BOM = b"\xef\xbb\xbf"


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict | DataError]]:
    file = str(path)
    raw = path.read_bytes()
    if raw.startswith(_BOM):   # spreadsheet exports often start with a UTF-8 byte order mark
        raw = raw[len(_BOM):]
    if path.suffix.lower() == ".json" and raw.lstrip()[:1] == b"[":
        text = _decode_utf8(file, raw)
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(file, e.lineno, None, f"invalid JSON: {e.msg}") from None
        for i, obj in enumerate(items, 1):
            yield i, obj if isinstance(obj, dict) else DataError(file, i, None, "not a JSON object")
        return
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield lineno, DataError(file, lineno, None, f"not valid UTF-8 (byte {line[e.start]:#04x} at column {e.start + 1})")
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield lineno, DataError(file, lineno, None, f"invalid JSON: {e.msg} at column {e.colno}")
            continue
        if not isinstance(obj, dict):
            yield lineno, DataError(file, lineno, None, f"expected a JSON object, got {type(obj).__name__}")
            continue
        yield lineno, obj


def _read_csv(path: Path) -> tuple[list[str], Iterator[tuple[int, dict | DataError]]]:
    file = str(path)
    raw = path.read_bytes()
    text = _decode_utf8(file, raw[len(_BOM):] if raw.startswith(_BOM) else raw)
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = list(reader.fieldnames or [])
    except csv.Error as e:
        raise DataError(file, None, None, f"the header line is not valid CSV: {e}") from None

    def rows():
        i, line = 0, reader.line_num
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                where = f"a quoted field opened on line {line + 1} is never closed" if "EOF" in str(e) or \
                    "end of data" in str(e) else f"not valid CSV ({e})"
                raise DataError(file, i + 1, None, where) from None
            i, line = i + 1, reader.line_num
            if None in row:
                yield i, DataError(file, i, None, f"{len(header) + len(row[None])} values for {len(header)} columns")
                continue
            yield i, {k: (v if v != "" else None) for k, v in row.items()}

    return header, rows()


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(str(path), None, None, f"unreadable Parquet file: {e}") from None
    return table


def _hf_data_files(path: Path, split: str | None = None) -> list[Path]:
    """The Arrow files of a save_to_disk folder (a DatasetDict folder: its ``split``, else train)."""
    folder = path
    if (path / "dataset_dict.json").exists():
        splits = _json_file(path / "dataset_dict.json").get("splits", [])
        chosen = split or "train"
        if chosen not in splits:
            raise DataError(str(path), None, None, f"no {chosen!r} split (the dataset has {splits or 'no splits'}); "
                                                   f"a DatasetDict folder is read through its train split")
        folder = path / chosen
    state = _json_file(folder / "state.json")
    files = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(files, list) or not all(isinstance(e, dict) and "filename" in e for e in files):
        raise DataError(str(folder / "state.json"), None, "_data_files", "missing or not a list of data files")
    if not files:
        raise DataError(str(folder), None, None, "no data files listed in state.json")
    return [folder / e["filename"] for e in files]


def _read_hf(path: Path, split: str | None):
    import pyarrow as pa

    tables = []
    for f in _hf_data_files(path, split):
        try:
            with pa.memory_map(str(f)) as source:
                tables.append(pa.ipc.open_stream(source).read_all())
        except Exception as e:
            raise DataError(str(f), None, None, f"unreadable Arrow file: {e}") from None
    return pa.concat_tables(tables)


def _json_file(path: Path):
    """A JSON metadata file of a dataset folder, or a DataError naming it."""
    if not path.is_file():
        raise DataError(str(path), None, None, "file not found (the folder is not a complete save_to_disk dataset)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(str(path), getattr(e, "lineno", None), None, f"not valid JSON: {e}") from None


def read_records(path: str | Path, *, split: str | None = None) -> tuple[list[str] | None, list[tuple[int, dict | DataError]]]:
    """Raw rows of a file: (header or None, [(row number, dict or the error for that row)])."""
    p = Path(path)
    if not p.exists():
        raise DataError(str(p), None, None, "file not found")
    fmt = detect_format(p)
    try:
        if fmt == "jsonl":
            return None, list(_read_jsonl(p))
        if fmt == "csv":
            header, rows = _read_csv(p)
            return header, list(rows)
        table = _read_parquet(p) if fmt == "parquet" else _read_hf(p, split)
    except OSError as e:
        raise DataError(str(p), None, None, f"cannot read: {e.strerror or e}") from None
    return list(table.column_names), list(enumerate(table.to_pylist(), 1))


# ----------------------------------------------------------------------------- validation
def _as_text(file: str, row: int, name: str, value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(file, row, name, "not valid UTF-8") from None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise DataError(file, row, name, "missing value")
    if not isinstance(value, str):
        raise DataError(file, row, name, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise DataError(file, row, name, "empty")
    return value


def _messages(file: str, row: int, name: str, value: Any) -> list[dict]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(file, row, name, "not a JSON list of chat messages") from None
    if not isinstance(value, list) or not value:
        raise DataError(file, row, name, "expected a non-empty list of {role, content} messages")
    out = []
    for j, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(file, row, f"{name}[{j}]", "expected {role, content}")
        out.append({"role": m["role"], "content": _as_text(file, row, f"{name}[{j}].content", m["content"])})
    if out[-1]["role"] != "assistant":
        raise DataError(file, row, name, "the last message must be the assistant's response")
    return out


def _images(file: str, row: int, name: str, value: Any, base: Path) -> list[Any]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for j, item in enumerate(items):
        field_name = name if len(items) == 1 else f"{name}[{j}]"
        if isinstance(item, dict):
            item = item.get("bytes") or item.get("path")
        if isinstance(item, (bytes, bytearray)):
            if len(item) == 0:
                raise DataError(file, row, field_name, "image has zero bytes")
            out.append(bytes(item))
        elif isinstance(item, str) and item:
            p = Path(item)
            if not p.is_absolute():
                p = base / p
            if not p.is_file():
                raise DataError(file, row, field_name, f"image file not found: {item}")
            if p.stat().st_size == 0:
                raise DataError(file, row, field_name, f"image file has zero size: {item}")
            out.append(str(p))
        else:
            raise DataError(file, row, field_name, "expected an image path or bytes")
    return out


def record_to_sample(obj: dict, *, file: str, row: int, columns: Columns, base: Path) -> Sample:
    c = columns
    prompt = response = text = messages = None
    if c.text is not None:
        if c.text not in obj:
            raise DataError(file, row, c.text, "missing column")
        text = _as_text(file, row, c.text, obj[c.text])
    elif obj.get(c.messages) is not None and obj.get(c.prompt) is None:
        messages = _messages(file, row, c.messages, obj[c.messages])
    else:
        for name in (c.prompt, c.response):
            if name not in obj:
                raise DataError(file, row, name, "missing column")
        prompt = _as_text(file, row, c.prompt, obj[c.prompt])
        response = _as_text(file, row, c.response, obj[c.response])
    images = _images(file, row, c.image, obj.get(c.image), base) if c.image else []
    label = obj.get(c.label) if c.label else None
    if c.label and label is None:
        raise DataError(file, row, c.label, "missing label")
    uid = obj.get(c.id)
    s = Sample(sample_id="", prompt=prompt, response=response, messages=messages, text=text,
               images=images, label=label, user_id=None if uid is None else str(uid),
               record=dict(obj), source=file, row=row, image_field=c.image)
    s.sample_id = content_id(s)
    return s


def samples_from_rows(
    rows: Iterable[tuple[int, dict | DataError]],
    *,
    file: str,
    header: list[str] | None = None,
    columns: Columns = Columns(),
    on_error: str = "raise",
    base: Path | None = None,
) -> LoadedData:
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    rows = list(rows)
    base = base or Path(file).parent
    _check_columns(file, header, rows, columns)
    samples: list[Sample] = []
    skipped: list[SkippedRow] = []
    seen_ids: dict[str, int] = {}
    for row, obj in rows:
        try:
            if isinstance(obj, DataError):
                raise obj
            s = record_to_sample(obj, file=file, row=row, columns=columns, base=base)
            if s.user_id is not None:
                if s.user_id in seen_ids:
                    raise DataError(file, row, columns.id, f"duplicate id {s.user_id!r} (first at row {seen_ids[s.user_id]})")
                seen_ids[s.user_id] = row
        except DataError as e:
            if on_error == "raise":
                raise
            skipped.append(SkippedRow(e.row, e.field, e.reason))
            continue
        samples.append(s)
    if not samples:
        raise DataError(file, None, None, "no usable samples" + (f" ({len(skipped)} skipped)" if skipped else " (empty file)"))
    return LoadedData(path=file, samples=samples, skipped=skipped)


def _check_columns(file: str, header: list[str] | None, rows: list, columns: Columns) -> None:
    """File-level checks: no rows at all, a needed column absent from every row, or present but
    empty in all."""
    if not rows:
        raise DataError(file, None, None, "no rows: the file is empty (or holds only blank lines)")
    dicts = [o for _, o in rows if isinstance(o, dict)]
    keys = set(header) if header is not None else set().union(*(d.keys() for d in dicts)) if dicts else set()
    if columns.text is not None:
        needed = [columns.text]
    elif columns.messages in keys and columns.prompt not in keys:
        needed = [columns.messages]
    else:
        needed = [columns.prompt, columns.response]
    if columns.label:
        needed.append(columns.label)
    if columns.image:
        needed.append(columns.image)
    for name in needed:
        if name not in keys:
            hint = f"; columns are {sorted(keys)}" if keys else ""
            raise DataError(file, None, name, f"missing column{hint}")
        if dicts and all(d.get(name) in (None, "") for d in dicts):
            raise DataError(file, None, name, "column is empty in every row")


def load_samples(
    path: str | Path,
    *,
    columns: Columns | None = None,
    on_error: str = "raise",
    split: str | None = None,
    **column_names: Any,
) -> LoadedData:
    """Read a dataset file into samples. Column names via ``columns`` or keyword (prompt=..., text=...)."""
    cols = columns or Columns(**{k: v for k, v in column_names.items() if v is not None})
    header, rows = read_records(path, split=split)
    return samples_from_rows(rows, file=str(path), header=header, columns=cols, on_error=on_error)


def samples_from_records(records: list[dict], *, source: str = "<memory>", columns: Columns | None = None,
                         on_error: str = "raise") -> LoadedData:
    rows = [(i, r) for i, r in enumerate(records, 1)]
    return samples_from_rows(rows, file=source, columns=columns or Columns(), on_error=on_error, base=Path.cwd())
