#!/usr/bin/env bash
# Runs the README's test command (bash tests/run.sh, with CI=true) on a fresh Debian 12 system:
# a minimal tree made by debootstrap in a scratch folder, a clean clone of this repository's
# HEAD and a copy of ../shared beside it, entered with chroot. Nothing of this machine's
# installed packages is visible inside, so a package that a test needs and
# deploy/install-deps.sh does not install fails here. Slow (downloads and builds everything):
# not part of the normal suite.
#
#   tests/fresh/run-in-chroot.sh [--dir SCRATCH] [--mirror URL] [--keep]
#
# Needs root, debootstrap (Debian's package) and network access to the Debian mirror. Prints
# each line of the run prefixed with the seconds since the chroot started, then the figures:
# base system and install download sizes, and the install, build and test times.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${TMPDIR:-/var/tmp}/infernode-fresh
mirror=http://deb.debian.org/debian
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "run-in-chroot: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "run-in-chroot: needs root (debootstrap, chroot, mounts)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "run-in-chroot: needs debootstrap: apt-get install debootstrap" >&2; exit 2; }
[ -d "$repo/../shared" ] || { echo "run-in-chroot: no ../shared beside $repo" >&2; exit 2; }

root=$dir/root
unmount_all() {
  mountpoint -q "$root" 2>/dev/null && umount -R -l "$root"
  return 0
}
# daemons a package's install script started inside the tree (munged) end with it: the
# processes whose root directory is the tree's (entered by chroot or by pivot_root)
kill_inside() {
  local p want
  want=$(stat -L -c %d:%i "$root" 2>/dev/null) || return 0
  for p in /proc/[0-9]*; do
    [ "$(stat -L -c %d:%i "$p/root" 2>/dev/null)" = "$want" ] && kill -9 "${p#/proc/}" 2>/dev/null
  done
  return 0
}
cleanup() {
  kill_inside
  unmount_all
  if [ "$keep" -eq 0 ]; then rm -rf "$dir"; else echo "run-in-chroot: kept $dir"; fi
}
trap cleanup EXIT
rm -rf "$dir"
mkdir -p "$dir"

t0=$SECONDS
debootstrap --variant=minbase bookworm "$root" "$mirror" > "$dir/debootstrap.log" 2>&1 ||
  { tail -20 "$dir/debootstrap.log"; exit 1; }
base_kb=$(du -sk "$root" | cut -f1)
echo "run-in-chroot: debootstrap (minbase, bookworm) in $((SECONDS - t0)) s, ${base_kb} KiB"

cat > "$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
EOF
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp /etc/hosts "$root/etc/hosts"
# keep the downloaded packages so their size can be measured
rm -f "$root/etc/apt/apt.conf.d/docker-clean"
rm -f "$root"/var/cache/apt/archives/*.deb

mkdir -p "$root/work"
git clone -q --no-hardlinks "$repo" "$root/work/main"
cp -r "$repo/../shared" "$root/work/shared"
chmod -R a-w "$root/work/shared"

# The tree's root is a mount point, as a real root is (ip netns, unshare -m and chroot-aware
# tools remount it), /run a tmpfs as on a booted machine, and recursive binds give the tests
# /sys/fs/cgroup (CPU quota), /dev/pts and /dev/shm.
mount --bind "$root" "$root"
mount --make-private "$root"
mount -t tmpfs tmpfs "$root/run"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount --make-rslave "$root/sys"
mount --rbind /dev "$root/dev"
mount --make-rslave "$root/dev"

# This workplace reaches npm through a proxy whose CA the host trusts (its local CA
# certificates); a machine here has them from the platform, not from the project, so they are
# handed to Node as its extra CAs.
node_ca=()
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cat /usr/local/share/ca-certificates/*.crt > "$root/etc/host-local-ca.pem"
  node_ca=(NODE_EXTRA_CA_CERTS=/etc/host-local-ca.pem)
fi

# Entered through pivot_root in a mount namespace of its own, not chroot: the kernel refuses
# user namespaces to a chrooted process (clone(2): EPERM), and the eval sandbox needs them, as
# on a booted machine.
enter() {
  unshare --mount --propagation private /bin/sh -c \
    'cd "$1" && mkdir -p .host-root && pivot_root . .host-root && shift &&
     exec chroot . /bin/sh -c "umount -l /.host-root && rmdir /.host-root && exec \"\$@\"" sh "$@"' \
    sh "$root" "$@"
}

t1=$SECONDS
set +e
enter /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  ${node_ca[@]+"${node_ca[@]}"} CI=true LANG=C.UTF-8 /bin/bash -c 'cd /work/main && bash tests/run.sh' 2>&1 |
  while IFS= read -r line; do printf '%5d %s\n' $((SECONDS - t1)) "$line"; done | tee "$dir/run.log"
rc=${PIPESTATUS[0]}
set -e

debs_kb=$(du -ck "$root"/var/cache/apt/archives/*.deb 2>/dev/null | tail -1 | cut -f1)
n_debs=$(ls "$root"/var/cache/apt/archives/*.deb 2>/dev/null | wc -l)
log=$dir/run.log
at() { grep -m1 -E "$1" "$log" | awk '{print $1}'; }
install_end=$(at ' -- The C compiler identification')
release_tests=$(at ' Test project .*/build$')
echo "run-in-chroot: exit $rc after $((SECONDS - t1)) s in the chroot"
echo "run-in-chroot: install-deps downloaded $n_debs packages, ${debs_kb:-0} KiB; installed in ${install_end:-?} s"
echo "run-in-chroot: Release build done at ${release_tests:-?} s"
grep -E 'tests passed|Total Test time' "$log" | sed 's/^ *[0-9]* /run-in-chroot: /'
cp "$log" "${TMPDIR:-/var/tmp}/infernode-fresh-run.log"
echo "run-in-chroot: the whole log is in ${TMPDIR:-/var/tmp}/infernode-fresh-run.log"
exit "$rc"
