"""One rank of tests/distributed/generation/test_to_file.py's real multi-process check:
`torchrun --nproc_per_node N tests/distributed/dist_sample_worker.py OUT_DIR` samples the tiny model into
OUT_DIR/samples.jsonl and writes what this rank's call returned to OUT_DIR/returned-<rank>.json."""
import json
import sys
from pathlib import Path

from posttrain import distributed as dist
from posttrain.data.records import PromptRecord
from posttrain.generation.sampler import SamplingParams
from posttrain.generation.to_file import sample_to_file
from posttrain.models import load_model

QUESTIONS = ["Hello there", "What is 2+2?", "Name a colour.", "Hi", "Why is the sky blue?", "Count to three."]
# top_k: the random model's distribution is near uniform over 49k tokens (bins of ~2e-5), where the ~1e-6
# rounding that another batch composition gives the logits moves a draw to the next token now and then;
# among 5 tokens the bins are wide enough that the draws are the same
PARAMS = SamplingParams(n=2, temperature=1.0, top_k=5, max_new_tokens=8, seed=3)


def run(out_dir: Path) -> tuple[dict, object]:
    model, tok = load_model("tiny-llama")
    records = [PromptRecord.from_row({"prompt": q, "answer": str(i)}) for i, q in enumerate(QUESTIONS)]
    return sample_to_file(model, tok, records, PARAMS, out_dir / "samples.jsonl", batch_size=16,
                          progress=False)


if __name__ == "__main__":
    out = Path(sys.argv[1])
    done, stats = run(out)
    (out / f"returned-{dist.rank()}.json").write_text(json.dumps(
        {"world": dist.world(), "done": done, "samples": stats.samples, "prompts": stats.prompts}))
