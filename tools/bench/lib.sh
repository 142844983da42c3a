# shellcheck shell=bash
# tools/bench/lib.sh -- helpers of the bench scripts that start their own node, PostgreSQL and
# Redis (sourced by tools/bench/soak). The caller sets ROOT, OUT, TMP and defines log and die.
#
#   stop_pid PID SIGNAL SECONDS      signal, wait, then SIGKILL (by PID only)
#   pause SECONDS                    sleep that a trap interrupts at once
#   step NAME SECONDS CMD...         a bounded set-up command, output to OUT/setup.log
#   free_port                        a free 127.0.0.1 port in 28000-32700
#   services_start DB                private PostgreSQL + Redis under TMP/svc (tools/dev svc),
#                                    database DB made; sets MMO_PG, MMO_REDIS, PG_PORT, REDIS_PORT
#   services_stop                    tools/dev svc all stop, then SIGKILL by PID what is left
#   wait_http PORT PID NAME          until GET /healthz answers (10 s), or die
#   post_json URL BODY FILE [HEADER] POST JSON; prints the HTTP status, the body goes to FILE
#   machine_line                     "nproc N, CPU, memory, kernel" of this machine

STEP_PID='' SLEEP_PID='' SVC='' PG_PID='' REDIS_PID='' PG_PORT='' REDIS_PORT=''

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

stop_pid() {
    local pid=$1 sig=$2 secs=$3 i
    pid_alive "$pid" || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        pid_alive "$pid" || break
        sleep 0.1
    done
    if pid_alive "$pid"; then
        log "pid $pid still alive after SIG$sig; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

pause() {
    sleep "$1" &
    SLEEP_PID=$!
    wait "$SLEEP_PID" || true
    SLEEP_PID=
}

step() {
    local name=$1 secs=$2 rc=0
    shift 2
    echo "== $name: $*" >>"$OUT/setup.log"
    timeout "$secs" "$@" >>"$OUT/setup.log" 2>&1 &
    STEP_PID=$!
    wait "$STEP_PID" || rc=$?
    STEP_PID=
    [ $rc = 0 ] || die "$name failed (exit $rc; see $OUT/setup.log)"
}

USED_PORTS=" "
free_port() {
    local p
    for p in $(shuf -i 28000-32700 -n 200); do
        case $USED_PORTS in *" $p "*) continue ;; esac
        if [ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ]; then
            USED_PORTS="$USED_PORTS$p "
            echo "$p"
            return 0
        fi
    done
    die "no free port found in 28000-32700"
}

# proc_is PID TEXT: PID is a live (not zombie) process whose command line contains TEXT
proc_is() {
    local st
    [ -n "$1" ] && { read -r st <"/proc/$1/stat"; } 2>/dev/null || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# PostgreSQL and Redis are not our children (pg_ctl and redis --daemonize detach them): their
# PIDs come from their pid files.
svc_pids() {
    [ -n "$SVC" ] || return 0
    [ -n "$PG_PID" ] || PG_PID=$(head -n 1 "$SVC/pg/data/postmaster.pid" 2>/dev/null || true)
    [ -n "$REDIS_PID" ] || REDIS_PID=$(cat "$SVC/redis/redis.pid" 2>/dev/null || true)
    [[ $PG_PID =~ ^[0-9]+$ ]] || PG_PID=''
    [[ $REDIS_PID =~ ^[0-9]+$ ]] || REDIS_PID=''
}

services_start() {
    local db=$1 kv
    SVC=$TMP/svc # short: the postgres socket path must stay under 107 bytes
    mkdir -p "$SVC"
    chmod 755 "$TMP" "$SVC"
    PG_PORT=$(free_port)
    REDIS_PORT=$(free_port)
    {
        echo "# written by tools/bench: the private PostgreSQL + Redis of one run"
        for kv in ROLE=bench "PG_DIR=$SVC/pg" "PG_SOCK=$SVC/sock" "PG_PORT=$PG_PORT" PG_OPTS= \
            "PG_DB=$db" "REDIS_DIR=$SVC/redis" "REDIS_PORT=$REDIS_PORT" HTTP_PORT=; do
            printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"
        done
    } >"$SVC/state.env"
    log "starting a private PostgreSQL (127.0.0.1:$PG_PORT) and Redis (127.0.0.1:$REDIS_PORT)"
    step "tools/dev svc all start" 150 env MMO_DEV_STATE="$SVC" "$ROOT/tools/dev" svc all start
    svc_pids
    proc_is "$PG_PID" "$SVC/pg/data" || die "postgres is not running after tools/dev svc start"
    proc_is "$REDIS_PID" "127.0.0.1:$REDIS_PORT" || die "redis is not running after tools/dev svc start"
    step createdb 30 "$(pg_config --bindir)/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db"
    # shellcheck disable=SC2034 # for the caller
    MMO_PG="host=127.0.0.1 port=$PG_PORT dbname=$db user=postgres connect_timeout=3"
    # shellcheck disable=SC2034 # for the caller
    MMO_REDIS=127.0.0.1:$REDIS_PORT
}

# kill_leftover NAME PID CMDLINE_TEXT: if PID is still that process after 5 s, SIGKILL it
kill_leftover() {
    local i
    for ((i = 0; i < 50; i++)); do
        proc_is "$2" "$3" || return 0
        sleep 0.1
    done
    log "$1 (pid $2) still running: SIGKILL"
    kill -KILL "$2" 2>/dev/null || true
}

services_stop() {
    [ -n "$SVC" ] && [ -f "$SVC/state.env" ] || return 0
    svc_pids
    MMO_DEV_STATE=$SVC timeout 100 "$ROOT/tools/dev" svc all stop >>"$OUT/services.log" 2>&1 ||
        log "tools/dev svc all stop failed (see $OUT/services.log)"
    kill_leftover postgres "$PG_PID" "$SVC/pg/data"
    kill_leftover redis "$REDIS_PID" "127.0.0.1:$REDIS_PORT"
    SVC=''
}

wait_http() {
    local port=$1 pid=$2 name=$3 i
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || die "$name exited at start (see $OUT/$name.log)"
        curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$port/healthz" && return 0
        sleep 0.1
    done
    die "$name did not answer on 127.0.0.1:$port within 10 s (see $OUT/$name.log)"
}

post_json() {
    local hdr=()
    [ -z "${4:-}" ] || hdr=(-H "$4")
    curl -s --max-time 30 -o "$3" -w '%{http_code}' -H 'Content-Type: application/json' \
        "${hdr[@]}" --data-binary "$2" "$1" || true
}

machine_line() {
    local cpu mem
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    mem=$(awk '/^MemTotal:/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
    printf 'nproc %s, %s, %s memory, Linux %s\n' "$(nproc)" "${cpu:-unknown CPU}" "$mem" "$(uname -r)"
}
