-- Which of the events a write touched can have rows in delivery_state (delivery_state.sql):
-- the writer re-derives the state of these only (`derive`), and deletes the stored state rows
-- of the touched events that have some (`stored`) — often neither. Every other touched event is fine for sure,
-- and has no state row: it is stored with routed_queues NULL (no routing known, so no
-- undelivered or unroutable queue), it has deliveries (so it is not unrouted), every one of
-- them acked (so no latest attempt is failed, unacked, requeued or unknown), and no dead
-- letter. An id without an events row has no state row either (delivery_state.sql joins ev).
-- This list must stay a superset of the ids delivery_state.sql returns rows for: a rule added
-- there that can fire for such an event must be added here (tests/store/test_delivery_state.py
-- compares the maintained state with the state derived from the tables).
WITH
    ev AS (
        SELECT event_id, bool_or(routed_queues IS NOT NULL) AS routed
        FROM events
        WHERE event_id IN (SELECT event_id FROM _eventscope_touched) AND event_id BETWEEN $lo AND $hi
        GROUP BY event_id
    ),
    dels AS (
        SELECT event_id, bool_or(outcome IS DISTINCT FROM 'ack') AS open
        FROM deliveries
        WHERE event_id IN (SELECT event_id FROM _eventscope_touched) AND event_id BETWEEN $lo AND $hi
        GROUP BY event_id
    ),
    deaths AS (
        SELECT DISTINCT event_id
        FROM dead_letters
        WHERE event_id IN (SELECT event_id FROM _eventscope_touched) AND event_id BETWEEN $lo AND $hi
    )
SELECT ev.event_id, 'derive' AS what
FROM ev
LEFT JOIN dels USING (event_id)
WHERE ev.routed OR dels.event_id IS NULL OR dels.open OR ev.event_id IN (SELECT event_id FROM deaths)
UNION ALL
SELECT DISTINCT event_id, 'stored' AS what
FROM delivery_state
WHERE event_id IN (SELECT event_id FROM _eventscope_touched) AND event_id BETWEEN $lo AND $hi
