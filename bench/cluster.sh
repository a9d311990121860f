#!/usr/bin/env bash
# Issue 7's figures (BENCHMARKS.md, "Several nodes"): durable appends and fan-out against 1, 2
# and 3 `herald serve` nodes sharing the machine's PostgreSQL (127.0.0.1:5432) and NATS
# (127.0.0.1:4222), then the cost of a delivery that crosses NATS. One box: this shows the
# shape of scaling, not absolute capacity (the nodes, PostgreSQL, NATS and the bench share its
# cores). Build first: cargo build --release -p herald-cli. HERALD=path overrides the binary.
set -u
H=${HERALD:-${CARGO_TARGET_DIR:-target}/release/herald}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
NATS=${NATS:-nats://127.0.0.1:4222}
W=$(mktemp -d /tmp/hc.XXXX)
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$W/secret"
PIDS=()

start_nodes() { # n database
  local n=$1 db=$2
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
  URLS=()
  for i in $(seq 1 "$n"); do
    local port=$((7820 + i))
    HERALD_SECRET_FILE="$W/secret" $H serve --data "$W/node$i" --listen 127.0.0.1:$port \
      --store "$PG/$db" --broker "$NATS" --node-id "bench-$i" \
      --rate-per-sec 0 --max-conns-per-user 0 >"$W/node$i.log" 2>&1 &
    PIDS+=($!)
    URLS+=("http://127.0.0.1:$port")
  done
  for u in "${URLS[@]}"; do
    for _ in $(seq 1 100); do curl -s "$u/healthz" >/dev/null && break; sleep 0.1; done
  done
  ALSO=$(IFS=,; echo "${URLS[*]:1}")
}

stop_nodes() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  PIDS=()
}
trap stop_nodes EXIT

bench() { # the bench against the current nodes
  local also=()
  [ -n "$ALSO" ] && also=(--also-url "$ALSO")
  $H bench --url "${URLS[0]}" "${also[@]}" --token-secret-file "$W/secret" "$@"
}

# The embedded default beside them, same shapes, for scale.
HERALD_SECRET_FILE="$W/secret" $H serve --data "$W/sqlite" --listen 127.0.0.1:7820 \
  --rate-per-sec 0 --max-conns-per-user 0 >"$W/sqlite.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -s http://127.0.0.1:7820/healthz >/dev/null && break; sleep 0.1; done
URLS=("http://127.0.0.1:7820"); ALSO=""
echo "== SQLite, 1 node: append (64 connections, 16 channels)"
bench append --channels 16 --messages 20000 2>&1 | grep -E "appends/s|p50|p99"
echo "== SQLite, 1 node: fanout (300 members, 10 senders, 600 msgs/s)"
bench fanout --members 300 --senders 10 --rate 600 2>&1 | grep -E "deliveries|p50|p99|missing"
stop_nodes

for n in 1 2 3; do
  start_nodes "$n" "herald_bench_$n"
  echo "== $n node(s): append (64 connections, 16 channels, spread over the nodes) x3"
  for _ in 1 2 3; do bench append --channels 16 --messages 20000 2>&1 | grep -E "appends/s|p50|p99"; done
  echo "== $n node(s): fanout (300 members, 10 senders, 600 msgs/s; members spread)"
  bench fanout --members 300 --senders 10 --rate 600 2>&1 | grep -E "deliveries|p50|p99|missing|node"
  stop_nodes
done

start_nodes 2 herald_bench_cross
echo "== 2 nodes: one sender on node 0, 100 members, 200 msgs/s: node 0's members local, node 1's across NATS"
bench fanout --members 100 --senders 1 --rate 200 2>&1 | grep -E "deliveries|p50|p99|missing|node"
stop_nodes
