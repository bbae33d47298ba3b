"""The teacher killed at random moments: what is lost, duplicated, or paid for twice.

Builds an ``images`` subset from the real SEM smoke set (18 micrographs, shrunk), starts the
fault-injecting OpenAI-compatible server (synthetic answers, a fixed latency per answer), then runs
``datasets_scripts/generate_qa.py`` and SIGKILLs it at a random moment while requests are in flight,
again and again, until a run ends on its own. Prints the server's books against the final subsets.

    python tests/benchmarks/bench_generate_qa_kills.py --kills 5 --latency 0.3 --fault_rate 0.3
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from openai_fake_server import FakeOpenAIServer, seeded_faults  # noqa: E402

SECRET = "sk-bench-not-a-real-key"


def build_images(root: Path, short_side: int = 64) -> Path:
    from datasets import Dataset
    from PIL import Image

    from emvision.datasets_scripts.storage import assign_folds, images_features
    from emvision.vocabulary import SEM_CATEGORIES

    rows = []
    for path in sorted(p for p in (REPO / "tests" / "fixtures" / "real_sem").rglob("*") if p.suffix.lower() in {".jpg", ".png"}):
        raw = path.read_bytes()
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
            scale = short_side / min(width, height)
            buffer = io.BytesIO()
            image.convert("L").resize((round(width * scale), round(height * scale))).save(buffer, format="PNG")
        rows.append({"image": {"bytes": buffer.getvalue(), "path": None}, "image_id": hashlib.sha256(raw).hexdigest(), "label": SEM_CATEGORIES.index(path.parent.name),
                     "source": str(path), "width": width, "height": height, "metadata": "{}"})  # fmt: skip
    for row, fold in zip(rows, assign_folds([r["image_id"] for r in rows], [r["label"] for r in rows], num_folds=5)):
        row["fold"] = fold
    Dataset.from_list(rows, features=images_features()).save_to_disk(str(root / "images"))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description="SIGKILL generate_qa.py at random moments against a faulty fake server; audit the books.")
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per answer on the server")
    parser.add_argument("--fault_rate", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    from datasets import load_from_disk

    with tempfile.TemporaryDirectory() as tmp:
        dataset_dir = build_images(Path(tmp) / "sem")
        output = Path(tmp) / "out"
        faults = seeded_faults(args.fault_rate, ["429", "500", "503", "drop", "truncate", "malformed", "refusal", "empty"], seed=args.seed, retry_after=0.2)
        with FakeOpenAIServer(api_key=SECRET, schedule=faults, latency=args.latency) as server:
            command = [sys.executable, str(REPO / "datasets_scripts" / "generate_qa.py"), str(dataset_dir), "--output", str(output), "--model", "fake-teacher",
                       "--base_url", server.base_url, "--concurrency", str(args.concurrency), "--backoff_base", "0.05", "--no_progress"]  # fmt: skip
            env = {**os.environ, "OPENAI_API_KEY": SECRET}
            kills = runs = in_flight_at_kills = 0
            started = time.monotonic()
            while True:
                runs += 1
                process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                if kills < args.kills:
                    before = server.total("requests")
                    while server.total("requests") == before and process.poll() is None:
                        time.sleep(0.01)
                    time.sleep(rng.uniform(0, 2.5))
                    if process.poll() is None:
                        in_flight_at_kills += server.in_flight
                        process.send_signal(signal.SIGKILL)
                        kills += 1
                output_text = process.communicate()[0]
                if process.returncode == 0:
                    break
                if process.returncode != -signal.SIGKILL:
                    raise SystemExit(f"generate_qa failed:\n{output_text[-3000:]}")
            elapsed = time.monotonic() - started
        vqa = load_from_disk(str(output / "vqa"))
        descriptions = load_from_disk(str(output / "class_descriptions"))
        pairs = list(zip(list(vqa["image_id"]), list(vqa["question_id"])))
        stored = list(vqa["answer"]) + list(descriptions["description"])
        delivered = [answer for answers in server.delivered.values() for answer in answers]
        secret_leaks = sum(SECRET.encode() in p.read_bytes() for p in output.rglob("*") if p.is_file())
    print(
        f"runs={runs} kills={kills} in_flight_at_kills={in_flight_at_kills} requests_sent={server.total('requests')} faults={sum(server.faults.values())} "
        f"pairs_stored={len(stored)} (vqa {len(pairs)} + descriptions {len(descriptions)}) duplicates={len(pairs) - len(set(pairs))} "
        f"delivered_not_stored={len(set(delivered) - set(stored))} paid_twice={sum(1 for n in server.paid.values() if n > 1)} "
        f"billed_not_delivered={server.total('billed') - server.total('paid')} (refusals/empty/truncated/abandoned; abandoned={server.total('abandoned')}) "
        f"key_leaks={secret_leaks} elapsed={elapsed:.1f}s"
    )


if __name__ == "__main__":
    main()
