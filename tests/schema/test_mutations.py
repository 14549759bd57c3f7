"""Mutations over HTTP: payload errors with field paths and codes, outbox events, audit rows."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg
import httpx
import pytest

from backends.postgres import PostgresBackend
from resolvers.ids import to_global_id
from tests.conftest import gql, gql_data

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "supplier-samples"

CREATE = """mutation($input: MaterialInput!) { createMaterial(input: $input) {
  material { id sku name unit { code } category { name } attributes } errors { field message code } } }"""
UPDATE = """mutation($id: ID!, $patch: MaterialPatch!) { updateMaterial(id: $id, patch: $patch) {
  material { id sku name description unit { code } updatedAt } errors { field message code } } }"""
IMPORT = """mutation($supplier: ID!, $file: Upload!) { importPriceList(supplierId: $supplier, file: $file) {
  duplicate priceList { id version status rowCount rejectedCount rejectedRows { line column message raw }
  prices(first: 10) { edges { node { unitPrice material { name unit { code } } } } } } errors { field message code } } }"""


async def _upload(client: httpx.AsyncClient, supplier: str, path: Path, *, preflight: bool = True) -> httpx.Response:
    operations = json.dumps({"query": IMPORT, "variables": {"supplier": supplier, "file": None}})
    headers = {"GraphQL-Preflight": "1"} if preflight else {}
    return await client.post("/graphql", headers=headers, data={"operations": operations,
                                                                 "map": json.dumps({"0": ["variables.file"]})},
                             files={"0": (path.name, path.read_bytes(), "text/csv")})  # noqa: ASYNC240 (a small fixture)


async def test_create_update_delete_material_with_events_and_audit(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    cat = await conn.fetchval("INSERT INTO categories (name) VALUES ('Цемент') RETURNING id")
    created = (await gql_data(client, CREATE, {"input": {
        "name": "  Цемент   М500 Д0 ", "sku": "CEM-500", "unit": "Мешок", "categoryId": to_global_id("Category", cat),
        "attributes": {"grade": "М500"}}}))["createMaterial"]
    assert created["errors"] == []
    material = created["material"]
    assert (material["name"], material["unit"]["code"], material["category"]["name"]) == ("Цемент М500 Д0", "мешок", "Цемент")
    updated = (await gql_data(client, UPDATE, {"id": material["id"], "patch": {"description": "Пакет 50 кг", "sku": None}}))
    assert updated["updateMaterial"]["errors"] == []
    assert updated["updateMaterial"]["material"]["sku"] is None
    assert updated["updateMaterial"]["material"]["description"] == "Пакет 50 кг"
    assert updated["updateMaterial"]["material"]["name"] == "Цемент М500 Д0"  # not sent: unchanged
    deleted = await gql_data(client, "mutation($id: ID!) { deleteMaterial(id: $id) { deletedId errors { code } } }",
                             {"id": material["id"]})
    assert deleted["deleteMaterial"] == {"deletedId": material["id"], "errors": []}
    assert (await gql_data(client, "query($id: ID!) { material(id: $id) { id } }", {"id": material["id"]}))["material"] is None
    again = await gql_data(client, "mutation($id: ID!) { deleteMaterial(id: $id) { deletedId errors { field code } } }",
                           {"id": material["id"]})
    assert again["deleteMaterial"] == {"deletedId": None, "errors": [{"field": ["id"], "code": "NOT_FOUND"}]}

    topics = [r["topic"] for r in await conn.fetch("SELECT topic FROM events ORDER BY id")]
    assert topics == ["material.created", "material.updated", "material.deleted"]
    audit = await conn.fetch("SELECT operation, outcome, variables FROM audit_log ORDER BY id")
    assert [(a["operation"], a["outcome"]) for a in audit] == [
        ("createMaterial", "ok"), ("updateMaterial", "ok"), ("deleteMaterial", "ok"), ("deleteMaterial", "rejected")]
    assert audit[0]["variables"]["input"]["sku"] == "CEM-500"


async def test_bad_input_gives_errors_with_field_and_code_and_writes_nothing(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await conn.execute("INSERT INTO materials (name, unit_code, sku) VALUES ('Кирпич', 'шт', 'BRK-1')")
    result = (await gql_data(client, CREATE, {"input": {"name": "   ", "unit": "парсек", "sku": "A B"}}))["createMaterial"]
    assert result["material"] is None
    assert {(tuple(e["field"]), e["code"]) for e in result["errors"]} == {
        (("input", "name"), "VALIDATION"), (("input", "unit"), "VALIDATION"), (("input", "sku"), "VALIDATION")}
    assert any("парсек" in e["message"] for e in result["errors"])
    conflict = (await gql_data(client, CREATE, {"input": {"name": "Кирпич красный", "unit": "шт", "sku": "BRK-1"}}))
    assert conflict["createMaterial"]["errors"] == [
        {"field": ["input", "sku"], "message": 'SKU "BRK-1" belongs to another material', "code": "CONFLICT"}]
    missing = await gql_data(client, UPDATE, {"id": to_global_id("Material", 999999), "patch": {"name": "X"}})
    assert missing["updateMaterial"]["errors"][0]["code"] == "NOT_FOUND"
    clear_name = await gql_data(client, UPDATE, {"id": to_global_id("Material", 999999), "patch": {"name": None}})
    assert clear_name["updateMaterial"]["errors"][0]["code"] == "NOT_FOUND"
    wrong_type = await gql(client, UPDATE, {"id": to_global_id("Supplier", 1), "patch": {}})
    assert "expected a Material" in wrong_type["errors"][0]["message"]
    assert await conn.fetchval("SELECT count(*) FROM materials") == 1
    assert await conn.fetchval("SELECT count(*) FROM events") == 0


async def test_upsert_is_all_or_nothing(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await conn.execute("INSERT INTO materials (name, unit_code, sku) VALUES ('Песок', 'м³', 'SND-1')")
    upsert = "mutation($input: [MaterialInput!]!) { upsertMaterials(input: $input) { created updated errors { field code } } }"
    bad = await gql_data(client, upsert, {"input": [
        {"name": "Песок мытый", "unit": "м3", "sku": "SND-1"}, {"name": "Щебень", "unit": "парсек"}]})
    assert bad["upsertMaterials"] == {"created": 0, "updated": 0,
                                      "errors": [{"field": ["input", "1", "unit"], "code": "VALIDATION"}]}
    good = await gql_data(client, upsert, {"input": [
        {"name": "Песок мытый", "unit": "м3", "sku": "SND-1"}, {"name": "Щебень", "unit": "куб.м"}]})
    assert good["upsertMaterials"] == {"created": 1, "updated": 1, "errors": []}
    assert await conn.fetchval("SELECT name FROM materials WHERE sku = 'SND-1'") == "Песок мытый"


async def test_import_price_list_by_multipart_upload(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    created = await gql_data(client, 'mutation { createSupplier(name: "ООО «Стройресурс»") { supplier { id name } errors { code } } }')
    supplier = created["createSupplier"]["supplier"]["id"]
    dup_name = await gql_data(client, 'mutation { createSupplier(name: "ооо «стройресурс»") { supplier { id } errors { code } } }')
    assert dup_name["createSupplier"] == {"supplier": None, "errors": [{"code": "CONFLICT"}]}

    refused = await _upload(client, supplier, SAMPLES / "test_price_v1.csv", preflight=False)
    assert refused.status_code == 400 and "Preflight" in refused.text

    first = (await _upload(client, supplier, SAMPLES / "invalid_price_data.csv")).json()["data"]["importPriceList"]
    assert first["errors"] == [] and first["duplicate"] is False
    pl = first["priceList"]
    assert (pl["version"], pl["status"], pl["rowCount"], pl["rejectedCount"]) == (1, "ACTIVE", 1, 1)
    assert pl["rejectedRows"] == [{"line": 2, "column": "price", "message": 'price: "invalid_price" is not a number',
                                   "raw": 'Cement Portland,Building Materials,kg,invalid_price,"High quality cement"'}]
    assert pl["prices"]["edges"][0]["node"]["material"] == {"name": "Sand Construction", "unit": {"code": "м³"}}
    second = (await _upload(client, supplier, SAMPLES / "invalid_price_data.csv")).json()["data"]["importPriceList"]
    assert second["duplicate"] is True and second["priceList"]["id"] == pl["id"]

    broken = (await _upload(client, supplier, SAMPLES / "invalid_missing_columns.csv")).json()["data"]["importPriceList"]
    assert broken["priceList"] is None
    assert broken["errors"][0]["field"] == ["file"] and "use_category" in broken["errors"][0]["message"]
    audit = await conn.fetch("SELECT operation, outcome, variables FROM audit_log WHERE operation = 'importPriceList' ORDER BY id")
    assert [a["outcome"] for a in audit] == ["ok", "ok", "rejected"]
    assert audit[0]["variables"]["file"] == {"file": "invalid_price_data.csv", "contentType": "text/csv"}


@pytest.mark.parametrize("method", ["GET"])
async def test_mutations_over_get_are_refused(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, "/graphql", params={"query": 'mutation { createSupplier(name: "X") { errors { code } } }'})
    assert response.status_code in (400, 405)


async def test_archive_price_lists_keeps_history_reachable(
    client: httpx.AsyncClient, conn: asyncpg.Connection, empty_catalog: PostgresBackend
) -> None:
    from datetime import UTC, datetime

    from backends.imports import import_price_list

    supplier = await conn.fetchval("INSERT INTO suppliers (name) VALUES ('ЗАО «Архив»') RETURNING id")
    for version in (1, 2, 3):
        await import_price_list(empty_catalog, supplier, SAMPLES / f"test_price_v{version}.csv",
                                effective_at=datetime(2024, version, 1, tzinfo=UTC))
    archived = await gql_data(client, 'mutation { archivePriceLists(before: "2024-02-15T00:00:00Z") }')
    assert archived == {"archivePriceLists": 1}  # v1 was superseded on Feb 1; v2 on Mar 1
    statuses = [r["status"] for r in await conn.fetch("SELECT status FROM price_lists ORDER BY version")]
    assert statuses == ["ARCHIVED", "SUPERSEDED", "ACTIVE"]
    cement = await conn.fetchval("SELECT id FROM materials WHERE name = 'Цемент М400'")
    history = await gql_data(client, "query($id: ID!) { material(id: $id) { priceHistory(first: 10) { edges { node { unitPrice } } } } }",
                             {"id": to_global_id("Material", cement)})
    assert len(history["material"]["priceHistory"]["edges"]) == 3
    naive = await gql(client, 'mutation { archivePriceLists(before: "2024-02-15T00:00:00") }')
    assert "time zone" in naive["errors"][0]["message"]


async def test_a_sku_taken_between_check_and_insert_is_a_conflict(
    client: httpx.AsyncClient, conn: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clients creating the same SKU at once: the unique index decides, the loser gets CONFLICT."""
    from backends import writes

    async def not_taken(*_: object) -> bool:  # the other transaction commits right after our check
        return False

    monkeypatch.setattr(writes, "_sku_taken", not_taken)
    await conn.execute("INSERT INTO materials (name, unit_code, sku) VALUES ('Кирпич', 'шт', 'BRK-9')")
    result = (await gql_data(client, CREATE, {"input": {"name": "Кирпич облицовочный", "unit": "шт", "sku": "BRK-9"}}))
    assert result["createMaterial"]["material"] is None
    assert [(e["field"], e["code"]) for e in result["createMaterial"]["errors"]] == [(["input", "sku"], "CONFLICT")]
    other = await conn.fetchval("INSERT INTO materials (name, unit_code) VALUES ('Щебень', 'м³') RETURNING id")
    patched = await gql_data(client, UPDATE, {"id": to_global_id("Material", other), "patch": {"sku": "BRK-9"}})
    assert [e["code"] for e in patched["updateMaterial"]["errors"]] == ["CONFLICT"]
    assert await conn.fetchval("SELECT count(*) FROM events") == 0
