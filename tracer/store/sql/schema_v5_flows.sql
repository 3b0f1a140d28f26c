-- eventscope store, schema version 5: flow ids on causal edges (tracer/flows.py).
--
-- causal_edges.flow_id (extension column): the id of the edge's flow, a connected component of
-- causal_edges; connected edges always carry the same one. chain() and the upstream walk read
-- only the edges of the root's flow instead of building a hash table over the whole table on
-- every call. The writer sets it for each edge it stores; the collector fills it for the edges
-- already there when it opens a file migrated to this version.
--
-- The table is rebuilt without its primary key (cause_event_id, effect_event_id): its ART
-- index on two VARCHAR ids cost ~100 bytes on disk per edge. The writer stores each edge once
-- without it, from the lookup it makes anyway for the flows a batch's edges join. The same
-- columns in the same order, plus flow_id.
CREATE TABLE causal_edges_v5 (
    cause_event_id   VARCHAR NOT NULL,
    effect_event_id  VARCHAR NOT NULL,
    via              VARCHAR NOT NULL,   -- 'causation_id' (header) | 'parentage' (span tree)
    flow_id          VARCHAR             -- filled by the collector (flows.rebuild) after this script
);
INSERT INTO causal_edges_v5
SELECT cause_event_id, effect_event_id, via, NULL FROM causal_edges ORDER BY cause_event_id;
DROP TABLE causal_edges;
ALTER TABLE causal_edges_v5 RENAME TO causal_edges;
