#!/usr/bin/env bash
# A/B of two server builds in the same minutes, one bench binary: HERALD_OLD=… HERALD_NEW=… bash bench/ab.sh
set -u
BENCH=${HERALD_NEW:?}
for which in old new; do
  if [ "$which" = old ]; then H=${HERALD_OLD:?}; else H=$HERALD_NEW; fi
  D=$(mktemp -d /tmp/hab.XXXX)
  $H serve --data $D --listen 127.0.0.1:7821 --rate-per-sec 0 >/tmp/hab-$which.log 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do curl -s http://127.0.0.1:7821/healthz >/dev/null && break; sleep 0.1; done
  B="$BENCH bench --url http://127.0.0.1:7821 --data $D --pid $PID"
  echo "== $which append x2"; for i in 1 2; do $B append 2>&1 | grep -E "appends/s|other" ; done
  echo "== $which fanout 1000 x 1200"; $B fanout --senders 20 --rate 1200 --duration 5 2>&1 | grep -E "deliveries/s|p99 \(|other"
  kill -TERM $PID; wait $PID
done
