"""`tim app` on the command line: options, and one-line errors before anything is served."""

from __future__ import annotations

import socket
import sys

import pytest


def test_help_lists_the_options(run_cli) -> None:
    code, out, _ = run_cli(["app", "--help"])
    assert code == 0
    for option in (
        "--checkpoint",
        "--host",
        "--port",
        "--device",
        "--preset",
        "--autoencoder",
        "--text-encoder",
    ):
        assert option in out
    assert "127.0.0.1" in out and "--share" not in out


def test_port_in_use_is_one_line(run_cli, tiny_pipeline_dir) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(["app", "--checkpoint", str(tiny_pipeline_dir), "--port", str(port)])
    assert code == 2 and err == f"error: port {port} on 127.0.0.1 is already in use; pass another --port\n"


@pytest.mark.parametrize("port", ["0", "70000"])
def test_bad_port_is_one_line(run_cli, tiny_pipeline_dir, port: str) -> None:
    code, _, err = run_cli(["app", "--checkpoint", str(tiny_pipeline_dir), "--port", port])
    assert code == 2 and err.startswith(f"error: --port {port} is not a TCP port;") and err.count("\n") == 1


def test_missing_checkpoint_is_one_line(run_cli, tmp_path) -> None:
    code, _, err = run_cli(["app", "--checkpoint", str(tmp_path / "nothing"), "--port", "7999"])
    assert code == 2 and err.startswith(f"error: --checkpoint {tmp_path / 'nothing'} does not exist;")
    assert err.count("\n") == 1


def test_wrong_checkpoint_kind_is_one_line(run_cli, tmp_path) -> None:
    pytest.importorskip("gradio")
    (tmp_path / "weights.bin").write_bytes(b"not a checkpoint")
    code, _, err = run_cli(["app", "--checkpoint", str(tmp_path / "weights.bin"), "--port", "7999"])
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "weights.bin" in err


def test_missing_gradio_is_one_line(run_cli, tiny_pipeline_dir, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)
    code, _, err = run_cli(["app", "--checkpoint", str(tiny_pipeline_dir), "--port", "7998"])
    assert code == 2 and 'pip install "transition-models[app]"' in err and err.count("\n") == 1
