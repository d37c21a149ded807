"""The benchmark script runs (its --quick mode, as CI runs it) and reports both sides of every ratio."""

import json
import subprocess
import sys

from conftest import REPO


def test_quick_benchmark_prints_a_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--quick", "--device", "cpu", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"].startswith("CPU") and report["quick"] is True
    for side in ("ours", "peer"):
        for measure in ("full_train_samples_per_s", "frozen_train_samples_per_s", "captions_per_s", "latency_ms"):
            assert report["results"][f"{side}_{measure}"] > 0
    for measure in ("default_train_samples_per_s", "frozen_cached_eager_train_samples_per_s", "plain_captions_per_s"):
        assert report["results"][f"ours_{measure}"] > 0
    assert report["results"]["ours_greedy_identical_fp32"] is True
    assert (
        report["results"]["ours_prompted_captions_per_s"] > 0
        and report["results"]["ours_prompted_loop_captions_per_s"] > 0
    )
    assert report["results"]["ours_prompted_identical_rows"] == 1.0  # prompted fast greedy = transformers' tokens
    for order in ("random", "grouped"):
        assert report["results"][f"ours_lengths_{order}_train_samples_per_s"] > 0
        assert 0 <= report["results"][f"ours_lengths_{order}_padding_share"] < 1
    # The from-scratch jobs' models: CPU bf16 vs float32, depthwise backwards, GPT-2's GELU in one kernel or eight.
    for job in ("captioner", "questions", "reader"):
        for variant in ("fp32", "bf16", "depthwise_fast", "depthwise_onednn", "gelu_one_kernel", "gelu_new"):
            assert report["results"][f"jobs_{job}_{variant}_train_samples_per_s"] > 0
    assert not [key for key in report["results"] if key.endswith("_error")]
    assert "ours/peer" in result.stdout and report["device"] in result.stdout
    printed = json.loads(result.stdout[result.stdout.index("{") :])
    assert printed == report  # the table and the JSON come from the same run
