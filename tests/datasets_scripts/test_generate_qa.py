"""The teacher through the real ``openai`` client, against an OpenAI-compatible server on 127.0.0.1 with injected faults.

The server (tests/openai_fake_server.py) writes synthetic answers and keeps the books: requests per
pair, and answers delivered in full ("paid"). A pair must end up in the ``vqa`` subset exactly once,
with an answer the server delivered for it, and no pair may be paid for twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from datasets import Dataset, Image, load_from_disk
from PIL import Image as PILImage

from emvision.datasets_scripts import generate_qa as cli
from emvision.datasets_scripts import teacher as gq
from emvision.vocabulary import FAMILY_BY_ID, PROMPT_VERSION, caption_for
from emvision.datasets_scripts.storage import INFO_BAR_COLUMNS, assign_folds, class_descriptions_features, images_features, vqa_features
from emvision.datasets_scripts.teacher.cache import CachedAnswer, TeacherCache, cache_key
from emvision.datasets_scripts.teacher.client import RateLimiter, RetryPolicy, is_refusal, redact, retry_after_seconds
from emvision.datasets_scripts.teacher.cost import Pricing, image_tokens
from emvision.vocabulary import SEM_CATEGORIES, category_display_name

from openai_fake_server import FAULT_KINDS, FakeOpenAIServer, Fault, scripted_faults, seeded_faults

SECRET = "sk-test-emvision-0f3c9a7d2b6e4c81a5d9"
MODEL = "fake-vision-teacher"
# a timeout well above a local round trip on a loaded machine: a normal answer must never time out
FAST = dict(max_attempts=6, max_unusable=2, backoff_base_s=0.01, backoff_max_s=0.05, request_timeout_s=2.0)


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, real_sem_images) -> Path:
    """A tiny ``images`` subset: four real micrographs (a 1024x768 JPEG, a PNG tile, 256 px crops), shrunk to 48 px."""
    chosen = [real_sem_images[i] for i in (0, 5, 10, 15)]
    rows = []
    for path in chosen:
        raw = path.read_bytes()
        with PILImage.open(io.BytesIO(raw)) as image:
            width, height = image.size
            scale = 48 / min(width, height)
            small = image.convert("L").resize((round(width * scale), round(height * scale)))
            buffer = io.BytesIO()
            small.save(buffer, format="PNG")
        rows.append(
            {
                "image": {"bytes": buffer.getvalue(), "path": None},
                "image_id": hashlib.sha256(raw).hexdigest(),
                "label": SEM_CATEGORIES.index(path.parent.name),
                "source": str(path),
                "width": width,
                "height": height,
                "crop_box": [0, 0, width, height],
                **dict.fromkeys(INFO_BAR_COLUMNS),
                "metadata": "{}",
            }
        )
    for row, fold in zip(rows, assign_folds([r["image_id"] for r in rows], [r["label"] for r in rows], num_folds=2)):
        row["fold"] = fold
    root = tmp_path_factory.mktemp("sem")
    Dataset.from_list(rows, features=images_features()).save_to_disk(str(root / "images"))
    return root


def stored_image_digests(dataset_dir: Path) -> dict[str, str]:
    """image_id -> sha256[:12] of the bytes the teacher is sent (the stored PNG)."""
    images = load_from_disk(str(dataset_dir / "images")).cast_column("image", Image(decode=False))
    return {row["image_id"]: hashlib.sha256(row["image"]["bytes"]).hexdigest()[:12] for row in images}


def run(dataset_dir, output, server, **kwargs):
    settings = kwargs.pop("settings", gq.TeacherSettings(model=MODEL))
    policy = RetryPolicy(**{**FAST, **kwargs.pop("policy", {})})
    return gq.generate_qa(dataset_dir, output, settings, api_key=SECRET, base_url=server.base_url, policy=policy, progress=False, **kwargs)


def assert_no_secret(folder: Path, *texts: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"API key written to {path}"
    for text in texts:
        assert SECRET not in text and SECRET[3:15] not in text


def check_every_pair_once(output: Path, dataset_dir: Path, server: FakeOpenAIServer, num_images: int, num_questions: int = 10) -> Dataset:
    vqa = load_from_disk(str(output / "vqa"))
    descriptions = load_from_disk(str(output / "class_descriptions"))
    assert vqa.features == vqa_features() and descriptions.features == class_descriptions_features()
    pairs = list(zip(list(vqa["image_id"]), list(vqa["question_id"])))
    assert pairs == sorted(pairs) and len(set(pairs)) == len(pairs) == num_images * num_questions
    digests = stored_image_digests(dataset_dir)
    for row in vqa:
        question = FAMILY_BY_ID[row["question_id"]].question
        assert row["question"] == question and row["teacher"] == MODEL and row["prompt_version"] == PROMPT_VERSION
        assert row["caption"] == caption_for(SEM_CATEGORIES[row["label"]])
        assert f"about image {digests[row['image_id']]}" in row["answer"] and question[-60:] in row["answer"]
    assert list(descriptions["label"]) == list(range(len(SEM_CATEGORIES))) and set(descriptions["source"]) == {MODEL}
    # every answer the server delivered in full is stored exactly once, and nothing else is
    delivered = sorted(answer for answers in server.delivered.values() for answer in answers)
    assert sorted(list(vqa["answer"]) + list(descriptions["description"])) == delivered
    assert max(server.paid.values()) == 1, "a pair was paid for twice"
    return vqa


def test_faulty_server_every_pair_stored_once_and_nothing_paid_twice(dataset_dir, tmp_path, capsys, monkeypatch):
    from openai.resources.chat.completions import AsyncCompletions

    create, open_calls = AsyncCompletions.create, {"now": 0, "most": 0}

    async def counting_create(self, **kwargs):  # the real client call, with a count of calls open at once
        open_calls["now"] += 1
        open_calls["most"] = max(open_calls["most"], open_calls["now"])
        try:
            return await create(self, **kwargs)
        finally:
            open_calls["now"] -= 1

    monkeypatch.setattr(AsyncCompletions, "create", counting_create)
    # "slow" answers take 30 s: the client times out at 2 s, hangs up, and the server drops the answer
    faults = seeded_faults(0.6, FAULT_KINDS, max_faults_per_pair=2, seed=3, retry_after=0.05, slow_delay=30)
    output = tmp_path / "out"
    with FakeOpenAIServer(api_key=SECRET, schedule=faults) as server:
        result = run(dataset_dir, output, server, concurrency=4)
        summary = result.summary
        assert summary.stored == 50 and result.failures == 0 and summary.stopped is None
        assert summary.log.sent == server.total("requests"), "every attempt is counted"
        assert open_calls["most"] == 4, "concurrency is bounded (and used)"
        injected = sum(server.faults.values())
        assert injected > 20 and set(server.faults) == set(FAULT_KINDS)
        assert summary.log.sent == 50 + injected
        assert summary.log.outcomes["timeout"] == server.faults["slow"] == server.total("abandoned") and summary.log.outcomes["malformed"] == server.faults["malformed"] + server.faults["bad_schema"]
        vqa = check_every_pair_once(output, dataset_dir, server, num_images=4)
        assert result.counts == {"vqa": 40, "class_descriptions": 10}

        # a second run finds everything cached: nothing sent, the same rows
        again = run(dataset_dir, output, server, concurrency=4)
        assert again.summary.log.sent == 0 and server.total("requests") == summary.log.sent
        assert list(load_from_disk(str(output / "vqa"))["answer"]) == list(vqa["answer"])
    card = (output / "README.md").read_text()
    assert "Label-conditioned (the MVaEMa paper's protocol)" in card and MODEL in card
    assert_no_secret(output, *capsys.readouterr())


def test_retry_after_is_waited_for(dataset_dir, tmp_path):
    with FakeOpenAIServer(api_key=SECRET, schedule=scripted_faults({1: Fault("429", retry_after=1)})) as server:
        result = run(dataset_dir, tmp_path / "out", server, limit_images=1, question_ids=[2], descriptions_per_class=0, policy={"backoff_base_s": 0.0})
        events = list(server.events)
    assert result.summary.stored == 1 and result.summary.log.outcomes["429"] == 1
    refused_at = next(t for t, _, what in events if what == "429")
    retried_at = [t for t, _, what in events if what.startswith("request:")][1]
    assert retried_at - refused_at >= 1.0, "retried before Retry-After elapsed"
    assert result.summary.log.retry_after_waits == [1.0]


def test_sigterm_finishes_requests_in_flight_then_writes_what_it_has(dataset_dir, tmp_path, capsys, monkeypatch):
    def terminate_on_tenth_request(pair, attempt, text, count=[0]):
        count[0] += 1
        if count[0] == 10:
            os.kill(os.getpid(), signal.SIGTERM)  # generate_qa's own handler takes it (the CLI installs one)

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    output = tmp_path / "out"
    with FakeOpenAIServer(api_key=SECRET, schedule=terminate_on_tenth_request, latency=0.05) as server:
        args = [str(dataset_dir), "--output", str(output), "--model", MODEL, "--base_url", server.base_url, "--concurrency", "3", "--no_progress"]
        assert cli.main(args) == 0
        last = capsys.readouterr().out.splitlines()[-1]
        stored = server.total("paid")
        assert "stopped early: interrupted" in last and 10 <= stored < 50 and last.startswith(f"{stored} answers stored, 0 failed, {50 - stored} left")
        assert server.total("requests") == stored and server.total("abandoned") == 0  # in-flight requests were finished, not dropped
        assert len(load_from_disk(str(output / "class_descriptions"))) + len(load_from_disk(str(output / "vqa"))) == stored
        assert cli.main(args) == 0 and max(server.paid.values()) == 1 and len(load_from_disk(str(output / "vqa"))) == 40


def test_a_failing_job_source_stops_the_run_with_its_error_not_a_hang(tmp_path):
    import openai

    from emvision.datasets_scripts.teacher.cost import CostCeiling
    from emvision.datasets_scripts.teacher.runner import TeacherJob, run_jobs

    def jobs():
        for n in range(3):
            yield TeacherJob(f"key{n}", "class_description", None, 0, "Fibres", {"model": MODEL, "messages": [{"role": "user", "content": f"describe {n}"}]}, 10)
        raise OSError("images subset unreadable at row 3")

    async def go(server):
        client = openai.AsyncOpenAI(api_key=SECRET, base_url=server.base_url, max_retries=0)
        with TeacherCache(tmp_path / "c.sqlite") as cache:
            run = run_jobs(jobs(), total=10, client=client, cache=cache, model_for_kind={"class_description": MODEL}, policy=RetryPolicy(**FAST),
                           limiter=RateLimiter(), ceiling=CostCeiling(None, Pricing()), max_output_tokens=100, concurrency=2, progress=False)  # fmt: skip
            await asyncio.wait_for(run, timeout=30)

    with FakeOpenAIServer(api_key=SECRET) as server, pytest.raises(OSError, match="row 3"):
        asyncio.run(go(server))
    with TeacherCache(tmp_path / "c.sqlite", readonly=True) as cache:
        assert len(cache) == server.total("paid") <= 3  # what was answered before the error is kept


async def _five_starts(limiter):
    started = time.monotonic()
    for _ in range(5):
        await limiter.acquire()
    return time.monotonic() - started


def test_rate_limiter_spaces_starts_and_pauses():
    assert 0.38 <= asyncio.run(_five_starts(RateLimiter(requests_per_minute=600))) < 1.0

    async def paused():
        limiter = RateLimiter()
        limiter.pause_until(time.monotonic() + 0.3)
        return await _five_starts(limiter)

    assert 0.3 <= asyncio.run(paused()) < 0.8


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    in_five = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 5))
    assert 3.5 < retry_after_seconds({"retry-after": in_five}) <= 5.0
    assert retry_after_seconds({"retry-after": "soon"}) is None and retry_after_seconds({}) is None


def test_refusals_and_errors_are_reported_never_stored_then_retried_next_run(dataset_dir, tmp_path):
    always = {FAMILY_BY_ID[3].question: Fault("refusal"), FAMILY_BY_ID[5].question: Fault("500"), FAMILY_BY_ID[7].question: Fault("empty")}

    def schedule(pair, attempt, text):
        return next((fault for question, fault in always.items() if text.endswith(question)), None)

    output = tmp_path / "out"
    with FakeOpenAIServer(api_key=SECRET, schedule=schedule) as server:
        result = run(dataset_dir, output, server, limit_images=2, descriptions_per_class=0, policy={"max_attempts": 4, "max_unusable": 1})
    failures = [json.loads(line) for line in (output / "failures.jsonl").read_text().splitlines()]
    assert result.failures == len(failures) == 6 and result.summary.stored == 14
    reasons = {row["question_id"]: (row["reason"], row["attempts"]) for row in failures}
    assert reasons == {3: ("refused", 2), 5: (reasons[5][0], 4), 7: ("empty", 2)} and reasons[5][0].startswith("HTTP 500")
    vqa = load_from_disk(str(output / "vqa"))
    assert len(vqa) == 14 and not {3, 5, 7} & set(vqa["question_id"])
    assert not any(is_refusal(answer) for answer in vqa["answer"])
    with TeacherCache(output / gq.CACHE_NAME, readonly=True) as cache:
        assert cache.total_cost_usd() == 0.0 and len(cache) == 14  # no prices given; refusals logged, not stored

    with FakeOpenAIServer(api_key=SECRET) as server:  # the server recovers: only the failed pairs are asked again
        again = run(dataset_dir, output, server, limit_images=2, descriptions_per_class=0)
        assert again.summary.log.sent == 6 and again.failures == 0
        assert (output / "failures.jsonl").read_text() == ""
        assert len(load_from_disk(str(output / "vqa"))) == 20


def test_wrong_key_stops_the_run_and_is_never_echoed(dataset_dir, tmp_path, capsys, monkeypatch):
    wrong = "sk-wrong-key-9d8c7b6a5f4e3d2c"
    monkeypatch.setenv("EMVISION_TEST_KEY", wrong)
    output = tmp_path / "out"
    with FakeOpenAIServer(api_key=SECRET) as server:
        code = cli.main([str(dataset_dir), "--output", str(output), "--model", MODEL, "--base_url", server.base_url, "--api_key_env", "EMVISION_TEST_KEY", "--no_progress", "--concurrency", "2"])
        assert server.unauthorized >= 1 and server.total("paid") == 0
    out, err = capsys.readouterr()
    assert code == 1 and "stopped early: fatal: HTTP 401" in out, out + err
    for path in [p for p in output.rglob("*") if p.is_file()]:
        assert wrong.encode() not in path.read_bytes() and b"sk-wr****" not in path.read_bytes()
    assert wrong not in out + err and "sk-wr" not in out + err and "sk-***" in out


def test_unreadable_image_is_reported_and_the_run_goes_on(dataset_dir, tmp_path):
    images = load_from_disk(str(dataset_dir / "images")).cast_column("image", Image(decode=False))
    rows = [images[0], {**images[1], "image": {"bytes": b"not an image at all", "path": None}}]
    broken = tmp_path / "broken"
    Dataset.from_list(rows, features=images.features).cast_column("image", Image()).save_to_disk(str(broken / "images"))
    with FakeOpenAIServer(api_key=SECRET) as server:
        result = run(broken, tmp_path / "out", server, question_ids=[1, 2], descriptions_per_class=0)
        assert server.total("requests") == 2 and result.summary.stored == 2 and result.failures == 2
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert {(row["image_id"], row["question_id"], row["attempts"]) for row in failures} == {(rows[1]["image_id"], 1, 0), (rows[1]["image_id"], 2, 0)}
    assert all(row["reason"].startswith("unreadable image") for row in failures)
    assert list(load_from_disk(str(tmp_path / "out" / "vqa"))["image_id"]) == [rows[0]["image_id"]] * 2


def test_subsets_written_by_another_tool_are_not_replaced_unless_asked(dataset_dir, tmp_path, capsys, monkeypatch):
    output = tmp_path / "out"
    in_house = Dataset.from_list([{"image_id": "x", "label": 0, "question_id": 0, "question": "q?", "caption": "", "answer": "in-house answer",
                                   "teacher": "in-house", "prompt_version": "", "fold": 0}], features=vqa_features())  # fmt: skip
    in_house.save_to_disk(str(output / "vqa"))
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAIServer(api_key=SECRET) as server:
        args = [str(dataset_dir), "--output", str(output), "--model", MODEL, "--base_url", server.base_url, "--question_ids", "1", "--descriptions_per_class", "0", "--no_progress"]
        assert cli.main(args) == 2 and server.total("requests") == 0
        assert f"{output / 'vqa'} exists and was not written by generate_qa.py" in capsys.readouterr().err
        assert list(load_from_disk(str(output / "vqa"))["answer"]) == ["in-house answer"]
        assert cli.main([*args, "--overwrite"]) == 0 and len(load_from_disk(str(output / "vqa"))) == 4
        assert cli.main(args) == 0 and server.total("requests") == 4  # its own subsets are replaced without asking


def test_no_caption_is_label_free(dataset_dir, tmp_path):
    seen = []
    with FakeOpenAIServer(api_key=SECRET, schedule=lambda pair, attempt, text: seen.append(text)) as server:
        settings = gq.TeacherSettings(model=MODEL, with_caption=False)
        run(dataset_dir, tmp_path / "out", server, settings=settings, limit_images=2, question_ids=[1, 4], descriptions_per_class=0)
    vqa = load_from_disk(str(tmp_path / "out" / "vqa"))
    assert len(vqa) == 4 and set(vqa["caption"]) == {""}
    assert sorted(seen) == sorted([FAMILY_BY_ID[1].question, FAMILY_BY_ID[4].question] * 2)
    assert not any(category_display_name(name) in text for text in seen for name in SEM_CATEGORIES)
    assert "**Label-free.**" in (tmp_path / "out" / "README.md").read_text()


def test_dry_run_sends_nothing_and_cost_ceiling_stops_cleanly(dataset_dir, tmp_path, capsys):
    output = tmp_path / "out"
    prices = ["--price_per_1k_input", "0.01", "--price_per_1k_output", "0.1", "--max_tokens", "200"]
    with FakeOpenAIServer(api_key=SECRET) as server:
        assert cli.main([str(dataset_dir), "--output", str(output), "--model", MODEL, "--dry_run", *prices]) == 0
        line = capsys.readouterr().out
        assert "50 requests to send (0 of 50 already cached)" in line and "at most $1." in line and server.total("requests") == 0

        settings = gq.TeacherSettings(model=MODEL, max_tokens=200)
        pricing = Pricing(0.01, 0.1)
        result = run(dataset_dir, output, server, settings=settings, pricing=pricing, max_cost_usd=0.05, concurrency=2)
        summary = result.summary
        assert summary.stopped.startswith("cost ceiling") and 0 < summary.stored < 50 and summary.not_sent == 50 - summary.stored
        assert summary.cost_usd <= 0.05 and server.total("paid") == summary.stored
        with TeacherCache(output / gq.CACHE_NAME, readonly=True) as cache:
            assert cache.total_cost_usd() == pytest.approx(summary.cost_usd)
        assert cli.main([str(dataset_dir), "--output", str(output), "--model", MODEL, "--dry_run", *prices]) == 0
        assert f"{50 - summary.stored} requests to send ({summary.stored} of 50 already cached)" in capsys.readouterr().out

        rest = run(dataset_dir, output, server, settings=settings, pricing=pricing, max_cost_usd=5.0, concurrency=2)
        assert rest.summary.stored == 50 - summary.stored and rest.summary.stopped is None
        assert max(server.paid.values()) == 1 and len(load_from_disk(str(output / "vqa"))) == 40


def _cached_count(cache_path: Path) -> int:
    if not cache_path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{cache_path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.slow
def test_killed_mid_run_resumes_without_losing_duplicating_or_paying_twice(dataset_dir, tmp_path, repo_root, capsys, monkeypatch):
    """SIGKILL the CLI while requests are in flight, restart it, and audit the server's books."""
    output = tmp_path / "out"
    cache_path = output / gq.CACHE_NAME
    logs = []
    faults = seeded_faults(0.4, ["429", "500", "drop", "malformed", "refusal"], max_faults_per_pair=1, seed=11, retry_after=0.05)
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    with FakeOpenAIServer(api_key=SECRET, schedule=faults) as server:
        command = [sys.executable, str(repo_root / "datasets_scripts" / "generate_qa.py"), str(dataset_dir), "--output", str(output), "--model", MODEL,
                   "--base_url", server.base_url, "--concurrency", "4", "--backoff_base", "0.01", "--request_timeout", "5"]  # fmt: skip
        server.hold_after(18)  # once 18 answers are paid, later requests hang in flight
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=repo_root)
        deadline = time.monotonic() + 240  # generous: the interpreter start-up imports torch and transformers (emvision.modeling)
        while not (server.total("paid") >= 18 and _cached_count(cache_path) == server.total("paid")):
            assert first.poll() is None and time.monotonic() < deadline, "the first run ended before it could be killed"
            time.sleep(0.05)
        while server.held == 0:  # requests in flight, hanging on the server
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        logs.append(first.communicate(timeout=30)[0])
        assert first.returncode == -signal.SIGKILL
        server.release()
        time.sleep(0.3)  # the held requests find their client gone: generated, never delivered
        assert _cached_count(cache_path) == 18 and server.total("paid") == 18
        assert not (output / "vqa").exists()

        # the restart: the same command line, run in this process to save an interpreter start-up
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        assert cli.main(command[2:]) == 0
        logs += capsys.readouterr()
        assert logs[-2].splitlines()[-1].startswith("32 answers stored, 0 failed, 0 left for a later run")
        check_every_pair_once(output, dataset_dir, server, num_images=4)
        assert server.total("paid") == 50 and len(server.paid) == 50
    assert_no_secret(output, *logs)


