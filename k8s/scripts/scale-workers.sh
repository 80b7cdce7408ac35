#!/usr/bin/env bash
# Scale the kvstore workers to N without losing a key.
#   up:   kubectl scale the StatefulSet, wait until the new pods are ready, then `kvctl cluster add`
#         them and wait until their keys have moved in;
#   down: `kvctl cluster remove` the highest-numbered workers (the ones a StatefulSet deletes), wait
#         until they are drained and own nothing, and only then kubectl scale the StatefulSet.
# Usage: k8s/scripts/scale-workers.sh N [namespace]
# Needs kubectl with access to the namespace; kvctl runs inside a gateway pod, so nothing else.
set -euo pipefail

target=${1:?usage: scale-workers.sh N [namespace]}
ns=${2:-kvstore}
sts=kv-worker
[[ $target =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive integer, got '$target'" >&2; exit 2; }

kctl() { kubectl -n "$ns" "$@"; }
kvctl() { kctl exec deploy/kv-gateway -- node /app/dist/cli/kvctl.js --address 127.0.0.1:50051 "$@"; }

current=$(kctl get statefulset "$sts" -o jsonpath='{.spec.replicas}')
echo "workers: $current -> $target"
kvctl cluster status
if ! kvctl --json cluster status | grep -q '"phase":"stable"'; then
  echo "a migration is in progress; wait until 'kvctl cluster status' shows stable" >&2
  exit 1
fi

if (( target > current )); then
  kctl scale statefulset "$sts" --replicas="$target"
  names=()
  for (( i = current; i < target; i++ )); do
    kctl wait --for=condition=Ready "pod/$sts-$i" --timeout=600s
    names+=("$sts-$i")
  done
  # Bare names: the gateway fills in the address from KV_WORKER_ADDRESS_TEMPLATE.
  kvctl cluster add "${names[@]}" --wait
elif (( target < current )); then
  names=()
  for (( i = target; i < current; i++ )); do names+=("$sts-$i"); done
  kvctl cluster remove "${names[@]}" --wait
  # Only once they own nothing may the pods go.
  for n in "${names[@]}"; do
    if kvctl --json cluster status | grep -q "\"name\":\"$n\""; then
      echo "$n is still part of the cluster; not scaling down" >&2
      exit 1
    fi
  done
  kctl scale statefulset "$sts" --replicas="$target"
  echo "The PersistentVolumeClaims of ${names[*]} are kept (StatefulSet retention policy); delete them when sure."
else
  echo "already at $target workers"
fi
kvctl cluster status
