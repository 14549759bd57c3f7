-- current_prices_best_idx (currency, unit_price, material_id) served no query: bestPrice, the
-- price filters and currentPrices all reach current_prices by material (its primary key), and
-- imports by supplier (current_prices_supplier_idx). Each import still wrote one entry per
-- current price at a random place of it: 0.35 of 0.65 CPU s to insert 100k current prices
-- (bench/README.md, imports.py).
DROP INDEX IF EXISTS current_prices_best_idx;
