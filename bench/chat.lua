-- wrk script for `make bench`: a non-streamed chat completion, and one machine-readable result
-- line (latencies in microseconds) that bench/run.sh collects.
wrk.method = "POST"
wrk.body = '{"model":"bench","messages":[{"role":"user","content":"Say something."}],"user":"bench-user"}'
wrk.headers["Content-Type"] = "application/json"
-- LiteLLM insists on a master key; the others pass the header through to the mock, which ignores it.
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_API_KEY") or "sk-bench")

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"socket_errors":%d,"non2xx":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"rps":%.1f}\n',
    summary.requests, summary.duration,
    errors.connect + errors.read + errors.write + errors.timeout, errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    summary.requests / (summary.duration / 1e6)))
end
