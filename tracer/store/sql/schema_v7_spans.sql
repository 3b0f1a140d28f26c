-- eventscope store, schema version 7: spans without the (trace_id, span_id) primary key
-- (bench/README.md, "Collector").
--
-- Its ART index on two VARCHAR ids was ~205 of ~1,290 bytes on disk per span, and
-- INSERT OR IGNORE against it was the largest cost of each commit, growing with the table.
-- The writer keeps spans idempotent without it: a span is a replay when a stored span has
-- the same (trace_id, span_id) and start_time, looked up only among stored spans that start
-- within the batch's own time range (rows arrive in time order, so DuckDB skips the other
-- row groups by their min/max). The same columns in the same order.
--
-- attributes and links are stored with ZSTD instead of DuckDB's default string compression
-- (dictionary/FSST): the attribute JSON of messaging spans repeats its keys and most of its
-- values from span to span, which ZSTD's window finds and FSST's symbol table does not
-- (measured on 300k bench spans: 174 -> 76 bytes per span for the whole table). Ids keep the
-- default, which does better on random hex than ZSTD.
CREATE TABLE spans_v7 (
    trace_id        VARCHAR NOT NULL,
    span_id         VARCHAR NOT NULL,
    parent_span_id  VARCHAR,
    name            VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL,
    service         VARCHAR,
    start_time      TIMESTAMPTZ NOT NULL,
    end_time        TIMESTAMPTZ NOT NULL,
    duration_ms     DOUBLE NOT NULL,
    status          VARCHAR NOT NULL,
    attributes      JSON USING COMPRESSION zstd,
    links           JSON USING COMPRESSION zstd,
    event_id        VARCHAR
);
INSERT INTO spans_v7 SELECT * FROM spans ORDER BY start_time;
DROP TABLE spans;
ALTER TABLE spans_v7 RENAME TO spans;
