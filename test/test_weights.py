"""``metric-solver weights``: the registry, and downloads from a local HTTP server (no network).

The server (127.0.0.1, ephemeral port) honours ``Range: bytes=N-``, counts requests, can drop
the connection after a number of body bytes, can ignore Range, and answers 416 past the end.
"""

from __future__ import annotations

import errno
import hashlib
import http.server
import json
import os
import pathlib
import random
import socket
import subprocess
import sys
import threading

import pytest

from metric_solver_ros.cli import main
from metric_solver_ros.download import cache_dir
from metric_solver_ros.weights_registry import REGISTRY, get_entry

# The names of the issue (a contract), written out independently of the registry code.
EXPECTED_NAMES = [
    'dinov2_vits14', 'dinov2_vitb14', 'dinov2_vitl14', 'dinov2_vitg14',
    'dinov2_vits14_reg4', 'dinov2_vitb14_reg4', 'dinov2_vitl14_reg4', 'dinov2_vitg14_reg4',
    'depth_anything_v2_vits', 'depth_anything_v2_vitb', 'depth_anything_v2_vitl',
    'depth_anything_v2_metric_hypersim_vits', 'depth_anything_v2_metric_hypersim_vitb',
    'depth_anything_v2_metric_hypersim_vitl', 'depth_anything_v2_metric_vkitti_vits',
    'depth_anything_v2_metric_vkitti_vitb', 'depth_anything_v2_metric_vkitti_vitl',
]
JSON_KEYS = {'name', 'kind', 'preset', 'licence', 'size_bytes', 'url', 'sha256'}
PAYLOAD = random.Random(17).randbytes(2_500_000)  # > 2 read chunks of the downloader
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
NAME, FILE = 'dinov2_vits14', 'dinov2_vits14_pretrain.pth'  # no registered checksum
DROP_AT = 700_000  # body bytes sent before a dropped connection


