-- eventscope store, schema version 5: flow ids on causal edges (tracer/flows.py).
--
-- causal_edges.flow_id (extension column): the id of the edge's flow, a connected component of
-- causal_edges; connected edges always carry the same one. chain() and the upstream walk read
-- only the edges of the root's flow instead of building a hash table over the whole table on
-- every call. The writer sets it for each edge it stores; the collector fills it for the edges
-- already there when it opens a file migrated to this version.
ALTER TABLE causal_edges ADD COLUMN flow_id VARCHAR;
