"""Targets that pick a few logits of a language model: dense against sparse
``target_weights``, peak memory and CPU time per method.

Usage: python benchmarks/bench_token_targets.py [--tokens 512] [--vocab 32000]
       [--hidden 64] [--heads 2] [--kv-heads 1] [--targets 2]
       [--methods gradient attnlrp intgrad deeplift] [--steps 8] [--before PATH/TO/OTHER/src]

A random-weight Llama (1 layer, hidden ``--hidden``, ``--heads`` query heads sharing
``--kv-heads`` key and value heads) is converted with token ids; each
method explains the logits of ``--targets`` (position, token) pairs near the end of
one sequence, float32: ``gradient`` (``run_grad``), ``attnlrp`` (``run_lrp`` with
``rule_name="attnlrp"``), ``intgrad`` (``run_intgrad`` with ``n=--steps``), ``deeplift``
(``run_deeplift``). Rows: ``dense``, the weights as a numpy array ``(targets, tokens x
vocab)``; ``sparse``, a ``torch.sparse_coo_tensor`` of the same entries (what
``explain_tokens`` builds), which goes back through the LM head's picked weight rows
only (:mod:`innsight.methods.heads`); with ``--before``, ``sparse`` again on the innsight
sources at that path (e.g. ``git archive main src | tar -x -C /tmp/main``), the code
before a change. Each runs in a child process of its own; peak memory is the peak
resident set size above the level before the run (the kernel's high-water mark, reset
with ``/proc/self/clear_refs``, Linux only), with glibc told to map every block of 64 KiB
or more apart (``MALLOC_MMAP_THRESHOLD_``), so that freed tensors leave the resident set
at once and the peak is that of the live tensors, the same from run to run. Prints every row and the ratios of
``sparse`` to the others; the values must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

#: ``--methods`` -> the run function's name and its arguments (``n`` is ``--steps``).
METHODS = {
    "gradient": ("run_grad", {}),
    "attnlrp": ("run_lrp", {"rule_name": "attnlrp"}),
    "intgrad": ("run_intgrad", {"n": None}),
    "deeplift": ("run_deeplift", {}),
}


def _status(field: str) -> float:
    """A field of ``/proc/self/status`` in MiB."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field))
    return int(line.split()[1]) / 1024


def child(method: str, kind: str, args: argparse.Namespace) -> dict[str, float]:
    """One run of ``method`` with ``kind`` ("dense" or "sparse") weights in this process."""
    import numpy as np
    import torch
    import transformers as tf

    import innsight as ins

    tokens, vocab, n_targets = args.tokens, args.vocab, args.targets
    torch.manual_seed(0)
    lm = tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=vocab, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
        num_hidden_layers=1, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=tokens)).eval()
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
    name, method_args = METHODS[method]
    method_args = {k: args.steps if v is None else v for k, v in method_args.items()}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark starts again from the current size
    base, start = _status("VmRSS"), time.process_time()
    result = getattr(ins, name)(conv, ids, target_weights=weights, verbose=False,
                                **method_args)
    seconds = time.process_time() - start
    return {"peak_mib": _status("VmHWM") - base, "cpu_s": seconds,
            "checksum": float(result.get_result("torch_tensor").abs().sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--kv-heads", type=int, default=1)
    parser.add_argument("--targets", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="IntegratedGradient's n")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--before", help="the src folder of the innsight to compare with")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    runs = [("dense", "dense", here), ("sparse", "sparse", here)]
    if args.before:
        runs.append(("before", "sparse", args.before))
    shared = [f"--{key.replace('_', '-')}={getattr(args, key)}" for key in (
        "tokens", "vocab", "hidden", "heads", "kv_heads", "targets", "steps")]
    print(f"{args.tokens} tokens, vocab {args.vocab}, hidden {args.hidden}, heads "
          f"{args.heads} (kv {args.kv_heads}), {args.targets} targets, float32")
    for method in args.methods:
        rows = {}
        for label, kind, src in runs:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(src),
                   "MALLOC_MMAP_THRESHOLD_": "65536"}
            done = subprocess.run([sys.executable, __file__, *shared, "--child", method, kind],
                                  capture_output=True, text=True, check=True, env=env)
            rows[label] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{method:9s} {label:6s} peak {rows[label]['peak_mib']:7.0f} MiB   "
                  f"cpu {rows[label]['cpu_s']:7.2f} s")
        sparse = rows["sparse"]
        for label, row in rows.items():
            if abs(row["checksum"] - sparse["checksum"]) > 1e-4 * abs(sparse["checksum"]):
                raise SystemExit(f"{method}: the values of {label} and sparse differ: "
                                 f"{row['checksum']} and {sparse['checksum']}")
            if label != "sparse":
                print(f"{method:9s} sparse / {label}: memory "
                      f"{sparse['peak_mib'] / row['peak_mib']:.3f}, cpu "
                      f"{sparse['cpu_s'] / row['cpu_s']:.3f}")


if __name__ == "__main__":
    main()