def test_cache_key_covers_every_parameter_and_put_is_idempotent(tmp_path):
    base = gq.TeacherSettings(model=MODEL)
    key = gq.vqa_key(base, "abc", 1, "caption")
    variants = [
        gq.vqa_key(gq.TeacherSettings(model="other"), "abc", 1, "caption"),
        gq.vqa_key(gq.TeacherSettings(model=MODEL, temperature=0.3), "abc", 1, "caption"),
        gq.vqa_key(gq.TeacherSettings(model=MODEL, top_p=0.2), "abc", 1, "caption"),
        gq.vqa_key(gq.TeacherSettings(model=MODEL, max_tokens=100), "abc", 1, "caption"),
        gq.vqa_key(gq.TeacherSettings(model=MODEL, prompt_version="v2"), "abc", 1, "caption"),
        gq.vqa_key(gq.TeacherSettings(model=MODEL, image_detail="low"), "abc", 1, "caption"),
        gq.vqa_key(base, "abd", 1, "caption"),
        gq.vqa_key(base, "abc", 2, "caption"),
        gq.vqa_key(base, "abc", 1, ""),
    ]
    assert key == gq.vqa_key(gq.TeacherSettings(model=MODEL), "abc", 1, "caption") and len({key, *variants}) == 10
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})
    with TeacherCache(tmp_path / "c.sqlite") as cache:
        answer = CachedAnswer(key, "vqa", "abc", 1, "Fibres", MODEL, "first", created=1.0)
        assert cache.put(answer, cost_usd=0.5) and not cache.put(CachedAnswer(key, "vqa", "abc", 1, "Fibres", MODEL, "second", created=2.0))
        assert cache.get(key).answer == "first" and len(cache) == 1
    with TeacherCache(tmp_path / "c.sqlite", readonly=True) as cache:
        assert cache.keys() == {key} and cache.total_cost_usd() == 0.5
    (tmp_path / "junk.sqlite").write_text("not a database")
    with pytest.raises(ValueError, match="junk.sqlite"):
        TeacherCache(tmp_path / "junk.sqlite")


