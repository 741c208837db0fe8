#!/bin/bash
# Start the inner Docker engine in the foreground, its API on a unix socket only, in /run/swarm-node (a bind
# mount of a host directory: the host drives this engine with DOCKER_HOST=unix://<that dir>/docker.sock).
set -euo pipefail

log() { echo "swarm-node: $*" >&2; }
SOCKET_DIR=/run/swarm-node

# Not --privileged (see swarm_nodes.py): Docker mounts /sys and the cgroup hierarchies (on v1 this container's own
# cgroups, bound) read-only. With CAP_SYS_ADMIN they can be made writable, as --privileged would have them: the
# inner engine creates its containers' cgroups below this container's (read-only, every inner container fails:
# "mkdir /sys/fs/cgroup/cpuset/docker: read-only file system").
remount_rw() {  # mount points that are read-only
  local point
  for point in "$@"; do
    if findmnt -no OPTIONS "$point" | grep -qE '(^|,)ro(,|$)'; then
      mount -o remount,rw "$point" || mount -o remount,rw,bind "$point"
    fi
  done
}
remount_rw /sys
mapfile -t cgroups < <(findmnt -rno TARGET -t cgroup,cgroup2 | grep '^/sys/fs/cgroup')
remount_rw "${cgroups[@]}"

# Then what Docker's own hack/dind does: AppArmor detection needs securityfs; cgroup v2 needs nesting set up
# (cgroup v1, as here, needs nothing more).
export container=docker
if [[ -d /sys/kernel/security ]] && ! mountpoint -q /sys/kernel/security; then
  mount -t securityfs none /sys/kernel/security || log "could not mount securityfs (AppArmor detection may fail)"
fi
if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
  # cgroup v2: move this shell out of the root cgroup so its controllers can be delegated to the children.
  mkdir -p /sys/fs/cgroup/init
  xargs -rn1 < /sys/fs/cgroup/cgroup.procs > /sys/fs/cgroup/init/cgroup.procs || :
  sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers > /sys/fs/cgroup/cgroup.subtree_control
fi

mountpoint -q /var/lib/docker || { log "/var/lib/docker must be a volume or a tmpfs (overlay2 cannot nest)"; exit 1; }
mountpoint -q "$SOCKET_DIR" || { log "$SOCKET_DIR is not a bind mount of a host directory"; exit 1; }
rm -f "$SOCKET_DIR/docker.sock"

exec dockerd --host "unix://$SOCKET_DIR/docker.sock" --storage-driver overlay2 "$@"
