#!/usr/bin/env bash
# Installs (when missing), starts, checks and stops the services cronsumer's
# tests and local runs need: a Kafka-protocol broker (nisshi, a Rust
# Apache-Kafka-compatible broker) and PostgreSQL.
#
#   scripts/services.sh up       install what is missing, start, wait until each answers
#   scripts/services.sh tools    install the test tools that are missing (Debian's faketime,
#                                chromium and prometheus' promtool)
#   scripts/services.sh down     stop what this script started
#   scripts/services.sh status   say what answers
#   scripts/services.sh env      print the variables the tests read
#   scripts/services.sh broker-stop | broker-start | broker-kill   (fault tests)
#   scripts/services.sh pg-crash     PostgreSQL's immediate shutdown, its WAL writer stopped, then a start (fault tests)
#
# Ports stay off the usual 9092 so a developer's own Kafka is left alone.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The broker is found by its port, one per machine, so its data is kept in
# one place per machine too: a restart from another checkout (CI's clean
# clone) finds the same topics.
STATE="${CRONSUMER_SERVICES_DIR:-${XDG_STATE_HOME:-$HOME/.local/state}/cronsumer-services}"
BROKER_PORT="${CRONSUMER_BROKER_PORT:-19092}"
PG_HOST=127.0.0.1
PG_PORT="${CRONSUMER_PG_PORT:-5432}"
NISSHI_VERSION=0.8.1

log() { echo "services: $*" >&2; }
die() { echo "services: error: $*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() { # host port seconds what
  local deadline=$((SECONDS + $3))
  until port_open "$1" "$2"; do
    [ $SECONDS -lt $deadline ] || die "$4 did not answer on $1:$2 within $3 s"
    sleep 0.2
  done
}

ensure_nisshi() {
  export PATH="$HOME/.cargo/bin:$PATH"
  if command -v nisshi >/dev/null && nisshi --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then
    return
  fi
  log "installing nisshi $NISSHI_VERSION (about 10 minutes on 2 cores, once per machine)"
  # --ignore-rust-version: one dependency declares rustc 1.96; the build works on 1.95.
  cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version \
    --no-default-features --features dynostore,libsql >&2 || die "cannot install nisshi"
}

broker_start() {
  ensure_nisshi
  mkdir -p "$STATE/broker/data"
  if port_open 127.0.0.1 "$BROKER_PORT"; then
    log "broker already answers on 127.0.0.1:$BROKER_PORT"
    return
  fi
  # The storage path is relative to the working directory. `setsid -f` forks
  # the broker into a session of its own and returns at once; with every
  # stream redirected, nothing of the caller (e.g. a `$(...)`) waits on it.
  (cd "$STATE/broker" && RUST_LOG=warn setsid -f nisshi broker \
      --listener-url "tcp://127.0.0.1:$BROKER_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$BROKER_PORT" \
      --storage-engine sqlite://data/broker.db \
      --group-initial-rebalance-delay 0s </dev/null >>"$STATE/broker/broker.log" 2>&1)
  wait_port 127.0.0.1 "$BROKER_PORT" 30 "broker (log: $STATE/broker/broker.log)"
  log "broker answers on 127.0.0.1:$BROKER_PORT (pid $(broker_pids | tr '\n' ' '))"
}

# The broker this script starts is found by its command line (it runs in a
# session of its own, forked by setsid, so no PID of ours is the broker's).
broker_pids() { pgrep -f "nisshi broker --listener-url tcp://127.0.0.1:$BROKER_PORT " || true; }

broker_stop() { # signal
  local pids; pids=$(broker_pids)
  [ -n "$pids" ] || return 0
  # shellcheck disable=SC2086
  kill "-$1" $pids 2>/dev/null || true
  for _ in $(seq 1 100); do [ -n "$(broker_pids)" ] || break; sleep 0.1; done
  pids=$(broker_pids)
  # shellcheck disable=SC2086
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  for _ in $(seq 1 50); do port_open 127.0.0.1 "$BROKER_PORT" || break; sleep 0.1; done
}

