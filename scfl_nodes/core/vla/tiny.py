"""Randomly initialised Llava / PaliGemma VLAs built from configs, offline.

No vendor checkpoint may be downloaded here, so tests and benchmarks exercise the real
loading and decoding code (:mod:`.hf_vla`) on models of the right architecture built in a
second: a word-level tokenizer whose last 256 ids are action bins, an image processor, the
model, and OpenVLA-style ``norm_stats`` in ``config.json``. ``size="medium"`` builds a
~0.6B-parameter Llava for GPU latency measurements.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PROMPT_WORDS = "in : what action should the robot take to ? out pick up place open close push pull the a cup door drawer window puck".split()
SIZES = {
    # hidden, intermediate, layers, heads, vision hidden, vision layers, image size
    "tiny": (32, 64, 2, 2, 32, 2, 32),
    "medium": (1024, 2816, 24, 16, 768, 12, 224),
}


def _tokenizer(vocab_size: int, specials: dict[str, str]):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<bos>", "<eos>", "<image>", *PROMPT_WORDS]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    for i in range(len(vocab), vocab_size):
        vocab[f"<tok{i}>"] = i
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tok.padding_side = "left"  # decoding appends on the right
    return tok, vocab


def build_tiny_vla(
    out_dir: str | Path,
    family: str = "llava",
    *,
    seed: int = 0,
    action_dim: int = 7,
    vocab_size: int = 512,
    size: str = "tiny",
    norm_stats: dict | None = None,
) -> Path:
    """Write a random ``family`` ("llava" | "paligemma") VLA checkpoint + processor to ``out_dir``."""
    import torch
    import transformers as tf

    hidden, inter, layers, heads, vhidden, vlayers, image = SIZES[size]
    out_dir = Path(out_dir)
    tok, vocab = _tokenizer(vocab_size, {})
    torch.manual_seed(seed)
    if family == "llava":
        vc = tf.CLIPVisionConfig(hidden_size=vhidden, intermediate_size=vhidden * 2, num_hidden_layers=vlayers,
                                 num_attention_heads=max(2, vhidden // 64), image_size=image, patch_size=image // 4 if size == "tiny" else 16,
                                 projection_dim=hidden)
        tc = tf.LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                            num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=512,
                            pad_token_id=0, bos_token_id=2, eos_token_id=3)
        cfg = tf.LlavaConfig(vision_config=vc, text_config=tc, image_token_index=vocab["<image>"],
                             vision_feature_select_strategy="default", vision_feature_layer=-1)
        model = tf.LlavaForConditionalGeneration(cfg)
        ip = tf.CLIPImageProcessor(size={"shortest_edge": image}, crop_size={"height": image, "width": image})
        proc = tf.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=vc.patch_size,
                                 vision_feature_select_strategy="default", image_token="<image>", num_additional_image_tokens=1)
    elif family == "paligemma":
        vc = tf.SiglipVisionConfig(hidden_size=vhidden, intermediate_size=vhidden * 2, num_hidden_layers=vlayers,
                                   num_attention_heads=max(2, vhidden // 64), image_size=image, patch_size=image // 4 if size == "tiny" else 16)
        tc = tf.GemmaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                            num_attention_heads=heads, num_key_value_heads=1, head_dim=max(16, hidden // heads),
                            max_position_embeddings=512, pad_token_id=0, bos_token_id=2, eos_token_id=3)
        cfg = tf.PaliGemmaConfig(vision_config=vc, text_config=tc, image_token_index=vocab["<image>"], projection_dim=hidden)
        model = tf.PaliGemmaForConditionalGeneration(cfg)
        ip = tf.SiglipImageProcessor(size={"height": image, "width": image})
        ip.image_seq_length = (image // vc.patch_size) ** 2
        proc = tf.PaliGemmaProcessor(image_processor=ip, tokenizer=tok)
    else:
        raise ValueError(f"unknown VLA family {family!r}; use llava or paligemma")
    model.eval()
    model.save_pretrained(str(out_dir))
    proc.save_pretrained(str(out_dir))
    if norm_stats is None:
        rng = np.random.default_rng(seed)
        q01 = -rng.uniform(0.01, 0.05, action_dim)
        norm_stats = {
            "scfl_synthetic": {
                "action": {
                    "q01": q01.tolist(),
                    "q99": (-q01 * 1.5).tolist(),
                    "mask": [True] * (action_dim - 1) + [False],  # gripper stays in [-1, 1]
                }
            }
        }
    cfg_path = out_dir / "config.json"
    data = json.loads(cfg_path.read_text())
    data["norm_stats"] = norm_stats
    data["scfl_action_dim"] = action_dim
    cfg_path.write_text(json.dumps(data, indent=2))
    return out_dir
