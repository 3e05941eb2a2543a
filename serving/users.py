"""`product-classifier-users`: add or replace a user (bcrypt hash) in USERS_FILE; list or remove users."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from .config import weak_password
from .security import User, hash_password, read_users_file, write_users_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="product-classifier-users", description=__doc__)
    parser.add_argument("--file", type=Path, default=None,
                        help="users file (default: USERS_FILE from the environment or .env)")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add a user, or replace their password")
    add.add_argument("username")
    add.add_argument("--full-name", default=None)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin (scripts)")
    sub.add_parser("list", help="list user names")
    remove = sub.add_parser("remove", help="remove a user")
    remove.add_argument("username")
    args = parser.parse_args(argv)

    path = args.file or _users_file_from_settings()
    if path is None:
        parser.error("no users file: pass --file or set USERS_FILE")
    users = read_users_file(path)
    if args.command == "list":
        for name in sorted(users):
            print(f"{name}\t{users[name].full_name}")
        return 0
    if args.command == "remove":
        if users.pop(args.username, None) is None:
            print(f"error: no user {args.username!r} in {path}", file=sys.stderr)
            return 1
        write_users_file(path, users)
        print(f"removed {args.username} from {path}")
        return 0
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else _ask_password()
    if reason := weak_password(password, args.username):
        print(f"error: password is {reason}", file=sys.stderr)
        return 1
    users[args.username] = User(args.username, args.full_name or args.username, hash_password(password))
    write_users_file(path, users)
    print(f"saved {args.username} in {path}")
    return 0


def _users_file_from_settings() -> Path | None:
    from .config import Settings

    return Settings(environment="development").users_file  # only the users file is read here


def _ask_password() -> str:
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        print("error: passwords differ", file=sys.stderr)
        raise SystemExit(1)
    return first


if __name__ == "__main__":
    raise SystemExit(main())
