"""``--executor`` / ``--ray-*`` on ``sweep run`` and batch ``scan`` (issue 14): every bad choice
(an unknown executor, Ray not installed, an address nothing listens on, options that belong to
the other executor) is one stderr line with the right exit code, and nothing is written."""

from __future__ import annotations

import socket
import sys
from importlib.util import find_spec

import pytest

from tests.cli.helpers import assert_one_line_error
from tests.experiments.conftest import write_grid


@pytest.fixture
def config(tmp_path):
    return write_grid(tmp_path / "grid.yaml", str(tmp_path / "no-data-needed"), counts=[0], seeds=[1])


@pytest.fixture
def adapters(tmp_path):
    """Two folders that look like adapters (never scanned: every case fails before)."""
    folders = []
    for name in ("a", "b"):
        folder = tmp_path / "adapters" / name
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
        (folder / "adapter_model.safetensors").write_bytes(b"")
        folders.append(folder)
    return tmp_path / "adapters"


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cases(tmp_path):
    port = _closed_port()
    return [
        (["--executor", "dask"], 2, ["--executor", "'dask' is not one of 'local', 'ray'"]),
        (["--executor", "ray", "--ray-address", f"127.0.0.1:{port}"], 1,
         [f"cannot reach a Ray cluster at 127.0.0.1:{port}", "refused"]),
        (["--executor", "ray", "--ray-address", "head-without-port"], 2, ["expected HOST:PORT"]),
        (["--executor", "ray", "--ray-address", f"ray://127.0.0.1:{port}"],
         *((2, ["ray:// needs Ray Client", "pip install 'ray[client]==2.60.0'"]) if find_spec("grpc") is None
           else (1, [f"cannot reach a Ray cluster at ray://127.0.0.1:{port}"]))),
        (["--executor", "ray", "--workers", "2"], 2, ["--workers is for --executor local"]),
        (["--ray-address", "127.0.0.1:6379"], 2, ["--ray-address needs --executor ray"]),
        (["--executor", "ray", "--ray-cpus", "0"], 2, ["--ray-cpus"]),
    ]


def test_bad_executor_options_are_one_line_and_write_nothing(cli, tmp_path, config, adapters):
    for args, code, fragments in _cases(tmp_path):
        out = tmp_path / "out"
        assert_one_line_error(cli("sweep", "run", config, "--out", out, *args, "--quiet"), code, *fragments)
        assert_one_line_error(cli("scan", adapters, "--out", out, *args, "--quiet"), code, *fragments)
        assert not out.exists(), args


def test_ray_not_installed_is_one_line_and_writes_nothing(cli, tmp_path, config, adapters, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as it does without the extra
    out = tmp_path / "out"
    for argv in (("sweep", "run", config), ("scan", adapters)):
        assert_one_line_error(cli(*argv, "--out", out, "--executor", "ray", "--quiet"), 2,
                              "--executor ray needs Ray", "pip install 'lorascan[ray]'")
    assert not out.exists()


def test_ray_is_for_batch_scans(cli, adapters):
    assert_one_line_error(cli("scan", adapters / "a", "--executor", "ray", "--quiet"), 2,
                          "--executor ray is for a batch scan")
