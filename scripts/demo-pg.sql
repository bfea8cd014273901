-- The demo database on PostgreSQL (scripts/postgres-demo.sh, the tests' fixture): the same
-- tables and rows as scripts/demo.sql builds in SQLite, and a read-only role for the workers.
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, country text NOT NULL);
CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer NOT NULL REFERENCES customers(id),
                     amount double precision NOT NULL, placed_at text NOT NULL);
INSERT INTO customers SELECT i, 'customer ' || i,
       CASE i % 5 WHEN 0 THEN 'DE' WHEN 1 THEN 'FR' WHEN 2 THEN 'US' WHEN 3 THEN 'JP' ELSE 'BR' END
  FROM generate_series(1, 1000) AS i;
-- 200,000 orders: the "moderate query" of the benchmarks aggregates over them.
INSERT INTO orders SELECT i, 1 + (i::bigint * 7919) % 1000, round(((i::bigint * 104729) % 100000) / 100.0, 2),
       to_char(date '2025-01-01' + (i % 365), 'YYYY-MM-DD')
  FROM generate_series(1, 200000) AS i;
CREATE INDEX orders_customer ON orders(customer_id);
CREATE SEQUENCE demo_seq;
ANALYZE;
