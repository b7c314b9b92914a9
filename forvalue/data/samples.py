"""Samples: schema, validation, content ids, and files loaded whole (JSONL, Parquet, CSV, HF
``save_to_disk`` folders, all read by :mod:`forvalue.data.reader`).

A sample has one of
- ``prompt`` + ``response``,
- ``messages`` (a chat list; the last assistant turn is the response),
- ``text`` (plain text; every token counts as response).
Optional: ``id``, images (VLM), a label/class, and any other columns, carried through as ``record``.

Errors name the file, the row (1-based; JSONL rows are line numbers) and the field. With
``on_error="skip"`` bad rows are skipped and reported in ``LoadedData.skipped``.
"""

from __future__ import annotations

import hashlib
import heapq
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..config import opt
from ..errors import DataError  # noqa: F401  (re-exported: forvalue.data.samples.DataError)
from .reader import Row, raw_batches, read_header


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


@dataclass
class Batch:
    """Rows of a file turned into samples: the valid ones, the bad rows, how many rows (and records)
    it held, and which columns its records had (``columns``) and had a value in (``keys``)."""

    samples: list[Sample]
    errors: list[DataError]
    n_rows: int
    keys: set = field(default_factory=set)
    columns: set = field(default_factory=set)
    n_records: int = 0


def to_batch(file: str, rows: list[Row], columns: Columns, base: Path | None = None) -> Batch:
    """The samples and bad rows of (row number, dict or error) rows of ``file`` (image paths relative
    to ``base``, by default the file's folder)."""
    base = base or Path(file).parent
    out = Batch(samples=[], errors=[], n_rows=len(rows))
    keys, present = out.keys, out.columns
    for row, obj in rows:
        if isinstance(obj, DataError):
            out.errors.append(obj)
            continue
        out.n_records += 1
        if not present.issuperset(obj):
            present.update(obj)
        if not keys.issuperset(obj):
            keys.update(k for k, v in obj.items() if v is not None and v != "")
        try:
            out.samples.append(record_to_sample(obj, file=file, row=row, columns=columns, base=base))
        except DataError as e:
            out.errors.append(e)
    return out


def needed_columns(columns: Columns, keys: set) -> list[str]:
    """The columns a file must have, given the keys it has (messages replace prompt/response)."""
    if columns.text is not None:
        need = [columns.text]
    elif columns.messages in keys and columns.prompt not in keys:
        need = [columns.messages]
    else:
        need = [columns.prompt, columns.response]
    return need + [c for c in (columns.label, columns.image) if c]


def _check_columns(file: str, header: list[str] | None, batches: list[Batch], columns: Columns) -> None:
    """File-level checks: no rows at all, a needed column absent from every row, or present but
    empty in all."""
    if not any(b.n_rows for b in batches):
        raise DataError(file, None, None, "no rows: the file is empty (or holds only blank lines)")
    keys = set(header) if header is not None else set().union(*(b.columns for b in batches))
    filled = set().union(*(b.keys for b in batches))
    records = any(b.n_records for b in batches)
    if header is None and not records:   # no row read as a record: its columns are unknown, its rows say why
        return
    for name in needed_columns(columns, keys):
        if name not in keys:
            hint = f"; columns are {sorted(keys)}" if keys else ""
            raise DataError(file, None, name, f"missing column{hint}")
        if records and name not in filled:
            raise DataError(file, None, name, "column is empty in every row")


def _loaded(file: str, batches: list[Batch], *, header: list[str] | None = None, columns: Columns = Columns(),
            on_error: str = "raise") -> LoadedData:
    """The samples of a whole file's batches, after its file-level checks; the first bad row (in row
    order; a repeated id included) raises, or every bad row is skipped and reported."""
    if on_error not in ("raise", "skip"):
        raise ValueError("on_error must be 'raise' or 'skip'")
    _check_columns(file, header, batches, columns)
    samples: list[Sample] = []
    skipped: list[SkippedRow] = []
    seen_ids: dict[str, int] = {}
    for batch in batches:
        items = heapq.merge(batch.samples, batch.errors, key=lambda x: x.row or 0) if batch.errors else batch.samples
        for item in items:
            try:
                if isinstance(item, DataError):
                    raise item
                if item.user_id is not None:
                    if item.user_id in seen_ids:
                        raise DataError(file, item.row, columns.id,
                                        f"duplicate id {item.user_id!r} (first at row {seen_ids[item.user_id]})")
                    seen_ids[item.user_id] = item.row
            except DataError as e:
                if on_error == "raise":
                    raise
                skipped.append(SkippedRow(e.row, e.field, e.reason))
                continue
            samples.append(item)
    if not samples:
        raise DataError(file, None, None,
                        "no usable samples" + (f" ({len(skipped)} skipped)" if skipped else " (empty file)"))
    return LoadedData(path=file, samples=samples, skipped=skipped)


def samples_from_rows(rows: Iterable[Row], *, file: str, header: list[str] | None = None,
                      columns: Columns = Columns(), on_error: str = "raise", base: Path | None = None) -> LoadedData:
    """The samples of (row number, dict or error) rows, as :func:`load_samples` gives them."""
    return _loaded(file, [to_batch(file, list(rows), columns, base)], header=header, columns=columns,
                  on_error=on_error)


def load_samples(
    path: str | Path,
    *,
    columns: Columns | None = None,
    on_error: str = "raise",
    split: str | None = None,
    **column_names: Any,
) -> LoadedData:
    """Read a dataset file into samples: every batch of :func:`forvalue.data.reader.raw_batches`.
    Column names via ``columns`` or keyword (prompt=..., text=...)."""
    cols = columns or Columns(**{k: v for k, v in column_names.items() if v is not None})
    file = str(path)
    header = read_header(path, split=split)
    batches = [to_batch(file, rows, cols) for rows in raw_batches(path, split=split)]
    return _loaded(file, batches, header=header, columns=cols, on_error=on_error)


def samples_from_records(records: list[dict], *, source: str = "<memory>", columns: Columns | None = None,
                         on_error: str = "raise") -> LoadedData:
    rows = [(i, r) for i, r in enumerate(records, 1)]
    return samples_from_rows(rows, file=source, columns=columns or Columns(), on_error=on_error, base=Path.cwd())
