-- wrk script: POST one OTLP body (path in env BODY_FILE) with its content type.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/x-protobuf"
local auth = os.getenv("AUTHORIZATION")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end

done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("RESULT requests=%d duration_us=%d non2xx=%d connect_errors=%d timeouts=%d p50_us=%d p90_us=%d p99_us=%d\n",
    summary.requests, summary.duration, non2xx, summary.errors.connect, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