def test_refusal_detection():
    for text in ["I'm sorry, but I can't help with identifying this image.", "Sorry, I cannot assist with that.", "I can’t analyze images of this kind.", "As an AI, I am unable to view images."]:
        assert is_refusal(text), text
    long_answer = "I'm sorry, the scale bar can't be read at this resolution, but the image shows " + "dense nanowire bundles " * 20
    for text in ["The image shows a dense mat of nanowires about 50 nm wide.", long_answer, "Sorry for the wait: the particles are 20-40 nm."]:
        assert not is_refusal(text), text


def test_image_tokens_follow_openai_rule_and_redact():
    assert image_tokens(1024, 1024, "high") == 765 and image_tokens(2048, 4096, "high") == 1105  # OpenAI's worked examples
    assert image_tokens(4096, 4096, "low") == 85 and image_tokens(341, 256, "auto") == 255
    assert redact(f"bad key {SECRET} and sk-ab****cdef", SECRET) == "bad key *** and sk-***"


def test_bad_inputs_name_the_problem(tmp_path, dataset_dir, capsys, monkeypatch):
    with pytest.raises(FileNotFoundError, match="images"):
        gq.load_images(tmp_path)
    with pytest.raises(ValueError, match="unknown question id"):
        gq.plan_requests(*gq.load_images(dataset_dir), gq.TeacherSettings(model=MODEL), question_ids=[11])
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert cli.main([str(dataset_dir), "--output", str(tmp_path / "o"), "--model", MODEL]) == 2
    assert "$OPENAI_API_KEY is not set" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0 and len(capsys.readouterr().out.splitlines()) <= 45


