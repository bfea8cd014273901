#!/usr/bin/env bash
# Prints a port for a private RabbitMQ node: the first one, from a random start, on which nobody
# listens and whose +20000 twin (the node's distribution port) is free too. Exit 1 when none.
for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 20000))
    if ! ss -Htln "sport = :$p" | grep -q . && ! ss -Htln "sport = :$((p + 20000))" | grep -q .; then
        echo "$p"
        exit 0
    fi
done
echo "free-port.sh: no free port" >&2
exit 1
