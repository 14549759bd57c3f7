"""The Mutation root: material and supplier writes, price-list imports, archiving.

Expected failures (bad input, unknown ids, SKU conflicts, unusable files) come back in the
payload's `errors` with a field path and a code; every mutation leaves an audit record.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

import strawberry
from strawberry.file_uploads import Upload
from strawberry.scalars import JSON

from backends import audit, writes
from backends.archive import ArchiveResult, archive_price_lists
from backends.imports import SupplierNotFound, import_price_list
from backends.pricefile import PriceFileError
from backends.writes import UNSET, MaterialValues, Problem
from resolvers.context import Context
from resolvers.errors import InvalidArgument
from resolvers.ids import decode_id
from schema.material import Material
from schema.price import PriceList
from schema.supplier import Supplier

T = TypeVar("T")


@strawberry.enum
class ErrorCode(Enum):
    VALIDATION = "VALIDATION"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    FORBIDDEN = "FORBIDDEN"
    RATE_LIMITED = "RATE_LIMITED"
    UNAVAILABLE = "UNAVAILABLE"


@strawberry.type
class UserError:
    field: list[str] | None
    message: str
    code: ErrorCode

    @classmethod
    def of(cls, problem: Problem) -> UserError:
        return cls(field=[str(f) for f in problem.field] or None, message=problem.message, code=ErrorCode(problem.code))


@strawberry.input
class MaterialInput:
    sku: str | None = None
    name: str
    description: str | None = None
    category_id: strawberry.ID | None = None
    unit: str
    color: str | None = None
    attributes: JSON | None = None


@strawberry.input
class MaterialPatch:
    """Only the fields sent change; a field sent as null is cleared (name and unit cannot be)."""

    sku: str | None = strawberry.UNSET
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    category_id: strawberry.ID | None = strawberry.UNSET
    unit: str | None = strawberry.UNSET
    color: str | None = strawberry.UNSET
    attributes: JSON | None = strawberry.UNSET


@strawberry.type
class MaterialPayload:
    material: Material | None
    errors: list[UserError]


@strawberry.type
class DeletePayload:
    deleted_id: strawberry.ID | None
    errors: list[UserError]


@strawberry.type
class BulkMaterialsPayload:
    created: int
    updated: int
    errors: list[UserError]


@strawberry.type
class SupplierPayload:
    supplier: Supplier | None
    errors: list[UserError]


@strawberry.type
class ImportPriceListPayload:
    price_list: PriceList | None
    duplicate: bool
    errors: list[UserError]


@strawberry.type(description="What one archivePriceListsReport call archived.")
class ArchivePriceListsPayload:
    price_lists: int = strawberry.field(description="Lists whose prices moved to the archive in this call.")
    prices: int = strawberry.field(description="Price rows those lists had; priceHistory still returns them.")
    rows_moved: int = strawberry.field(description="Of those, rows copied one by one (months shared with live lists).")
    rows_attached: int = strawberry.field(description="Of those, rows in whole months detached and attached as they were.")
    partitions_attached: list[str] = strawberry.field(description="The archive partitions those months became.")
    errors: list[UserError]


async def _archive(info: strawberry.Info[Context, None], before: datetime) -> ArchiveResult:
    if before.tzinfo is None:
        raise InvalidArgument(["before"], "needs a time zone (e.g. 2024-01-01T00:00:00Z)")
    return await archive_price_lists(info.context.catalog.pg, before)


def _given(value: Any) -> Any:
    return UNSET if value is strawberry.UNSET else value


def _category(value: Any, path: list[str]) -> Any:
    if value is strawberry.UNSET or value is None:
        return _given(value)
    return decode_id(value, "Category", path)


def _values(source: MaterialInput | MaterialPatch, path: list[str]) -> MaterialValues:
    return MaterialValues(
        name=_given(source.name), sku=_given(source.sku), description=_given(source.description),
        category_id=_category(source.category_id, [*path, "categoryId"]), unit=_given(source.unit),
        color=_given(source.color), attributes=_given(source.attributes),
    )


def _plain(value: Any) -> Any:
    """Arguments as plain data for the audit: input objects without the fields not sent,
    uploads as their name and type (never their bytes)."""
    if value is strawberry.UNSET:
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not strawberry.UNSET}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not strawberry.UNSET}
    if hasattr(value, "filename") and hasattr(value, "read"):
        return {"file": value.filename, "contentType": getattr(value, "content_type", None)}
    return value


async def committed(info: strawberry.Info[Context, None]) -> None:
    """Drops what the write changed from every instance's cache before the mutation answers."""
    if info.context.cache is not None:
        await info.context.cache.committed()