# ---------------------------------------------------------------------------------------------
# long runs against hostile servers, and argument errors (issue 14, items 6 and 10)


def _cli_command(repo_root: Path, dataset_dir: Path, output: Path, server: FakeOpenAIServer, *extra: str) -> list[str]:
    return [sys.executable, str(repo_root / "datasets_scripts" / "generate_qa.py"), str(dataset_dir), "--output", str(output), "--model", MODEL,
            "--base_url", server.base_url, "--no_progress", *extra]  # fmt: skip


def _event_times(server: FakeOpenAIServer, what: str) -> list[float]:
    with server._lock:
        return [t for t, _, event in server.events if event == what]


def test_a_server_that_trickles_its_answer_is_cut_off_at_the_request_deadline(dataset_dir, tmp_path, repo_root):
    """One byte per second never trips a per-read timeout: --request_timeout 3 must still end the request after 3 s."""
    output = tmp_path / "out"
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    with FakeOpenAIServer(api_key=SECRET, schedule=lambda pair, attempt, text: Fault("trickle", delay=1.0)) as server:
        command = _cli_command(repo_root, dataset_dir, output, server, "--limit_images", "1", "--question_ids", "1", "--descriptions_per_class", "0",
                               "--max_attempts", "2", "--backoff_base", "0.01", "--request_timeout", "3")  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=repo_root)
        deadline = time.monotonic() + 5
        while len(_event_times(server, "abandoned")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        started, cut = _event_times(server, "request:trickle"), _event_times(server, "abandoned")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("0 answers stored, 1 failed, 0 left for a later run; 2 requests sent")
    durations = [end - start for start, end in zip(started, cut)]
    assert len(durations) == 2 and all(2.5 <= d <= 3 + 1.5 for d in durations), durations  # the server notices at its next byte; its clock starts once the body is read
    failure = json.loads((output / "failures.jsonl").read_text())
    assert failure["reason"] == "timeout after 3 s" and failure["attempts"] == 2
    print(f"trickling requests cut off after {', '.join(f'{d:.2f}' for d in durations)} s (--request_timeout 3)")


def test_sigterm_ends_the_run_within_the_request_deadline_and_keeps_what_was_committed(dataset_dir, tmp_path, repo_root):
    """Six answers arrive, then every request trickles: the first SIGTERM must not wait on them past --request_timeout."""
    served = []

    def schedule(pair, attempt, text):
        served.append(pair)
        return None if len(served) <= 6 else Fault("trickle", delay=1.0)

    output = tmp_path / "out"
    env = {**os.environ, "OPENAI_API_KEY": SECRET}
    with FakeOpenAIServer(api_key=SECRET, schedule=schedule) as server:
        command = _cli_command(repo_root, dataset_dir, output, server, "--limit_images", "2", "--descriptions_per_class", "0",
                               "--concurrency", "2", "--backoff_base", "0.01", "--request_timeout", "4")  # fmt: skip
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=repo_root)
        try:
            deadline = time.monotonic() + 240
            while not (server.total("paid") == 6 and _cached_count(output / gq.CACHE_NAME) == 6 and len(_event_times(server, "request:trickle")) >= 2):
                assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
                time.sleep(0.02)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            out = process.communicate(timeout=90)[0]
            exited = time.monotonic()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        cut = _event_times(server, "abandoned")
    assert process.returncode == 0, out
    assert cut and max(cut) - signalled <= 4 + 1.5, f"requests in flight ended {max(cut) - signalled:.1f} s after SIGTERM"
    last = out.splitlines()[-1]
    assert last.startswith("6 answers stored, 0 failed, 14 left for a later run") and "stopped early: interrupted" in last, out
    assert len(load_from_disk(str(output / "vqa"))) == 6 and _cached_count(output / gq.CACHE_NAME) == 6
    print(f"SIGTERM: requests in flight cut after {max(cut) - signalled:.2f} s (--request_timeout 4); process exited after {exited - signalled:.2f} s")


