"""`produce` and `topics` as a user runs them, against the real broker: crash and resume,
fencing, a tiny local queue, SIGINT."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from eos_pipeline.orders.generate import generate_orders
from eos_pipeline.producer import TransactionalProducer

from .kafka_io import read_committed, run_cli, start_cli

COMMITTED = re.compile(r"committed (\d+) lines")


def last_committed(output: str) -> int:
    counts = [int(n) for n in COMMITTED.findall(output)]
    return counts[-1] if counts else 0


def write_lines(path: Path, count: int, seed: int) -> list[bytes]:
    lines = [value for _, value in generate_orders(count, seed=seed, poison_rate=0.05)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def test_sigkill_leaves_whole_batches_and_skip_resumes_exactly_once(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic, batch = new_topic(partitions=2), 200
    lines = write_lines(tmp_path / "orders.jsonl", 30_000, seed=7)
    base = ["produce", "--topic", topic, "--file", str(tmp_path / "orders.jsonl")]
    base += ["--batch-size", str(batch), "--transactional-id", f"p-{topic}"]
    proc = start_cli(kafka_bootstrap, base, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    printed: list[str] = []
    deadline = time.monotonic() + 30
    while len(printed) < 5 and time.monotonic() < deadline:
        printed.append(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    proc.stdout.close()
    resume = last_committed("".join(printed))
    assert 0 < resume < len(lines), "the kill must land in the middle of the file"

    visible = [v for _, v in read_committed(kafka_bootstrap, topic, expect=resume, settle=1.0)]
    assert len(visible) % batch == 0, "only whole batches are visible"
    assert Counter(visible) == Counter(lines[: len(visible)])
    assert resume <= len(visible) <= resume + batch

    done = run_cli(kafka_bootstrap, [*base, "--skip", str(resume)])
    assert done.returncode == 0, done.stderr
    assert last_committed(done.stdout) == len(lines)
    final = [v for _, v in read_committed(kafka_bootstrap, topic, expect=len(lines))]
    assert Counter(final) == Counter(lines), "every line exactly once"


def test_second_producer_with_same_id_fences_the_first(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic, tid = new_topic(), "fence-me"
    args = ["produce", "--topic", topic, "--file", "-", "--batch-size", "2"]
    proc = start_cli(
        kafka_bootstrap,
        [*args, "--transactional-id", f"{tid}-{topic}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write('{"order_id": "a"}\n{"order_id": "b"}\n')
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "committed 2 lines"

    usurper = TransactionalProducer(kafka_bootstrap, f"{tid}-{topic}")
    with usurper.transaction():
        usurper.produce(topic, b'{"order_id": "z"}')
    usurper.close()

    out, err = proc.communicate('{"order_id": "c"}\n{"order_id": "d"}\n', timeout=30)
    assert proc.returncode == 1
    assert "producer fenced" in err and f"{tid}-{topic}" in err
    assert "Traceback" not in err
    assert "committed 2 lines; resume with --skip 2" in out
    values = [v for _, v in read_committed(kafka_bootstrap, topic, expect=3, settle=1.0)]
    assert sorted(values, key=lambda v: v or b"") == [
        b'{"order_id": "a"}',
        b'{"order_id": "b"}',
        b'{"order_id": "z"}',
    ]


def test_tiny_local_queue_still_delivers_everything(
    kafka_bootstrap: str, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic(partitions=3)
    config = tmp_path / "eos.toml"
    config.write_text('[kafka]\n"queue.buffering.max.messages" = "10"\n')
    args = ["--config", str(config), "produce", "--topic", topic, "--generate", "3000"]
    done = run_cli(kafka_bootstrap, [*args, "--seed", "3", "--batch-size", "1000"])
    assert done.returncode == 0, done.stderr
    assert last_committed(done.stdout) == 3000
    waits = re.search(r"(\d+) waits on a full local queue", done.stderr)
    assert waits and int(waits.group(1)) > 0, "the queue was full at times"
    expected = Counter(generate_orders(3000, seed=3))
    assert Counter(read_committed(kafka_bootstrap, topic, expect=3000)) == expected


def test_sigint_commits_what_was_read_and_says_where_to_resume(
    kafka_bootstrap: str, new_topic: Callable[..., str]
) -> None:
    topic = new_topic()
    proc = start_cli(
        kafka_bootstrap,
        ["produce", "--topic", topic, "--file", "-", "--batch-size", "100"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write("".join(f'{{"order_id": "o{i}"}}\n' for i in range(3)))
    proc.stdin.flush()
    time.sleep(1.5)  # the three lines are read; the process now blocks on input
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "interrupted: committed 3 lines; resume with --skip 3" in out
    assert len(read_committed(kafka_bootstrap, topic, expect=3, settle=0.5)) == 3


def test_topics_create_and_list(kafka_bootstrap: str, new_topic: Callable[..., str]) -> None:
    name = f"cli-{new_topic()}"
    created = run_cli(kafka_bootstrap, ["topics", "create", name, "--partitions", "4"])
    assert created.returncode == 0, created.stderr
    assert f"created topic {name} (4 partitions" in created.stdout
    again = run_cli(kafka_bootstrap, ["topics", "create", name, "--partitions", "4"])
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "already exists" in again.stderr
    listed = run_cli(kafka_bootstrap, ["topics", "list"])
    assert f"{name}\t4" in listed.stdout.splitlines()
