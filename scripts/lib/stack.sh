# shellcheck shell=bash
# The local stack: PostgreSQL, moto and cargo lambda watch on loopback.
# Sourced by scripts/rotate-local and scripts/test; not run directly.
#
#   ensure_tools     install what is missing (Debian postgresql, a Python venv
#                    with moto and cargo-lambda, the npm runner's packages)
#   start_stack      start the servers in $STACK_DIR and write
#                    $STACK_DIR/stack.env (endpoints for tests and scripts):
#                    PostgreSQL (the primary, a streaming hot standby of it,
#                    and a second server that stores md5 passwords and asks
#                    clients for md5), moto, cargo lambda watch;
#                    PGFLIP_EXTRA_SERVERS=K (default 0) adds K more SCRAM
#                    servers like the primary (the fleet bench's database
#                    servers), their ports in PGFLIP_PG_EXTRA_PORTS=p1,p2
#   stop_stack       stop what start_stack started, by pid
#   remove_stack     stop_stack, then delete $STACK_DIR (only a stack's dir)
#
# Everything listens on 127.0.0.1 only, on free ports picked at start.
# $STACK_DIR and stack.env (which holds the superuser password) are private
# to the invoking user; as root, the directory is also traversable by the
# group postgres, whose servers keep their data directories in it.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOCAL="$ROOT/.local"
VENV="$LOCAL/venv"
MOTO_SPEC='moto[server]==5.2.5'
CARGO_LAMBDA_SPEC='cargo-lambda==1.9.2'
# The password tests run generated passwords through python-dotenv's parser.
DOTENV_SPEC='python-dotenv==1.2.4'

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { printf '%s\n' "$d"; return 0; }
  done
  return 1
}

