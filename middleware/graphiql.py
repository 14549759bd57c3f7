"""GraphiQL served from this server: assets come from a wheel, so it works offline."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

# The graphene-django-graphiql-static wheel ships React 17, GraphiQL 2 (UMD builds) and
# the graphql-ws client as plain files and depends on nothing; we serve them as-is.
ASSET_PACKAGE = "graphene_django_graphiql_static"
_ASSETS = ("graphiql.min.css", "react.production.min.js", "react-dom.production.min.js",
           "graphiql.min.js", "graphql-ws.min.js")

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Construction materials API · GraphiQL</title>
  <style>html, body, #graphiql {{ height: 100%; margin: 0; overflow: hidden; width: 100%; }}</style>
  <link rel="stylesheet" href="{prefix}/graphiql.min.css">
  <script src="{prefix}/react.production.min.js"></script>
  <script src="{prefix}/react-dom.production.min.js"></script>
  <script src="{prefix}/graphiql.min.js"></script>
  <script src="{prefix}/graphql-ws.min.js"></script>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script>
    const url = new URL(window.location.href);
    const wsUrl = (url.protocol === "https:" ? "wss://" : "ws://") + url.host + url.pathname;
    const fetcher = GraphiQL.createFetcher({{ url: url.pathname, subscriptionUrl: wsUrl }});
    ReactDOM.render(
      React.createElement(GraphiQL, {{ fetcher, defaultEditorToolsVisibility: true,
        defaultQuery: {default_query} }}),
      document.getElementById("graphiql"),
    );
  </script>
</body>
</html>
"""

DEFAULT_QUERY = """# Construction-materials catalog. Try:
query FirstMaterials {
  materials(first: 5) {
    totalCount
    edges {
      cursor
      node { id sku name unit { code } category { name } bestPrice { unitPrice currency supplier { name } } }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""


@dataclass(frozen=True)
class GraphiQLAssets:
    directory: Path
    url_prefix: str

    def page(self) -> str:
        import json

        return _PAGE.format(prefix=self.url_prefix, default_query=json.dumps(DEFAULT_QUERY))


def find_graphiql_assets(url_prefix: str = "/graphiql-assets") -> GraphiQLAssets | None:
    """The installed assets, or None (then the view falls back to Strawberry's CDN page)."""
    spec = importlib.util.find_spec(ASSET_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    directory = Path(spec.origin).parent / "static" / ASSET_PACKAGE
    if not all((directory / name).is_file() for name in _ASSETS):
        return None
    return GraphiQLAssets(directory, url_prefix)
