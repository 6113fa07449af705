# Shared by the iSCSI scenario fragments (tgt-iscsi.sh, sim.sh), sourced from the repository
# root inside the guest.

# iscsi_start_initiator OUTDIR: a fresh initiator name and iscsid.conf (/etc/iscsi is writable
# through the guest's overlay; nothing reaches the host), then iscsid in its own session (it
# kills its process group on SIGTERM). Sets ISCSID_PID; the log goes to OUTDIR/iscsid.log.
iscsi_start_initiator() {
  mkdir -p /etc/iscsi /run/lock/iscsi /var/lib/iscsi
  printf '%s\n' 'node.startup = manual' 'node.session.timeo.replacement_timeout = 20' \
    >/etc/iscsi/iscsid.conf
  echo "InitiatorName=iqn.2024-01.dev.lba-status:guest-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')" \
    >/etc/iscsi/initiatorname.iscsi
  setsid iscsid -f >"$1/iscsid.log" 2>&1 &
  ISCSID_PID=$!
  sleep 0.3
  kill -0 $ISCSID_PID 2>/dev/null
}

# iscsi_login IQN PORTAL: a node record and a login, the way OCI documents it.
iscsi_login() {
  iscsiadm -m node -o new -T "$1" -p "$2" >/dev/null && iscsiadm -m node -T "$1" -p "$2" --login
}

# iscsi_find_lun IQN: waits for LUN 1 of the session logged in to IQN (found through sysfs: the
# guest has no udev, so no /dev/disk/by-path) and exports its nodes and geometry. Returns 1 if
# it does not appear within 10 s.
iscsi_find_lun() {
  _sg= _blk= _i=0
  while [ $_i -lt 100 ]; do
    for _s in /sys/class/iscsi_session/session*; do
      [ "$(cat "$_s/targetname" 2>/dev/null)" = "$1" ] || continue
      for _l in "$_s"/device/target*/*:1; do
        [ "$(cat "$_l/type" 2>/dev/null)" = 0 ] || continue # a disk, not tgt's LUN 0 controller
        _sg=$(ls "$_l/scsi_generic" 2>/dev/null | head -n 1)
        _blk=$(ls "$_l/block" 2>/dev/null | head -n 1)
      done
    done
    [ -n "$_sg" ] && [ -n "$_blk" ] && [ -c "/dev/$_sg" ] && [ -b "/dev/$_blk" ] && break
    _sg= _blk=; _i=$((_i + 1)); sleep 0.1
  done
  [ -n "$_sg" ] || return 1
  export LBA_STATUS_TEST_SG="/dev/$_sg"
  export LBA_STATUS_TEST_BLOCK="/dev/$_blk"
  export LBA_STATUS_TEST_BLOCK_SIZE="$(cat "/sys/block/$_blk/queue/logical_block_size")"
  export LBA_STATUS_TEST_CAPACITY_BLOCKS=$(($(cat "/sys/block/$_blk/size") * 512 / LBA_STATUS_TEST_BLOCK_SIZE))
}
