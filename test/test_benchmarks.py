"""The node load benchmark runs end to end and does what its options say (a short run).

Timing figures belong to ``benchmarks/RESULTS.md``; this only checks that the benchmark measures
what it claims: answers counted, and with ``--points`` the node really publishes the cloud.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

from node_harness import small_checkpoint

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_node_load_counts_answers_and_clouds(tmp_path):
    checkpoint = small_checkpoint(tmp_path / 'small.safetensors')
    result_path = tmp_path / 'load.json'
    run = subprocess.run(
        [sys.executable, str(REPO / 'benchmarks' / 'node_load.py'), '--checkpoint',
         str(checkpoint), '--device', 'cpu', '--rate', '5', '--warmup', '2', '--duration', '3',
         '--windows', '1', '--points', '--json', str(result_path)],
        capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(result_path.read_text())
    assert result['published'] >= 10 and result['points'] is True
    assert 0 < result['answered'] <= result['published']
    # every answered frame came with its cloud (the node builds it only for a subscriber)
    assert result['clouds_received'] >= result['answered'] - 1
    assert result['latency_ms']['p50'] > 0 and result['rss_mb']['start'] > 0
