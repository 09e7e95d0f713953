"""``q2pt serve`` (HTTP API + demo page on uvicorn) and ``q2pt export onnx``: thin wrappers
over :mod:`q2pt.serving`. Heavy libraries are imported inside the handlers."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

from q2pt.cli.arg_types import positive_int
from q2pt.errors import ConfigError
from q2pt.serving.settings import ServeSettings

log = logging.getLogger("q2pt.cli")


def register(subparsers: Any) -> None:
    """Add the serve and export commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    s = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (JSON API, OpenAPI docs at /docs, demo page at /)",
        formatter_class=fmt,
        description=(
            "Serve a model folder with FastAPI on uvicorn:\n"
            "  POST /v1/predict {query, locale, top_k?, threshold?}   POST /v1/predict/batch {queries: [...]}\n"
            "  POST /v1/explain {query, locale, product_type?}\n"
            "  GET /v1/model   GET /v1/model/card   GET /healthz   GET /readyz   GET /docs   GET / (demo page)\n"
            "Errors are application/problem+json (RFC 9457).\n\n"
            "  q2pt serve --model runs/model --port 8000\n"
            "  q2pt serve --model runs/model --runtime onnx --onnx runs/model.onnx\n\n"
            "Swapping models without downtime: SIGHUP re-reads MODEL_DIR (deploy by replacing the folder\n"
            "atomically, e.g. a symlink switch or rename), and POST /v1/admin/reload {\"model\": PATH} serves\n"
            "another folder; that route exists only when $Q2PT_ADMIN_TOKEN (--admin-token-env) is set, and\n"
            "needs 'Authorization: Bearer <token>'. A folder that cannot be served is refused and the old\n"
            "model keeps serving. With --workers N, SIGHUP to the server makes uvicorn restart the workers\n"
            "one at a time (each re-reads MODEL_DIR); the admin route checks MODEL_DIR, then has them restart\n"
            "(202; a broken folder is refused and nothing restarts) and refuses another folder (409)."
        ),
    )
    s.add_argument("--model", required=True, metavar="MODEL_DIR", help="model folder (q2pt train --out)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    s.add_argument("--workers", type=int, default=1, help="worker processes, each with its own copy of the model (default 1)")
    s.add_argument("--worker-start-timeout", type=float, default=300.0, metavar="S",
                   help="--workers N: how long a (re)started worker may take to load its model, exporting it to ONNX "
                   "with --runtime onnx, before uvicorn gives up on it (default 300 s; uvicorn's own is 5 s)")
    s.add_argument("--runtime", choices=("torch", "onnx"), default="torch", help="inference runtime (default torch)")
    s.add_argument("--onnx", metavar="PATH", help="--runtime onnx: an export of this model ('q2pt export onnx'); "
                   "default: export at start-up into a temporary folder")
    s.add_argument("--quantize", choices=("int8",), help="--runtime onnx without --onnx: quantize the start-up export")
    s.add_argument("--fallback-locale", metavar="LOCALE",
                   help="non-unified models: serve locales the model does not know with this locale's network "
                   "(default: 422 unknown-locale)")
    s.add_argument("--threads", type=int, default=1,
                   help="intra-op threads of torch / onnxruntime per worker (default 1: the event loop needs a core "
                   "too, and more threads thrash on small or busy machines; 0: the library's default)")
    d = ServeSettings()  # the defaults, written once
    s.add_argument("--max-batch", type=int, default=d.max_batch,
                   help=f"most queries per /v1/predict/batch request (default {d.max_batch})")
    s.add_argument("--max-query-chars", type=positive_int, default=d.max_query_chars,
                   help=f"longest accepted query, as in training data (default {d.max_query_chars})")
    s.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help=f"largest request body (default {d.max_body_bytes >> 20} MiB)")
    s.add_argument("--top-k", type=int, default=d.default_top_k,
                   help=f"product types per query when a request gives no top_k (default {d.default_top_k})")
    s.add_argument("--header-timeout", type=float, default=d.header_timeout_s, metavar="S",
                   help=f"close a connection whose request headers are not in after S seconds (default {d.header_timeout_s:g})")
    s.add_argument("--body-timeout", type=float, default=d.body_timeout_s, metavar="S",
                   help=f"close a connection whose request body is not in after S seconds (default {d.body_timeout_s:g})")
    s.add_argument("--keep-alive", type=float, default=d.keep_alive_s, metavar="S",
                   help=f"close an idle keep-alive connection after S seconds (default {d.keep_alive_s:g})")
    s.add_argument("--max-connections", type=int, default=d.max_connections, metavar="N",
                   help=f"answer 503 + Retry-After beyond N open connections (default {d.max_connections})")
    s.add_argument("--no-micro-batch", action="store_true", help="run each single-query request on its own")
    s.add_argument("--micro-batch-max", type=int, default=d.micro_batch_max,
                   help=f"largest micro-batch of single queries (default {d.micro_batch_max})")
    s.add_argument("--micro-batch-wait-ms", type=float, default=d.micro_batch_wait_ms,
                   help="wait this long for more single queries before running a micro-batch "
                   f"(default {d.micro_batch_wait_ms:g})")
    s.add_argument("--admin-token-env", default="Q2PT_ADMIN_TOKEN", metavar="NAME",
                   help="environment variable with the admin bearer token; when it is set, POST /v1/admin/reload "
                   "is on (default Q2PT_ADMIN_TOKEN)")
    s.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    s.add_argument("--access-log", action="store_true", help="log every request (off by default: it costs latency)")
    s.set_defaults(func=cmd_serve)

    e = subparsers.add_parser("export", help="export a model to another format (onnx)")
    esub = e.add_subparsers(dest="export_format", metavar="FORMAT")
    esub.required = True
    o = esub.add_parser(
        "onnx",
        help="export a model to ONNX (optionally int8-quantized)",
        formatter_class=fmt,
        description=(
            "Export a model folder to ONNX for 'q2pt serve --runtime onnx --onnx OUT'.\n\n"
            "Unified models: OUT is one .onnx file whose inputs are the encoder's token tensors\n"
            "(tokenization stays in Python) and whose output 'probabilities' is (batch, n_labels).\n"
            "Non-unified models: OUT is a folder with one <locale>.onnx per locale and index.json.\n\n"
            "The export is checked against PyTorch on sample queries (max |difference| printed).\n"
            "--quantize int8 applies onnxruntime's dynamic int8 quantization; add --evaluate to\n"
            "measure R@P of PyTorch, fp32 ONNX and int8 ONNX on the test split and print the delta."
        ),
    )
    o.add_argument("--model", required=True, metavar="MODEL_DIR")
    o.add_argument("--out", required=True, metavar="OUT", help="ONNX file (unified) or folder (non-unified)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace an existing export (the .onnx file, or a non-unified model's export folder)")
    o.add_argument("--quantize", choices=("int8",), help="dynamic int8 quantization (onnxruntime.quantization)")
    o.add_argument("--no-verify", action="store_true", help="skip the comparison with PyTorch")
    o.add_argument("--evaluate", action="store_true",
                   help="R@P of PyTorch vs ONNX (fp32 and, with --quantize, int8) on the test split")
    o.add_argument("--data", metavar="PATH",
                   help="--evaluate: dataset to evaluate on (default: the model's training data, from its manifest)")
    o.add_argument("--split", default="test", choices=("train", "valid", "test"), help="--evaluate: split (default test)")
    o.add_argument("--json", action="store_true", help="--evaluate: print the results as JSON instead of the table")
    o.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    o.set_defaults(func=cmd_export_onnx)


