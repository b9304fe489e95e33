-- wrk script for GET /feed: each request carries the next session token
-- (one a line in the file given after "--") as Authorization: Bearer.
-- done() prints the figures as one JSON line starting "BENCH_JSON ".
--   wrk -t2 -c16 -d15s -s feed.lua http://127.0.0.1:PORT/feed -- tokens.txt

local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local tokens = {}
local idx = 0

function init(args)
  local path = args[1]
  if path == nil then error("usage: wrk ... -s feed.lua URL -- TOKENS_FILE") end
  for line in io.lines(path) do
    if #line > 0 then tokens[#tokens + 1] = line end
  end
  if #tokens == 0 then error("no tokens in " .. path) end
  -- threads start at different tokens
  idx = ((id or 0) * 17) % #tokens
end

function request()
  idx = idx % #tokens + 1
  return wrk.format("GET", wrk.path,
    { ["Authorization"] = "Bearer " .. tokens[idx] }, nil)
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
