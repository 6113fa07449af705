# Scenario fragment, sourced by /bin/sh inside the guest (see ../README.md). The runner boots the
# guest with SCSI_DEBUG set, so scsi_debug is already loaded; this finds its nodes through sysfs
# (no udev in the guest) and exports them. Defines scenario_up and scenario_down.

scenario_up() {
  _sg= _blk= _i=0
  while [ $_i -lt 50 ]; do # the sg and sd nodes appear asynchronously after the module load
    for _d in /sys/class/scsi_generic/sg*; do
      [ -e "$_d/device/model" ] || continue
      [ "$(sed 's/ *$//' "$_d/device/vendor")" = Linux ] || continue
      [ "$(sed 's/ *$//' "$_d/device/model")" = scsi_debug ] || continue
      [ "$(cat "$_d/device/type")" = 0 ] || continue
      _sg=/dev/${_d##*/}
      _blk=$(ls "$_d/device/block" 2>/dev/null | head -n 1)
      break
    done
    [ -n "$_sg" ] && [ -n "$_blk" ] && [ -c "$_sg" ] && [ -b "/dev/$_blk" ] && break
    _sg= _blk=; _i=$((_i + 1)); sleep 0.1
  done
  if [ -z "$_sg" ]; then
    echo "scenario scsi-debug: no scsi_debug disk in /sys/class/scsi_generic (SCSI_DEBUG unset?)" >&2
    return 1
  fi
  _p=/sys/module/scsi_debug/parameters
  export LBA_STATUS_TEST_TARGET=scsi_debug
  export LBA_STATUS_TEST_SG="$_sg"
  export LBA_STATUS_TEST_BLOCK="/dev/$_blk"
  export LBA_STATUS_TEST_BLOCK_SIZE="$(cat "/sys/block/$_blk/queue/logical_block_size")"
  export LBA_STATUS_TEST_CAPACITY_BLOCKS=$(($(cat "/sys/block/$_blk/size") * 512 / LBA_STATUS_TEST_BLOCK_SIZE))
  export LBA_STATUS_TEST_UNMAP_GRANULARITY="$(cat $_p/unmap_granularity)"
  echo "scenario scsi-debug: sg=$LBA_STATUS_TEST_SG block=$LBA_STATUS_TEST_BLOCK" \
    "blockSize=$LBA_STATUS_TEST_BLOCK_SIZE capacity=$LBA_STATUS_TEST_CAPACITY_BLOCKS" \
    "unmapGranularity=$LBA_STATUS_TEST_UNMAP_GRANULARITY"
}

scenario_down() { :; }
