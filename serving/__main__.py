"""`python -m serving`: check the settings and the model artifacts, then serve with uvicorn.

A bad setting or a model that does not match dvc.lock ends here with one line, before any server starts.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__)
    parser.add_argument("--host", help="interface to listen on (default: HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: PORT, 8000; 0: any free port)")
    parser.add_argument("--check", action="store_true", help="only check settings and artifacts, then exit")
    args = parser.parse_args(argv)

    from product_classifier.errors import UserError

    from .artifacts import check_readable, verify_artifacts
    from .config import ConfigError, load_settings

    try:
        settings = load_settings()
        # Every served file hashed here, once: the app then loads the predictor without hashing again.
        identity = verify_artifacts(settings.models_dir, settings.dvc_lock_path)
        if settings.users_file is not None:  # 0600 as `make users` writes it: a container's user may not read it
            check_readable(settings.users_file)
    except (ConfigError, UserError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"model {identity.version} in {settings.models_dir} matches {identity.lock_path}", file=sys.stderr)
    if args.check:
        return 0

    import uvicorn

    from .app import create_app

    uvicorn.run(create_app(settings, identity=identity), host=args.host or settings.host, port=settings.port if args.port is None else args.port,
                access_log=False, proxy_headers=True, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
