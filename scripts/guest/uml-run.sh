#!/bin/sh
# uml-run.sh OUTDIR 'command'
#
# Boots a User-Mode Linux guest (Debian `user-mode-linux`, /usr/bin/linux.uml) whose root is this
# machine's root, read-only through hostfs, under a tmpfs overlay; runs COMMAND there with
# /bin/sh as root, and exits with COMMAND's exit status. OUTDIR is shared read-write at the same
# path. The guest's console (the command's stdout and stderr, kernel errors) goes to stdout.
#
# Environment:
#   SCSI_DEBUG   scsi_debug module parameters; empty or unset = do not load scsi_debug
#   EXTRA_MODS   further modules to load (e.g. "iscsi_tcp")
#   MEM          guest memory (default 1536M); backed by a file in $TMPDIR or /dev/shm
#   TIMEOUT      seconds before the guest is killed (default 600)
#   GUEST_CWD    directory the command starts in (default: the current directory)
#   GUEST_ENV    extra variable names to forward; CI and LBA_STATUS_* are always forwarded
#   UML, UML_MODULES, KVER   kernel binary, module tree, kernel version (defaults: Debian's)
#   UML_VERBOSE=1  kernel messages on the console, `set -x` in the guest init, keep the work dir
#
# Exit status: COMMAND's; 125 = the guest crashed, panicked or timed out (no status came back);
# 126 = the guest could not be set up (module load, mounts, GUEST_CWD missing); 2 = usage error.
set -eu

die() { echo "uml-run: $1" >&2; exit "${2:-2}"; }
[ $# -eq 2 ] || die "usage: uml-run.sh OUTDIR 'command'"

UML=${UML:-/usr/bin/linux.uml}
MODSRC=${UML_MODULES:-/usr/lib/uml/modules}
[ -x "$UML" ] || die "$UML not found: install Debian's user-mode-linux (scripts/setup-system.sh)"
KVER=${KVER:-$(ls "$MODSRC" 2>/dev/null | sort -V | tail -n 1)}
[ -n "$KVER" ] && [ -f "$MODSRC/$KVER/modules.dep" ] || die "no UML modules in $MODSRC"
MEM=${MEM:-1536M}
TIMEOUT=${TIMEOUT:-600}
SCSI_DEBUG=${SCSI_DEBUG:-}
EXTRA_MODS=${EXTRA_MODS:-}
GUEST_CWD=${GUEST_CWD:-$PWD}
VERBOSE=${UML_VERBOSE:-0}

mkdir -p "$1"
OUT=$(realpath "$1")
case "$OUT$GUEST_CWD" in *[[:space:]]*) die "OUTDIR and GUEST_CWD must not contain spaces" ;; esac

# UML backs guest memory with an unlinked file in $TMPDIR (else /dev/shm, else /tmp). A
# container's 64 MiB /dev/shm kills the guest with SIGBUS as soon as it touches more: check.
mem_kib() {
  n=${1%[KkMmGg]}
  case "$1" in
  *[Gg]) echo $((n * 1024 * 1024)) ;; *[Mm]) echo $((n * 1024)) ;;
  *[Kk]) echo "$n" ;; *) echo $((n / 1024)) ;;
  esac
}
free_kib() { df -Pk "$1" 2>/dev/null | awk 'NR == 2 { print $4 }'; }
need=$(mem_kib "$MEM")
memdir=
for d in ${TMPDIR:-} /dev/shm /tmp /var/tmp; do
  [ -d "$d" ] && [ -w "$d" ] || continue
  f=$(free_kib "$d")
  if [ -n "$f" ] && [ "$f" -ge "$need" ]; then memdir=$d; break; fi
  echo "uml-run: $d has ${f:-?} KiB free, guest needs $need KiB (MEM=$MEM); trying the next" >&2
done
[ -n "$memdir" ] || die "no directory with $need KiB free to back the guest memory (MEM=$MEM)" 125

