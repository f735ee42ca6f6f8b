-- wrk script: POST each of a list of OTLP bodies once, then stop (bench/e2e.py).
-- BODIES_FILE holds the bodies, each preceded by its length as 10 decimal digits; PATH_OTLP is
-- the path. Once every body was sent, a connection asks GET /healthz until the last POST is
-- answered; then the thread stops and DONE_FILE is written. Prints one RESULT line.
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
local next_body, answered = 1, 0
local verified = false

request = function()
  -- wrk calls request() once before the run to check what it returns, and sends nothing.
  if not verified then
    verified = true
    return wrk.format("GET", "/healthz")
  end
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
    if answered == #bodies then
      -- wrk itself runs for its -d: tell bench/e2e.py, which then stops it (SIGINT).
      local done_file = os.getenv("DONE_FILE")
      if done_file then
        local f = assert(io.open(done_file, "w"))
        f:write("done\n")
        f:close()
      end
      wrk.thread:stop()
    end
  end
end

done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d connect_errors=%d timeouts=%d p50_us=%d p99_us=%d bodies=%d\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), #bodies))
end
