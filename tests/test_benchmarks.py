"""The benchmark commands run (on a tiny configuration: timings are not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_generation_benchmark_runs_and_reports_both_paths():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "generation.py"), "--units", "8", "--length", "10",
                             "--repeats", "1", "--rows", "1", "3"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.strip() and line.split()[0].isdigit()]
    assert [row[0] for row in rows] == ["1", "3"]
    assert all(float(row[1].replace(",", "")) > 0 and float(row[2].replace(",", "")) > 0 for row in rows)
    # The matmul ceiling for that row count, and the share of it the Python API reached.
    assert all(float(row[4].replace(",", "")) > 0 and float(row[5]) > 0 for row in rows)


def test_training_benchmark_runs_each_engine_on_a_tiny_model():
    corpus = Path(__file__).resolve().parents[1] / "README.md"  # any text will do for a smoke run
    result = subprocess.run([sys.executable, str(BENCHMARKS / "training.py"), "--corpus", str(corpus),
                             "--units", "8", "--embedding-dim", "4", "--batch-size", "4", "--seq-length", "10",
                             "--warmup", "1", "--steps", "2", "--budget", "1", "--gen-tokens", "5",
                             "--engines", "textgen", "keras", "--repeats", "2"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert {"textgen", "keras"} <= set(lines)
    for engine in ("textgen", "keras"):
        tokens_per_second, peak_rss, val_loss = lines[engine][1], lines[engine][3], lines[engine][5]
        assert float(tokens_per_second.replace(",", "")) > 0 and float(peak_rss.replace(",", "")) > 0
        assert 0 < float(val_loss) < 10
        assert len(lines[engine][6:]) == 2  # the full run and one interleaved speed-only run


def test_train_command_benchmark_times_textgen_train_and_the_harness_step_in_rounds():
    corpus = Path(__file__).resolve().parents[1] / "README.md"  # any text will do for a smoke run
    result = subprocess.run([sys.executable, str(BENCHMARKS / "train_command.py"), "--corpus", str(corpus),
                             "--units", "8", "--embedding-dim", "4", "--batch-size", "4", "--seq-length", "10",
                             "--short", "2", "--long", "6", "--repeats", "2"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    rounds = [line.split() for line in result.stdout.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [row[0] for row in rounds] == ["1", "2"]
    assert all(len(row) == 6 for row in rounds)  # train, harness and torch tokens/s, and the two ratios


def test_corpus_memory_benchmark_measures_tokenizing_and_training_on_a_tiny_corpus(tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "corpus_memory.py"), "--size", "300k", "--steps", "2",
                             "--units", "4", "--embedding-dim", "4", "--seq-length", "20", "--batch-size", "4",
                             "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(line.split() for line in result.stdout.splitlines() if line.split()[:1] == ["300kB"])
    tokens, mb_per_second, rss_tokenize, steps, rss_train = row[1], row[3], row[4], row[6], row[7]
    assert tokens == "300,000" and steps == "2"
    assert float(mb_per_second) > 0 and float(rss_tokenize.replace(",", "")) > 0
    assert float(rss_train.replace(",", "")) > 0
    assert "token cache: reusing" in result.stderr  # training found the cache the first stage wrote
    assert list(tmp_path.iterdir()) == []  # corpus, cache and model deleted


def test_conversation_benchmark_times_both_ways_turn_by_turn():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "conversation.py"), "--units", "8", "--turns", "2",
                             "--said", "10", "--length", "5"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] in (["1"], ["2"])]
    assert [row[1] for row in rows] == ["10", "25"]  # each turn: what was said before, and this turn's text
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)


def test_fine_tuning_benchmark_runs_both_arms_side_by_side(tmp_path, tiny_model_dir, tiny_corpus):
    corpus = tmp_path / "other.txt"
    corpus.write_text(tiny_corpus.read_text(encoding="utf-8").upper() * 2, encoding="utf-8")
    tiny = "--layers 1 --units 8 --embedding-dim 4 --seq-length 20 --batch-size 8"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "fine_tuning.py"), "--base", str(tiny_model_dir),
                             "--corpus", str(corpus), "--marks", "0.05,0.15",
                             "--val-seq-length", "20", "--scratch-args", tiny,
                             "--fine-args", "--seq-length 20 --batch-size 8", "--workdir", str(tmp_path / "runs")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line.split()[:1] in (["0.05"], ["0.15"])}
    assert set(rows) == {"0.05", "0.15"}
    scratch, fine, steps = rows["0.15"]
    scratch, fine = float(scratch), float(fine)
    assert int(steps) > 0
    assert 0 < scratch < 10 and 0 < fine < 10
    assert "new tokens: {'count': " in result.stdout
    settings = json.loads((tmp_path / "runs" / "fine-tune-0.15" / "config.json").read_text())
    assert settings["training"]["init_from"]["model"] == str(tiny_model_dir)


def test_serving_benchmark_quick_run_loads_the_server_checks_every_request_and_stops_it():
    result = subprocess.run([sys.executable, str(BENCHMARKS / "serving.py"), "--quick"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "| clients | server tokens/s | in-process tokens/s | server / in-process |" in result.stdout
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert [row["clients"] for row in figures["levels"]] == [1, 2]
    for row in figures["levels"]:
        assert row["failures"] == {} and row["requests"] > 0
        assert row["tokens_per_s"] > 0 and row["in_process_tokens_per_s"] > 0 and 0 < row["ttft_ms_p50"] < 60_000
        assert row["client_cpu_s"] >= 0 and row["server_cpu_s"] > 0
    assert figures["cli_tokens_per_s"] > 0 and figures["server_exit"] == 0
    left = figures["disconnect"]
    assert left["left_with_tokens"] == left["leaving_clients"] and left["steady_failures"] == {}
    assert left["rows_gone_s"] is not None and left["rows_after"] == 0 and left["open_requests_after"] == 0
    memory = figures["memory"]
    assert memory["failures"] == {} and memory["requests"] == 40 and memory["rss_mb_after"] > 0


def test_scaling_study_continues_the_fixed_recipe_from_budget_to_budget_and_reports(tmp_path):
    corpus = Path(__file__).resolve().parents[1] / "README.md"  # any text will do for a smoke run
    results = tmp_path / "results.jsonl"
    command = [sys.executable, str(BENCHMARKS / "scaling.py"), "run", "--corpus", str(corpus), "--budgets", "0.05,0.1",
               "--candidates", "fixed", "--workdir", str(tmp_path / "runs"), "--results", str(results)]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["budget_minutes"], r["chained"]) for r in records] == [(0.05, False), (0.1, True)]
    assert (tmp_path / "runs" / "README.md-fixed-s1").is_dir()  # the runs stay in the work folder
    assert not (corpus.parent / "README.md-fixed-s1").exists()
    # The longer budget continued the shorter one's run: its history starts with the shorter one's.
    assert records[1]["history"][:len(records[0]["history"])] == records[0]["history"]
    assert records[1]["steps"] > records[0]["steps"] and records[1]["seconds"] >= 6
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert "0 runs to make" in again.stdout  # what is recorded is not run again
    report = subprocess.run([sys.executable, str(BENCHMARKS / "scaling.py"), "report", "--results", str(results)],
                            capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stderr[-2000:]
    row = next(line for line in report.stdout.splitlines() if line.startswith("| fixed |"))
    assert f"{records[0]['best_val_loss']:.4f}" in row and f"{records[1]['best_val_loss']:.4f}" in row
