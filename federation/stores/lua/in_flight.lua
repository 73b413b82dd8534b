-- uses: live_counts
-- KEYS: inflight-members   ARGV: now, inflight key prefix
return live_counts(KEYS[1], ARGV[2], ARGV[1])
