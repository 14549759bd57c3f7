"""The set of DataLoaders one request uses, built fresh for each request."""

from __future__ import annotations

from functools import cached_property

from backends.cache import CacheView
from backends.catalog import CatalogReader
from backends.prices import PriceReader
from loaders.base import Companion, category_key, category_of, supplier_key, supplier_of, unit_key, unit_of
from loaders.category import CategoriesByParentLoader, CategoryByIdLoader
from loaders.material import (
    MaterialByIdLoader,
    MaterialBySkuLoader,
    MaterialCountByCategoryLoader,
    MaterialsByCategoryLoader,
)
from loaders.price import (
    CurrentPricesByMaterialLoader,
    PriceHistoryByMaterialLoader,
    PriceListByIdLoader,
    PriceListsBySupplierLoader,
    PricesByPriceListLoader,
)
from loaders.supplier import SupplierByIdLoader
from loaders.unit import UnitByCodeLoader, UnitCodeByAliasLoader


class RequestLoaders:
    """A request's DataLoaders, each made on its first use: most operations touch two or
    three of the fourteen, and making all of them cost a W2 request ~16-40 us."""

    def __init__(self, catalog: CatalogReader, prices: PriceReader, cache: CacheView | None = None) -> None:
        self._catalog = catalog
        self._prices = prices
        self._cache = cache

    @classmethod
    def build(cls, catalog: CatalogReader, prices: PriceReader, cache: CacheView | None = None) -> RequestLoaders:
        """With `cache`, the loaders by key read through it (loaders.cached); pages do not."""
        return cls(catalog, prices, cache)

    def material_companions(self) -> tuple[Companion, ...]:
        """What a page of material rows read outside a loader primes (resolvers.catalog)."""
        return self._material_companions

    @cached_property
    def _material_companions(self) -> tuple[Companion, ...]:
        return _material_companions(self.category_by_id, self.unit_by_code)

    @cached_property
    def _price_companions(self) -> tuple[Companion, ...]:
        return (Companion(self.supplier_by_id, supplier_of, supplier_key),)

    # Each loader is made once, on first access, and kept in the instance's __dict__
    # (functools.cached_property), so later reads are plain attribute reads.
    @cached_property
    def material_by_id(self) -> MaterialByIdLoader:
        return MaterialByIdLoader(self._catalog, self.material_companions(), self._cache)

    @cached_property
    def material_by_sku(self) -> MaterialBySkuLoader:
        return MaterialBySkuLoader(self._catalog, self.material_companions(), self._cache)

    @cached_property
    def materials_by_category(self) -> MaterialsByCategoryLoader:
        return MaterialsByCategoryLoader(self._catalog, self.material_companions())

    @cached_property
    def material_count_by_category(self) -> MaterialCountByCategoryLoader:
        return MaterialCountByCategoryLoader(self._catalog)

    @cached_property
    def category_by_id(self) -> CategoryByIdLoader:
        return CategoryByIdLoader(self._catalog, self._cache)

    @cached_property
    def categories_by_parent(self) -> CategoriesByParentLoader:
        return CategoriesByParentLoader(self._catalog, self._cache)

    @cached_property
    def unit_by_code(self) -> UnitByCodeLoader:
        return UnitByCodeLoader(self._catalog, self._cache)

    @cached_property
    def unit_code_by_alias(self) -> UnitCodeByAliasLoader:
        return UnitCodeByAliasLoader(self._catalog)

    @cached_property
    def supplier_by_id(self) -> SupplierByIdLoader:
        return SupplierByIdLoader(self._catalog, self._cache)

    @cached_property
    def current_prices_by_material(self) -> CurrentPricesByMaterialLoader:
        return CurrentPricesByMaterialLoader(self._prices, self._price_companions, self._cache)

    @cached_property
    def price_history_by_material(self) -> PriceHistoryByMaterialLoader:
        return PriceHistoryByMaterialLoader(self._prices, self._price_companions)

    @cached_property
    def prices_by_price_list(self) -> PricesByPriceListLoader:
        return PricesByPriceListLoader(self._prices)

    @cached_property
    def price_list_by_id(self) -> PriceListByIdLoader:
        return PriceListByIdLoader(self._prices, self._cache)

    @cached_property
    def price_lists_by_supplier(self) -> PriceListsBySupplierLoader:
        return PriceListsBySupplierLoader(self._prices)


def _material_companions(category_by_id: CategoryByIdLoader, unit_by_code: UnitByCodeLoader) -> tuple[Companion, ...]:
    return (Companion(category_by_id, category_of, category_key), Companion(unit_by_code, unit_of, unit_key))
