"""AttnLRP: innsight's ``run_lrp(rule_name="attnlrp")`` against LXT's efficient AttnLRP
and against one plain Gradient x Input pass (autograd on the original model), in one
process, on the same random-weight Llama.

Usage: python benchmarks/bench_attnlrp.py [--tokens 128 1024] [--layers 4]
       [--hidden 256] [--device cpu|cuda] [--repeats 3]

Each explains the logit of the top-1 next token after the last position of one
sequence, float32, with respect to the input embeddings. Time: the fastest of
``--repeats`` rounds (after one warm-up run; each round runs every method once, so
that changes of the machine's load hit all alike), wall-clock and CPU time of the
process (steadier than wall-clock on a shared machine), the conversion excluded
(quoted apart).
Peak memory: above what was in use before the run; on CUDA
``torch.cuda.max_memory_allocated``, on CPU the peak resident set size sampled every
millisecond (after returning freed memory to the system with ``malloc_trim``), which
counts what the allocator holds, so treat CPU memory as approximate. LXT is applied
through ``tests/methods/lxt_reference.py`` (lxt 2.1 with the fixes of its upstream main).
Prints one row per method and sequence length, with the ratios innsight / LXT.
"""

from __future__ import annotations

import argparse
import ctypes
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers as tf

import innsight as ins

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "methods"))
from lxt_reference import lxt_attnlrp


class PeakMemory:
    """Peak memory (bytes) above the level at entry: CUDA's allocator statistics, or the
    resident set size sampled by a thread on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        self.base, self.top, self.running = self._rss(), 0, True

        def sample() -> None:
            while self.running:
                self.top = max(self.top, self._rss())
                time.sleep(0.001)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
            return
        self.running = False
        self.thread.join()
        self.peak = max(self.top, self._rss()) - self.base


def measure(fns: dict[str, Callable[[], torch.Tensor]], device: torch.device, repeats: int
            ) -> dict[str, tuple[float, float, int, torch.Tensor]]:
    """Per method: the fastest wall seconds and CPU seconds of the process over
    ``repeats`` rounds, its peak bytes (first round) and its result. Each round runs
    every method once, so that a change of the machine's load hits all of them alike;
    the fastest run is the one least disturbed by other processes."""
    for fn in fns.values():
        fn()  # warm-up
    walls, cpus, peaks, outs = ({name: [] for name in fns} for _ in range(4))
    for _ in range(repeats):
        for name, fn in fns.items():
            with PeakMemory(device) as memory:
                start, cpu = time.perf_counter(), time.process_time()
                outs[name] = fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                walls[name].append(time.perf_counter() - start)
                cpus[name].append(time.process_time() - cpu)
            peaks[name].append(memory.peak)
    return {name: (min(walls[name]), min(cpus[name]), peaks[name][0], outs[name])
            for name in fns}


def build(layers: int, hidden: int, tokens: int, device: torch.device) -> tf.PreTrainedModel:
    torch.manual_seed(0)
    config = tf.LlamaConfig(vocab_size=1000, hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=layers, num_attention_heads=hidden // 64,
                            num_key_value_heads=max(1, hidden // 128),
                            max_position_embeddings=max(tokens, 2048))
    return tf.LlamaForCausalLM(config).eval().to(device)


def run(tokens: int, args: argparse.Namespace) -> list[tuple[str, float, float, int]]:
    device = torch.device(args.device)
    model = build(args.layers, args.hidden, tokens, device)
    ids = torch.randint(0, 1000, (1, tokens), generator=torch.Generator().manual_seed(1))
    embeddings = ins.embed_tokens(model, ids.to(device))
    start = time.perf_counter()
    conv = ins.convert(model, input_dim=[tokens], text_input="embeddings")
    convert_s = time.perf_counter() - start
    with torch.no_grad():
        top = int(model(inputs_embeds=embeddings).logits[0, -1].argmax())
    node = (tokens - 1) * model.config.vocab_size + top

    def ours() -> torch.Tensor:
        result = ins.run_lrp(conv, embeddings, rule_name="attnlrp", output_idx=[node],
                             verbose=False, device=device)
        return result.get_result("torch_tensor")[0, ..., 0].sum(-1)

    def grad_x_input() -> torch.Tensor:
        x = embeddings.detach().clone().requires_grad_(True)
        model(inputs_embeds=x).logits[0, -1, top].backward()
        return (x * x.grad).sum(-1)[0].detach()

    def lxt() -> torch.Tensor:
        with lxt_attnlrp(model):
            return grad_x_input()

    measured = measure({"innsight AttnLRP": ours, "LXT AttnLRP": lxt,
                        "Gradient x Input": grad_x_input}, device, args.repeats)
    rows = [(name, wall, cpu, peak) for name, (wall, cpu, peak, _) in measured.items()]
    results = {name: out for name, (*_, out) in measured.items()}
    gap = (results["innsight AttnLRP"] - results["LXT AttnLRP"].to(results["innsight AttnLRP"]))
    rel = (gap.abs().max() / results["LXT AttnLRP"].abs().max()).item()
    print(f"tokens={tokens}: conversion {convert_s:.2f} s; innsight vs LXT max relative "
          f"difference per token {rel:.1e} (float32)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"Llama, {args.layers} layers, hidden {args.hidden}, {args.device}, "
          f"{torch.get_num_threads()} threads")
    table = []
    for tokens in args.tokens:
        rows = run(tokens, args)
        _, lxt_wall, lxt_cpu, lxt_mem = rows[1]
        for name, wall, cpu, peak in rows:
            table.append(f"| {tokens} | {name} | {wall:.3f} | {wall / lxt_wall:.2f} | "
                         f"{cpu:.3f} | {cpu / lxt_cpu:.2f} | {peak / 2**20:.1f} | "
                         f"{peak / max(lxt_mem, 1):.2f} |")
    print("| tokens | method | wall (s) | / LXT | CPU (s) | / LXT | peak memory (MiB) | / LXT |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
