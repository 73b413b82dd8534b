-- uses: extend_ttl
-- KEYS: image:<repo>, images   ARGV: member, expiry, index member, now, gc ttl ms
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
extend_ttl(KEYS[1], ARGV[5])
return 1
