#!/bin/bash
# Installs the Debian/Ubuntu packages the real-kernel tests, the host tests and the linters need.
# Idempotent, non-interactive, run as root (as another user it only reports what is missing and
# exits 0: the demo needs none of it). Starts no services: package scripts are denied through
# policy-rc.d while apt runs, and any tgtd/iscsid/redis-server that still came up during the
# install is stopped again (the guest runs its own; the fleet tests start their own Redis).
#
#   user-mode-linux  the guest kernel (linux.uml + modules)       kmod       modprobe for the guest
#   sg3-utils        oracle and smoke-test tools                   tgt        iSCSI target (guest and
#   open-iscsi       iscsid/iscsiadm (in guest)                               host tests' own tgtd)
#   libiscsi-bin     iscsi-test-cu                                 gcc, libc6-dev  the UML FPU shim
#   iproute2         ip                                            clang-format
#   util-linux       blkdiscard, fallocate; setpriv (host tests run the client as nobody)
#   qemu-utils, qemu-block-extra  qemu-img with libiscsi (block-iscsi.so, only a Recommends of
#                    qemu-utils): the host tests' second reader of iscsi:// targets
#   clang-14, libclang-rt-14-dev, llvm-14  `npm run fuzz`: libFuzzer, ASan/UBSan runtimes,
#                    llvm-symbolizer (fuzz/build.sh)
#   redis-server     the fleet tests' queue (test/fleet starts its own on a free port, AOF on)
#   g++-aarch64-linux-gnu, qemu-user  the linux-arm64 prebuild: cross-built by prepack, loaded
#                    and tested under qemu-user by npm run test:pack
set -euo pipefail

PKGS=(user-mode-linux kmod sg3-utils tgt open-iscsi libiscsi-bin iproute2 util-linux
  qemu-utils qemu-block-extra gcc libc6-dev clang-format clang-14 libclang-rt-14-dev llvm-14
  redis-server g++-aarch64-linux-gnu qemu-user)

say() { echo "setup-system: $*"; }
[ "$(uname -s)" = Linux ] || { say "not Linux; nothing to do"; exit 0; }

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
# Not root: nothing can be installed, and `npm run demo` needs none of this (the simulator and
# the userspace iSCSI initiator run as any user); say what the tests will lack, and go on.
if [ "$(id -u)" != 0 ]; then
  if [ ${#missing[@]} -eq 0 ]; then
    say "all packages present: ${PKGS[*]}"
  else
    say "not root, so not installing: ${missing[*]}" >&2
    say "\`npm run demo\` needs none of them; \`npm test\` reports the guest and tgt tests as skipped" \
      "without them (run this script with sudo to install)" >&2
  fi
  exit 0
fi
command -v apt-get >/dev/null || { say "apt-get not found: install ${PKGS[*]} by hand" >&2; exit 1; }
if [ ${#missing[@]} -eq 0 ]; then
  say "all packages present: ${PKGS[*]}"
else
  say "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # (pgrep refuses patterns longer than 15 characters: one call per group of names)
  ours() { pgrep -x 'tgtd|iscsid' || true; pgrep -x redis-server || true; }
  before=$(ours)
  units=(tgt.service iscsid.service iscsid.socket open-iscsi.service redis-server.service)
  systemd=
  command -v systemctl >/dev/null && [ -d /run/systemd/system ] && systemd=1
  active_before=
  [ -z "$systemd" ] || active_before=$(systemctl is-active "${units[@]}" 2>/dev/null || true)
  # Deny service starts for the duration of the install (restore whatever was there before).
  rc_d=/usr/sbin/policy-rc.d
  saved=
  if [ -e "$rc_d" ]; then saved=$(mktemp); cp -p "$rc_d" "$saved"; fi
  restore() {
    if [ -n "$saved" ]; then mv -f "$saved" "$rc_d"; else rm -f "$rc_d"; fi
  }
  trap restore EXIT
  printf '#!/bin/sh\nexit 101\n' >"$rc_d"
  chmod 755 "$rc_d"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
  restore
  trap - EXIT
  # Anything that started anyway (e.g. a systemd socket unit), stop it by its process id.
  for pid in $(ours); do
    if ! grep -qx "$pid" <<<"$before"; then
      say "stopping $(cat /proc/"$pid"/comm 2>/dev/null) (pid $pid) started by the install"
      kill "$pid" 2>/dev/null || true
    fi
  done
  if [ -n "$systemd" ]; then
    mapfile -t was <<<"$active_before"
    for i in "${!units[@]}"; do
      if [ "${was[$i]:-}" != active ] && systemctl is-active --quiet "${units[$i]}"; then
        say "stopping ${units[$i]} (started by the install)"
        systemctl stop "${units[$i]}" || true
      fi
    done
  fi
  say "installed: ${missing[*]}"
fi

# Facts the guest harness depends on; print them so CI logs show what the machine has.
uml=/usr/bin/linux.uml
kver=$(ls /usr/lib/uml/modules 2>/dev/null | sort -V | tail -n 1)
say "linux.uml: $([ -x $uml ] && echo "$uml (modules ${kver:-missing})" || echo missing)"
say "sg3_utils: $(dpkg-query -W -f='${Version}' sg3-utils), tgt: $(dpkg-query -W -f='${Version}' tgt)," \
  "open-iscsi: $(dpkg-query -W -f='${Version}' open-iscsi)"
shm=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 { print int($4 / 1024) }')
qemu_iscsi=$(qemu-img --help 2>/dev/null | sed -n 's/^Supported formats:.* \(iscsi\) .*/\1/p')
say "qemu-img: $(dpkg-query -W -f='${Version}' qemu-utils) (iscsi driver: ${qemu_iscsi:-MISSING})"
say "/dev/shm: ${shm:-?} MiB free (guest memory is backed there, else in /tmp)"
