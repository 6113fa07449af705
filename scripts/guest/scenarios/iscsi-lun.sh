# Shared by the iSCSI scenario fragments (tgt-iscsi.sh, sim.sh), sourced from the repository
# root inside the guest. iscsi_find_lun IQN: waits for LUN 1 of the session logged in to IQN
# (found through sysfs: the guest has no udev, so no /dev/disk/by-path) and exports its nodes
# and geometry. Returns 1 if it does not appear within 10 s.
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
