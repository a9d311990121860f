#!/usr/bin/env bash
# The issue 6 marks of BENCHMARKS.md: appends, fan-out at 1,000 and 100 members, idle at 18,000.
# Build first: cargo build --release -p herald-cli. HERALD=path overrides the binary.
set -u
H=${HERALD:-${CARGO_TARGET_DIR:-target}/release/herald}
D=$(mktemp -d /tmp/hb.XXXX)
$H serve --data $D --listen 127.0.0.1:7811 --rate-per-sec 0 --max-conns-per-user 0 --max-conns-per-addr 0 --no-web >/tmp/hb-serve.log 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -s http://127.0.0.1:7811/healthz >/dev/null && break; sleep 0.1; done
B="$H bench --url http://127.0.0.1:7811 --data $D --pid $PID"
echo "== append x3"; for i in 1 2 3; do $B append 2>&1 | grep -E "appends/s|p50|p99|other" ; done
echo "== append --member-senders"; $B append --member-senders 2>&1 | grep -E "appends/s|other"
# The same with 4 requests in flight per connection, as a client that pipelines its sends does.
echo "== append --window 4 x3"; for i in 1 2 3; do $B append --messages 200000 --window 4 2>&1 | grep -E "appends/s|p99 |other" ; done
echo "== append --member-senders --window 4"; $B append --member-senders --window 4 2>&1 | grep -E "appends/s|other"
# The mark is 1.5 M deliveries/s: offer more than that (1,600 msgs/s × 1,000 members), and 1,200/s
# below saturation for its latency.
echo "== fanout (1000 members, 20 senders, 1600/s)"; $B fanout --senders 20 --rate 1600 --duration 5 2>&1 | grep -E "deliveries|p50|p99|bytes|missing|other|cpu"
echo "== fanout (1000 members, 20 senders, 1200/s)"; $B fanout --senders 20 --rate 1200 --duration 5 2>&1 | grep -E "deliveries|p50|p99|bytes|missing|other|cpu"
echo "== fanout 100 members x 700/s"; $B fanout --members 100 --senders 10 --rate 700 2>&1 | grep -E "deliveries|p50|p99|bytes|missing|other|cpu"
kill -TERM $PID; wait $PID
D2=$(mktemp -d /tmp/hb.XXXX)
$H serve --data $D2 --listen 127.0.0.1:7812 --rate-per-sec 0 --max-conns-per-user 0 --max-conns-per-addr 0 --no-web >/tmp/hb-serve2.log 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -s http://127.0.0.1:7812/healthz >/dev/null && break; sleep 0.1; done
echo "== idle 18000 (fresh server)"; $H bench --url http://127.0.0.1:7812 --data $D2 --pid $PID --sources 4 idle --conns 18000 2>&1 | tail -8
kill -TERM $PID; wait $PID
