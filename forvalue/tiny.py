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
