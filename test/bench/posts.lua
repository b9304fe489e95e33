-- wrk script for POST /posts: each request is {"content": "..."} from the
-- next session token (one a line in the file given after "--").
-- done() prints the figures as one JSON line starting "BENCH_JSON ".
--   wrk -t2 -c16 -d15s -s posts.lua http://127.0.0.1:PORT/posts -- tokens.txt

local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local tokens = {}
local idx = 0
local n = 0

function init(args)
  local path = args[1]
  if path == nil then error("usage: wrk ... -s posts.lua URL -- TOKENS_FILE") end
  for line in io.lines(path) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  if #tokens == 0 then error("no tokens in " .. path) end
  idx = ((id or 0) * 17) % #tokens
end

function request()
  idx = idx % #tokens + 1
  n = n + 1
  local body = string.format(
    '{"content": "bench post %d-%d from wrk, a short sentence of ordinary length"}',
    id or 0, n)
  return wrk.format("POST", wrk.path, {
    ["Authorization"] = "Bearer " .. tokens[idx],
    ["Content-Type"] = "application/json",
  }, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d}, "latency_us": {"mean": %.1f, "stdev": %.1f, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "p99.9": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