@pytest.mark.parametrize(
    "argument, value, expected",
    [
        ("--max_attempts", "0", "argument --max_attempts: expected an integer >= 1, got '0'"),
        ("--limit_images", "-1", "argument --limit_images: expected an integer >= 1, got '-1'"),
        ("--question_ids", "11", "argument --question_ids: prompt families are 1-10 (comma-separated), got '11'"),
        ("--question_ids", "1,0", "argument --question_ids: prompt families are 1-10 (comma-separated), got '1,0'"),
        ("--request_timeout", "0", "argument --request_timeout: expected a number of seconds > 0, got '0'"),
        ("--request_timeout", "nan", "argument --request_timeout: expected a number of seconds > 0, got 'nan'"),
        ("--concurrency", "0", "argument --concurrency: expected an integer >= 1, got '0'"),
        ("--top_p", "0", "argument --top_p: expected a number in (0, 1], got '0'"),
    ],
)
def test_bad_arguments_are_one_line_errors_naming_the_argument_and_its_range(argument, value, expected, dataset_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with FakeOpenAIServer(api_key=SECRET) as server:
        with pytest.raises(SystemExit) as exited:
            cli.main([str(dataset_dir), "--output", str(tmp_path / "o"), "--model", MODEL, "--base_url", server.base_url, "--no_progress", argument, value])
        assert server.total("requests") == 0
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.splitlines()[-1] == f"generate_qa.py: error: {expected}", err
    assert "Traceback" not in err and not (tmp_path / "o").exists()
    with pytest.raises(ValueError, match="request_timeout_s must be > 0"):
        RetryPolicy(request_timeout_s=0)


# ---------------------------------------------------------------------------------------------
# the paper's prompts and sampling parameters, as they leave the client (issue 17, item 4)

PAPER_PROMPTS = Path(__file__).resolve().parents[1] / "fixtures" / "reference" / "paper_prompts.json"


def _normalised(text: str) -> str:
    """The fixture's normalisation (paper_prompts.json, "normalisation"): spacing, dash and quote forms."""
    import re

    for fancy, plain in (("\u2013", "-"), ("\u2014", "-"), ("\u2018", "'"), ("\u2019", "'"), ("\u201c", '"'), ("\u201d", '"')):
        text = text.replace(fancy, plain)
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s*-\s+", " - ", text)  # a dash between words, however spaced; hyphens inside words stay


def test_paper_prompt_fixture_matches_the_papers_wording():
    """paper_prompts.json is teacher_prompts.md (the paper's wording), machine-readable."""
    import re

    fixture = json.loads(PAPER_PROMPTS.read_text())
    markdown = (PAPER_PROMPTS.parent / "teacher_prompts.md").read_text()
    found = re.findall(r"^\s*(\d+)\. \*\*(.+?)\*\* - (.+?)(?=^\s*\d+\. \*\*|^\s*$)", markdown, flags=re.M | re.S)
    assert [(int(n), name, _normalised(text)) for n, name, text in found] == [(f["question_id"], f["name"], _normalised(f["text"])) for f in fixture["families"]]
    assert len(fixture["families"]) == 10
    assert fixture["sampling"] == {"temperature": 0.25, "top_p": 0.1, "max_output_tokens": 3500}


@pytest.mark.parametrize("max_tokens_param", [None, "max_completion_tokens"])
def test_requests_carry_the_papers_prompts_and_sampling_parameters(max_tokens_param, dataset_dir, tmp_path, capsys, monkeypatch):
    """Every body as the fake server received it: each of the paper's ten prompts once per image, temperature 0.25, top_p 0.1, 3500 tokens."""
    fixture = json.loads(PAPER_PROMPTS.read_text())
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    extra = ["--max_tokens_param", max_tokens_param] if max_tokens_param else []
    with FakeOpenAIServer(api_key=SECRET) as server:
        assert cli.main([str(dataset_dir), "--output", str(tmp_path / "o"), "--model", MODEL, "--base_url", server.base_url, "--no_progress",
                         "--limit_images", "1", "--descriptions_per_class", "0", *extra]) == 0  # fmt: skip
        bodies = list(server.bodies)
    capsys.readouterr()
    assert len(bodies) == 10
    sent_questions = []
    for body in bodies:
        assert body["model"] == MODEL and body["temperature"] == 0.25 and body["top_p"] == 0.1
        # the client sends the parameter under the name it is told (default: max_tokens), never both
        name = max_tokens_param or "max_tokens"
        other = "max_completion_tokens" if name == "max_tokens" else "max_tokens"
        assert body[name] == 3500 and other not in body
        user = next(m for m in body["messages"] if m["role"] == "user")
        text = next(part["text"] for part in user["content"] if part["type"] == "text")
        assert any(part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,") for part in user["content"])
        caption, question = text.split("\n\n", 1)  # the paper's protocol: the caption naming the category, then the instruction
        assert caption.startswith("This is a scanning electron micrograph of ")
        sent_questions.append(_normalised(question))
    assert sorted(sent_questions) == sorted(_normalised(f["text"]) for f in fixture["families"])
