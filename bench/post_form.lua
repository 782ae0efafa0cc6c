-- wrk script for bench/throughput.py: POST the feedback form (application/x-www-form-urlencoded),
-- each request with a unique message so every stored entry is a distinct submission.
-- Arguments after "--": the policy version to name, and a tag that makes this run's messages unique.

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local prefix
local n = 0

function init(args)
  local version, tag = args[1], args[2]
  prefix = "policy_id=privacy&policy_version=" .. version .. "&page=%2Ffeedback%2F&message=bench+" .. tag
    .. "+t" .. id .. "+n"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  n = n + 1
  return wrk.format("POST", "/api/feedback", nil, prefix .. n)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
      .. '"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
