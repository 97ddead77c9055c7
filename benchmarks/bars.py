"""The performance bars, checked against a run's results: which hold, and the rows that miss.

    python benchmarks/bars.py [--decode DIR/decode.json] [--prefill DIR/prefill.json]

Decode (bench_decode.py's rows of equal requests; ours = the better of our two kernel paths,
upstream = the better of FlashInfer's):
  - ours >= upstream FlashInfer at every shape
  - ours >= 95% of the measured copy bandwidth at batch >= 64 (each KV dtype on its own line:
    FP8 moves half the bytes of a 16-bit cache per token)
  - ours >= 1.5x upstream at batch 1, kv 4k
Prefill (bench_prefill.py's head_dim 128 rows):
  - single prefill >= 1.0x upstream FlashInfer fa2 at every length, causal and not, fp16 and bf16
  - batch prefill, paged and ragged, within 10% of single prefill's TFLOP/s at the same length,
    read twice: against our single prefill on one of the row's requests timed in turn with the
    row (the same GPU state), and against the single-prefill section's row (timed earlier, after
    other rows; runs before the in-turn single was added have only this one)
Each bar prints as met / NOT met / not measured (its peer missing from the run), its worst row and
every row that misses it. A report: the exit status is 0 either way.
"""
import argparse
import json
from dataclasses import dataclass, field

PREFILL_HEAD_DIM = 128


@dataclass
class Bar:
    name: str
    threshold: float
    values: dict = field(default_factory=dict)  # row label -> measured value (None: not measured)

    @property
    def measured(self):
        return {k: v for k, v in self.values.items() if v is not None}

    @property
    def met(self):
        """True / False, or None where no row was measured."""
        if not self.measured:
            return None
        return all(v >= self.threshold for v in self.measured.values())

    def line(self):
        if self.met is None:
            why = f"{len(self.values)} rows, none with its peer" if self.values else "no such rows in this run"
            return f"- {self.name}: not measured ({why})"
        worst = min(self.measured, key=self.measured.get)
        misses = [f"{k} {v:.2f}" for k, v in self.measured.items() if v < self.threshold]
        state = "met" if self.met else "NOT met"
        text = f"- {self.name}: {state}; worst {worst} {self.measured[worst]:.2f}"
        if misses:
            text += f"; {len(misses)} of {len(self.measured)} below {self.threshold:g}: " + ", ".join(misses)
        return text


def _best(values, prefix):
    found = [v for k, v in values.items() if k.startswith(prefix) and v is not None]
    return max(found) if found else None


def decode_bars(rows):
    rows = [r for r in rows if r.get("section", "equal") == "equal"]
    upstream = Bar("decode: ours >= upstream FlashInfer at every shape", 1.0)
    batch1 = Bar("decode: ours >= 1.5x upstream at batch 1, kv 4k", 1.5)
    copy = {}
    for r in rows:
        label = f"{r['kv_dtype']} bs{r['batch']} kv{r['kv_len']}"
        ratio = r["ours_vs_flashinfer"]["best"]
        upstream.values[label] = ratio
        if r["batch"] == 1 and r["kv_len"] == 4096:
            batch1.values[label] = ratio
        if r["batch"] >= 64:
            bar = copy.setdefault(r["kv_dtype"], Bar(f"decode: ours >= 95% of copy at batch >= 64, {r['kv_dtype']}",
                                                     0.95))
            pct = _best(r["pct_copy"], "ours")
            bar.values[label] = None if pct is None else pct / 100
    return [upstream, *copy.values(), batch1]


def prefill_bars(rows):
    rows = [r for r in rows if r.get("head_dim") == PREFILL_HEAD_DIM]
    single = Bar("prefill: single >= 1.0x upstream fa2, head_dim 128", 1.0)
    batch = Bar("prefill: batch paged and ragged >= 0.9x single's TFLOP/s (single timed in turn with the row), "
                "head_dim 128", 0.9)
    batch_row = Bar("prefill: batch paged and ragged >= 0.9x single's TFLOP/s (the single-prefill section's row), "
                    "head_dim 128", 0.9)
    for r in rows:
        mode = "causal" if r["causal"] else "non-causal"
        if r["section"] == "single":
            single.values[f"{r['dtype']} {mode} L{r['L']}"] = r["ours_vs"].get("flashinfer-fa2")
        elif r["section"] == "batch":
            label = f"{r['dtype']} {mode} {r['kind']} {r['batch']}x{r['L']}"
            in_turn = "single_tflops" in r  # else a run from before the in-turn single: its ratio is the row's
            batch.values[label] = r.get("batch_vs_single") if in_turn else None
            batch_row.values[label] = r.get("batch_vs_single_row") if in_turn else r.get("batch_vs_single")
    return [single, batch, batch_row]


def report(decode_rows=None, prefill_rows=None):
    bars = (decode_bars(decode_rows) if decode_rows else []) + (prefill_bars(prefill_rows) if prefill_rows else [])
    return "\n".join(bar.line() for bar in bars)


def _rows(path):
    with open(path) as f:
        data = json.load(f)
    if data.get("partial"):
        print(f"# {path}: a partial run ({len(data['rows'])} rows, stopped before its end): "
              "the bars below cover only the rows it has")
    return data["rows"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decode", help="bench_decode.py's decode.json")
    parser.add_argument("--prefill", help="bench_prefill.py's prefill.json")
    args = parser.parse_args(argv)
    if not (args.decode or args.prefill):
        parser.error("give --decode and/or --prefill")
    print(report(_rows(args.decode) if args.decode else None, _rows(args.prefill) if args.prefill else None))


if __name__ == "__main__":
    main()
