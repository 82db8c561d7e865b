#!/usr/bin/env bash
# A cluster on this machine, without Docker, on loopback: a throw-away
# PostgreSQL, CLUSTER_NODES instances of event-booking (default 3) sharing
# it, and nginx in front (deploy/nginx.conf), each on a free port.
#
#   scripts/cluster.sh up     starts it; prints "READY http://127.0.0.1:PORT"
#                             (nginx) once every part answers
#   scripts/cluster.sh add    starts one more instance and puts it behind
#                             nginx; prints "ADDED <number> <its url>"
#   scripts/cluster.sh remove N   takes instance N from behind nginx, then
#                             stops it (SIGTERM); prints "REMOVED N"
#   scripts/cluster.sh down   stops it and deletes its folder
#
# Everything lives in CLUSTER_DIR (default: a new temporary folder, printed;
# `add`, `remove` and `down` without CLUSTER_DIR take the last one `up`
# made): node-<i>.pid and node-<i>.url (each instance's own address; only
# instances behind nginx have one), node-<i>.log, postgres.url,
# nginx.conf and the logs. The server binary is target/release/event-booking
# (built if missing), or EVENT_BOOKING_BIN. Debian packages needed:
# postgresql, nginx, libnginx-mod-http-js. As root, PostgreSQL runs as the
# user postgres (initdb refuses root).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
last="${TMPDIR:-/tmp}/event-booking-cluster.last"

