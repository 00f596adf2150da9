#!/usr/bin/env python3
"""Writes a random full-size checkpoint in heartlib's official layout, for measuring loading.

    python3 scripts/write-full-checkpoint.py DIR [--shard-gib 5]

DIR becomes a `ckpt/` folder: HeartMuLa-oss-3B/ and HeartCodec-oss/ (config.json, fp32
safetensors shards of at most --shard-gib each, model.safetensors.index.json), gen_config.json
and a word-level tokenizer.json (the Llama-3 tokenizer cannot be made up; loading does not
depend on its size). Tensor names, shapes, dtypes and order, and both config.json files, come
from tests/fixtures/real-checkpoint-layout/ (written by the real heartlib code), so the files
are what the released checkpoint holds, with random values: ~22 GB. Only the standard library
is needed, so it runs on the GPU machine as it is.

The values repeat a 16 MiB block of uniform draws in ±0.05 from a rotating start per tensor:
finite, varied, and fast to write. They make noise, not music; they are for timing loads.
"""

import argparse
import array
import json
import os
import random
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUT = os.path.join(HERE, "..", "tests", "fixtures", "real-checkpoint-layout")
MODELS = [("heartmula-3b.json", "HeartMuLa-oss-3B"), ("heartcodec.json", "HeartCodec-oss")]
DTYPES = {"float32": ("F32", 4), "bool": ("BOOL", 1)}
PATTERN_VALUES = 4 << 20


def pattern():
    rng = random.Random(0)
    values = array.array("f", (rng.uniform(-0.05, 0.05) for _ in range(PATTERN_VALUES)))
    data = values.tobytes()
    return data + data  # any rotation of the block is one slice


def shards(tensors, limit):
    """Groups (name, spec) in state_dict order into shards of at most `limit` bytes."""
    groups, current, size = [], [], 0
    for name, spec in tensors.items():
        n = DTYPES[spec["dtype"]][1]
        for d in spec["shape"]:
            n *= d
        if current and size + n > limit:
            groups.append(current)
            current, size = [], 0
        current.append((name, spec, n))
        size += n
    if current:
        groups.append(current)
    return groups


def write_shard(path, group, block):
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, spec, n in group:
        dtype = DTYPES[spec["dtype"]][0]
        header[name] = {"dtype": dtype, "shape": spec["shape"], "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    half = len(block) // 2
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, spec, n in group:
            if spec["dtype"] == "bool":
                f.write(bytes(n))
                continue
            start = (zlib.crc32(name.encode()) % PATTERN_VALUES) * 4
            while n > 0:
                take = min(n, half)
                f.write(block[start:start + take])
                n -= take
    return offset


def write_model(root, layout_file, folder, limit, block):
    layout = json.load(open(os.path.join(LAYOUT, layout_file)))
    out = os.path.join(root, folder)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(layout["config_json"], f, indent=2)
    groups = shards(layout["tensors"], limit)
    weight_map, total = {}, 0
    for i, group in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        total += write_shard(os.path.join(out, name), group, block)
        weight_map.update({t: name for t, _, _ in group})
        print(f"{folder}/{name}: {len(group)} tensors", flush=True)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return layout, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir")
    parser.add_argument("--shard-gib", type=float, default=5.0)
    args = parser.parse_args()
    limit = int(args.shard_gib * (1 << 30))
    block = pattern()
    os.makedirs(args.dir, exist_ok=True)
    total = 0
    for layout_file, folder in MODELS:
        layout, size = write_model(args.dir, layout_file, folder, limit, block)
        total += size
        if "gen_config" in layout:
            with open(os.path.join(args.dir, "gen_config.json"), "w") as f:
                json.dump(layout["gen_config"], f, indent=2)
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "unk_token": "[UNK]",
                  "vocab": {"[UNK]": 0, "piano": 1, "pop": 2, "la": 3, "verse": 4}},
    }
    with open(os.path.join(args.dir, "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f)
    print(f"wrote {total / 1e9:.1f} GB of weights under {args.dir}")


if __name__ == "__main__":
    main()
