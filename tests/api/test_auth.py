"""Tokens, users, settings and rate limits, against the real app."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.config import ConfigError, load_settings
from serving.security import create_access_token, read_users_file

from .conftest import PASSWORD, USER, served, settings_for, token_for


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def predict(client, token: str):
    return client.post("/predict", data={"designation": "Chaise de jardin"}, headers={"Authorization": f"Bearer {token}"})


def test_token_for_good_credentials_has_user_as_subject(client, serving_settings):
    body = client.post("/token", data={"username": USER, "password": PASSWORD}).json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == serving_settings.access_token_expire_minutes * 60
    claims = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[1] + "=="))
    assert claims["sub"] == USER and claims["exp"] > claims["iat"]
    assert predict(client, body["access_token"]).status_code == 200


# Named without the random password: every parallel worker must collect the same test names.
@pytest.mark.parametrize("user,password,status", [(USER, "wrong-password", 401), ("mallory", PASSWORD, 401), ("", "", 422)],
                         ids=["wrong-password", "unknown-user", "empty"])
def test_bad_credentials_get_401_json(client, user, password, status):
    response = client.post("/token", data={"username": user, "password": password})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["request_id"] == response.headers["x-request-id"]
    if status == 401:  # the same answer for a wrong password and an unknown user: no account enumeration
        assert body["detail"] == "wrong user name or password" and response.headers["www-authenticate"] == "Bearer"
    else:
        assert body["detail"]


def test_missing_token_is_401_with_bearer_challenge(client):
    response = client.post("/predict", data={"designation": "Chaise"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_expired_token_is_rejected(client, serving_settings):
    expired = create_access_token(USER, serving_settings, expires=timedelta(seconds=-5))
    response = predict(client, expired)
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_tampered_token_is_rejected(client):
    header, _, signature = token_for(client).split(".")
    forged = b64({"sub": "admin", "exp": 4_102_444_800})
    assert predict(client, f"{header}.{forged}.{signature}").status_code == 401


def test_token_signed_with_another_key_is_rejected(client, serving_settings):
    other = load_settings(secret_key=secrets.token_urlsafe(48), models_dir=serving_settings.models_dir)
    assert predict(client, create_access_token(USER, other)).status_code == 401


def test_unsigned_alg_none_token_is_rejected(client):
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({'sub': USER, 'exp': 4_102_444_800})}."
    assert predict(client, unsigned).status_code == 401


def test_token_of_unknown_user_is_rejected(client, serving_settings):
    assert predict(client, create_access_token("ghost", serving_settings)).status_code == 401


@pytest.mark.parametrize("secret", [None, "short", "a" * 40, "changeme"])
def test_weak_or_missing_secret_refused_outside_development(secret):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_settings(environment="production", secret_key=secret)


def test_development_without_secret_starts_with_a_random_key():
    settings = load_settings(environment="development", secret_key=None)
    with pytest.warns(UserWarning, match="random key"):
        assert len(settings.signing_key) >= 32


def test_bad_variable_is_one_line_naming_it():
    with pytest.raises(ConfigError, match="ACCESS_TOKEN_EXPIRE_MINUTES") as info:
        load_settings(environment="development", access_token_expire_minutes=0)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["rate_limit_token", "rate_limit_token_account", "rate_limit_predict"])
def test_bad_rate_limit_is_one_line_naming_it(name):
    with pytest.raises(ConfigError, match=f"^{name.upper()}: ") as info:
        load_settings(environment="development", **{name: "lots"})
    assert "\n" not in str(info.value)


def test_python_m_serving_refuses_weak_secret_in_one_line(tmp_path, tiny_models):
    from conftest import env

    result = subprocess.run([sys.executable, "-m", "serving", "--check"], cwd=tmp_path, capture_output=True, text=True,
                            env={**env(), "SECRET_KEY": "changeme", "MODELS_DIR": str(tiny_models)})
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: SECRET_KEY is") and result.stderr.count("\n") == 1


def test_users_cli_adds_user_who_can_log_in(tmp_path, tiny_models):
    users = tmp_path / "users.json"
    bob, carol = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    for name, password in (("bob", bob), ("carol", carol)):
        cli = subprocess.run([sys.executable, "-m", "serving.users", "--file", users, "add", name, "--password-stdin",
                              "--full-name", name.title()], input=password + "\n", capture_output=True, text=True)
        assert cli.returncode == 0, cli.stderr
    stored = read_users_file(users)
    assert set(stored) == {"bob", "carol"} and stored["bob"].hashed_password.startswith("$2b$")
    assert bob not in users.read_text()
    assert users.stat().st_mode & 0o077 == 0

    with TestClient(create_app(settings_for(tiny_models, tmp_path, users_file=users))) as client:
        assert predict(client, token_for(client, "bob", bob)).status_code == 200
        assert client.post("/token", data={"username": "bob", "password": carol}).status_code == 401


@pytest.mark.parametrize("password,why", [("short", "shorter than 12"), ("password1234", "common password"),
                                          ("qwertyuiop123", "easy to guess"), ("davedavedave", "easy to guess")])
def test_users_cli_refuses_a_weak_password_in_one_line(tmp_path, password, why):
    users = tmp_path / "users.json"
    cli = subprocess.run([sys.executable, "-m", "serving.users", "--file", users, "add", "dave", "--password-stdin"],
                         input=password + "\n", capture_output=True, text=True)
    assert cli.returncode == 1 and not users.exists()
    assert cli.stderr.startswith("error: password is") and why in cli.stderr and cli.stderr.count("\n") == 1


@pytest.mark.parametrize("password", ["password", "password1234", "alicealice12", "Azertyuiop12"])
def test_weak_bootstrap_password_refused_outside_development(password):
    with pytest.raises(ConfigError, match="^TEST_USER_PASSWORD is (shorter|too easy)") as info:
        load_settings(environment="production", secret_key=secrets.token_urlsafe(48), test_user=USER,
                      test_user_password=password)
    assert "\n" not in str(info.value) and password not in str(info.value)
    # development keeps its convenience; a random password passes everywhere
    assert load_settings(environment="development", test_user=USER, test_user_password=password)
    assert load_settings(environment="production", secret_key=secrets.token_urlsafe(48), test_user=USER,
                         test_user_password=secrets.token_urlsafe(12))


def test_python_m_serving_refuses_weak_bootstrap_password_in_one_line(tmp_path, tiny_models):
    from conftest import env

    result = subprocess.run([sys.executable, "-m", "serving", "--check"], cwd=tmp_path, capture_output=True, text=True,
                            env={**env(), "SECRET_KEY": secrets.token_urlsafe(48), "MODELS_DIR": str(tiny_models),
                                 "TEST_USER": USER, "TEST_USER_PASSWORD": "password"})
    assert result.returncode == 1
    assert result.stderr.startswith("error: TEST_USER_PASSWORD is") and result.stderr.count("\n") == 1


def test_rate_limit_per_user_on_predict_routes_then_429(tmp_path, tiny_models):
    settings = settings_for(tiny_models, tmp_path, rate_limit_predict="3/minute")
    with TestClient(create_app(settings)) as client:
        token = token_for(client)
        statuses = [predict(client, token).status_code for _ in range(3)]
        batch = client.post("/predict/batch", json={"items": [{"designation": "Chaise"}]},
                            headers={"Authorization": f"Bearer {token}"})
        assert statuses == [200, 200, 200]
        assert batch.status_code == 429  # the batch route shares the user's budget
        limited = predict(client, token)
        assert limited.status_code == 429
        assert "rate limit" in limited.json()["detail"] and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["request_id"] == limited.headers["x-request-id"]


def test_token_route_is_limited_against_password_guessing(tmp_path, tiny_models):
    settings = settings_for(tiny_models, tmp_path, rate_limit_token="5/minute")
    with TestClient(create_app(settings)) as client:
        statuses = [client.post("/token", data={"username": USER, "password": f"guess-{i}"}).status_code
                    for i in range(7)]
    assert statuses == [401] * 5 + [429] * 2


def test_failed_logins_are_limited_per_user_name_whatever_the_address(tmp_path, tiny_models):
    """Failed attempts count per user name (known or not), beside the per-address limit (set out of reach
    here): the account is locked for the window, even for its right password; other names are not;
    successful logins do not count."""
    settings = settings_for(tiny_models, tmp_path, rate_limit_token="10000/minute", rate_limit_token_account="3/minute")
    with TestClient(create_app(settings)) as client:
        def login(user, password):
            return client.post("/token", data={"username": user, "password": password})

        assert [login(USER, PASSWORD).status_code for _ in range(5)] == [200] * 5
        assert [login(USER, f"guess-{i}").status_code for i in range(4)] == [401, 401, 401, 429]
        locked = login(USER, PASSWORD)
        assert locked.status_code == 429 and "per user name" in locked.json()["detail"]
        assert int(locked.headers["retry-after"]) >= 1 and locked.json()["request_id"]
        assert [login("mallory", f"guess-{i}").status_code for i in range(4)] == [401, 401, 401, 429]
        assert login("bob", "guess").status_code == 401  # another name: a count of its own


def test_parallel_guesses_get_no_more_attempts_than_the_account_limit(tmp_path, tiny_models):
    """Guesses sent at once for one name: each attempt is counted before bcrypt runs (about 0.2 s), so no more
    than the limit reach the password check, however many are in flight."""
    settings = settings_for(tiny_models, tmp_path, rate_limit_token="10000/minute", rate_limit_token_account="3/minute")
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda i: client.post("/token", data={"username": USER, "password": f"guess-{i}"})
                                   .status_code, range(8)))
    assert statuses == [401] * 3 + [429] * 5, statuses


def raw_request(base: str, head: str, body: bytes = b"") -> bytes:
    """Sends a request's head (and the start of a body) and reads the answer without sending the rest."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.fixture(scope="module")
