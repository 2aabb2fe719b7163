#!/bin/sh
# 50 client-credentials token requests to the emulator's fake Entra ID, each on a new HTTPS
# connection (one curl per request), with curl's timings: TCP connect, TLS handshake done,
# first byte of the reply, total (ms). Prints the median and the 95th percentile of each.
#
#   redis-entra emulator --env-file /tmp/azure.env &   # wait for `ready`
#   . /tmp/azure.env && scripts/token-latency.sh [N]
set -eu
n=${1:-50}
url="$AZURE_AUTHORITY_HOST/$AZURE_TENANT_ID/oauth2/v2.0/token"
i=0
while [ "$i" -lt "$n" ]; do
    curl -sS -o /dev/null --cacert "$SSL_CERT_FILE" \
        -w '%{time_connect} %{time_appconnect} %{time_starttransfer} %{time_total}\n' \
        --data-urlencode grant_type=client_credentials \
        --data-urlencode "client_id=$AZURE_CLIENT_ID" \
        --data-urlencode "client_secret=$AZURE_CLIENT_SECRET" \
        --data-urlencode scope=https://redis.azure.com/.default \
        "$url"
    i=$((i + 1))
done | awk '
    { c[NR] = $1 * 1000; h[NR] = $2 * 1000; f[NR] = $3 * 1000; t[NR] = $4 * 1000 }
    function pct(a, n, p,   i, j, x, s) {
        for (i = 1; i <= n; i++) s[i] = a[i]
        for (i = 2; i <= n; i++) { x = s[i]; for (j = i - 1; j >= 1 && s[j] > x; j--) s[j + 1] = s[j]; s[j + 1] = x }
        return s[int((n - 1) * p) + 1]
    }
    END {
        printf "%d requests, each on a new connection (ms)   median    p95\n", NR
        printf "  TCP connect                                %7.2f %7.2f\n", pct(c, NR, .5), pct(c, NR, .95)
        printf "  TLS handshake done                         %7.2f %7.2f\n", pct(h, NR, .5), pct(h, NR, .95)
        printf "  first byte of the reply                    %7.2f %7.2f\n", pct(f, NR, .5), pct(f, NR, .95)
        printf "  total                                      %7.2f %7.2f\n", pct(t, NR, .5), pct(t, NR, .95)
    }'
