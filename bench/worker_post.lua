-- wrk script for bench/worker.sh: POST /v1/analyze with JSON bodies read from
-- the file named by BENCH_BODIES (one body per line), cycling through them.
-- Requests are formatted once, up front, so wrk spends its time on the wire.
local requests = {}
local i = 0

function init(args)
  local path = os.getenv("BENCH_BODIES")
  local headers = { ["Content-Type"] = "application/json" }
  for body in io.lines(path) do
    requests[#requests + 1] = wrk.format("POST", nil, headers, body)
  end
  -- Threads start at different offsets so they do not send in lockstep.
  i = math.random(#requests)
end

function request()
  i = i % #requests + 1
  return requests[i]
end