def http_server(tiny_models, tmp_path_factory):
    with served(tiny_models, tmp_path_factory.mktemp("auth-http")) as base:
        yield base


@pytest.mark.parametrize("path,authorization,detail", [
    ("/predict/batch", "", "not authenticated"), ("/predict", "", "not authenticated"),
    ("/predict/batch", "Authorization: Bearer not.a.token\n", "invalid or expired token"),
    ("/predict", "Authorization: Basic YWxpY2U6eA==\n", "not authenticated"),
])
def test_tokenless_request_is_refused_before_its_body_is_sent(http_server, path, authorization, detail):
    """The client announces 10 MB (under every body limit) and sends none of it: the 401 comes anyway, so a
    client without a valid token cannot make the server receive or parse a body."""
    head = (f"POST {path} HTTP/1.1\nHost: test\nContent-Type: application/json\nContent-Length: 10000000\n"
            f"{authorization}")
    answer = raw_request(http_server, head, b'{"items": [')
    status, _, rest = answer.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 401"), answer[:500]
    assert b"www-authenticate: bearer" in headers.lower()
    payload = json.loads(body)
    assert payload["detail"].startswith(detail) and payload["request_id"]


def test_chunked_tokenless_upload_is_refused_before_its_body(http_server):
    head = "POST /predict/batch HTTP/1.1\nHost: test\nContent-Type: application/json\nTransfer-Encoding: chunked\n"
    answer = raw_request(http_server, head, b"b\r\n{\"items\": [\r\n")
    assert answer.startswith(b"HTTP/1.1 401"), answer[:500]



