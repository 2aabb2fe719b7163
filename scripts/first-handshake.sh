#!/bin/sh
# Runs `redis-entra PING` N times against the emulator (a new process each time, so a fresh
# token request and a fresh TLS handshake with the fake Entra ID), and reports, from its debug
# log, the time from the client's first "Not resuming any session" (it is about to build its
# ClientHello) to "Using ciphersuite" (the ServerHello has arrived), and each run's wall time.
#
#   redis-entra emulator --env-file /tmp/azure.env &   # wait for `ready`
#   . /tmp/azure.env && scripts/first-handshake.sh [N] [path/to/redis-entra]
set -eu
n=${1:-20}
bin=${2:-target/debug/redis-entra}
i=0
while [ "$i" -lt "$n" ]; do
    start=$(date +%s%N)
    NO_COLOR=1 "$bin" --log debug PING 2>&1 >/dev/null | sed 's/\x1b\[[0-9;]*m//g' |
        awk -v start="$start" '
            function ms(ts,   t) { split(ts, t, "T"); split(t[2], t, ":"); return (t[1] * 3600 + t[2] * 60 + t[3]) * 1000 }
            /Not resuming any session/ && !a { a = ms($1) }
            /Using ciphersuite/ && a && !b { b = ms($1) }
            END { printf "%.2f\n", b - a }'
    end=$(date +%s%N)
    echo "wall $(( (end - start) / 1000000 ))"
    i=$((i + 1))
done | awk '
    /^wall/ { w[++nw] = $2; next }
    { h[++nh] = $1 }
    function med(a, n,   i, j, x, s) {
        for (i = 1; i <= n; i++) s[i] = a[i]
        for (i = 2; i <= n; i++) { x = s[i]; for (j = i - 1; j >= 1 && s[j] > x; j--) s[j + 1] = s[j]; s[j + 1] = x }
        return s[int((n + 1) / 2)] " (min " s[1] ", max " s[n] ")"
    }
    END {
        printf "%d runs of redis-entra PING, each a new process\n", nh
        printf "  first ClientHello built -> ServerHello received (ms): median %s\n", med(h, nh)
        printf "  wall time of the whole command (ms):                  median %s\n", med(w, nw)
    }'