pg_answers() {
  if command -v pg_isready >/dev/null; then
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
  else
    port_open "$PG_HOST" "$PG_PORT"
  fi
}

pg_start() {
  if pg_answers && psql_ok; then
    log "PostgreSQL answers on $PG_HOST:$PG_PORT"
    return
  fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq postgresql postgresql-client >&2 || die "cannot install PostgreSQL"
  fi
  local version; version=$(ls /etc/postgresql | sort -V | tail -1)
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # Tests connect as postgres over TCP without a password, as on the dev machines.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 2>&1 \
    || pg_ctlcluster --skip-systemctl-redirect "$version" main reload >&2 2>&1 || true
  wait_port "$PG_HOST" "$PG_PORT" 60 PostgreSQL
  for _ in $(seq 1 50); do psql_ok && break; sleep 0.2; done
  psql_ok || die "PostgreSQL answers but user postgres cannot log in over TCP on $PG_HOST:$PG_PORT"
  log "PostgreSQL answers on $PG_HOST:$PG_PORT"
}

# Crashes PostgreSQL (immediate shutdown: nothing is flushed, the WAL not yet
# written is lost) and starts it again, which replays the WAL. The WAL
# writer is stopped half a second first: a running one soon writes the
# commits that did not wait for their flush, and a crash that came just after
# it did lost nothing (seen once in CI); stopped, it leaves that half
# second's commits in PostgreSQL's buffers for the crash to lose. The
# shutdown kills the stopped writer after its 5 s grace.
pg_crash() {
  local version; version=$(ls /etc/postgresql | sort -V | tail -1)
  local writer; writer=$(psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc \
    "select pid from pg_stat_activity where backend_type = 'walwriter'") || writer=
  [ -n "$writer" ] || die "cannot find PostgreSQL's WAL writer (pg_stat_activity)"
  kill -STOP "$writer" || die "cannot stop PostgreSQL's WAL writer (pid $writer)"
  sleep 0.5
  if ! pg_ctlcluster --skip-systemctl-redirect "$version" main stop -m immediate >&2 2>&1; then
    kill -CONT "$writer"
    die "cannot crash PostgreSQL $version (pg_ctlcluster stop -m immediate)"
  fi
  log "PostgreSQL crashed (immediate shutdown, its WAL writer stopped)"
  pg_start
}

psql_ok() {
  command -v psql >/dev/null || return 0
  psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -Atqc 'select 1' >/dev/null 2>&1
}

# The tools the tests run besides the services: libfaketime (a copy whose
# clock runs ten minutes ahead), a headless browser (the web console's test)
# and promtool (the alert rules' tests), from Debian's packages.
ensure_tools() {
  local need=()
  [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 \
    || need+=(faketime)
  command -v chromium >/dev/null || need+=(chromium)
  command -v promtool >/dev/null || need+=(prometheus)
  [ ${#need[@]} -gt 0 ] || return 0
  command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them: install them by hand"
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  log "installing ${need[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq "${need[@]}" >&2 || die "cannot install ${need[*]}"
}

print_env() {
  echo "export CRONSUMER_TEST_BROKER=127.0.0.1:$BROKER_PORT"
  echo "export CRONSUMER_TEST_PG=postgres://postgres@$PG_HOST:$PG_PORT/postgres"
  echo "export CRONSUMER_SERVICES=$ROOT/scripts/services.sh"
}

case "${1:-up}" in
  up) broker_start; pg_start; print_env ;;
  tools) ensure_tools ;;
  down) broker_stop TERM; log "broker stopped (PostgreSQL is left running)" ;;
  status)
    port_open 127.0.0.1 "$BROKER_PORT" && log "broker: up on $BROKER_PORT" || log "broker: down"
    pg_answers && log "postgres: up on $PG_PORT" || log "postgres: down" ;;
  env) print_env ;;
  broker-start) broker_start ;;
  broker-stop) broker_stop TERM ;;
  broker-kill) broker_stop KILL ;;
  pg-crash) pg_crash ;;
  *) die "unknown command '$1' (up, tools, down, status, env, broker-start, broker-stop, broker-kill, pg-crash)" ;;
esac