def _setup_logging(level: int, *, timestamps: bool = False) -> None:
    from q2pt.cli import setup_logging

    setup_logging(level, timestamps=timestamps)


def _check_port_free(host: str, port: int) -> None:
    """Fail before loading the model when the address cannot be bound."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r} cannot be resolved: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            raise ConfigError(f"{host}:{port} {reason}") from None


def serve_settings(args: argparse.Namespace) -> Any:
    return ServeSettings(
        max_batch=args.max_batch,
        max_query_chars=args.max_query_chars,
        max_body_bytes=args.max_body_bytes,
        default_top_k=args.top_k,
        micro_batch=not args.no_micro_batch,
        micro_batch_max=args.micro_batch_max,
        micro_batch_wait_ms=args.micro_batch_wait_ms,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        keep_alive_s=args.keep_alive,
        max_connections=args.max_connections,
        admin_token_env=args.admin_token_env or None,
        reload_on_sighup=args.workers == 1,
        workers=args.workers,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    level = logging.WARNING if args.log_level in ("critical", "error", "warning") else logging.INFO
    _setup_logging(level, timestamps=True)  # a server's lines say when
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if not args.worker_start_timeout > 0:
        raise ConfigError(f"--worker-start-timeout must be > 0 seconds, got {args.worker_start_timeout}")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    if args.quantize and args.runtime != "onnx":
        raise ConfigError("--quantize needs --runtime onnx")
    if args.quantize and args.onnx:
        raise ConfigError("--quantize applies to the start-up export; to serve a quantized file, "
                          "make it with 'q2pt export onnx --quantize int8' and pass it to --onnx alone")
    settings = serve_settings(args)  # validates the limits
    with _hangup_ignored():  # a deploy's SIGHUP while the model loads must not kill the server
        return _serve(args, settings, level)


@contextlib.contextmanager
def _hangup_ignored() -> Iterator[None]:
    """SIGHUP ignored until the server installs its own handler (the app's reload, or uvicorn's
    worker restart): by default it would end the process while the model loads."""
    import signal
    import threading

    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, previous)


def _serve(args: argparse.Namespace, settings: Any, level: int) -> int:
    from q2pt.errors import require

    uvicorn = require("uvicorn", "serve")
    from q2pt.serving.app import ENV_OPTIONS, create_app
    from q2pt.serving.runtime import OnnxRuntime, load_runtime

    _check_port_free(args.host, args.port)
    model_dir = Path(args.model)
    runtime_opts: dict[str, Any] = {
        # absolute, symlinks kept: a deploy that switches a symlink is re-read on SIGHUP
        "model_dir": os.path.abspath(model_dir),
        "runtime": args.runtime,
        "onnx_path": str(Path(args.onnx).resolve()) if args.onnx else None,
        "fallback_locale": args.fallback_locale,
        "threads": args.threads or None,
    }
    from q2pt.serving.protocol import GuardedProtocol, configure

    configure(settings)  # this process's protocol; worker processes read $Q2PT_SERVE_OPTIONS
    from q2pt.logs import uvicorn_log_config

    uv_opts = {"host": args.host, "port": args.port, "log_level": args.log_level, "access_log": args.access_log,
               "log_config": uvicorn_log_config(),
               "http": GuardedProtocol, "timeout_keep_alive": settings.keep_alive_s}
    log.info("loading %s (%s runtime)", model_dir, args.runtime)
    if args.workers == 1:
        runtime = load_runtime(**runtime_opts, quantize=args.quantize)
        file_quantize = runtime.quantize if isinstance(runtime, OnnxRuntime) else None
        app = create_app(runtime, settings, load_options=reload_options(args, runtime.fingerprint, file_quantize))
        with _stop_signals_exit_cleanly():
            uvicorn.run(app, **uv_opts)
        return 0
    # several workers: validate the model here (clean error, non-zero exit), export ONNX once
    # if needed, then every worker loads its own copy (app_from_env reads $Q2PT_SERVE_OPTIONS)
    with tempfile.TemporaryDirectory(prefix="q2pt-serve-") as tmp:
        # the runtime's own start-up export, kept in tmp for the workers to load
        probe = load_runtime(**runtime_opts, quantize=args.quantize, export_dir=tmp)
        if isinstance(probe, OnnxRuntime):
            if not args.onnx:
                runtime_opts["onnx_path"] = str(probe.path)
            # the file (the shared export, or --onnx) is of the model loaded now: a worker that uvicorn
            # restarts on SIGHUP after the folder was replaced must export the new model, not load this file
            runtime_opts["onnx_fingerprint"] = probe.fingerprint
            runtime_opts["onnx_quantize"] = probe.quantize  # and quantized as that file was
        del probe
        os.environ[ENV_OPTIONS] = json.dumps({"runtime": runtime_opts, "settings": dataclasses.asdict(settings),
                                              "reload": reload_options(args, None), "log_level": level})
        with _stop_signals_exit_cleanly():
            # a worker restarted on SIGHUP after the folder changed loads (and, --runtime onnx, exports)
            # the new model before it is ready: uvicorn's 5 s default aborts that restart
            uvicorn.run("q2pt.serving.app:app_from_env", factory=True, workers=args.workers,
                        timeout_worker_healthcheck=args.worker_start_timeout, **uv_opts)
    return 0


def reload_options(args: argparse.Namespace, started: str | None, file_quantize: str | None = None) -> dict[str, Any]:
    """How a reload loads a folder (``load_runtime``'s options): as the start did. ``--onnx FILE``
    is served on while the folder holds the model it was exported from (``started``: that model's
    fingerprint; None: a multi-worker server, whose restarted workers read their start options),
    and a folder holding another model is exported anew, quantized as FILE was (``file_quantize``)."""
    options: dict[str, Any] = {"runtime": args.runtime, "fallback_locale": args.fallback_locale,
                               "threads": args.threads or None, "quantize": args.quantize}
    if args.onnx and started:
        options.update(onnx_path=str(Path(args.onnx).resolve()), onnx_fingerprint=started,
                       onnx_quantize=file_quantize)
    return options


class _Stopped(Exception):
    pass


@contextlib.contextmanager
def _stop_signals_exit_cleanly() -> Iterator[None]:
    """uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal; make
    that re-raised signal end ``q2pt serve`` with exit status 0 instead of killing it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise _Stopped()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except _Stopped:
        log.info("server stopped")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _evaluation_dataset(args: argparse.Namespace, model: Any) -> Any:
    from q2pt.data import load_configured, load_dataset

    data_cfg = model.config.data
    if args.data:  # the model's label depth applies to any data it is evaluated on
        return load_dataset(args.data, label_depth=data_cfg.label_depth, label_separator=data_cfg.label_separator)
    ds = load_configured(data_cfg)
    want = (model.manifest.get("data") or {}).get("fingerprint")
    if want and ds.fingerprint != want:
        log.warning("warning: the dataset %s differs from the one the model was trained on (fingerprint %s, model %s)",
                    ds.source, ds.fingerprint, want)
    return ds


def cmd_export_onnx(args: argparse.Namespace) -> int:
    _setup_logging(logging.WARNING if args.quiet else logging.INFO)
    from q2pt.io import check_writable
    from q2pt.models import load_model
    from q2pt.serving.onnx_export import (
        check_export_target,
        evaluate_exports,
        export_onnx,
        export_target,
        format_evaluation,
    )

    check_writable(args.out, "ONNX export")
    model = load_model(args.model)
    # where it goes, then the data to evaluate on: each refused before any work is done
    check_export_target(model, args.out, args.overwrite)
    dataset = _evaluation_dataset(args, model) if args.evaluate else None
    result = export_onnx(model, args.out, quantize=args.quantize, verify=not args.no_verify, overwrite=args.overwrite)
    size = sum(result.sizes.values())
    kind = f"{args.quantize} " if args.quantize else ""
    status = sys.stderr if args.json else sys.stdout  # --json: stdout is the JSON document alone
    print(f"wrote {kind}ONNX export of {model.variant} model to {result.path} "
          f"({len(result.files)} graph{'s' if len(result.files) > 1 else ''}, {size / 1e6:.1f} MB)", file=status)
    if result.max_abs_diff is not None:
        print(f"max |ONNX - PyTorch| probability over {result.n_checked} sample predictions: {result.max_abs_diff:.2e}",
              file=status)
        if not args.quantize and result.max_abs_diff > 1e-4:
            log.warning("warning: the fp32 export differs from PyTorch by more than 1e-4")
    if dataset is not None:
        with tempfile.TemporaryDirectory(prefix="q2pt-eval-") as tmp:
            paths: dict[str, Any] = {}
            if args.quantize:
                fp32 = export_onnx(model, export_target(tmp, model.variant), verify=False)
                paths["onnx-fp32"] = fp32.path
                paths[f"onnx-{args.quantize}"] = result.path
            else:
                paths["onnx-fp32"] = result.path
            evaluation = evaluate_exports(model, dataset, paths, split=args.split)
        evaluation["dataset"] = {"source": dataset.source, "simulated": dataset.simulated}
        if args.json:
            print(json.dumps(evaluation, ensure_ascii=False))
            return 0
        if dataset.simulated:
            print("(evaluated on SIMULATED data)")
        print(format_evaluation(evaluation))
    return 0
