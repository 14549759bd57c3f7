"""application/graphql-response+json for clients that accept it; application/json as before."""

from __future__ import annotations

import httpx

GQL_RESPONSE = "application/graphql-response+json"


async def test_request_errors_are_400_without_data_for_graphql_response_clients(client: httpx.AsyncClient) -> None:
    headers = {"accept": f"{GQL_RESPONSE}, application/json;q=0.9"}
    for body in ({"query": "{"}, {"query": "{ nope }"}, {"query": "query($n: Int!) { units { code } }"},
                 {"query": "{ materials(first: 5000) { totalCount } }"}):
        response = await client.post("/graphql", json=body, headers=headers)
        assert response.status_code == 400, body
        assert response.headers["content-type"].startswith(GQL_RESPONSE)
        assert "data" not in response.json() and response.json()["errors"]
    ok = await client.post("/graphql", json={"query": "{ units { code } }"}, headers=headers)
    assert ok.status_code == 200 and ok.headers["content-type"].startswith(GQL_RESPONSE)
    # An error while executing (it has a path) is a result, not a request error: 200 with data.
    field = await client.post("/graphql", json={"query": '{ material(id: "bm9wZQ==") { name } }'}, headers=headers)
    assert field.status_code == 200 and field.json()["data"] == {"material": None}
    assert field.json()["errors"][0]["path"] == ["material"]


async def test_application_json_clients_keep_the_legacy_answers(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json={"query": "{ nope }"}, headers={"accept": "application/json"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json()["data"] is None