WORK=$(mktemp -d "${UML_WORKDIR:-/tmp}/uml-run.XXXXXX")
cleanup() { [ "$VERBOSE" = 1 ] && echo "uml-run: kept $WORK" >&2 || rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/mods/lib/modules" "$WORK/uml"
ln -s "$MODSRC/$KVER" "$WORK/mods/lib/modules/$KVER" # the layout `modprobe -d` expects

# The command file: a clean environment, the forwarded variables, the working directory.
q() { printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"; }
{
  echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  echo 'export HOME=/root LANG=C.UTF-8 TMPDIR=/tmp'
  for name in $(env | sed -n 's/^\(CI\|LBA_STATUS_[A-Za-z0-9_]*\)=.*/\1/p') ${GUEST_ENV:-}; do
    if v=$(printenv "$name"); then echo "export $name=$(q "$v")"; fi
  done
  echo "export GUEST_OUT=$(q "$OUT")"
  echo "cd $(q "$GUEST_CWD") || exit 126"
  printf '%s\n' "$2"
} >"$WORK/cmd.sh"

xtrace=; [ "$VERBOSE" = 1 ] && xtrace='set -x'
# A fresh tmpfs on the guest's /tmp, unless it would hide OUTDIR or GUEST_CWD (a checkout under
# /tmp); /tmp is writable through the overlay anyway.
tmpfs_tmp=1
case "$OUT/" in /tmp/*) tmpfs_tmp=0 ;; esac
case "$GUEST_CWD/" in /tmp/*) tmpfs_tmp=0 ;; esac
cat >"$WORK/init" <<EOF
#!/bin/sh
# PID 1 of the guest, run from the read-only hostfs root.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
$xtrace
fail() { echo "uml-run (guest): \$*" >&2; echo 126 > /mnt/work/rc; poweroff -f; exit 1; }
# /mnt/work is the host's work directory, read-write: the exit status goes there.
mount -t tmpfs -o mode=0755 cow /mnt && mkdir -p /mnt/work /mnt/u /mnt/w /mnt/r || fail "tmpfs on /mnt"
mount -t hostfs none /mnt/work -o "$WORK" || fail "hostfs $WORK"
mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sys /sys || fail "mount /sys"
grep -q ' /dev devtmpfs' /proc/mounts || mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
M="modprobe -d $WORK/mods"
for m in sg sd_mod; do \$M \$m || fail "modprobe \$m"; done
if [ -n "$SCSI_DEBUG" ]; then \$M scsi_debug $SCSI_DEBUG || fail "modprobe scsi_debug $SCSI_DEBUG"; fi
for m in $EXTRA_MODS; do \$M \$m || fail "modprobe \$m"; done
\$M overlay || fail "modprobe overlay"
R=/mnt/r
mount -t overlay ov -o lowerdir=/,upperdir=/mnt/u,workdir=/mnt/w \$R || fail "overlay root"
for d in proc sys dev; do mount --bind /\$d \$R/\$d || fail "bind /\$d"; done
mount -t tmpfs -o mode=0755 run \$R/run || fail "tmpfs on /run"
[ $tmpfs_tmp = 0 ] || mount -t tmpfs -o mode=1777 tmp \$R/tmp || fail "tmpfs on /tmp"
mkdir -p \$R/dev/shm && mount -t tmpfs -o mode=1777 shm \$R/dev/shm
mkdir -p "\$R$OUT" && mount -t hostfs none "\$R$OUT" -o "$OUT" || fail "hostfs $OUT"
# plain modprobe works inside the guest (e.g. to reload scsi_debug with other parameters)
mkdir -p \$R/usr/lib/modules && ln -sfn "$MODSRC/$KVER" "\$R/usr/lib/modules/$KVER"
cp "$WORK/cmd.sh" \$R/run/uml-run-cmd.sh || fail "copy command"
chroot \$R /sbin/ip link set lo up || fail "loopback up"
chroot \$R /usr/bin/hostname uml-guest 2>/dev/null
# stdout/stderr through a pipe, not the console tty: tools behave as under CI (no colours).
( chroot \$R /usr/bin/env -i /bin/sh /run/uml-run-cmd.sh </dev/null; echo \$? > /mnt/work/rc ) 2>&1 | cat
sync
poweroff -f 2>/dev/null
EOF
chmod +x "$WORK/init"

# Debian 12's UML 6.1 cannot restore FPU state on hosts with AVX-512/AMX (see
# uml-xstate-shim.c); the shim is harmless elsewhere. Built once per source version.
preload=
if [ "${UML_XSTATE_SHIM:-1}" = 1 ]; then
  src=$(dirname "$(realpath "$0")")/uml-xstate-shim.c
  shim=${UML_SHIM_CACHE:-/tmp/lba-status-uml-shim}/xstate-$(cksum <"$src" | cut -d' ' -f1).so
  if [ ! -f "$shim" ]; then
    mkdir -p "$(dirname "$shim")"
    ${CC:-cc} -O2 -Wall -shared -fPIC -o "$shim.$$" "$src" -ldl && mv "$shim.$$" "$shim" ||
      echo "uml-run: could not build $src; the guest may die on AVX-512 hosts" >&2
  fi
  [ -f "$shim" ] && preload=$shim
fi

quiet=quiet; [ "$VERBOSE" = 1 ] && quiet='loglevel=7'
status=0
# timeout puts itself and the guest (UML's helper and user processes) in one process group and
# signals the whole group; a signal to this script is passed on to it.
TMPDIR=$memdir LD_PRELOAD=$preload timeout -k 10 "$TIMEOUT" "$UML" umid="uml$$" uml_dir="$WORK/uml" \
  mem="$MEM" rootfstype=hostfs rootflags=/ ro init="$WORK/init" \
  con=null con0=null,fd:1 $quiet </dev/null &
tpid=$!
trap 'kill -TERM $tpid 2>/dev/null; wait $tpid || :; exit 130' INT TERM
wait $tpid || status=$?
trap - INT TERM

if [ -f "$WORK/rc" ]; then
  rc=$(cat "$WORK/rc")
  [ -n "$rc" ] || rc=125
  exit "$rc"
fi
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  echo "uml-run: guest timed out after ${TIMEOUT}s and was killed (exit 125)" >&2
else
  echo "uml-run: guest ended without an exit status (crashed or panicked; linux.uml exit $status)" >&2
fi
exit 125
