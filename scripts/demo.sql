-- The demo database that queries run against (built by scripts/make-demo-db.sh).
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
                     amount REAL NOT NULL, placed_at TEXT NOT NULL);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
INSERT INTO customers SELECT i, 'customer ' || i,
       CASE i % 5 WHEN 0 THEN 'DE' WHEN 1 THEN 'FR' WHEN 2 THEN 'US' WHEN 3 THEN 'JP' ELSE 'BR' END FROM n;
-- 200,000 orders: the "moderate query" of the benchmarks aggregates over them.
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
INSERT INTO orders SELECT i, 1 + (i * 7919) % 1000, round(((i * 104729) % 100000) / 100.0, 2),
       date('2025-01-01', '+' || (i % 365) || ' days') FROM n;
CREATE INDEX orders_customer ON orders(customer_id);
