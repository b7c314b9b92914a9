"""Tiny random-weight models with a locally built tokenizer: for tests and smoke runs, no download.

``build_tiny_text_model(folder)`` writes a Llama-architecture model (safetensors) and a
character-level tokenizer with a ChatML chat template; ``forvalue`` loads the folder like any
other model folder.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(chat_template: bool = True):
    """Character-level fast tokenizer over printable ASCII (+ specials); adds <s> at the start."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = [c for c in string.printable if c not in "\x0b\x0c\r"]
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat_template:
        fast.chat_template = CHATML
    return fast


def tiny_llama_config(vocab_size: int, *, hidden: int = 32, layers: int = 2, heads: int = 4,
                      tie: bool = False, max_positions: int = 512):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=max_positions, tie_word_embeddings=tie,
        bos_token_id=2, eos_token_id=3, pad_token_id=1,
    )


def build_tiny_text_model(folder: str | Path | None = None, *, seed: int = 0, tie: bool = False,
                          hidden: int = 32, layers: int = 2, dtype=None, chat_template: bool = True,
                          max_positions: int = 512):
    """Build (and save to ``folder`` when given) a tiny random Llama with a char tokenizer.
    Returns (model, tokenizer)."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer(chat_template)
    torch.manual_seed(seed)
    config = tiny_llama_config(len(tokenizer), hidden=hidden, layers=layers, tie=tie, max_positions=max_positions)
    model = LlamaForCausalLM(config)
    _finish(model, tokenizer, folder, f"tiny-llama-{seed}", dtype)
    return model, tokenizer


def _finish(model, tokenizer_or_processor, folder, name: str, dtype) -> None:
    """Sharpen the random predictions (so top-k and probabilities matter), cast, and save."""
    import torch

    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)
    if dtype is not None:
        model.to(dtype)
    model.eval()
    if folder is not None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder, safe_serialization=True)
        if tokenizer_or_processor is not None:
            tokenizer_or_processor.save_pretrained(folder)
        (folder / "forvalue_model.json").write_text(json.dumps({"name": name}))


VLM_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_vlm(folder: str | Path | None = None, *, seed: int = 0, image_size: int = 32, patch_size: int = 8,
                   hidden: int = 32, dtype=None):
    """A tiny random LLaVA-style VLM (CLIP vision tower + Llama) with a locally built processor
    (CLIP image processor + char tokenizer with an ``<image>`` token and a ChatML template).
    Returns (model, processor); saved to ``folder`` when given."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tok = build_tokenizer(chat_template=True)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<image>"]})
    image_token = tok.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
                              num_attention_heads=4, image_size=image_size, patch_size=patch_size,
                              projection_dim=hidden)
    n_tokens = (image_size // patch_size) ** 2
    config = LlavaConfig(vision_config=vision, text_config=tiny_llama_config(len(tok), hidden=hidden),
                         image_token_index=image_token, image_seq_length=n_tokens, vision_feature_layer=-1,
                         vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=patch_size,
                               vision_feature_select_strategy="default", chat_template=VLM_CHAT_TEMPLATE,
                               num_additional_image_tokens=1)
    _finish(model, processor, folder, f"tiny-llava-{seed}", dtype)
    return model, processor


QWEN2VL_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2vl(folder: str | Path | None = None, *, seed: int = 0, hidden: int = 32, patch_size: int = 4,
                       max_pixels: int = 32 * 32, dtype=None):
    """A tiny random Qwen2-VL (ViT with 2x2 patch merging + Qwen2 text model with multimodal RoPE)
    and a locally built Qwen2VLProcessor (PIL image processor, char tokenizer with the vision tokens,
    ChatML template with ``<|vision_start|><|image_pad|><|vision_end|>``). Images are resized to at
    most ``max_pixels``; each image gives (h/patch)*(w/patch)/4 ``<|image_pad|>`` tokens.

    The processor has no video part (transformers' video processors need torchvision). Saved to
    ``folder`` as model + tokenizer + image processor + ``processor_config.json``;
    :func:`forvalue.models.loading.load_model` loads it through its image-only processor fallback when
    torchvision is missing. Returns (model, processor)."""
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from forvalue.models.loading import image_only_processor_class

    tok = build_tokenizer(chat_template=True)
    vision_tokens = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"] + vision_tokens})
    ids = {t: tok.convert_tokens_to_ids(t) for t in vision_tokens}
    heads = 4
    half = hidden // heads // 2                       # rotary pairs per head, split over (t, h, w)
    mrope = [half - 2 * (half // 4), half // 4, half // 4]
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=heads // 2, max_position_embeddings=512,
                         rope_parameters={"rope_type": "default", "mrope_section": mrope, "rope_theta": 10000.0},
                         bos_token_id=2, eos_token_id=3, pad_token_id=1),
        vision_config=dict(depth=2, embed_dim=hidden, hidden_size=hidden, num_heads=heads, patch_size=patch_size,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    image_processor = Qwen2VLImageProcessorPil(patch_size=patch_size, temporal_patch_size=2, merge_size=2,
                                               min_pixels=(2 * patch_size) ** 2, max_pixels=max_pixels)
    processor = image_only_processor_class(Qwen2VLProcessor)(
        image_processor=image_processor, tokenizer=tok, video_processor=None, chat_template=QWEN2VL_CHAT_TEMPLATE)
    _finish(model, None, folder, f"tiny-qwen2vl-{seed}", dtype)
    if folder is not None:
        tok.save_pretrained(folder)
        image_processor.save_pretrained(folder)
        (Path(folder) / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2VLProcessor"}))
        (Path(folder) / "chat_template.jinja").write_text(QWEN2VL_CHAT_TEMPLATE)
    return model, processor


def build_tiny_idefics3(folder: str | Path | None = None, *, seed: int = 0, hidden: int = 32, tile: int = 32,
                        patch_size: int = 8, dtype=None):
    """A tiny random Idefics3 / SmolVLM (SigLIP-style tower, pixel-shuffle connector, Llama text model)
    with a locally built Idefics3Processor: images larger than one ``tile`` are split into a grid of
    tiles plus a global view, so samples carry different numbers of images ([1, n, C, H, W] pixels).
    Returns (model, processor); saved to ``folder`` when given."""
    import torch
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    tok = build_tokenizer(chat_template=True)
    grid = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<fake_token_around_image>",
                                                         "<image>", "<end_of_utterance>", "<global-img>"] + grid})
    scale = 2
    config = Idefics3Config(
        vision_config=dict(hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2, num_attention_heads=4,
                           image_size=tile, patch_size=patch_size),
        text_config=tiny_llama_config(len(tok), hidden=hidden).to_dict(),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=scale, pad_token_id=1)
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 2 * tile}, max_image_size={"longest_edge": tile},
                                                do_image_splitting=True)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok,
                                  image_seq_len=(tile // patch_size) ** 2 // scale ** 2, chat_template=VLM_CHAT_TEMPLATE)
    _finish(model, processor, folder, f"tiny-idefics3-{seed}", dtype)
    return model, processor


def build_tiny_mllama(folder: str | Path | None = None, *, seed: int = 0, hidden: int = 32, tile: int = 16,
                      patch_size: int = 8, dtype=None):
    """A tiny random Mllama (Llama 3.2 Vision: tiled vision encoder, text model with a cross-attention
    layer) with a locally built MllamaProcessor (``<|image|>`` token; per-token ``cross_attention_mask``
    of shape [1, T, images, tiles]). Returns (model, processor); saved to ``folder`` when given."""
    import torch
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    tok = build_tokenizer(chat_template=True)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|image|>", "<|python_tag|>"]})
    config = MllamaConfig(
        vision_config=dict(hidden_size=hidden, num_hidden_layers=2, num_global_layers=1, attention_heads=4,
                           intermediate_size=hidden * 2, vision_output_dim=hidden * 2, intermediate_layers_indices=[0],
                           image_size=tile, patch_size=patch_size, max_num_tiles=4,
                           supported_aspect_ratios=[[1, 1], [1, 2], [2, 1], [2, 2], [1, 3], [3, 1], [1, 4], [4, 1]]),
        text_config=dict(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=hidden * 2, cross_attention_layers=[1],
                         max_position_embeddings=512, bos_token_id=2, eos_token_id=3, pad_token_id=1),
        image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(config)
    with torch.no_grad():   # the gates start at 0 (tanh -> images ignored); open them as training would
        for name, param in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")) or name.endswith(".gate"):
                param.fill_(0.5)
    image_processor = MllamaImageProcessorPil(size={"height": tile, "width": tile}, max_image_tiles=4)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tok,
                                chat_template=VLM_CHAT_TEMPLATE.replace("<image>", "<|image|>"))
    _finish(model, processor, folder, f"tiny-mllama-{seed}", dtype)
    return model, processor
