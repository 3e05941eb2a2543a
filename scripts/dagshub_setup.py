"""`make dagshub`: point this clone's DVC remote `origin` and MLflow tracking at a DagsHub repository.

Reads DAGSHUB_USERNAME, DAGSHUB_TOKEN (or DAGSHUB_USER_TOKEN, the dagshub client's name),
DAGSHUB_REPO_OWNER (default: the user) and DAGSHUB_REPO_NAME (default: the git remote's repo name,
else this folder's name); DAGSHUB_CLIENT_HOST overrides https://dagshub.com. Works offline: it only
writes configuration. The token goes to `.dvc/config.local` and `.env` (both ignored by git), never
into a URL, a command line (DVC's own config API writes it, in this process) or the output; both files
are made private (0600) before the token is written into them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DEFAULT_HOST = "https://dagshub.com"
REMOTE = "origin"
ENV_FILE = Path(".env")


def host() -> str:
    try:  # the dagshub client's own setting (DAGSHUB_CLIENT_HOST), when installed
        from dagshub.common import config

        value = config.host
    except ImportError:
        value = os.environ.get("DAGSHUB_CLIENT_HOST")
    return (value or DEFAULT_HOST).rstrip("/")


def git_repo_name() -> str | None:
    url = subprocess.run(["git", "remote", "get-url", "origin"], capture_output=True, text=True).stdout.strip()
    m = re.search(r"[:/]([^/:]+?)(?:\.git)?/?$", url)
    return m.group(1) if m else None


def settings(env: dict[str, str]) -> dict[str, str | None]:
    user = env.get("DAGSHUB_USERNAME") or None
    owner = env.get("DAGSHUB_REPO_OWNER") or user
    if not owner:
        sys.exit("error: set DAGSHUB_USERNAME (and DAGSHUB_TOKEN), or DAGSHUB_REPO_OWNER for read-only access")
    name = env.get("DAGSHUB_REPO_NAME") or git_repo_name() or Path.cwd().name
    return {"user": user, "token": env.get("DAGSHUB_TOKEN") or env.get("DAGSHUB_USER_TOKEN") or None,
            "owner": owner, "name": name, "host": host()}


def urls(s: dict) -> dict[str, str]:
    base = f"{s['host']}/{s['owner']}/{s['name']}"
    return {"s3": f"{base}.s3", "mlflow": f"{base}.mlflow"}


def dvc(*args: str) -> None:
    subprocess.run(["dvc", "remote", *args], check=True)


def private(path: Path) -> None:
    """`path` readable and writable by its owner only, created so (0600) if missing, before a secret goes in."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a file that was there already: tightened while it holds no token yet
    finally:
        os.close(fd)


def update_env_file(path: Path, values: dict[str, str]) -> None:
    """Set KEY=value lines in .env, keeping every other line (serving settings live there too)."""
    lines = path.read_text().splitlines() if path.exists() else []
    todo = dict(values)
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip().removeprefix("export ").strip()
        out.append(f"{key}={todo.pop(key)}" if key in todo else line)
    out += [f"{k}={v}" for k, v in todo.items()]
    private(path)
    path.write_text("\n".join(out) + "\n")


def set_local_credentials(remote: str, values: dict[str, str]) -> None:
    """`dvc remote modify --local remote KEY VALUE` for each value, through DVC's config API in this process, so
    that no value is on a command line; .dvc/config.local is private before it holds them."""
    from dvc.repo import Repo

    repo = Repo(".")
    private(Path(repo.config.files["local"]))
    with repo.config.edit("local") as conf:
        conf["remote"].setdefault(remote, {}).update(values)


def main() -> None:
    s = settings(dict(os.environ))
    u = urls(s)
    dvc("add", "--default", "--force", REMOTE, "s3://dvc")
    dvc("modify", REMOTE, "endpointurl", u["s3"])
    env = {"MLFLOW_TRACKING_URI": u["mlflow"]}
    if s["token"]:
        # DagsHub's S3 gateway takes the token as both keys.
        set_local_credentials(REMOTE, {"access_key_id": s["token"], "secret_access_key": s["token"]})
        env.update({"MLFLOW_TRACKING_USERNAME": s["user"] or s["owner"], "MLFLOW_TRACKING_PASSWORD": s["token"]})
    update_env_file(ENV_FILE, env)

    print(f"DVC remote '{REMOTE}': s3://dvc at {u['s3']} (default remote; .dvc/config)")
    if s["token"]:
        print("  credentials: .dvc/config.local (not committed)")
    else:
        print("  no DAGSHUB_TOKEN: no credentials written (pulls of a public repo only)")
    print(f"MLflow: {u['mlflow']} (written to {ENV_FILE}, which the pipeline reads). For other tools:")
    print(f"  export MLFLOW_TRACKING_URI={u['mlflow']}")
    if s["token"]:
        print(f"  export MLFLOW_TRACKING_USERNAME={s['user'] or s['owner']}")
        print('  export MLFLOW_TRACKING_PASSWORD="$DAGSHUB_TOKEN"')
    print("Commit .dvc/config so that everyone shares the remote: git add .dvc/config")


if __name__ == "__main__":
    main()