class WeightServer:
    """A threaded HTTP server of ``files`` with the fault modes of the module docstring."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.drops_left = 0  # connections still to drop after drop_at body bytes
        self.drop_at = DROP_AT
        self.ignore_range = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append((self.path, self.headers.get('Range')))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get('Range')
                if wanted and not server.ignore_range:
                    start = int(wanted.removeprefix('bytes=').rstrip('-'))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header('Content-Range', f'bytes */{len(body)}')
                        self.send_header('Content-Length', '0')
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header('Content-Range',
                                     f'bytes {start}-{len(body) - 1}/{len(body)}')
                else:
                    self.send_response(200)
                self.send_header('Content-Length', str(len(body) - start))
                self.end_headers()
                if server.drops_left:
                    server.drops_left -= 1
                    self.wfile.write(body[start:start + server.drop_at])
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                       kwargs={'poll_interval': 0.05})  # quick shutdown

    def url(self, path: str) -> str:
        return f'http://127.0.0.1:{self.httpd.server_address[1]}{path}'


@pytest.fixture
def server():
    weights = WeightServer({f'/{FILE}': PAYLOAD})
    weights.thread.start()
    yield weights
    weights.httpd.shutdown()
    weights.httpd.server_close()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    return f'http://127.0.0.1:{port}/{FILE}'


def get(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    """Run ``metric-solver weights get ...``; return (status, stdout lines, stderr lines)."""
    status = main(['weights', 'get', *args])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err.splitlines()


# --- registry -----------------------------------------------------------------------------------

def test_list_prints_every_entry(capsys):
    assert main(['weights', 'list']) == 0
    out = capsys.readouterr().out
    for name in EXPECTED_NAMES:
        assert f'\n{name} ' in out
    assert out.count('CC-BY-NC-4.0 *') == 2 * 3  # DA-V2 Base/Large: relative, hypersim, vkitti
    assert 'unknown' in out  # DINOv2: no published size or checksum


def test_list_json_has_exactly_the_contract_keys(capsys):
    assert main(['weights', 'list', '--json']) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [entry['name'] for entry in entries] == EXPECTED_NAMES
    for entry in entries:
        assert set(entry) == JSON_KEYS
        assert entry['kind'] in ('encoder', 'relative depth', 'metric depth')
        assert entry['preset'] in ('vits', 'vitb', 'vitl', 'vitg')
        assert entry['sha256'] is None or len(bytes.fromhex(entry['sha256'])) == 32
    by_name = {entry['name']: entry for entry in entries}
    assert by_name['dinov2_vitl14_reg4']['url'] == (
        'https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth')
    assert by_name['depth_anything_v2_metric_vkitti_vitb']['url'] == (
        'https://huggingface.co/depth-anything/Depth-Anything-V2-Metric-VKITTI-Base/resolve/main/'
        'depth_anything_v2_metric_vkitti_vitb.pth')
    assert by_name['dinov2_vits14']['sha256'] is None
    assert by_name['depth_anything_v2_vits']['sha256'] == (
        '715fade13be8f229f8a70cc02066f656f2423a59effd0579197bbf57860e1378')


def test_registry_kinds_depth_ranges_and_licences():
    assert list(REGISTRY) == EXPECTED_NAMES
    for name, entry in REGISTRY.items():
        kind = ('encoder' if name.startswith('dinov2') else
                'metric depth' if '_metric_' in name else 'relative depth')
        assert entry.kind == kind
        assert entry.max_depth_m == (20.0 if 'hypersim' in name else
                                     80.0 if 'vkitti' in name else None)
        non_commercial = name.startswith('depth_anything') and not name.endswith('vits')
        assert entry.needs_acceptance == non_commercial
        assert entry.licence == ('CC-BY-NC-4.0' if non_commercial else 'Apache-2.0')
        assert entry.url.endswith('/' + entry.file_name)
    with pytest.raises(ValueError, match='dinov2_vits14_reg4'):  # the message lists known names
        get_entry('dinov2_vits16')


def test_unknown_name_is_a_one_line_error(capsys):
    status, out, err = get(capsys, 'depth_anything_v3')
    assert status == 2 and out == [] and len(err) == 1 and 'known:' in err[0]


# --- downloads ----------------------------------------------------------------------------------

def test_get_downloads_verifies_records_and_prints_the_path_last(server, tmp_path, capsys):
    status, out, err = get(capsys, NAME, '--url', server.url(f'/{FILE}'),
                           '--cache-dir', str(tmp_path))
    assert status == 0
    path = tmp_path / FILE
    assert out[-1] == str(path)
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE, 'dinov2_vits14_pretrain.sha256']
    assert (tmp_path / 'dinov2_vits14_pretrain.sha256').read_text().split()[0] == PAYLOAD_SHA256
    assert len(err) == 1 and 'warning' in err[0] and PAYLOAD_SHA256 in err[0]  # trust on 1st use
    assert server.requests == [(f'/{FILE}', None)]


def test_a_valid_cached_file_is_not_fetched_again(server, tmp_path, capsys):
    args = (NAME, '--url', server.url(f'/{FILE}'), '--cache-dir', str(tmp_path))
    assert get(capsys, *args)[0] == 0
    status, out, err = get(capsys, *args)
    assert status == 0 and out[-1] == str(tmp_path / FILE) and err == []
    assert 'already in the cache' in out[0]
    assert len(server.requests) == 1


def test_a_damaged_cached_file_is_fetched_again(server, tmp_path, capsys):
    args = (NAME, '--url', server.url(f'/{FILE}'), '--cache-dir', str(tmp_path))
    assert get(capsys, *args)[0] == 0
    (tmp_path / FILE).write_bytes(PAYLOAD[:-1] + b'\0')  # checked against the recorded sha256
    assert get(capsys, *args)[0] == 0
    assert (tmp_path / FILE).read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_a_dropped_connection_is_resumed_with_range_in_the_same_run(server, tmp_path, capsys):
    server.drops_left = 1
    status, out, _ = get(capsys, NAME, '--url', server.url(f'/{FILE}'), '--sha256',
                         PAYLOAD_SHA256.upper(), '--cache-dir', str(tmp_path))
    assert status == 0 and out[-1] == str(tmp_path / FILE)
    assert (tmp_path / FILE).read_bytes() == PAYLOAD
    assert server.requests == [(f'/{FILE}', None), (f'/{FILE}', f'bytes={DROP_AT}-')]
    assert not (tmp_path / 'dinov2_vits14_pretrain.part').exists()


def test_a_part_left_by_an_earlier_run_is_resumed(server, tmp_path, capsys):
    (tmp_path / 'dinov2_vits14_pretrain.part').write_bytes(PAYLOAD[:123_456])
    status, _, _ = get(capsys, NAME, '--url', server.url(f'/{FILE}'),
                       '--cache-dir', str(tmp_path))
    assert status == 0
    assert (tmp_path / FILE).read_bytes() == PAYLOAD
    assert server.requests == [(f'/{FILE}', 'bytes=123456-')]


def test_a_complete_part_is_finished_on_416(server, tmp_path, capsys):
    (tmp_path / 'dinov2_vits14_pretrain.part').write_bytes(PAYLOAD)
    status, _, _ = get(capsys, NAME, '--url', server.url(f'/{FILE}'), '--sha256',
                       PAYLOAD_SHA256, '--cache-dir', str(tmp_path))
    assert status == 0 and (tmp_path / FILE).read_bytes() == PAYLOAD
    assert server.requests == [(f'/{FILE}', f'bytes={len(PAYLOAD)}-')]


def test_a_server_ignoring_range_restarts_from_zero(server, tmp_path, capsys):
    server.ignore_range = True
    (tmp_path / 'dinov2_vits14_pretrain.part').write_bytes(b'not the start of the file')
    status, _, _ = get(capsys, NAME, '--url', server.url(f'/{FILE}'), '--sha256',
                       PAYLOAD_SHA256, '--cache-dir', str(tmp_path))
    assert status == 0 and (tmp_path / FILE).read_bytes() == PAYLOAD
    assert server.requests == [(f'/{FILE}', 'bytes=25-')]


def test_too_many_drops_fail_and_keep_the_part_for_the_next_run(server, tmp_path, capsys):
    server.drops_left, server.drop_at = 4, 300_000  # the first attempt and its 3 retries
    status, out, err = get(capsys, NAME, '--url', server.url(f'/{FILE}'),
                           '--cache-dir', str(tmp_path))
    assert status == 2 and out == [] and len(err) == 1 and 'dropped 4 times' in err[0]
    part = tmp_path / 'dinov2_vits14_pretrain.part'
    assert part.stat().st_size == 4 * 300_000
    assert get(capsys, NAME, '--url', server.url(f'/{FILE}'), '--cache-dir', str(tmp_path))[0] == 0
    assert server.requests[-1] == (f'/{FILE}', f'bytes={4 * 300_000}-')
    assert (tmp_path / FILE).read_bytes() == PAYLOAD


@pytest.mark.parametrize('registered', [False, True])
def test_a_checksum_mismatch_leaves_nothing_in_the_cache(server, tmp_path, capsys, registered):
    if registered:  # the registry's checksum of the real file, served a different file
        server.files['/depth_anything_v2_vits.pth'] = PAYLOAD
        args = ('depth_anything_v2_vits', '--url', server.url('/depth_anything_v2_vits.pth'))
    else:
        args = (NAME, '--url', server.url(f'/{FILE}'), '--sha256', '0' * 64)
    status, out, err = get(capsys, *args, '--cache-dir', str(tmp_path))
    assert status == 2 and out == [] and len(err) == 1
    assert 'checksum mismatch' in err[0] and PAYLOAD_SHA256 in err[0]
    assert ('the registry' if registered else '--sha256') in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_refused_connection_says_where_to_put_the_file(tmp_path, capsys):
    status, out, err = get(capsys, NAME, '--url', closed_port_url(),
                           '--cache-dir', str(tmp_path))
    assert status == 2 and out == [] and len(err) == 1
    assert str(tmp_path / FILE) in err[0] and 'cannot reach 127.0.0.1' in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_file_copied_into_the_cache_by_hand_needs_no_network(tmp_path, capsys):
    (tmp_path / FILE).write_bytes(PAYLOAD)
    status, out, err = get(capsys, NAME, '--url', closed_port_url(),
                           '--cache-dir', str(tmp_path))
    assert status == 0 and out[-1] == str(tmp_path / FILE)
    assert len(err) == 1 and 'recorded sha256' in err[0]


def test_http_404_is_an_error(server, tmp_path, capsys):
    status, out, err = get(capsys, NAME, '--url', server.url('/missing.pth'),
                           '--cache-dir', str(tmp_path))
    assert status == 2 and out == [] and len(err) == 1 and 'HTTP 404' in err[0]
    assert list(tmp_path.iterdir()) == []


def test_non_commercial_weights_need_accept_license(server, tmp_path, capsys):
    server.files['/depth_anything_v2_vitb.pth'] = PAYLOAD
    args = ('depth_anything_v2_vitb', '--url', server.url('/depth_anything_v2_vitb.pth'),
            '--sha256', PAYLOAD_SHA256, '--cache-dir', str(tmp_path))
    status, out, err = get(capsys, *args)
    assert status == 2 and out == [] and len(err) == 1
    assert 'CC-BY-NC-4.0' in err[0] and '--accept-license' in err[0]
    assert server.requests == []
    status, out, _ = get(capsys, *args, '--accept-license')
    assert status == 0 and pathlib.Path(out[-1]).read_bytes() == PAYLOAD


def test_a_local_mirror_path_serves_air_gapped_robots(tmp_path, capsys):
    mirror = tmp_path / 'usb' / FILE
    mirror.parent.mkdir()
    mirror.write_bytes(PAYLOAD)
    status, out, _ = get(capsys, NAME, '--url', str(mirror), '--cache-dir', str(tmp_path / 'c'))
    assert status == 0 and pathlib.Path(out[-1]).read_bytes() == PAYLOAD
    status, _, err = get(capsys, NAME, '--url', mirror.as_uri() + '.gone',
                         '--cache-dir', str(tmp_path / 'd'))
    assert status == 2 and len(err) == 1 and 'cannot read file://' in err[0]


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full (Linux)')
def test_a_full_disk_is_an_error_and_removes_the_part(server, tmp_path, capsys):
    part = tmp_path / 'dinov2_vits14_pretrain.part'
    part.symlink_to('/dev/full')  # every write fails with ENOSPC, as on a full disk
    with pytest.raises(OSError) as full:
        pathlib.Path('/dev/full').write_bytes(b'x')
    assert full.value.errno == errno.ENOSPC
    status, out, err = get(capsys, NAME, '--url', server.url(f'/{FILE}'),
                           '--cache-dir', str(tmp_path))
    assert status == 2 and out == [] and len(err) == 1 and 'disk full' in err[0]
    assert list(tmp_path.iterdir()) == []


def test_cache_dir_precedence(tmp_path, monkeypatch, capsys, server):
    monkeypatch.setenv('HOME', str(tmp_path / 'home'))
    monkeypatch.delenv('METRIC_SOLVER_CACHE', raising=False)
    assert cache_dir() == tmp_path / 'home' / '.cache' / 'metric_solver'
    monkeypatch.setenv('METRIC_SOLVER_CACHE', str(tmp_path / 'env'))
    assert cache_dir() == tmp_path / 'env'
    assert cache_dir(tmp_path / 'flag') == tmp_path / 'flag'
    status, out, _ = get(capsys, NAME, '--url', server.url(f'/{FILE}'))
    assert status == 0 and out[-1] == str(tmp_path / 'env' / FILE)


def test_the_real_process_exit_status_and_last_stdout_line(server, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
            [str(pathlib.Path(__file__).parents[1]), os.environ.get('PYTHONPATH', '')])}
        return subprocess.run([sys.executable, '-m', 'metric_solver_ros.cli', 'weights', 'get',
                               NAME, '--cache-dir', str(tmp_path), *args],
                              capture_output=True, text=True, timeout=120, env=env)

    refused = run('--url', closed_port_url())
    assert refused.returncode == 2 and refused.stdout == ''
    assert len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith('metric-solver weights: error: cannot reach')
    fetched = run('--url', server.url(f'/{FILE}'))
    assert fetched.returncode == 0
    assert fetched.stdout.splitlines()[-1] == str(tmp_path / FILE)
