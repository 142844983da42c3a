-- 0004_audit_context.sql: where an audited action came from (API.md, security.md).
ALTER TABLE audit_log
    ADD COLUMN ip text,
    ADD COLUMN request_id text;

-- filters of GET /api/admin/audit
CREATE INDEX audit_log_action_idx ON audit_log (action, id);
