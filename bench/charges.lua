-- wrk script for bench/bench_charges.py: replay pre-built, signed POST /v1/charges requests.
--
--   wrk -t T -c C -d Ds -s bench/charges.lua URL -- FILE EXPECTED_STATUS MODE
--
-- FILE holds one request per line, tab-separated:
--   key_id  timestamp  nonce  signature  idempotency_key  body
-- Thread k of T takes lines k, k+T, k+2T, ... (disjoint slices). MODE "once" hands each
-- request out at most once; when a thread's slice runs out it sends GET /healthz instead and
-- counts it as exhausted (the run exceeded what was generated). MODE "cycle" wraps around
-- (for the bare endpoint, where nothing is single-use). done() prints one line
-- "RESULT {json}" that the Python side parses.

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("tid", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

local function split_tabs(line)
   local fields = {}
   for field in string.gmatch(line, "([^\t]*)\t?") do
      table.insert(fields, field)
      if #fields == 6 then break end
   end
   return fields
end

function init(args)
   local path = args[1]
   expected = tonumber(args[2])
   cycle = args[3] == "cycle"
   local nthreads = tonumber(args[4])
   requests = {}
   local index = 0
   for line in io.lines(path) do
      if index % nthreads == tid then
         local f = split_tabs(line)
         local headers = {
            ["Content-Type"] = "application/json",
            ["Paycode-Key-Id"] = f[1],
            ["Paycode-Timestamp"] = f[2],
            ["Paycode-Nonce"] = f[3],
            ["Paycode-Signature"] = f[4],
            ["Idempotency-Key"] = f[5],
         }
         table.insert(requests, wrk.format("POST", "/v1/charges", headers, f[6]))
      end
      index = index + 1
   end
   fallback = wrk.format("GET", "/healthz")
   next_index = 1
   good = 0
   bad = 0
   exhausted = 0
   first_bad = ""
end

function request()
   if next_index > #requests then
      if cycle and #requests > 0 then
         next_index = 1
      else
         exhausted = exhausted + 1
         return fallback
      end
   end
   local req = requests[next_index]
   next_index = next_index + 1
   return req
end

function response(status, headers, body)
   if status == expected then
      good = good + 1
   else
      bad = bad + 1
      if first_bad == "" then
         first_bad = tostring(status) .. " " .. string.sub(body or "", 1, 300)
      end
   end
end

local function json_string(text)
   text = string.gsub(text, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end)
   return '"' .. text .. '"'
end

function done(summary, latency, requests_summary)
   local good_total, bad_total, exhausted_total, first = 0, 0, 0, ""
   for _, thread in ipairs(threads) do
      good_total = good_total + thread:get("good")
      bad_total = bad_total + thread:get("bad")
      exhausted_total = exhausted_total + thread:get("exhausted")
      if first == "" then first = thread:get("first_bad") end
   end
   local e = summary.errors
   io.write(string.format(
      'RESULT {"requests": %d, "duration_us": %d, "good": %d, "bad": %d, "exhausted": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, '
      .. '"status_errors": %d, "first_bad": %s}\n',
      summary.requests, summary.duration, good_total, bad_total, exhausted_total,
      latency:percentile(50), latency:percentile(90), latency:percentile(95),
      latency:percentile(99), latency.max,
      latency.mean, e.connect, e.read, e.write, e.timeout, e.status, json_string(first)))
end