die() { echo "cluster: $*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Runs "$@" as user postgres when root, else as is.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Polls "$@" every 0.1 s for up to 30 s.
wait_for() {
  local what=$1; shift
  for _ in $(seq 300); do
    if "$@" > /dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "$what did not answer in 30 s (logs in $CLUSTER_DIR)"
}

up() {
  local nodes=${CLUSTER_NODES:-3}
  [ "$nodes" -ge 1 ] 2>/dev/null || die "CLUSTER_NODES must be a number of at least 1"
  CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/event-booking-cluster.XXXXXX")}
  mkdir -p "$CLUSTER_DIR"
  CLUSTER_DIR=$(cd "$CLUSTER_DIR" && pwd)
  # Others (user postgres, nginx's workers) go through it.
  chmod 755 "$CLUSTER_DIR"
  echo "$CLUSTER_DIR" > "$last"
  echo "cluster folder: $CLUSTER_DIR"

  local bin=${EVENT_BOOKING_BIN:-$root/target/release/event-booking}
  if [ ! -x "$bin" ]; then
    cargo build --release --bin event-booking
  fi
  # `add` starts the same one.
  echo "$bin" > "$CLUSTER_DIR/event-booking.bin"

  # PostgreSQL: Debian keeps its programs in a versioned folder.
  local pgbin
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$pgbin" ] && [ -x "$pgbin/initdb" ] || die "PostgreSQL is not installed (apt-get install postgresql)"
  local pgdir="$CLUSTER_DIR/postgres" pgport
  pgport=$(free_port)
  mkdir -p "$pgdir"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$pgdir"; fi
  as_postgres "$pgbin/initdb" -D "$pgdir/data" -U postgres --auth=trust -E UTF8 > "$pgdir/initdb.log"
  as_postgres "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/postgres.log" -w \
    -o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200" start > /dev/null
  echo "$pgbin" > "$CLUSTER_DIR/postgres.bin"
  wait_for PostgreSQL "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -c 'SELECT 1'
  "$pgbin/psql" -h 127.0.0.1 -p "$pgport" -U postgres -qc 'CREATE DATABASE booking'
  local pgurl="postgres://postgres@127.0.0.1:$pgport/booking"
  echo "$pgurl" > "$CLUSTER_DIR/postgres.url"

  local i
  for i in $(seq "$nodes"); do start_node "$i"; done
  for i in $(seq "$nodes"); do wait_for_node "$i"; done

  # nginx, from the template.
  local port
  port=$(free_port)
  mkdir -p "$CLUSTER_DIR/nginx"
  chmod 777 "$CLUSTER_DIR/nginx"
  echo "127.0.0.1:$port" > "$CLUSTER_DIR/nginx.listen"
  write_nginx_conf
  nginx -c "$CLUSTER_DIR/nginx.conf" -g "daemon on;" 2> "$CLUSTER_DIR/nginx-start.log" \
    || die "nginx did not start: $(cat "$CLUSTER_DIR/nginx-start.log")"
  wait_for nginx curl -sf "http://127.0.0.1:$port/health"
  echo "http://127.0.0.1:$port" > "$CLUSTER_DIR/nginx.url"
  echo "READY http://127.0.0.1:$port"
}

# Starts instance $1 on a free port (it prints the port it took). Its
# PostgreSQL sessions are named node-$1 (application_name).
start_node() {
  local i=$1 bin pgurl
  bin=$(cat "$CLUSTER_DIR/event-booking.bin")
  pgurl=$(cat "$CLUSTER_DIR/postgres.url")
  BOOKING_PORT=0 BOOKING_DATABASE="$CLUSTER_DIR/node-$i.db" \
    BOOKING_STORAGE__BACKEND=postgres \
    BOOKING_STORAGE__POSTGRES_URL="$pgurl?application_name=node-$i" \
    RUST_LOG=${RUST_LOG:-warn} \
    nohup "$bin" > "$CLUSTER_DIR/node-$i.out" 2> "$CLUSTER_DIR/node-$i.log" &
  echo $! > "$CLUSTER_DIR/node-$i.pid"
}

# Waits until instance $1 answers /health, then writes node-$1.url.
wait_for_node() {
  local i=$1 url
  wait_for "instance $i" grep -q 'listening on http://' "$CLUSTER_DIR/node-$i.out"
  url=$(grep -m1 -o 'http://[0-9.:]*' "$CLUSTER_DIR/node-$i.out")
  wait_for "instance $i" curl -sf "$url/health"
  echo "$url" > "$CLUSTER_DIR/node-$i.url"
}

# nginx.conf from the template, with one server per node-<i>.url.
write_nginx_conf() {
  local url servers=""
  for url in "$CLUSTER_DIR"/node-*.url; do
    [ -f "$url" ] || continue
    url=$(cat "$url")
    servers="${servers}server ${url#http://} max_fails=1 fail_timeout=2s; "
  done
  sed -e "s|@MODULES@|${NGINX_MODULES:-/usr/lib/nginx/modules}|" \
      -e "s|@DIR@|$CLUSTER_DIR/nginx|g" \
      -e "s|@JS_DIR@|$root/deploy|" \
      -e "s|@LISTEN@|$(cat "$CLUSTER_DIR/nginx.listen")|" \
      -e "s|@SERVERS@|$servers|" \
      deploy/nginx.conf > "$CLUSTER_DIR/nginx.conf"
}

# The cluster `up` made last, or CLUSTER_DIR's.
existing() {
  CLUSTER_DIR=${CLUSTER_DIR:-$(cat "$last" 2>/dev/null || true)}
  [ -n "$CLUSTER_DIR" ] && [ -d "$CLUSTER_DIR" ] || die "no cluster: set CLUSTER_DIR"
}

# nginx reads its configuration again. It returns at once: the old workers
# finish the requests they hold, new ones go by the new configuration.
reload_nginx() {
  write_nginx_conf
  nginx -c "$CLUSTER_DIR/nginx.conf" -s reload 2> "$CLUSTER_DIR/nginx-reload.log" \
    || die "nginx did not reload: $(cat "$CLUSTER_DIR/nginx-reload.log")"
}

add() {
  existing
  local i=1
  # A number never used in this cluster: a removed instance keeps its log.
  while [ -e "$CLUSTER_DIR/node-$i.out" ]; do i=$((i + 1)); done
  start_node "$i"
  wait_for_node "$i"
  reload_nginx
  echo "ADDED $i $(cat "$CLUSTER_DIR/node-$i.url")"
}

remove() {
  local i=${1:-}
  [[ "$i" =~ ^[0-9]+$ ]] || die "usage: scripts/cluster.sh remove NUMBER"
  existing
  [ -f "$CLUSTER_DIR/node-$i.url" ] || die "no instance $i behind nginx in $CLUSTER_DIR"
  local behind
  behind=$(find "$CLUSTER_DIR" -maxdepth 1 -name 'node-*.url' | wc -l)
  [ "$behind" -gt 1 ] || die "instance $i is the last behind nginx (use down)"
  mv "$CLUSTER_DIR/node-$i.url" "$CLUSTER_DIR/node-$i.url.removed"
  if ! (reload_nginx); then
    mv "$CLUSTER_DIR/node-$i.url.removed" "$CLUSTER_DIR/node-$i.url"
    write_nginx_conf
    die "nginx did not take instance $i out; it still runs"
  fi
  rm "$CLUSTER_DIR/node-$i.url.removed"
  # Stopped gracefully: it answers what it took, and its events go with its writer's session.
  local pid
  pid=$(cat "$CLUSTER_DIR/node-$i.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && die "instance $i did not stop in 30 s"
  rm "$CLUSTER_DIR/node-$i.pid"
  echo "REMOVED $i"
}

down() {
  existing
  if [ -f "$CLUSTER_DIR/nginx/nginx.pid" ]; then
    kill -QUIT "$(cat "$CLUSTER_DIR/nginx/nginx.pid")" 2>/dev/null || true
  fi
  local pidfile
  for pidfile in "$CLUSTER_DIR"/node-*.pid; do
    [ -f "$pidfile" ] && kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
  for pidfile in "$CLUSTER_DIR"/node-*.pid; do
    [ -f "$pidfile" ] || continue
    for _ in $(seq 100); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
  done
  if [ -f "$CLUSTER_DIR/postgres.bin" ]; then
    as_postgres "$(cat "$CLUSTER_DIR/postgres.bin")/pg_ctl" -D "$CLUSTER_DIR/postgres/data" -m fast -w stop > /dev/null || true
  fi
  rm -rf "$CLUSTER_DIR"
  if [ "$(cat "$last" 2>/dev/null)" = "$CLUSTER_DIR" ]; then rm -f "$last"; fi
  echo "cluster stopped"
}

case "${1:-}" in
  up) up ;;
  add) add ;;
  remove) remove "${2:-}" ;;
  down) down ;;
  *) die "usage: scripts/cluster.sh up|add|remove NUMBER|down" ;;
esac