def test_env_example_documents_every_setting_and_parses_to_the_defaults(tmp_path, monkeypatch):
    from conftest import PROJECT
    from serving.config import Settings

    example = (PROJECT / ".env.example").read_text()
    documented = {line.split("=", 1)[0].lstrip("# ").strip() for line in example.splitlines() if "=" in line}
    assert {name.upper() for name in Settings.model_fields} <= documented
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    secret = secrets.token_urlsafe(48)
    (tmp_path / ".env").write_text(example.replace("\nSECRET_KEY=\n", f"\nSECRET_KEY={secret}\n", 1))
    settings = load_settings()
    assert settings.secret_key.get_secret_value() == secret
    assert settings.dvc_lock_path is None and settings.test_user is None
    defaults = Settings(_env_file=None, environment="development")
    for name in ("algorithm", "access_token_expire_minutes", "rate_limit_predict", "max_upload_bytes",
                 "batch_max_wait_ms", "serving_logger_path"):
        assert getattr(settings, name) == getattr(defaults, name), name


def test_batch_body_limit_fits_max_batch_items_real_products_and_no_more(client, auth, serving_settings, train_images):
    """MAX_BATCH_ITEMS products, each with the sample's largest photo and text at the field limits, fit in
    MAX_BATCH_BYTES; a body over it is refused before it is parsed."""
    largest = max(train_images, key=lambda image: image.stat().st_size)
    item = {"designation": "Lampe " + "x" * (serving_settings.max_designation_chars - 6),
            "description": "d" * serving_settings.max_description_chars,
            "image_base64": base64.b64encode(largest.read_bytes()).decode()}
    full = json.dumps({"items": [item] * serving_settings.max_batch_items}).encode()
    assert len(full) <= serving_settings.max_batch_bytes
    response = client.post("/predict/batch", content=full, headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 200 and response.json()["succeeded"] == serving_settings.max_batch_items
    over = b" " * (serving_settings.max_batch_bytes + 1)
    response = client.post("/predict/batch", content=over, headers={**auth, "Content-Type": "application/json"})
    assert response.status_code == 413 and "MAX_BATCH_BYTES" in response.json()["detail"]