ensure_tools() {
  command -v cargo >/dev/null || die "cargo not found: install Rust with rustup first"
  command -v node >/dev/null || die "node not found: install Node.js (>= 20) first"
  command -v python3 >/dev/null || die "python3 not found"

  if ! pg_bin >/dev/null; then
    say "== installing PostgreSQL (Debian package)"
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    else
      die "PostgreSQL server binaries not found; install the 'postgresql' package"
    fi
    pg_bin >/dev/null || die "PostgreSQL installed, but initdb is still missing"
  fi

  if ! "$VENV/bin/python" -c 'import moto, dotenv' 2>/dev/null || [ ! -x "$VENV/bin/cargo-lambda" ]; then
    say "== installing moto, cargo-lambda and python-dotenv into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "$MOTO_SPEC" "$CARGO_LAMBDA_SPEC" "$DOTENV_SPEC" >&2
  fi

  if [ ! -d "$ROOT/scripts/sfn/node_modules/aws-local-stepfunctions" ]; then
    say "== installing the state machine runner (npm ci)"
    (cd "$ROOT/scripts/sfn" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit * 10; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$what did not come up within ${limit}s (logs in $STACK_DIR)"
}

ensure_postgres_user() {
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
}

# Runs a PostgreSQL tool as the postgres OS user when we are root (the server
# refuses to run as root). From / : postgres may not enter the caller's
# working directory (the checkout), and the tools chdir back into it.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    ensure_postgres_user
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Builds every Lambda once, so the first invoke does not compile (the runner's
# task timeout is 60 s).
build_lambdas() {
  say "== building the Lambdas (cargo build --workspace --bins)"
  (cd "$ROOT" && cargo build --workspace --bins --quiet)
}

# A streaming hot standby of the primary (a read replica, as RDS or Aurora
# readers are): tests delay its replay with recovery_min_apply_delay.
start_standby() { # start_standby BIN PRIMARY_DATA PRIMARY_PORT PORT
  local bin=$1 primary=$2 primary_port=$3 port=$4 standby="$STACK_DIR/standby"
  say "== starting a hot standby of it on 127.0.0.1:$port"
  mkdir -p "$standby"
  if [ "$(id -u)" = 0 ]; then chown postgres "$standby"; fi
  chmod 700 "$standby"
  as_postgres "$bin/pg_basebackup" -h "$primary" -p "$primary_port" -U postgres -D "$standby" -R -X stream \
    >"$STACK_DIR/basebackup.log" 2>&1 || die "pg_basebackup failed: see $STACK_DIR/basebackup.log"
  {
    echo "port = $port"
    echo "unix_socket_directories = '$standby'"
    echo "hot_standby = on"
    echo "max_standby_streaming_delay = 5s"
  } >>"$standby/postgresql.conf"
  as_postgres "$bin/pg_ctl" -D "$standby" -l "$standby/server.log" -w -t 30 start >/dev/null ||
    die "the standby did not start: see $standby/server.log"
}

# A second, separate server that stores md5 verifiers and asks clients for
# md5 (pg_hba.conf), as older setups do.
start_md5_server() { # start_md5_server BIN PORT
  local bin=$1 port=$2 data="$STACK_DIR/md5data"
  say "== starting an md5 server on 127.0.0.1:$port"
  mkdir -p "$data"
  (umask 077 && printf '%s\n' "$PG_SUPERPASS" >"$STACK_DIR/pwfile-md5")
  if [ "$(id -u)" = 0 ]; then chown postgres "$data" "$STACK_DIR/pwfile-md5"; fi
  chmod 700 "$data"
  as_postgres "$bin/initdb" -D "$data" -U postgres --pwfile="$STACK_DIR/pwfile-md5" \
    --auth-local=trust --auth-host=md5 -E UTF8 >"$STACK_DIR/initdb-md5.log" 2>&1 ||
    die "initdb (md5 server) failed: see $STACK_DIR/initdb-md5.log"
  rm -f "$STACK_DIR/pwfile-md5"
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$data'"
    echo "password_encryption = 'md5'"
    echo "fsync = off"
    echo "full_page_writes = off"
    echo "max_connections = 100"
    echo "log_statement = 'all'"
    echo "logging_collector = off"
  } >>"$data/postgresql.conf"
  as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 30 start >/dev/null ||
    die "the md5 server did not start: see $data/server.log"
  # initdb stored the superuser's password as SCRAM: store it as md5 too,
  # sending only the verifier (md5 of password and user name).
  local verifier
  verifier="md5$(printf '%s' "${PG_SUPERPASS}postgres" | md5sum | cut -d' ' -f1)"
  as_postgres "$bin/psql" -X -q -h "$data" -p "$port" -U postgres -d postgres \
    -c "ALTER ROLE postgres PASSWORD '$verifier'" >/dev/null ||
    die "could not set the md5 server's superuser password"
}

# K more separate SCRAM servers, configured like the primary (same
# superuser and password, log_statement = all): the fleet bench spreads its
# targets over them. One initdb, copied K times (a fresh cluster is small),
# then the K servers start at once. Sets EXTRA_PORTS (p1,p2,...).
start_extra_servers() { # start_extra_servers BIN K
  local bin=$1 count=$2 i port data template="$STACK_DIR/extra-template" pids=()
  EXTRA_PORTS=""
  [ "$count" -gt 0 ] || return 0
  say "== starting $count extra SCRAM server(s)"
  mkdir -p "$template"
  (umask 077 && printf '%s\n' "$PG_SUPERPASS" >"$STACK_DIR/pwfile-extra")
  if [ "$(id -u)" = 0 ]; then chown postgres "$template" "$STACK_DIR/pwfile-extra"; fi
  chmod 700 "$template"
  as_postgres "$bin/initdb" -D "$template" -U postgres --pwfile="$STACK_DIR/pwfile-extra" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$STACK_DIR/initdb-extra.log" 2>&1 ||
    die "initdb (extra servers) failed: see $STACK_DIR/initdb-extra.log"
  rm -f "$STACK_DIR/pwfile-extra"
  cat >>"$template/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
password_encryption = 'scram-sha-256'
fsync = off
full_page_writes = off
max_connections = 100
log_statement = 'all'
logging_collector = off
EOF
  for ((i = 1; i <= count; i++)); do
    port=$(free_port)
    data="$STACK_DIR/extra$i"
    cp -a "$template" "$data"
    {
      echo "port = $port"
      echo "unix_socket_directories = '$data'"
    } >>"$data/postgresql.conf"
    as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 30 start >/dev/null &
    pids+=($!)
    EXTRA_PORTS="${EXTRA_PORTS:+$EXTRA_PORTS,}$port"
  done
  rm -rf "${template:?}"
  for i in "${pids[@]}"; do
    wait "$i" || die "an extra server did not start: see $STACK_DIR/extra*/server.log"
  done
  say "== extra servers on 127.0.0.1 ports $EXTRA_PORTS"
}

start_stack() {
  STACK_DIR=${STACK_DIR:-$(mktemp -d /tmp/pgflip-stack.XXXXXX)}
  mkdir -p "$STACK_DIR"
  STACK_DIR=$(cd "$STACK_DIR" && pwd) # absolute: the tools run from /
  if [ "$(id -u)" = 0 ]; then
    # The servers (user postgres) only need to pass through to their own
    # directories: group postgres may traverse, nobody else may enter.
    ensure_postgres_user
    chgrp "$(id -gn postgres)" "$STACK_DIR"
    chmod 710 "$STACK_DIR"
  else
    chmod 700 "$STACK_DIR"
  fi
  local bin pg_port standby_port md5_port moto_port lambda_port
  bin=$(pg_bin)
  pg_port=$(free_port)
  standby_port=$(free_port)
  md5_port=$(free_port)
  moto_port=$(free_port)
  lambda_port=$(free_port)
  PG_SUPERPASS=$(python3 -c 'import secrets; print(secrets.token_hex(16))')

  say "== starting PostgreSQL on 127.0.0.1:$pg_port"
  local data="$STACK_DIR/pgdata"
  mkdir -p "$data"
  (umask 077 && printf '%s\n' "$PG_SUPERPASS" >"$STACK_DIR/pwfile")
  if [ "$(id -u)" = 0 ]; then chown postgres "$data" "$STACK_DIR/pwfile"; fi
  chmod 700 "$data"
  as_postgres "$bin/initdb" -D "$data" -U postgres --pwfile="$STACK_DIR/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >"$STACK_DIR/initdb.log" 2>&1 ||
    die "initdb failed: see $STACK_DIR/initdb.log"
  rm -f "$STACK_DIR/pwfile"
  cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$data'
password_encryption = 'scram-sha-256'
fsync = off
full_page_writes = off
max_connections = 200
log_statement = 'all'
logging_collector = off
EOF
  as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 30 start >/dev/null ||
    die "PostgreSQL did not start: see $data/server.log"
  printf '%s\n' "$bin/pg_ctl" >"$STACK_DIR/pg_ctl"
  start_standby "$bin" "$data" "$pg_port" "$standby_port"
  start_md5_server "$bin" "$md5_port"
  local extra=${PGFLIP_EXTRA_SERVERS:-0}
  [[ "$extra" =~ ^[0-9]+$ ]] || die "PGFLIP_EXTRA_SERVERS must be a whole number"
  start_extra_servers "$bin" "$extra"

  say "== starting moto on 127.0.0.1:$moto_port"
  # MOTO_ECS_SERVICE_RUNNING: moto reports a deployment COMPLETED when this
  # many tasks run; the seeded services want 2.
  MOTO_ECS_SERVICE_RUNNING=2 setsid "$VENV/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$STACK_DIR/moto.log" 2>&1 &
  echo $! >"$STACK_DIR/moto.pid"
  wait_for 30 moto port_open "$moto_port"
  # The alert topic report-outcome publishes to (the template's AlertTopic).
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "$VENV/bin/python" -c '
import sys, boto3
boto3.client("sns", region_name="us-east-1", endpoint_url=sys.argv[1]).create_topic(Name="pgflip-local-alerts")
' "http://127.0.0.1:$moto_port" || die "could not create the local alert topic"

  # Holds the superuser password: readable by the invoking user only (the
  # scripts and tests source it; PostgreSQL's tools never read it).
  (umask 077 && : >"$STACK_DIR/stack.env")
  chmod 600 "$STACK_DIR/stack.env"
  cat >"$STACK_DIR/stack.env" <<EOF
export PGFLIP_STACK_DIR='$STACK_DIR'
export PGFLIP_PG_HOST=127.0.0.1
export PGFLIP_PG_PORT=$pg_port
export PGFLIP_PG_SUPERUSER=postgres
export PGFLIP_PG_SUPERPASS='$PG_SUPERPASS'
export PGFLIP_PG_LOG='$data/server.log'
export PGFLIP_PG_STANDBY_PORT=$standby_port
export PGFLIP_PG_STANDBY_DIR='$STACK_DIR/standby'
export PGFLIP_PG_MD5_PORT=$md5_port
export PGFLIP_PG_MD5_LOG='$STACK_DIR/md5data/server.log'
export PGFLIP_PG_EXTRA_PORTS=$EXTRA_PORTS
export PGFLIP_LAMBDA_ENDPOINT=http://127.0.0.1:$lambda_port
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_EC2_METADATA_DISABLED=true
export PGFLIP_LOCAL_PREFIX=pgflip-local
EOF
  # The Lambdas' configuration, as the template's Globals would set it.
  cat >"$STACK_DIR/lambda.env" <<EOF
AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port
AWS_REGION=us-east-1
AWS_ACCESS_KEY_ID=testing
AWS_SECRET_ACCESS_KEY=testing
AWS_EC2_METADATA_DISABLED=true
ACTIVE_USER_PARAMETER=/pgflip-local/app/active-user
BLUE_SECRET_ID=pgflip-local/app/blue
GREEN_SECRET_ID=pgflip-local/app/green
ECS_CLUSTER=pgflip-local
ECS_SERVICES=web,worker
TARGETS_PARAMETER=/pgflip-local/targets
TARGETS_PATH=/pgflip-local/registry
DB_SSLMODE=disable
STABLE_POLL_SECONDS=${PGFLIP_STABLE_POLL_SECONDS:-1}
STABLE_TIMEOUT_SECONDS=${PGFLIP_STABLE_TIMEOUT_SECONDS:-60}
ALERT_TOPIC_ARN=arn:aws:sns:us-east-1:123456789012:pgflip-local-alerts
RUST_LOG=${PGFLIP_LAMBDA_LOG:-info}
EOF

  say "== starting cargo lambda watch on 127.0.0.1:$lambda_port"
  (cd "$ROOT" && exec setsid env PATH="$VENV/bin:$PATH" "$VENV/bin/cargo-lambda" lambda watch --ignore-changes \
    -A 127.0.0.1 -P "$lambda_port" --env-file "$STACK_DIR/lambda.env" >"$STACK_DIR/lambda.log" 2>&1) &
  echo $! >"$STACK_DIR/lambda.pid"
  wait_for 60 "cargo lambda watch" port_open "$lambda_port"
  say "== stack ready: $STACK_DIR/stack.env"
}

stop_stack() {
  [ -n "${STACK_DIR:-}" ] && [ -d "$STACK_DIR" ] || return 0
  local f pid program i kids cmdline
  for f in lambda moto; do
    [ -f "$STACK_DIR/$f.pid" ] || continue
    pid=$(cat "$STACK_DIR/$f.pid")
    program=moto_server
    [ "$f" = lambda ] && program=cargo-lambda
    if [[ ! "$pid" =~ ^[1-9][0-9]*$ ]]; then
      say "== $STACK_DIR/$f.pid holds no pid; skipping it"
    elif [ -r "/proc/$pid/cmdline" ] && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$program"; then
      # A stack kept for a while: the pid may belong to someone else by now.
      say "== pid $pid is no longer $program; leaving it alone"
    else
      # Started with setsid: stop the whole process group, and wait for it.
      # cargo lambda watch runs each function binary in a session of its
      # own and stops them itself; should it not, they are stopped after it.
      kids=$(pgrep -a -P "$pid" || true) # "pid command line", one a line
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 -- "-$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
      while read -r i cmdline; do # only if still the same program
        if [ -n "$i" ] && [ "$(ps -o args= -p "$i" 2>/dev/null)" = "$cmdline" ]; then
          kill -TERM "$i" 2>/dev/null || true
        fi
      done <<<"$kids"
    fi
    rm -f "$STACK_DIR/$f.pid"
  done
  if [ -f "$STACK_DIR/pg_ctl" ]; then
    for f in "$STACK_DIR"/standby "$STACK_DIR"/md5data "$STACK_DIR"/pgdata "$STACK_DIR"/extra[0-9]*; do
      [ -d "$f" ] || continue # extra[0-9]* stays unexpanded when there are none
      as_postgres "$(cat "$STACK_DIR/pg_ctl")" -D "$f" -m immediate -w stop >/dev/null 2>&1 || true
    done
    rm -f "$STACK_DIR/pg_ctl"
  fi
}

# Stops a stack and deletes its directory: for a stack kept running
# (scripts/rotate-local --keep) or the logs a failed run kept. Refuses a
# directory that start_stack did not make.
remove_stack() {
  [ -n "${STACK_DIR:-}" ] || die "no stack directory given"
  [ -d "$STACK_DIR" ] || die "$STACK_DIR: no such directory"
  STACK_DIR=$(cd "$STACK_DIR" && pwd)
  local mark found=0
  for mark in stack.env pg_ctl moto.pid lambda.pid pgdata initdb.log; do
    [ -e "$STACK_DIR/$mark" ] && found=1
  done
  if [ "$found" = 0 ] || [ "$STACK_DIR" = / ]; then
    die "$STACK_DIR does not look like a local stack (no stack.env, pid files or pgdata): not touching it"
  fi
  say "== stopping the local stack in $STACK_DIR"
  stop_stack
  rm -rf "${STACK_DIR:?}"
  say "== removed $STACK_DIR"
}
