"""API keys and scopes through HTTP: who may read, write and manage keys; refusals write nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from backends.api_keys import ApiKeyError, ApiKeyStore, hash_key
from backends.postgres import PostgresBackend
from tests.catalog_fixtures import insert_material
from tests.conftest import app_client, make_settings
from tests.keys import bearer, make_key
from tests.test_server import ROOT

READ = "{ materials(first: 5) { totalCount edges { node { name } } } }"
CREATE = 'mutation { createSupplier(name: "ООО Ключ") { supplier { name } errors { code } } }'
CREATE_KEY = """mutation($name: String!, $scopes: [ApiScope!]!) {
  createApiKey(name: $name, scopes: $scopes) { key apiKey { prefix scopes active } errors { field message } } }"""
AUDIT = """query($f: AuditLogFilter, $first: Int, $after: String) { auditLog(filter: $f, first: $first, after: $after) {
  edges { node { actor operation outcome variables } } pageInfo { hasNextPage endCursor } } }"""


@pytest.fixture
async def http(database_url: str, empty_catalog: PostgresBackend) -> AsyncIterator[httpx.AsyncClient]:
    """The app as it ships: anonymous callers read only."""
    async with app_client(make_settings(database_url, anonymous="read", key_cache_ttl_s=0.3)) as client:
        yield client


async def post(client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None,
               key: str | None = None, status: int = 200) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables or {}},
                                 headers=bearer(key) if key else {})
    assert response.status_code == status, response.text
    return response.json()


async def test_keys_are_stored_hashed_shown_once_rotated_and_revoked(pg: PostgresBackend, conn: asyncpg.Connection) -> None:
    store = ApiKeyStore(pg)
    record, key = await store.create("partner", ["write", "read"], tier="partner")
    assert key.startswith(f"mgk_{record.prefix}_") and record.scopes == ("read", "write")
    row = await conn.fetchrow("SELECT * FROM api_keys WHERE prefix = $1", record.prefix)
    assert key.encode() not in b"".join(str(v).encode() for v in row.values())  # never stored as is
    assert row["secret_hash"] == hash_key(key)
    assert [k.prefix for k in await store.list()] == [record.prefix]
    assert (await store.find(key)).active()
    new, new_key = await store.rotate(record.prefix, grace=timedelta(minutes=5))
    old = await store.find(key)
    assert old.active() and old.rotated_to == new.prefix  # still valid during the grace period
    assert old.expires_at < datetime.now(UTC) + timedelta(minutes=6)
    assert (await store.find(new_key)).scopes == ("read", "write")
    await store.revoke(new.prefix)
    assert not (await store.find(new_key)).active()
    with pytest.raises(ApiKeyError, match="unknown scope"):
        await store.create("x", ["read", "root"])
    with pytest.raises(ApiKeyError, match="no key with prefix"):
        await store.revoke("00000000")
    actions = await conn.fetch("SELECT operation, outcome FROM audit_log ORDER BY id")
    assert [(a["operation"], a["outcome"]) for a in actions] == [
        ("createApiKey", "ok"), ("rotateApiKey", "ok"), ("revokeApiKey", "ok"), ("revokeApiKey", "rejected")]


async def test_anonymous_callers_read_but_do_not_write(http: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await insert_material(conn, "Цемент М500", "мешок")
    assert (await post(http, READ))["data"]["materials"]["totalCount"] == 1
    refused = await post(http, CREATE)
    assert refused["data"] is None
    [error] = refused["errors"]
    assert error["extensions"]["code"] == "FORBIDDEN" and error["extensions"]["missingScope"] == "write"
    assert "'write' scope" in error["message"]
    assert await conn.fetchval("SELECT count(*) FROM suppliers") == 0  # nothing written
    # The resolver never ran; the attempt is in the audit log, refused.
    audit = await conn.fetchrow("SELECT actor, operation, outcome, detail FROM audit_log")
    assert (audit["actor"], audit["operation"], audit["outcome"]) == ("anonymous", "createSupplier", "rejected")
    assert audit["detail"]["refused"] == "FORBIDDEN"


async def test_a_key_without_write_is_refused_and_nothing_is_written(
    http: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    reader = await make_key(conn, ["read"])
    writer = await make_key(conn, ["read", "write"])
    refused = await post(http, CREATE, key=reader)
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "the API key" in refused["errors"][0]["message"] and "'write'" in refused["errors"][0]["message"]
    assert await conn.fetchval("SELECT count(*) FROM suppliers") == 0
    done = await post(http, CREATE, key=writer)
    assert done["data"]["createSupplier"]["errors"] == []
    audit = await conn.fetch("SELECT actor, operation, outcome FROM audit_log ORDER BY id")
    assert [dict(a) for a in audit] == [
        {"actor": reader.split("_")[1], "operation": "createSupplier", "outcome": "rejected"},
        {"actor": writer.split("_")[1], "operation": "createSupplier", "outcome": "ok"}]


async def test_bad_revoked_and_expired_keys_are_401(
    http: httpx.AsyncClient, conn: asyncpg.Connection, pg: PostgresBackend
) -> None:
    key = await make_key(conn, ["read"])
    assert "data" in await post(http, READ, key=key)
    for header, message in (("Bearer mgk_00000000_" + "x" * 43, "the API key is not valid"),
                            ("Basic dXNlcjpwdw==", "must be 'Bearer <API key>'")):
        response = await http.post("/graphql", json={"query": READ}, headers={"Authorization": header})
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
        assert message in response.json()["errors"][0]["message"]
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    await ApiKeyStore(pg).revoke(key.split("_")[1])
    await asyncio.sleep(0.4)  # KEY_CACHE_TTL_S of this app: the revocation came from elsewhere
    revoked = await post(http, READ, key=key, status=401)
    assert "was revoked" in revoked["errors"][0]["message"]
    expired = await make_key(conn, ["read"], expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert "expired at" in (await post(http, READ, key=expired, status=401))["errors"][0]["message"]


async def test_revoking_through_the_api_takes_effect_at_once_here(http: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    admin = await make_key(conn, ["admin"])
    user = await make_key(conn, ["read"])
    assert "data" in await post(http, READ, key=user)  # now cached
    done = await post(http, 'mutation($p: String!) { revokeApiKey(prefix: $p) { apiKey { active } errors { message } } }',
                      {"p": user.split("_")[1]}, key=admin)
    assert done["data"]["revokeApiKey"] == {"apiKey": {"active": False}, "errors": []}
    await post(http, READ, key=user, status=401)


async def test_anonymous_off_refuses_requests_without_a_key(database_url: str, empty_catalog: PostgresBackend,
                                                            conn: asyncpg.Connection) -> None:
    key = await make_key(conn, ["read"])
    async with app_client(make_settings(database_url, anonymous="off")) as client:
        refused = await post(client, READ, status=401)
        assert "does not accept anonymous requests" in refused["errors"][0]["message"]
        get = await client.get("/graphql", params={"query": READ})
        assert get.status_code == 401
        # Percent-encoded parameter names are the same parameters (review: `%71uery=` was served)
        for encoded in ("%71uery", "qu%65ry"):
            sneaky = await client.get(f"/graphql?{encoded}=" + READ.replace(" ", "%20"))
            assert sneaky.status_code == 401, sneaky.text
        assert "data" in await post(client, READ, key=key)
        page = await client.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200  # GraphiQL's page holds no data


async def test_key_management_and_the_audit_log_need_admin(http: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    writer = await make_key(conn, ["read", "write"])
    admin = await make_key(conn, ["admin"])
    refused = await post(http, CREATE_KEY, {"name": "x", "scopes": ["READ"]}, key=writer)
    assert refused["errors"][0]["extensions"] == {"code": "FORBIDDEN", "missingScope": "admin"}
    assert await conn.fetchval("SELECT count(*) FROM api_keys") == 2
    assert (await post(http, AUDIT, key=writer))["errors"][0]["extensions"]["missingScope"] == "admin"
    created = (await post(http, CREATE_KEY, {"name": "mobile app", "scopes": ["READ", "WRITE"]}, key=admin))
    payload = created["data"]["createApiKey"]
    assert payload["errors"] == [] and payload["apiKey"]["scopes"] == ["READ", "WRITE"]
    new_key = payload["key"]
    assert (await post(http, CREATE, key=new_key))["data"]["createSupplier"]["errors"] == []
    listed = await post(http, "{ apiKeys { prefix name active } }", key=admin)
    assert {k["name"] for k in listed["data"]["apiKeys"]} == {"test key", "mobile app"}
    assert "key" not in str(listed["data"]["apiKeys"][0].keys() - {"prefix", "name", "active"})
    bad = await post(http, CREATE_KEY, {"name": "  ", "scopes": ["READ"]}, key=admin)
    assert bad["data"]["createApiKey"]["errors"][0]["field"] == ["name"]


async def test_admins_read_the_audit_log_with_filters_and_pages(http: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    writer = await make_key(conn, ["read", "write"])
    admin = await make_key(conn, ["admin"])
    for i in range(5):
        await post(http, f'mutation {{ createSupplier(name: "Поставщик {i}") {{ errors {{ code }} }} }}', key=writer)
    await post(http, 'mutation { createSupplier(name: "  ") { errors { code } } }', key=writer)  # rejected
    await post(http, CREATE_KEY, {"name": "ci", "scopes": ["READ"]}, key=admin)
    prefix = writer.split("_")[1]
    first = (await post(http, AUDIT, {"f": {"actor": prefix}, "first": 4}, key=admin))["data"]["auditLog"]
    assert [e["node"]["outcome"] for e in first["edges"]] == ["rejected", "ok", "ok", "ok"]  # newest first
    assert first["pageInfo"]["hasNextPage"]
    rest = (await post(http, AUDIT, {"f": {"actor": prefix}, "first": 4, "after": first["pageInfo"]["endCursor"]},
                       key=admin))["data"]["auditLog"]
    assert [e["node"]["variables"]["name"] for e in rest["edges"]] == ["Поставщик 1", "Поставщик 0"]
    assert not rest["pageInfo"]["hasNextPage"]
    keys = (await post(http, AUDIT, {"f": {"operation": "createApiKey"}}, key=admin))["data"]["auditLog"]["edges"]
    assert [(e["node"]["actor"], e["node"]["variables"]["name"]) for e in keys] == [(admin.split("_")[1], "ci")]
    later = {"since": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    assert (await post(http, AUDIT, {"f": later}, key=admin))["data"]["auditLog"]["edges"] == []


async def test_cli_creates_a_key_that_works(database_url: str, http: httpx.AsyncClient) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(subprocess.run, [sys.executable, "server.py", "keys", *args], cwd=ROOT,
                                       env=env, capture_output=True, text=True, timeout=60)

    done = await cli("create", "--name", "ci bot", "--scopes", "read,write", "--tier", "partner", "--expires", "30d")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("mgk_") and " " not in key
    assert (await post(http, CREATE, key=key))["data"]["createSupplier"]["errors"] == []
    listed = await cli("list")
    assert "read,write" in listed.stdout and "ci bot" in listed.stdout and "partner" in listed.stdout
    assert key not in listed.stdout
    prefix = key.split("_")[1]
    bad = await cli("create", "--name", "x", "--scopes", "read,sudo")
    assert bad.returncode != 0 and "unknown scope(s) sudo" in bad.stderr
    rotated = await cli("rotate", prefix, "--grace", "60")
    assert rotated.returncode == 0 and rotated.stdout.strip().splitlines()[-1].startswith("mgk_")
    revoked = await cli("revoke", prefix)
    assert revoked.returncode == 0 and f"revoked {prefix}" in revoked.stdout


async def test_websockets_take_the_key_from_connection_init(database_url: str, conn: asyncpg.Connection) -> None:
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from server import create_app

    key = await make_key(conn, ["read"])
    app = create_app(make_settings(database_url, anonymous="off"))

    def handshake(client: Any, payload: dict[str, Any]) -> Any:
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_json({"type": "connection_init", "payload": payload})
            try:
                message = ws.receive()
            except WebSocketDisconnect as exc:
                return exc.code
            if message["type"] == "websocket.close":
                return message["code"]
            return json.loads(message.get("text") or message["bytes"])

    def handshakes() -> list[Any]:
        with TestClient(app) as client:
            return [handshake(client, {"Authorization": f"Bearer {key}"}),
                    handshake(client, {}),  # anonymous is off: no key, no connection
                    handshake(client, {"Authorization": "Bearer mgk_00000000_" + "x" * 43})]

    good, anonymous, bad = await asyncio.to_thread(handshakes)
    assert good["type"] == "connection_ack"
    assert anonymous == bad == 4403


async def test_key_look_ups_are_cached_and_dropped_on_revocation(pg: PostgresBackend, conn: asyncpg.Connection) -> None:
    from backends.api_keys import KeyRejected, PrincipalResolver

    store = ApiKeyStore(pg)
    record, key = await store.create("cached", ["read"], tier="partner")
    resolver = PrincipalResolver(store, ttl=60)
    for _ in range(5):
        principal = await resolver.resolve(key)
    assert resolver.lookups == 1  # one PostgreSQL look-up for five requests
    assert (principal.actor, principal.tier, principal.rate_key) == (record.prefix, "partner", f"key:{record.prefix}")
    await store.revoke(record.prefix)
    assert (await resolver.resolve(key)).actor == record.prefix  # another instance: until its TTL runs out
    resolver.forget()  # what revokeApiKey does on the instance that revoked
    with pytest.raises(KeyRejected, match="was revoked"):
        await resolver.resolve(key)
    assert resolver.lookups == 2


async def test_made_up_keys_do_not_push_real_keys_out_of_the_cache(pg: PostgresBackend, conn: asyncpg.Connection) -> None:
    from backends.api_keys import KeyRejected, PrincipalResolver

    store = ApiKeyStore(pg)
    _, key = await store.create("real", ["read"])
    resolver = PrincipalResolver(store, ttl=60, max_entries=5)
    await resolver.resolve(key)
    for i in range(20):  # a flood of well-formed keys that do not exist
        with pytest.raises(KeyRejected):
            await resolver.resolve(f"mgk_{i:08x}_" + "x" * 43)
    before = resolver.lookups
    await resolver.resolve(key)
    assert resolver.lookups == before  # still cached: no PostgreSQL look-up for the real key


async def test_a_key_revoked_while_its_websocket_is_open_stops_working_there(
    database_url: str, empty_catalog: PostgresBackend, conn: asyncpg.Connection
) -> None:
    from starlette.testclient import TestClient

    from server import create_app

    writer = await make_key(conn, ["read", "write"])
    admin = await make_key(conn, ["admin"])
    app = create_app(make_settings(database_url, anonymous="off"))
    mutation = "mutation($n: String!) { createSupplier(name: $n) { supplier { name } errors { message } } }"
    revoke = "mutation($p: String!) { revokeApiKey(prefix: $p) { errors { message } } }"

    def session() -> tuple[Any, Any]:
        with TestClient(app) as client:
            with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
                ws.send_json({"type": "connection_init", "payload": {"Authorization": f"Bearer {writer}"}})
                assert ws.receive_json()["type"] == "connection_ack"
                ws.send_json({"type": "subscribe", "id": "1", "payload": {"query": mutation,
                                                                         "variables": {"n": "ООО Первый"}}})
                before = ws.receive_json()
                revoked = client.post("/graphql", json={"query": revoke, "variables": {"p": writer.split("_")[1]}},
                                      headers={"Authorization": f"Bearer {admin}"})
                assert revoked.json()["data"]["revokeApiKey"]["errors"] == [], revoked.text
                ws.receive_json()  # complete of the first operation
                ws.send_json({"type": "subscribe", "id": "2", "payload": {"query": mutation,
                                                                         "variables": {"n": "ООО Второй"}}})
                after = ws.receive_json()
                return before, after

    before, after = await asyncio.to_thread(session)
    assert before["payload"]["data"]["createSupplier"]["supplier"]["name"] == "ООО Первый"
    assert after["type"] == "error"  # graphql-transport-ws: the operation is refused before it runs
    [error] = after["payload"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED" and "revoked" in error["message"]
    assert await conn.fetchval("SELECT count(*) FROM suppliers") == 1  # the second was not written
