-- wrk script for jwtgate's load harness (benches/load/run.py).
--
--   wrk -t T -c C -d Ds -s load.lua URL -- EXPECT NTHREADS [TOKEN_FILE]
--
-- EXPECT      "2xx" or "401": the status class this workload should get; any
--             other response is counted as an error in the result lines.
-- NTHREADS    wrk's -t value, so each thread starts at its own slice of the
--             token file.
-- TOKEN_FILE  optional; one token per line. Each request sends
--             "Authorization: Bearer <next token>", round-robin per thread.
--             Without it, requests carry no Authorization header.
--
-- Every request is prebuilt in init(), so request() costs the same (an array
-- index) in every workload, with or without tokens.
--
-- done() prints machine-readable lines "JWTGATE_LOAD <key> <value>"; latency
-- values are microseconds.

local threads = {}
local next_id = 1

function setup(thread)
   thread:set("id", next_id)
   table.insert(threads, thread)
   next_id = next_id + 1
end

function init(args)
   expect = args[1] or "2xx"
   local nthreads = tonumber(args[2] or "1")
   local token_file = args[3]

   c2xx, c401, cother = 0, 0, 0

   local function headers_with(token)
      local h = {}
      for k, v in pairs(wrk.headers) do h[k] = v end
      if token then h["Authorization"] = "Bearer " .. token end
      return h
   end

   reqs = {}
   if token_file and token_file ~= "" then
      local f = assert(io.open(token_file, "r"))
      for line in f:lines() do
         line = line:gsub("%s+$", "")
         if line ~= "" then
            table.insert(reqs, wrk.format(nil, nil, headers_with(line)))
         end
      end
      f:close()
      assert(#reqs > 0, "no tokens in " .. token_file)
   else
      reqs[1] = wrk.format(nil, nil, headers_with(nil))
   end
   nreqs = #reqs
   -- thread k (1-based) starts at its own offset, so threads don't send the
   -- same token at the same moment; each then walks the whole list in order.
   idx = math.floor(((id or 1) - 1) * nreqs / math.max(nthreads, 1))
end

function request()
   idx = idx % nreqs + 1
   return reqs[idx]
end

function response(status, headers, body)
   if status >= 200 and status < 300 then
      c2xx = c2xx + 1
   elseif status == 401 then
      c401 = c401 + 1
   else
      cother = cother + 1
   end
end

function done(summary, latency, requests)
   local n2xx, n401, nother = 0, 0, 0
   local exp = "2xx"
   for _, t in ipairs(threads) do
      n2xx = n2xx + (t:get("c2xx") or 0)
      n401 = n401 + (t:get("c401") or 0)
      nother = nother + (t:get("cother") or 0)
      exp = t:get("expect") or exp
   end
   local e = summary.errors
   local socket_errors = e.connect + e.read + e.write + e.timeout
   local unexpected
   if exp == "401" then
      unexpected = n2xx + nother
   else
      unexpected = n401 + nother
   end
   local secs = summary.duration / 1e6
   local out = {
      { "expect", exp },
      { "duration_us", summary.duration },
      { "requests", summary.requests },
      { "bytes", summary.bytes },
      { "rps", string.format("%.2f", summary.requests / secs) },
      { "lat_min_us", latency.min },
      { "lat_mean_us", string.format("%.2f", latency.mean) },
      { "lat_max_us", latency.max },
      { "p50_us", latency:percentile(50) },
      { "p90_us", latency:percentile(90) },
      { "p99_us", latency:percentile(99) },
      { "p999_us", latency:percentile(99.9) },
      { "status_2xx", n2xx },
      { "status_401", n401 },
      { "status_other", nother },
      { "err_connect", e.connect },
      { "err_read", e.read },
      { "err_write", e.write },
      { "err_timeout", e.timeout },
      { "err_status_ge400", e.status },
      { "socket_errors", socket_errors },
      { "unexpected_status", unexpected },
      { "errors", socket_errors + unexpected },
   }
   for _, kv in ipairs(out) do
      io.write(string.format("JWTGATE_LOAD %s %s\n", kv[1], tostring(kv[2])))
   end
end
