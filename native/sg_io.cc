// SPDX-License-Identifier: Apache-2.0
//
// RunSgIo: fills a v3 struct sg_io_hdr (interface_id 'S'), calls ioctl(fd, SG_IO) and copies the
// kernel's answer. Both /dev/sgN and /dev/sdX accept the v3 header, which is why it is used
// rather than sg v4. Linux only.
//
// See: sg(4), ioctl(2), the Linux SCSI Generic HOWTO (SG_IO, struct sg_io_hdr).

#include "sg_io.h"

#include <scsi/sg.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace lba_status {

namespace {

int ToKernelDirection(SgDirection direction) {
  switch (direction) {
    case SgDirection::kFromDevice:
      return SG_DXFER_FROM_DEV;
    case SgDirection::kToDevice:
      return SG_DXFER_TO_DEV;
    case SgDirection::kNone:
      break;
  }
  return SG_DXFER_NONE;
}

}  // namespace

SgOutcome RunSgIo(const SgRequest& request) noexcept {
  sg_io_hdr_t hdr;
  std::memset(&hdr, 0, sizeof(hdr));
  hdr.interface_id = 'S';
  hdr.dxfer_direction = ToKernelDirection(request.direction);
  // cmd_len is an unsigned char; callers validate 6..32 first, the cast cannot truncate then.
  hdr.cmd_len = static_cast<unsigned char>(request.cdb_length);
  hdr.cmdp = const_cast<unsigned char*>(request.cdb);
  hdr.mx_sb_len = static_cast<unsigned char>(std::min<size_t>(request.sense_length, 255));
  hdr.sbp = request.sense;
  if (request.direction != SgDirection::kNone) {
    hdr.dxfer_len = static_cast<unsigned int>(request.data_length);
    hdr.dxferp = request.data;
  }
  hdr.timeout = request.timeout_ms;

  SgOutcome outcome;
  int rc;
  do {
    rc = ioctl(request.fd, SG_IO, &hdr);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    outcome.errno_value = errno;
    return outcome;
  }
  outcome.status = hdr.status;
  outcome.host_status = hdr.host_status;
  outcome.driver_status = hdr.driver_status;
  outcome.sense_length = hdr.sb_len_wr;
  outcome.resid = hdr.resid;
  outcome.duration_ms = hdr.duration;
  outcome.info = hdr.info;
  return outcome;
}

}  // namespace lba_status
