"""What the sampler's cut-off drops on real logits: candidates kept and probability mass lost.

For rows of the default model's logits met while sampling at temperature 0.8,
prints, for each cut-off C (in temperature-scaled logits below the best):
how many of the 262,144 tokens stay candidates, and the mass (in float64)
of the tokens dropped. helios_core.sampling.CUTOFF is chosen from this.

Run:  .venv/bin/python benchmarks/sampler_cutoff.py
"""

from __future__ import annotations

import numpy as np

from helios_core import GenerationParams, Generator, Model, default_model_path

PROMPTS = [
    "Here is a story about a dragon who",
    "The three primary colors are",
    "def fibonacci(n):",
    "In 1492, Columbus",
    "Dear Sir,",
]
TEMPERATURE = 0.8
CUTOFFS = (17.0, 20.0, 30.0)


def main() -> None:
    rows: list[np.ndarray] = []

    def capture(logits, state):
        rows.append(logits.astype(np.float64))
        return logits

    with Model(default_model_path()) as model:
        generator = Generator(model, n_ctx=1024)
        for prompt in PROMPTS:
            params = GenerationParams(max_tokens=30, temperature=TEMPERATURE, seed=1, processors=[capture])
            generator.generate(prompt, params).text()
        generator.ctx.close()

    print(f"{len(rows)} logits rows, temperature {TEMPERATURE}")
    for cutoff in CUTOFFS:
        kept, dropped = [], []
        for logits in rows:
            scaled = (logits - logits.max()) / TEMPERATURE
            weights = np.exp(scaled)
            kept.append(int((scaled >= -cutoff).sum()))
            dropped.append(float(weights[scaled < -cutoff].sum() / weights.sum()))
        print(
            f"C={cutoff:>4}: candidates median {int(np.median(kept)):>6}, p90 {int(np.percentile(kept, 90)):>6}, "
            f"max {max(kept):>6}; dropped mass median {np.median(dropped):.1e}, max {max(dropped):.1e}"
        )


if __name__ == "__main__":
    main()
