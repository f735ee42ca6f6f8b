-- wrk script: POST each of a list of OTLP bodies once, then stop (bench/e2e.py).
-- BODIES_FILE holds the bodies, each preceded by its length as 10 decimal digits; PATH_OTLP is
-- the path. Once every body was sent, a connection asks GET /healthz until the last POST is
-- answered, and the thread stops. Prints one RESULT line (posts, their non-2xx answers).
local bodies = {}
do
  local f = assert(io.open(os.getenv("BODIES_FILE"), "rb"))
  local data = f:read("*a")
  f:close()
  local at = 1
  while at <= #data do
    local n = tonumber(data:sub(at, at + 9))
    bodies[#bodies + 1] = data:sub(at + 10, at + 9 + n)
    at = at + 10 + n
  end
end
local path = os.getenv("PATH_OTLP") or "/v1/logs"
local headers = { ["Content-Type"] = "application/x-protobuf" }
local next_body, answered, failed = 1, 0, 0
local pending = {}

request = function()
  if next_body <= #bodies then
    local body = bodies[next_body]
    next_body = next_body + 1
    return wrk.format("POST", path, headers, body)
  end
  return wrk.format("GET", "/healthz")
end

response = function(status, headers, body)
  -- healthz answers are JSON; an OTLP protobuf answer is empty or partial success
  if headers["content-type"] ~= "application/json" then
    answered = answered + 1
    if status ~= 200 then failed = failed + 1 end
    if answered >= #bodies then wrk.thread:stop() end
  end
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d connect_errors=%d timeouts=%d p50_us=%d p99_us=%d bodies=%d\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), #bodies))
end
