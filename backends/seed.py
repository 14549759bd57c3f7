"""Synthetic construction-materials catalog, loaded with COPY: categories, suppliers, materials,
monthly price lists with their price history, and the current prices of the active lists."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from backends.seed_vocabulary import (
    FAMILIES,
    ROOTS,
    SUPPLIER_FORMS,
    SUPPLIER_PREFIXES,
    SUPPLIER_STEMS,
    SUPPLIER_SUFFIXES,
    Family,
)

CHUNK_ROWS = 100_000  # rows per COPY: bounds memory and keeps each statement far below timeouts
Progress = Callable[[str, int], None]
NULL, NO_CALC = "\\N", "\\N\t\\N"  # COPY text format NULLs

MATERIAL_COLUMNS = ("sku", "name", "description", "category_id", "unit_code", "color", "attributes",
                    "created_at", "updated_at")
PRICE_COLUMNS = ("material_id", "supplier_id", "price_list_id", "unit_price", "currency", "calc_unit_code",
                 "unit_calc_price", "buy_price", "sale_price", "stock", "price_date", "valid_from")
# Upper bound of a supplier's stock, by sale unit.
STOCK_CAP = {"шт": 20000, "м³": 400, "т": 300, "мешок": 3000, "лист": 1500, "м²": 5000, "м": 6000,
             "п.м.": 4000, "рул": 600, "кг": 5000, "л": 2000}


@dataclass(frozen=True)
class SeedReport:
    """Rows created by one seed_catalog() call and how long it took."""

    categories: int
    suppliers: int
    materials: int
    price_lists: int
    prices: int
    current_prices: int
    seconds: float


@dataclass(slots=True)
class _Material:
    family: Family
    name: str
    color: str | None
    attributes: str  # JSON text
    base_price: float
    calc_factor: float  # calc-unit price = unit price * calc_factor (0: no calc unit)
    created: float = 0.0  # epoch seconds
    id: int = 0


@dataclass(slots=True)
class _Supplier:
    name: str
    items: list[int]  # material indexes, in list order
    late_from: int  # month from which the last item is listed (-1: all items from the first month)
    id: int = 0

    def listed(self, month: int) -> int:
        """How many of the items the list of that month holds."""
        return len(self.items) - (month < self.late_from)


def _allocate(total: int, weights: Sequence[float], caps: Sequence[int] | None = None) -> list[int]:
    """Splits total into integers proportional to weights, none above its cap (water-filling)."""
    n = len(weights)
    caps = list(caps) if caps is not None else [total] * n
    if total >= sum(caps):
        return caps
    shares = [0.0] * n
    free, left = set(range(n)), float(total)
    while free:
        weight = sum(weights[i] for i in free)
        over = {i for i in free if left * weights[i] / weight > caps[i]}
        if not over:
            for i in free:
                shares[i] = left * weights[i] / weight
            break
        for i in over:
            shares[i] = caps[i]
            left -= caps[i]
        free -= over
    out = [int(s) for s in shares]
    # Largest remainders take the rows lost to rounding down.
    for i in sorted(range(n), key=lambda i: out[i] - shares[i])[: total - sum(out)]:
        out[i] += 1
    return out


def _esc(text: str) -> str:
    """Escapes a value for COPY text format (backslash, tab and newlines are special there)."""
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


async def _copy_text(conn: asyncpg.Connection, table: str, columns: Sequence[str], lines: list[str]) -> None:
    # Text COPY rather than copy_records: rows are formatted with cheap f-strings, and jsonb
    # arrives as text whatever codec the connection has registered.
    data = "".join(lines).encode()

    async def source() -> AsyncIterator[bytes]:
        yield data

    await conn.copy_to_table(table, source=source(), columns=list(columns), format="text")


def _generate_materials(rng: random.Random, count: int) -> list[_Material]:
    """Distinct axis combinations per family while the name space lasts, repeats beyond it."""
    spaces = [math.prod(len(v) for v in f.axes.values()) for f in FAMILIES]
    weights = [f.weight for f in FAMILIES]
    counts = _allocate(min(count, sum(spaces)), weights, spaces)
    if count > sum(spaces):
        counts = [a + b for a, b in zip(counts, _allocate(count - sum(spaces), weights), strict=True)]
    out: list[_Material] = []
    for family, space, n in zip(FAMILIES, spaces, counts, strict=True):
        axes = list(family.axes.items())
        picks = rng.sample(range(space), n) if n <= space else [*range(space), *rng.choices(range(space), k=n - space)]
        for pick in picks:
            texts: dict[str, str] = {}
            attrs: dict[str, object] = {}
            mult = 1.0
            for key, options in axes:
                pick, r = divmod(pick, len(options))
                text, m, attr = options[r]
                texts[key] = text
                mult *= m
                if attr is not None:
                    attrs[key] = attr
            calc = 0.0
            if family.calc is not None:
                _, key, per = family.calc
                qty = per if key is None else float(attrs[key]) if per is None else per / float(attrs[key])
                calc = 1.0 / qty
            out.append(_Material(
                family, " ".join(family.template.format_map(texts).split()), texts.get("color"),
                json.dumps(attrs, ensure_ascii=False), family.price * mult * rng.uniform(0.9, 1.1), calc))
    return out


async def _categories(conn: asyncpg.Connection) -> tuple[dict[tuple[str, str], int], int]:
    """Gets or creates the root/leaf tree; returns leaf ids by (root, leaf) and how many were created."""
    leaves: dict[str, list[str]] = {root: [] for root in ROOTS}
    for family in FAMILIES:
        if family.leaf not in leaves[family.root]:
            leaves[family.root].append(family.leaf)
    ids: dict[tuple[str, str], int] = {}
    created = 0

    async def get_or_create(parent: tuple[int, list[int]] | None, name: str) -> tuple[int, list[int]]:
        nonlocal created
        parent_id = parent[0] if parent else None
        row = await conn.fetchrow(
            "SELECT id, path FROM categories WHERE coalesce(parent_id, 0) = coalesce($1::bigint, 0) "
            "AND lower(name) = lower($2)", parent_id, name)
        if row is not None:
            return row["id"], list(row["path"])
        cid = await conn.fetchval("INSERT INTO categories (parent_id, name) VALUES ($1, $2) RETURNING id",
                                  parent_id, name)
        path = [*(parent[1] if parent else []), cid]
        await conn.execute("UPDATE categories SET path = $2 WHERE id = $1", cid, path)
        created += 1
        return cid, path

    for root, names in leaves.items():
        root_row = await get_or_create(None, root)
        for leaf in names:
            ids[root, leaf] = (await get_or_create(root_row, leaf))[0]
    return ids, created


async def _supplier_names(conn: asyncpg.Connection, rng: random.Random, count: int) -> list[str]:
    """Company names not yet taken (suppliers are unique on lower(name))."""
    taken = {r[0] for r in await conn.fetch("SELECT lower(name) FROM suppliers")}
    parts = (SUPPLIER_FORMS, SUPPLIER_PREFIXES, SUPPLIER_STEMS, SUPPLIER_SUFFIXES)
    space = math.prod(len(p) for p in parts)
    out: list[str] = []
    for round_no in range(1, count + 2):
        # Past the plain name space (repeated seeding), names get a branch number.
        tag = "" if round_no == 1 else f"-{round_no}"
        for pick in rng.sample(range(space), space):
            words = []
            for choices in parts:
                pick, r = divmod(pick, len(choices))
                words.append(choices[r])
            name = f"{words[0]} «{words[1]}{words[2]}{words[3]}{tag}»"
            if name.lower() not in taken:
                taken.add(name.lower())
                out.append(name)
                if len(out) == count:
                    return out
    return out


def _plan_suppliers(rng: random.Random, mats: list[_Material], names: list[str], prices: int,
                    months: int) -> list[_Supplier]:
    """Assortments: most suppliers keep to 2-4 root categories; sizes add up to prices / months."""
    by_root: dict[str, list[int]] = {}
    for i, m in enumerate(mats):
        by_root.setdefault(m.family.root, []).append(i)
    per_month = prices // months
    sizes = _allocate(per_month, [rng.lognormvariate(0, 0.7) for _ in names], [len(mats)] * len(names))
    out = []
    for name, size in zip(names, sizes, strict=True):
        roots = rng.sample(sorted(by_root), min(len(by_root), rng.randint(2, 4)))
        pool = [i for root in roots for i in by_root[root]] if rng.random() < 0.7 else []
        items = rng.sample(pool, size) if len(pool) >= size > 0 else rng.sample(range(len(mats)), size)
        out.append(_Supplier(name, items, -1))
    # The prices % months rows left over: an item supplier 0 began listing that many months ago.
    rest = prices - months * per_month if sum(sizes) == per_month else 0
    if rest and out and len(out[0].items) < len(mats):
        listed = set(out[0].items)
        out[0].items.append(rng.choice([i for i in range(len(mats)) if i not in listed]))
        out[0].late_from = months - rest
    return out


def _month(base: datetime, offset: int) -> datetime:
    index = base.year * 12 + base.month - 1 + offset
    return base.replace(year=index // 12, month=index % 12 + 1)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


async def seed_catalog(conn: asyncpg.Connection, *, materials: int = 2000, prices: int = 20000,
                       suppliers: int | None = None, months: int = 24, seed: int = 42,
                       progress: Progress | None = None) -> SeedReport:
    """Appends a synthetic catalog (same seed, same names and prices) in the caller's transaction.

    progress(stage, rows) is called after each chunk with the rows that chunk added.
    """
    if materials < 0 or prices < 0 or months < 1 or (suppliers is not None and suppliers < 1):
        raise ValueError("materials and prices must be >= 0, months and suppliers >= 1")
    started = time.perf_counter()
    report = progress or (lambda stage, rows: None)
    rng = random.Random(f"{seed}:prices")  # separate streams: names do not depend on the DB's contents
    units = {f.unit for f in FAMILIES} | {f.calc[0] for f in FAMILIES if f.calc}
    known = await conn.fetchval("SELECT array_agg(code) FROM units WHERE code = ANY($1::text[])", sorted(units))
    if missing := units - set(known or ()):
        raise RuntimeError(f"units {sorted(missing)} are not in the units table: apply the migrations first")

    leaf_ids, n_categories = await _categories(conn)
    report("categories", n_categories)

    mats = _generate_materials(random.Random(f"{seed}:materials"), materials)
    names = await _supplier_names(conn, random.Random(f"{seed}:suppliers"),
                                  suppliers or max(5, min(300, materials // 300)))
    sups = _plan_suppliers(rng, mats, names, prices, months)
    now = datetime.now(UTC)
    first = _month(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), 1 - months)
    start, now_ts = first.timestamp(), now.timestamp()

    rows = await conn.fetch(
        "INSERT INTO suppliers (name, created_at) SELECT * FROM unnest($1::text[], $2::timestamptz[]) "
        "RETURNING id, name", names, [first - timedelta(days=rng.uniform(30, 720)) for _ in names])
    ids = {r["name"]: r["id"] for r in rows}
    for s in sups:
        s.id = ids[s.name]
    report("suppliers", len(sups))

    # Materials a supplier lists from the first month existed before it; the rest arrive later.
    priced = {i for s in sups for i in s.items}
    for i, m in enumerate(mats):
        lo = start - 180 * 86400
        m.created = lo + rng.random() * ((start if i in priced else now_ts) - lo)
    base = await conn.fetchval(
        "SELECT coalesce(max(substring(sku FROM '^[A-Z]{3}-([0-9]+)$')::bigint), 0) FROM materials")
    lines: list[str] = []

    async def flush(table: str, columns: Sequence[str]) -> int:
        nonlocal lines
        rows, lines = lines, []
        if rows:
            await _copy_text(conn, table, columns, rows)
            report(table, len(rows))
        return len(rows)

    skus = [""] * len(mats)
    for number, i in enumerate(sorted(range(len(mats)), key=lambda i: mats[i].created), start=base + 1):
        m, f = mats[i], mats[i].family
        skus[i] = sku = f"{f.code}-{number:07d}"
        desc = _esc(f.note) if rng.random() < 0.85 else NULL
        updated = m.created + (now_ts - m.created) * rng.random() ** 2
        lines.append(f"{sku}\t{_esc(m.name)}\t{desc}\t{leaf_ids[f.root, f.leaf]}\t{f.unit}\t"
                     f"{_esc(m.color) if m.color else NULL}\t{_esc(m.attributes)}\t"
                     f"{_iso(m.created)}\t{_iso(updated)}\n")
        if len(lines) == CHUNK_ROWS:
            await flush("materials", MATERIAL_COLUMNS)
    await flush("materials", MATERIAL_COLUMNS)
    # A join with the list, not `sku = ANY($1)`: inside the seed's transaction the planner has
    # no statistics and scanned the table once per array element's worth (1M materials: hours).
    by_sku = dict(await conn.fetch(
        "SELECT m.sku, m.id FROM unnest($1::text[]) AS s(sku) JOIN materials m ON m.sku = s.sku", skus))
    for i, m in enumerate(mats):
        m.id = by_sku[skus[i]]

    # One list per supplier and month; the current month's list is ACTIVE, the older ones superseded.
    effective = {}
    for s in sups:
        for mo in range(months):
            month = _month(first, mo)
            span = min(5 * 86400.0, (now - month).total_seconds())  # never in the future
            effective[s.id, mo] = month + timedelta(seconds=rng.random() * span)
    cols: list[list[object]] = [[] for _ in range(9)]
    for s in sups:
        for mo in range(months):
            eff = effective[s.id, mo]
            values = (s.id, mo + 1, "ACTIVE" if mo == months - 1 else "SUPERSEDED", f"price-{eff:%Y-%m}.csv",
                      f"{rng.getrandbits(128):032x}", eff - timedelta(minutes=rng.uniform(1, 600)), eff,
                      effective.get((s.id, mo + 1)), s.listed(mo))
            for col, value in zip(cols, values, strict=True):
                col.append(value)
    rows = await conn.fetch(
        "INSERT INTO price_lists (supplier_id, version, status, filename, checksum, uploaded_at, effective_at, "
        "superseded_at, row_count) SELECT * FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], "
        "$5::text[], $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::int[]) "
        "RETURNING id, supplier_id, version", *cols)
    list_ids = {(r["supplier_id"], r["version"] - 1): r["id"] for r in rows}
    report("price_lists", len(rows))

    await conn.execute("SELECT ensure_price_partitions($1, $2)", first, now)
    state = []
    for s in sups:
        factor = rng.uniform(0.93, 1.08)
        items = [mats[i] for i in s.items]
        state.append((
            [str(m.id) for m in items],
            [m.base_price * factor * rng.uniform(0.97, 1.03) for m in items],
            [0.8 + 0.12 * rng.random() for _ in items],  # buy price / unit price
            [1.04 + 0.14 * rng.random() for _ in items],  # sale price / unit price
            [(f"{m.family.calc[0]}\t", m.calc_factor) if m.family.calc else None for m in items],
            [STOCK_CAP.get(m.family.unit, 1000) for m in items],
        ))
    rand, total = rng.random, 0
    for mo in range(months):
        for s, (mids, cur, buy, sale, calcs, caps) in zip(sups, state, strict=True):
            eff = effective[s.id, mo]
            head, tail = f"\t{s.id}\t{list_ids[s.id, mo]}\t", f"\t{eff.date().isoformat()}\t{eff.isoformat()}\n"
            for i in range(s.listed(mo)):
                # A random walk that mostly stands still and rises more often than it falls.
                x = rand()
                if x < 0.3:
                    cur[i] *= 1.0 + x * 0.15
                elif x > 0.95:
                    cur[i] *= 1.0 - (x - 0.95) * 0.8
                p, c = cur[i], calcs[i]
                calc = f"{c[0]}{p * c[1]:.2f}" if c else NO_CALC
                lines.append(f"{mids[i]}{head}{p:.2f}\tRUB\t{calc}\t{p * buy[i]:.2f}\t{p * sale[i]:.2f}\t"
                             f"{int(caps[i] * rand() ** 2)}{tail}")
            if len(lines) >= CHUNK_ROWS:
                total += await flush("prices", PRICE_COLUMNS)
    total += await flush("prices", PRICE_COLUMNS)

    status = await conn.execute(
        "INSERT INTO current_prices (material_id, supplier_id, price_id, price_list_id, unit_price, currency, "
        "calc_unit_code, unit_calc_price, buy_price, sale_price, stock, price_date, valid_from) "
        "SELECT material_id, supplier_id, id, price_list_id, unit_price, currency, calc_unit_code, "
        "unit_calc_price, buy_price, sale_price, stock, price_date, valid_from FROM prices "
        "WHERE price_list_id = ANY($1::bigint[]) AND valid_from >= $2",
        [list_ids[s.id, months - 1] for s in sups], _month(first, months - 1))
    current = int(status.split()[-1])
    report("current_prices", current)
    await conn.execute("ANALYZE categories, suppliers, materials, price_lists, prices, current_prices")
    return SeedReport(n_categories, len(sups), len(mats), len(rows), total, current,
                      round(time.perf_counter() - started, 3))
