-- labels.dataset: the raw_metrics.source whose series a label describes (e.g. 'simulation:demo',
-- or the new source name of faults injected into stored real series); NULL = any source.
ALTER TABLE labels ADD COLUMN IF NOT EXISTS dataset VARCHAR;
