# Shared helpers for the node scripts (sourced, not run): where the node lives and how to reach
# its systemd from the host. The node is a Debian 12 rootfs booted with systemd-nspawn.
# shellcheck shell=bash
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${ZEROPOD_CACHE:-/var/cache/zeropod}
node_dir=$cache/node
root=$node_dir/rootfs
# A second node (e.g. a cold-build test with another ZEROPOD_CACHE) needs a run dir of its own.
run_dir=${ZEROPOD_NODE_RUN:-/run/zeropod-node}
# The test images' OCI archives (images/build, images/build-servers) imported at start.
images_dir=${ZEROPOD_IMAGES:-$repo/build/images}
machine=${run_dir##*/}
pid_file=$run_dir/leader.pid       # the node's PID 1, as seen from the host
nspawn_pid_file=$run_dir/nspawn.pid
log_file=$run_dir/nspawn.log

# leader_pid: print the node's PID 1 if the node is running, else fail.
leader_pid() {
  local pid
  pid=$(cat "$pid_file" 2>/dev/null) || return 1
  [[ -n $pid && -d /proc/$pid ]] || return 1
  # A recycled pid would not have our rootfs as its root. (readlink shows "/" after nspawn's
  # pivot_root, so compare the directories themselves.)
  is_node_root "$pid" || return 1
  echo "$pid"
}

# is_node_root PID: true if PID's root directory is the node's rootfs.
is_node_root() {
  local a b
  a=$(stat -L -c %d:%i "/proc/$1/root/" 2>/dev/null) && b=$(stat -c %d:%i "$root" 2>/dev/null) \
    && [[ $a == "$b" ]]
}

# node_bus PID: the D-Bus address of the node's system bus, reachable from the host.
node_bus() { echo "unix:path=/proc/$1/root/run/dbus/system_bus_socket"; }

# node_systemd PID CMD...: run a systemd client (systemd-run, systemctl) on the host against the
# node's systemd. Those tools refuse to work unless the host was booted with systemd
# (/run/systemd/system exists) and, as root, talk to /run/systemd/private. In a private mount
# namespace of the client alone, a tmpfs on /run/systemd provides both: an empty system/ and a
# link to the node's private socket (unix sockets connect through /proc/PID/root). A bind mount
# cannot do it: mount(8) canonicalises /proc/PID/root/... to the host's own path.
node_systemd() {
  local pid=$1; shift
  [[ -d /run/systemd ]] || mkdir -p /run/systemd
  SYSTEMD_IGNORE_CHROOT=1 DBUS_SYSTEM_BUS_ADDRESS=$(node_bus "$pid") \
    unshare --mount --propagation private sh -c '
      mount -t tmpfs -o size=64k,mode=0755 zeropod-node /run/systemd &&
      mkdir /run/systemd/system && ln -s "$0" /run/systemd/private && exec "$@"' \
    "/proc/$pid/root/run/systemd/private" "$@"
}

# node_env_path PID: the PATH the node's containerd runs with (its ctr first).
node_env_path() {
  sed -n 's/^PATH=//p' "/proc/$1/root/etc/containerd/active.env" 2>/dev/null \
    || echo /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
}

# active_containerd PID: the containerd version (2.1, 1.7) the node is set to run.
active_containerd() {
  sed -n 's/^ZEROPOD_CONTAINERD=//p' "/proc/$1/root/etc/containerd/active.env" 2>/dev/null
}

# enter_own_cgroups: move this shell into a cgroup of its own, named $machine, below its current
# one in every hierarchy (cgroup2 and each v1 controller), and record the paths in
# $run_dir/cgroups. nspawn roots the node's cgroup namespace there, so everything the node
# creates (runc's k8s.io/... cgroups) stays below and node/stop can remove it.
enter_own_cgroups() {
  local ctrls path dir self
  : > "$run_dir/cgroups"
  self=$(< /proc/self/cgroup)  # read it whole: it changes as this loop moves the shell
  while IFS=: read -r _ ctrls path; do
    if [[ -z $ctrls ]]; then
      dir=/sys/fs/cgroup/unified
      [[ -f $dir/cgroup.procs ]] || dir=/sys/fs/cgroup
    else
      dir=/sys/fs/cgroup/${ctrls#name=}
    fi
    [[ -f $dir/cgroup.procs ]] || continue
    dir=$dir${path%/}
    [[ ${dir##*/} == "$machine" ]] || dir=$dir/$machine
    mkdir -p "$dir"
    if [[ -f $dir/cpuset.cpus && ! -s $dir/cpuset.cpus ]]; then  # v1 cpuset starts empty
      cat "$dir/../cpuset.cpus" > "$dir/cpuset.cpus"
      cat "$dir/../cpuset.mems" > "$dir/cpuset.mems"
    fi
    echo "$BASHPID" > "$dir/cgroup.procs"
    echo "$dir" >> "$run_dir/cgroups"
  done <<< "$self"
}

# remove_own_cgroups: remove the (now empty) cgroup trees enter_own_cgroups made.
remove_own_cgroups() {
  local dir
  [[ -f $run_dir/cgroups ]] || return 0
  while read -r dir; do
    [[ -d $dir ]] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
  done < "$run_dir/cgroups"
  rm -f "$run_dir/cgroups"
}

# lock_node: serialise node/start, node/stop and node/build between concurrent callers (several
# engineers and test runs share one node). Nested calls (start -> stop) inherit the lock.
lock_node() {
  [[ -n ${ZEROPOD_NODE_LOCKED:-} ]] && return 0
  mkdir -p "$run_dir"
  exec 9> "$run_dir/lock"
  flock -w 300 9 || { echo "${0##*/}: $run_dir/lock still held after 300 s" >&2; exit 1; }
  export ZEROPOD_NODE_LOCKED=1
}

now_ms() { date +%s%3N; }
