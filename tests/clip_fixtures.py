"""A tiny random CLIP in the hub layout: config, safetensors, byte-level tokenizer."""

import json

import torch
import transformers


def byte_vocab():
    """A tiny byte-level BPE vocabulary (every byte, alone and word-final); EOT has the largest id."""
    chars = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)]
    chars += [chr(c) for c in range(174, 256)] + [chr(256 + n) for n in range(68)]
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def save_tiny_clip(directory, eos_token_id):
    vocab = byte_vocab()
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    tokenizer.save_pretrained(str(directory))
    eos = vocab["<|endoftext|>"] if eos_token_id is None else eos_token_id
    config = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                         eos_token_id=eos, bos_token_id=vocab["<|startoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4, image_size=32, patch_size=16),
        projection_dim=24)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # LayerNorms away from their identity init
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(directory))
    return model, tokenizer
