"""``tim app --checkpoint X``: a local web page to generate with any number of steps.

``X`` is anything ``tim sample`` accepts (a run folder, a pipeline folder). The model is loaded once;
the page (Gradio, extra ``[app]``) runs one generation at a time and binds 127.0.0.1 unless
``--host`` says otherwise. There is no share link: nothing leaves this machine.
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys
import time
import warnings

from tim.cli.parsing import HelpFormatter
from tim.errors import TimError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
DEFAULT_CHECKPOINT = "bundled:scenes"  # the text-to-image model shipped with the package (tim.pretrained)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tim app``."""
    parser = subparsers.add_parser(
        "app",
        help="a local web page: pick a class or prompt, move the steps slider, compare step counts",
        description="Serve a local Gradio page for a trained model: class drop-down or prompt box, steps 1-128, "
        "a 1/2/4/8/16-step comparison from the same noise, guidance, stochasticity, seed, number "
        "of images and size; shows the grid, the time it took and a PNG download. Needs the [app] "
        'extra (pip install "transition-models[app]"). With no --checkpoint it opens the bundled '
        "text-to-image model (bundled:scenes): no training and no download. Stop it with Ctrl-C.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        metavar="PATH",
        help="what `tim sample` takes: a run folder (tim train / tim demo), a pipeline folder "
        "(tim convert / save_pretrained), a bundled model (bundled:scenes, bundled:digits) or a "
        "released .safetensors file (then also --preset and --autoencoder)",
    )
    parser.add_argument(
        "--preset", default=None, help="TiM preset of a released .safetensors file, e.g. TiM-XL/2"
    )
    parser.add_argument(
        "--autoencoder",
        default=None,
        metavar="DIR",
        help="local diffusers autoencoder folder (required for a released file; replaces a stored one)",
    )
    parser.add_argument(
        "--text-encoder",
        default=None,
        metavar="DIR",
        help="local transformers text-encoder folder or 'minilm' (text models; replaces a stored one)",
    )
    parser.add_argument(
        "--weights", choices=("ema", "model"), default="ema", help="which weights of a training run"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to bind; anything but 127.0.0.1 makes the page reachable from other machines",
    )
    parser.add_argument("--port", type=int, default=7860, help="TCP port of the page")
    parser.add_argument("--device", default="cpu", help="torch device for the model, e.g. cpu or cuda")
    parser.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="inference precision: auto = bf16 (fp16 without bf16) on CUDA, fp32 on CPU",
    )
    parser.set_defaults(run=run)
    return parser


def check_port(host: str, port: int) -> None:
    """Fail early, in one line, when the port is invalid or already taken (Gradio would say it in many)."""
    if not 1 <= port <= 65535:
        raise TimError(f"--port {port} is not a TCP port", "pass a port in [1, 65535], e.g. --port 7860")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(
            socket.SOL_SOCKET, socket.SO_REUSEADDR, 1
        )  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except socket.gaierror:
            raise TimError(
                f"--host {host!r} is not an address of this machine", "pass e.g. --host 127.0.0.1"
            ) from None
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise TimError(f"port {port} on {host} is already in use", "pass another --port") from None
            raise TimError(
                f"cannot listen on {host}:{port} ({error.strerror})", "pass another --host or --port"
            ) from None


def run(args: argparse.Namespace) -> int:
    """Run ``tim app`` (see :func:`add_parser` for the options)."""
    from pathlib import Path

    from tim.cli.sample import check_device

    start = time.perf_counter()
    check_port(args.host, args.port)
    device = check_device(args.device)
    from tim.pretrained import is_bundled, resolve

    if is_bundled(args.checkpoint):
        resolve(args.checkpoint)  # an unknown name or a damaged file: one line, before Gradio starts
    elif not Path(args.checkpoint).exists():
        raise TimError(
            f"--checkpoint {args.checkpoint} does not exist",
            "pass a run folder (tim train --out), a pipeline folder or a released .safetensors file",
        )
    from tim import app  # Gradio is imported inside; a missing [app] extra is a one-line error

    app._gradio()  # before the checkpoint loads: the missing-extra message should not wait for it
    from tim.generation import TiMPipeline

    if args.host not in LOCAL_HOSTS:
        warnings.warn(
            f"--host {args.host} makes the page reachable from other machines (no password)", stacklevel=1
        )
    pipe = TiMPipeline.load(
        args.checkpoint,
        preset=args.preset,
        autoencoder=args.autoencoder,
        text_encoder=args.text_encoder,
        device=device,
        dtype=args.dtype,
        weights=args.weights,
    )
    page = app.build_page(pipe, source=str(args.checkpoint))
    url = app.launch(page, host=args.host, port=args.port)
    if args.host in ("0.0.0.0", "::"):  # every interface: this machine reaches it as localhost
        url += f" (all interfaces; from this machine http://127.0.0.1:{args.port}/)"
    print(
        f"tim app: serving {args.checkpoint} at {url}; ready in {time.perf_counter() - start:.1f} s; "
        "Ctrl-C stops it",
        flush=True,
    )
    app.serve_until_interrupted(page)
    print("tim app: stopped", file=sys.stderr)
    return 0
