"""The scheduler: many sequences, one decode per step, prefix-matched slots.

N slots are N llama sequences in one context. Each `Scheduler.step()` is
a plan, one `llama_decode`, and a commit:

- `plan()` says what each slot puts into the step's batch: a `Chunk` of its
  last token (generating), of its last token plus drafted ones (verifying a
  speculative draft, helios_core.speculative), or of its prompt (reading).
- `commit(plan)` takes the logits rows back: each slot samples (or verifies
  its draft) with its own SequenceState, and the slot's cache, positions and
  KV memory follow what was kept.

Neither touches the model: a `Runner` (runner.py) decodes the plan, hands out
the rows and trims the KV memory, so the scheduler runs on a scripted runner in
tests (tests/scripted_runner.py). A single request
(helios_core.generate.Generator) is the N = 1 case of this code.

Modules: request (Request, Done, Generation, the errors), slots (Slot, Chunk, Plan),
scheduler (admission, the plan, the order of media reading), commit (what the rows give
each slot), runner (the Runner protocol), llama_runner (LlamaRunner: the Runner over a
llama context, the one module here that touches it), worker (Engine: the thread).

`Engine` runs a Scheduler on its own thread, the only thread that touches
the llama context; other threads submit requests and receive events
through callbacks, so nothing here knows about asyncio or HTTP.

Rules:
- Admission is in arrival order into the free slot whose cached tokens
  share the longest prefix with the prompt (at least 10% of both the prompt
  and the cache; otherwise the emptiest free slot); only the rest is decoded.
- A slot keeps its tokens when its request ends, for the next prefix match.
- Prompt reading is bounded per step (`prefill_per_step` tokens while any
  slot is generating; PREFILL_PER_STEP by default), so running streams keep
  flowing during a long prompt.
- A request that scores its prompt (prompt_logprobs) reads it whole in the
  emptiest free slot, with logits for every row (at most ROWS_PER_DECODE per
  step across such slots, to bound llama.cpp's output buffer); the rows are
  reduced to logprobs as each step returns, and one `Scored` event precedes
  its first Step. max_tokens=0 ends a request once its prompt is read.
- A slow consumer never stalls the others: events are handed to the
  request's sink at once and buffered there (at most max_tokens of them).
- Cancelling a request frees its slot before the next step.
- LoRA adapters (GenerationParams.lora) are set per context in llama.cpp, so a
  step plans and decodes the slots of each adapter set in use apart: one
  decode per set, the context's current set first (one switch fewer per
  step); requests sharing a set still batch together. A slot's cached tokens
  are keyed by the set they were read under, and never reused under another.
- Speculative decoding (a `Speculation` given): a generating slot whose
  request allows it and whose sampler exposes its distribution offers its
  drafter's guess; the step verifies the drafted tokens that give the most
  expected tokens per cost of the step (speculative.allocate; at most
  `draft_budget` over all slots), none where drafts do not pay; refused
  drafted positions are removed from the KV memory before the next step,
  so the slot's cached tokens stay exactly what the memory holds.
- The masks of every constrained slot that samples in a step are computed
  together before any slot's processors run, with the GIL released
  (constraint.compute_masks: in parallel on llguidance's thread pool where
  the machine has the CPUs for one); each ConstraintProcessor then finds
  its mask ready.
"""

from helios_core.engine.llama_runner import LlamaRunner
from helios_core.engine.request import (
    Done,
    EngineShutdownError,
    Event,
    Generation,
    PromptTooLongError,
    QueueFullError,
    Request,
    Sink,
)
from helios_core.engine.runner import Runner
from helios_core.engine.scheduler import PREFILL_PER_STEP, Scheduler
from helios_core.engine.slots import MIN_SHARED_FRACTION, Chunk, Plan, SchedulerStats, Slot
from helios_core.engine.worker import Engine

__all__ = [
    "MIN_SHARED_FRACTION",
    "PREFILL_PER_STEP",
    "Chunk",
    "Done",
    "Engine",
    "EngineShutdownError",
    "Event",
    "Generation",
    "LlamaRunner",
    "Plan",
    "PromptTooLongError",
    "QueueFullError",
    "Request",
    "Runner",
    "Scheduler",
    "SchedulerStats",
    "Sink",
    "Slot",
]