def audited(operation: str) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Records every call of the resolver in the audit log: variables, outcome, errors."""

    def wrap(resolver: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(resolver)
        async def run(self: Any, info: strawberry.Info[Context, None], **kwargs: Any) -> T:
            pg = info.context.catalog.pg
            variables = _plain(kwargs)
            actor = info.context.actor  # the API key's prefix
            try:
                result = await resolver(self, info, **kwargs)
                if not getattr(result, "errors", None):  # a refused write wrote nothing
                    await committed(info)
            except Exception as exc:
                await audit.record(pg, operation, variables, "error", {"error": str(exc)}, actor=actor)
                raise
            errors = getattr(result, "errors", None)
            if errors:
                await audit.record(pg, operation, variables, "rejected",
                                   {"errors": [{"field": e.field, "message": e.message, "code": e.code.value}
                                               for e in errors]}, actor=actor)
            else:
                await audit.record(pg, operation, variables, "ok", actor=actor)
            return result

        return run

    return wrap


@strawberry.type
class Mutation:
    @strawberry.mutation
    @audited("createMaterial")
    async def create_material(self, info: strawberry.Info[Context, None], input: MaterialInput) -> MaterialPayload:
        row, problems = await writes.create_material(info.context.catalog.pg, _values(input, ["input"]))
        return MaterialPayload(material=Material.from_row(row) if row else None,
                               errors=[UserError.of(p) for p in problems])

    @strawberry.mutation
    @audited("updateMaterial")
    async def update_material(
        self, info: strawberry.Info[Context, None], id: strawberry.ID, patch: MaterialPatch
    ) -> MaterialPayload:
        material_id = decode_id(id, "Material", ["id"])
        row, problems = await writes.update_material(info.context.catalog.pg, material_id, _values(patch, ["patch"]))
        return MaterialPayload(material=Material.from_row(row) if row else None,
                               errors=[UserError.of(p) for p in problems])

    @strawberry.mutation
    @audited("deleteMaterial")
    async def delete_material(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> DeletePayload:
        problems = await writes.delete_material(info.context.catalog.pg, decode_id(id, "Material", ["id"]))
        return DeletePayload(deleted_id=None if problems else id, errors=[UserError.of(p) for p in problems])

    @strawberry.mutation
    @audited("upsertMaterials")
    async def upsert_materials(
        self, info: strawberry.Info[Context, None], input: list[MaterialInput]
    ) -> BulkMaterialsPayload:
        items = [_values(item, ["input", str(i)]) for i, item in enumerate(input)]
        created, updated, problems = await writes.upsert_materials(info.context.catalog.pg, items)
        return BulkMaterialsPayload(created=created, updated=updated, errors=[UserError.of(p) for p in problems])

    @strawberry.mutation
    @audited("createSupplier")
    async def create_supplier(self, info: strawberry.Info[Context, None], name: str) -> SupplierPayload:
        row, problems = await writes.create_supplier(info.context.catalog.pg, name)
        return SupplierPayload(supplier=Supplier.from_row(row) if row else None,
                               errors=[UserError.of(p) for p in problems])

    @strawberry.mutation(description="CSV, XLSX or JSON price list (multipart upload). "
                                     "All valid rows land in one transaction or none do.")
    @audited("importPriceList")
    async def import_price_list(
        self, info: strawberry.Info[Context, None], supplier_id: strawberry.ID, file: Upload,
        effective_at: datetime | None = None,
    ) -> ImportPriceListPayload:
        supplier = decode_id(supplier_id, "Supplier", ["supplierId"])
        pg = info.context.catalog.pg
        stream = getattr(file, "file", file)
        try:
            result = await import_price_list(pg, supplier, stream, filename=getattr(file, "filename", None),
                                             effective_at=effective_at)
        except SupplierNotFound:
            return ImportPriceListPayload(price_list=None, duplicate=False, errors=[
                UserError(field=["supplierId"], message="no such supplier", code=ErrorCode.NOT_FOUND)])
        except PriceFileError as exc:
            return ImportPriceListPayload(price_list=None, duplicate=False, errors=[
                UserError(field=["file"], message=str(exc), code=ErrorCode.VALIDATION)])
        await committed(info)  # before reading the new list back
        row = await info.context.loaders.price_list_by_id.load(result.price_list_id)
        return ImportPriceListPayload(price_list=PriceList.from_optional_row(row), duplicate=result.duplicate,
                                      errors=[])

    @strawberry.mutation(description="Moves price lists superseded before the date to the archive; returns how many.")
    @audited("archivePriceLists")
    async def archive_price_lists(self, info: strawberry.Info[Context, None], before: datetime) -> int:
        return (await _archive(info, before)).price_lists

    @strawberry.mutation(description="archivePriceLists, answered with what moved: lists, price rows, partitions. "
                                     "One transaction; a second call with the same date changes nothing.")
    @audited("archivePriceListsReport")
    async def archive_price_lists_report(
        self, info: strawberry.Info[Context, None], before: datetime
    ) -> ArchivePriceListsPayload:
        try:
            result = await _archive(info, before)
        except InvalidArgument as exc:
            return ArchivePriceListsPayload(price_lists=0, prices=0, rows_moved=0, rows_attached=0,
                                            partitions_attached=[], errors=[
                                                UserError(field=["before"], message=str(exc), code=ErrorCode.VALIDATION)])
        return ArchivePriceListsPayload(price_lists=result.price_lists, prices=result.prices,
                                        rows_moved=result.rows_moved, rows_attached=result.rows_attached,
                                        partitions_attached=result.partitions_attached, errors=[])
