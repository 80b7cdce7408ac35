#!/usr/bin/env bash
# Scale the kvstore workers to N without losing a key.
#   up:   kubectl scale the StatefulSet, wait until the new pods are ready, then `kvctl cluster add`
#         them and wait until their keys have moved in;
#   down: `kvctl cluster remove` the highest-numbered workers (the ones a StatefulSet deletes), wait
#         until they are drained and own nothing, and only then kubectl scale the StatefulSet.
# Each step is decided from the ring's members, not from the StatefulSet's size, so a run that was
# interrupted (Ctrl-C, a lost connection) is finished by running the same command again.
# Usage: k8s/scripts/scale-workers.sh N [namespace]
# Needs kubectl with access to the namespace; kvctl runs inside a gateway pod, so nothing else.
set -euo pipefail

target=${1:?usage: scale-workers.sh N [namespace]}
ns=${2:-kvstore}
sts=kv-worker
[[ $target =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive integer, got '$target'" >&2; exit 2; }

kctl() { kubectl -n "$ns" "$@"; }
kvctl() { kctl exec deploy/kv-gateway -- node /app/dist/cli/kvctl.js --address 127.0.0.1:50051 "$@"; }

# The ring's members, one name per line, from `kvctl --json cluster status` ("members": [{name, address}]).
members() {
  kvctl --json cluster status | tr -d '\n' | sed -E 's/.*"members":\[([^]]*)\].*/\1/' | grep -o '"name":"[^"]*"' | cut -d'"' -f4
}


replicas=$(kctl get statefulset "$sts" -o jsonpath='{.spec.replicas}')
kvctl cluster status
if ! kvctl --json cluster status | grep -q '"phase":"stable"'; then
  echo "a migration is in progress; wait until 'kvctl cluster status' shows stable, then run this again" >&2
  exit 1
fi
ring=" $(members | tr '\n' ' ')"
echo "ring:${ring}(StatefulSet: $replicas replicas) -> $target workers"

# Up: pods the ring should have but does not (a pod may already exist from an interrupted run).
add=()
for (( i = 0; i < target; i++ )); do [[ $ring == *" $sts-$i "* ]] || add+=("$sts-$i"); done
if (( ${#add[@]} > 0 )); then
  (( replicas >= target )) || kctl scale statefulset "$sts" --replicas="$target"
  for n in "${add[@]}"; do
    # `kubectl wait` fails at once for a pod that does not exist yet: wait for it to be created first.
    for (( t = 0; t < 300; t++ )); do kctl get "pod/$n" >/dev/null 2>&1 && break; sleep 2; done
    kctl wait --for=condition=Ready "pod/$n" --timeout=600s
  done
  # Bare names: the gateway fills in the address from KV_WORKER_ADDRESS_TEMPLATE.
  kvctl cluster add "${add[@]}" --wait
fi

# Down: members at or above N (a removal already done by an interrupted run is not repeated).
remove=()
for n in $ring; do
  i=${n#"$sts-"}
  if [[ $i =~ ^[0-9]+$ ]] && (( i >= target )); then remove+=("$n"); fi
done
if (( ${#remove[@]} > 0 )); then
  kvctl cluster remove "${remove[@]}" --wait
  # Only once they own nothing may the pods go.
  after=" $(members | tr '\n' ' ')"
  for n in "${remove[@]}"; do
    if [[ $after == *" $n "* ]]; then
      echo "$n is still part of the cluster; not scaling down" >&2
      exit 1
    fi
  done
fi
if (( replicas > target )); then
  kctl scale statefulset "$sts" --replicas="$target"
  echo "The PersistentVolumeClaims of the pods from $sts-$target on are kept (StatefulSet retention policy); delete them when sure."
fi
(( ${#add[@]} + ${#remove[@]} > 0 || replicas != target )) || echo "already at $target workers"
kvctl cluster status
