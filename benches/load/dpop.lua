-- wrk script for the DPoP workloads of benches/load/dpop.py.
--
--   wrk -t T -c C -d Ds -s dpop.lua URL -- EXPECT NTHREADS REQUEST_FILE
--
-- The arguments are load.lua's, so run.py's run_wrk drives both scripts.
-- REQUEST_FILE's first line is the Authorization header's value ("Bearer
-- <token>" or "DPoP <token>"); each further line is one DPoP proof. Without
-- proofs every request is the same (the bearer workload). With them each
-- request carries the next proof of its thread's own slice of the file, so
-- no proof is ever sent twice: a proof the gateway saw before is refused as
-- replayed. A thread that runs out of proofs stops and counts the request
-- it could not make (`proofs_exhausted`): the run is then void, since the
-- load ended early.
--
-- The bearer workload sends one prebuilt request; a DPoP request is built
-- in request() (two string concatenations): wrk's cost, not the gateway's.
--
-- done() prints load.lua's "JWTGATE_LOAD <key> <value>" lines (a request
-- without its proof is a 401 there), and proofs_exhausted.

-- load.lua's setup, response and done; init and request are this file's.
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "load.lua")

local threads = {}
local load_setup, load_done = setup, done

function setup(thread)
   load_setup(thread)
   table.insert(threads, thread)
end

function init(args)
   expect = args[1] or "2xx"
   local nthreads = math.max(tonumber(args[2] or "1"), 1)
   local request_file = assert(args[3], "dpop.lua needs a request file")

   c2xx, c401, cother, exhausted = 0, 0, 0, 0

   local lines = {}
   local f = assert(io.open(request_file, "r"))
   for line in f:lines() do
      line = line:gsub("%s+$", "")
      if line ~= "" then table.insert(lines, line) end
   end
   f:close()
   assert(#lines > 0, "no Authorization value in " .. request_file)

   head = "GET " .. wrk.path .. " HTTP/1.1\r\nHost: " .. wrk.headers["Host"] ..
      "\r\nAuthorization: " .. lines[1] .. "\r\n"
   plain = head .. "\r\n"

   -- thread k (1-based) owns proofs [first, last] of the file's proofs.
   proofs = {}
   local nproofs = #lines - 1
   local first = math.floor((id - 1) * nproofs / nthreads) + 1
   local last = math.floor(id * nproofs / nthreads)
   for i = first, last do
      table.insert(proofs, lines[i + 1])
   end
   with_proofs = nproofs > 0
   used = 0
end

function request()
   if not with_proofs then
      return plain
   end
   used = used + 1
   local proof = proofs[used]
   if proof == nil then
      exhausted = exhausted + 1
      wrk.thread:stop()
      -- Something must be sent; without a proof it is refused (401).
      return plain
   end
   return head .. "DPoP: " .. proof .. "\r\n\r\n"
end

function done(summary, latency, requests)
   load_done(summary, latency, requests)
   local n = 0
   for _, t in ipairs(threads) do
      n = n + (t:get("exhausted") or 0)
   end
   io.write(string.format("JWTGATE_LOAD proofs_exhausted %d\n", n))
end
