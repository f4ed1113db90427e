"""Targets that pick a few logits of a language model: dense against sparse
``target_weights``, peak memory and CPU time of one AttnLRP run.

Usage: python benchmarks/bench_token_targets.py [--tokens 512] [--vocab 32000]
       [--targets 2]

A random-weight Llama (1 layer, hidden 32) is converted with token ids; ``run_lrp``
with ``rule_name="attnlrp"`` explains the logits of ``--targets`` (position, token)
pairs near the end of one sequence, float32. ``dense``: the weights as a numpy array
``(targets, tokens x vocab)`` (what ``explain_tokens`` built before); ``sparse``: a
``torch.sparse_coo_tensor`` of the same entries (what it builds now). Each runs in a
child process of its own; peak memory is the peak resident set size above the level
before the run (the kernel's high-water mark, reset with ``/proc/self/clear_refs``,
Linux only). Prints both rows and the ratio sparse / dense; the values must agree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _status(field: str) -> float:
    """A field of ``/proc/self/status`` in MiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field))
    return int(line.split()[1]) / 1024


def child(kind: str, tokens: int, vocab: int, n_targets: int) -> dict[str, float]:
    """One run of ``kind`` ("dense" or "sparse") in this process."""
    import numpy as np
    import torch
    import transformers as tf

    import innsight as ins

    torch.manual_seed(0)
    lm = tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=tokens)).eval()
    conv = ins.convert(lm, input_dim=[tokens])
    ids = torch.randint(0, vocab, (1, tokens))
    nodes = [(tokens - 1 - k) * vocab + 7 * k for k in range(n_targets)]
    if kind == "dense":
        weights = np.zeros((n_targets, tokens * vocab))
        weights[range(n_targets), nodes] = 1.0
    else:
        index = torch.tensor([list(range(n_targets)), nodes])
        weights = torch.sparse_coo_tensor(index, torch.ones(n_targets, dtype=torch.float64),
                                          (n_targets, tokens * vocab), check_invariants=True)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark starts again from the current size
    base, start = _status("VmRSS"), time.process_time()
    result = ins.run_lrp(conv, ids, rule_name="attnlrp", target_weights=weights, verbose=False)
    seconds = time.process_time() - start
    return {"peak_mib": _status("VmHWM") - base, "cpu_s": seconds,
            "checksum": float(result.get_result("torch_tensor").abs().sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--targets", type=int, default=2)
    parser.add_argument("--child", choices=["dense", "sparse"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.tokens, args.vocab, args.targets)))
        return
    rows = {}
    for kind in ("dense", "sparse"):
        done = subprocess.run([sys.executable, __file__, "--child", kind, "--tokens",
                               str(args.tokens), "--vocab", str(args.vocab), "--targets",
                               str(args.targets)], capture_output=True, text=True, check=True)
        rows[kind] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{kind:6s} peak {rows[kind]['peak_mib']:7.0f} MiB   cpu {rows[kind]['cpu_s']:6.2f} s")
    dense, sparse = rows["dense"], rows["sparse"]
    if abs(dense["checksum"] - sparse["checksum"]) > 1e-5 * dense["checksum"]:
        raise SystemExit(f"the values differ: {dense['checksum']} and {sparse['checksum']}")
    print(f"sparse / dense: memory {sparse['peak_mib'] / dense['peak_mib']:.2f}, "
          f"cpu {sparse['cpu_s'] / dense['cpu_s']:.2f}  ({args.tokens} tokens, vocab "
          f"{args.vocab}, {args.targets} targets)")


if __name__ == "__main__":
    main()
