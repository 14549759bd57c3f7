"""The set of DataLoaders one request uses, built fresh for each request."""

from __future__ import annotations

from dataclasses import dataclass

from backends.cache import CacheView
from backends.catalog import CatalogReader
from backends.prices import PriceReader
from loaders.base import Companion, category_of, supplier_of, unit_of
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


@dataclass(frozen=True)
class RequestLoaders:
    material_by_id: MaterialByIdLoader
    material_by_sku: MaterialBySkuLoader
    materials_by_category: MaterialsByCategoryLoader
    material_count_by_category: MaterialCountByCategoryLoader
    category_by_id: CategoryByIdLoader
    categories_by_parent: CategoriesByParentLoader
    unit_by_code: UnitByCodeLoader
    unit_code_by_alias: UnitCodeByAliasLoader
    supplier_by_id: SupplierByIdLoader
    current_prices_by_material: CurrentPricesByMaterialLoader
    price_history_by_material: PriceHistoryByMaterialLoader
    prices_by_price_list: PricesByPriceListLoader
    price_list_by_id: PriceListByIdLoader
    price_lists_by_supplier: PriceListsBySupplierLoader

    @classmethod
    def build(cls, catalog: CatalogReader, prices: PriceReader, cache: CacheView | None = None) -> RequestLoaders:
        """With `cache`, the loaders by key read through it (loaders.cached); pages do not."""
        category_by_id = CategoryByIdLoader(catalog, cache)
        unit_by_code = UnitByCodeLoader(catalog, cache)
        supplier_by_id = SupplierByIdLoader(catalog, cache)
        # Rows read with a material or a price fill these loaders (loaders.base.Companion).
        with_material = _material_companions(category_by_id, unit_by_code)
        with_price = (Companion(supplier_by_id, supplier_of),)
        return cls(
            material_by_id=MaterialByIdLoader(catalog, with_material, cache),
            material_by_sku=MaterialBySkuLoader(catalog, with_material, cache),
            materials_by_category=MaterialsByCategoryLoader(catalog, with_material),
            material_count_by_category=MaterialCountByCategoryLoader(catalog),
            category_by_id=category_by_id,
            categories_by_parent=CategoriesByParentLoader(catalog, cache),
            unit_by_code=unit_by_code,
            unit_code_by_alias=UnitCodeByAliasLoader(catalog),
            supplier_by_id=supplier_by_id,
            current_prices_by_material=CurrentPricesByMaterialLoader(prices, with_price, cache),
            price_history_by_material=PriceHistoryByMaterialLoader(prices, with_price),
            prices_by_price_list=PricesByPriceListLoader(prices),
            price_list_by_id=PriceListByIdLoader(prices, cache),
            price_lists_by_supplier=PriceListsBySupplierLoader(prices),
        )

    def material_companions(self) -> tuple[Companion, ...]:
        """What a page of material rows read outside a loader primes (resolvers.catalog)."""
        return _material_companions(self.category_by_id, self.unit_by_code)


def _material_companions(category_by_id: CategoryByIdLoader, unit_by_code: UnitByCodeLoader) -> tuple[Companion, ...]:
    return (Companion(category_by_id, category_of), Companion(unit_by_code, unit_of))
