"""The whole service on each backend (conftest.ledger_location): submissions, the e-mail links, withdrawal,
statistics, the head, every export, notify and `mail send`; and a PostgreSQL that is down at start-up."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from click.testing import CliRunner
from mailserver import MailServer, body, free_port
from service_client import V1, V2, mail_settings, service_client

from form_handler.cli import cli
from form_handler.ledger import is_postgres
from form_handler.settings import Settings

FORM = {"message": "Hello", "policy_id": "privacy", "policy_version": V1, "page": "/feedback/"}
ADMIN = {"Authorization": "Bearer admin-token"}


def settings_for(tmp_path: Path, location: str, port: int) -> Settings:
    where = {"ledger_url": location} if is_postgres(location) else {"ledger_path": Path(location)}
    return mail_settings(tmp_path, port, admin_token="admin-token", **where)


def link(msg: object, path: str) -> str:
    url = next(w for w in body(msg).split() if f"{path}?token=" in w)  # type: ignore[arg-type]
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_every_route_and_command_on_each_backend(tmp_path: Path, ledger_location: str, smtp: MailServer) -> None:
    settings = settings_for(tmp_path, ledger_location, smtp.port)
    with service_client(settings) as client:
        ann = client.post("/api/feedback", json={**FORM, "email": "ann@example.com", "consent_updates": True,
                                                  "consent_third_parties": True}).json()
        bob = client.post("/api/feedback", json={**FORM, "email": "bob@example.com", "consent_third_parties": True})
        assert "receipt_id" in ann and bob.status_code == 201
        (ann_mail, bob_mail) = sorted(smtp.wait_for(2), key=lambda m: str(m["To"]))
        for mail in (ann_mail, bob_mail):
            assert client.get(link(mail, "/api/confirm")).status_code == 200
            assert client.post(link(mail, "/api/confirm")).status_code == 200
        assert client.post(link(ann_mail, "/api/confirm")).status_code == 410  # used
        third = client.get("/api/export?third_party=1", headers=ADMIN).text.splitlines()
        assert third == ['{"email": "ann@example.com"}', '{"email": "bob@example.com"}']
        r = client.post("/api/withdraw", json={"receipt_id": bob.json()["receipt_id"],
                                               "withdraw_token": bob.json()["withdraw_token"]})
        assert r.status_code == 200 and client.post("/api/withdraw", json={
            "receipt_id": "0" * 32, "withdraw_token": "x"}).status_code == 404
        assert client.get("/api/export?third_party=1", headers=ADMIN).text == '{"email": "ann@example.com"}\n'
        head = client.get("/api/ledger/head").json()
        assert head["count"] == 5 and client.get("/api/stats").json()["submissions"] is None
        csv = client.get("/api/export?format=csv", headers=ADMIN).text
        assert csv.count("\r\n") == 6 and "ann@example.com" in csv
        assert client.get("/api/healthz").json()["entries"] == 5
    env = {"POLICY_SITE_SMTP_HOST": "127.0.0.1", "POLICY_SITE_SMTP_PORT": str(smtp.port), "POLICY_SITE_SECRET": "s",
           "POLICY_SITE_BASE_URL": "https://policies.example"}
    notified = CliRunner().invoke(cli, ["notify", "--ledger", ledger_location, "--manifest", settings.manifest], env=env)
    assert notified.exit_code == 0 and "1 notified, 0 failed." in notified.output, notified.output
    notice = smtp.wait_for(3)[2]
    assert notice["To"] == "ann@example.com" and link(notice, "/api/reconsent")
    with service_client(settings) as client:
        assert client.post(link(notice, "/api/reconsent")).status_code == 200
        assert client.post(link(notice, "/api/unsubscribe")).status_code == 200
    sent = CliRunner().invoke(cli, ["mail", "send", "--ledger", ledger_location], env=env)
    assert sent.exit_code == 0 and "sent 0" in sent.output and "sent in all 2" in sent.output, sent.output
    verify = CliRunner().invoke(cli, ["ledger", "verify", "--ledger", ledger_location])
    assert verify.exit_code == 0 and "entries: 8" in verify.output and "chain: ok" in verify.output
    exported = CliRunner().invoke(cli, ["ledger", "export", "--ledger", ledger_location]).output.splitlines()
    assert len(exported) == 8 and '"kind": "reconsent"' in exported[6] and V2 in exported[6]


def test_service_starts_while_postgresql_is_down_and_answers_503(tmp_path: Path, smtp: MailServer) -> None:
    settings = settings_for(tmp_path, f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere", smtp.port)
    with service_client(settings) as client:
        r = client.post("/api/feedback", json=FORM)
        assert r.status_code == 503 and r.headers["Retry-After"] and "nothing was stored" in r.json()["errors"]["ledger"]
        assert client.get("/api/healthz").status_code == 503 and client.get("/api/stats").status_code == 503
        assert client.post("/api/withdraw", json={"receipt_id": "0" * 32, "withdraw_token": "x"}).status_code == 503
